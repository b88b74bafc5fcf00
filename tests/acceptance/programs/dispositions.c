/* The signal dispositions a program starts with (ignored ones survive execve), and
 * /proc/self/status's signal sets after it changes some: both must be the program's,
 * not the VMM's. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

static void handler(int signo) { (void)signo; }

static void print_ignored(const char *when)
{
    printf("%s ignored:", when);
    for (int signo = 1; signo < 32; signo++) {
        struct sigaction action;
        if (sigaction(signo, NULL, &action) == 0 && action.sa_handler == SIG_IGN)
            printf(" %d", signo);
    }
    printf("\n");
}

static void print_status_signal_sets(void)
{
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    if (!status)
        return;
    while (fgets(line, sizeof line, status))
        /* SigQ counts the queued signals of the whole user: not this program's. */
        if ((!strncmp(line, "Sig", 3) && strncmp(line, "SigQ", 4)) ||
            !strncmp(line, "ShdPnd", 6))
            fputs(line, stdout);
    fclose(status);
}

int main(void)
{
    print_ignored("at start");
    signal(SIGUSR2, handler);
    signal(SIGHUP, SIG_IGN);
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGUSR1);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    raise(SIGUSR1);
    print_status_signal_sets();
    fflush(stdout);
    return 0;
}
