#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
/* Handled signals (SIGALRM, SIGPIPE, SIGCHLD, SIGUSR1, SIGTERM), masks, an alternate
 * stack, children killed by signals, system() and popen(). */
static volatile sig_atomic_t got[65];
static volatile void *handler_stack;
static void handler(int signo) { got[signo]++; }
static void on_altstack(int signo) { int local; handler_stack = &local; got[signo]++; }
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa = {0};
    sa.sa_handler = handler;
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    alarm(1);
    pause();
    printf("alarm handled: %d\n", got[SIGALRM]);

    int fds[2];
    pipe(fds);
    close(fds[0]);
    errno = 0;
    ssize_t n = write(fds[1], "x", 1);
    printf("write to closed pipe: %zd %s, SIGPIPE handled: %d\n", n, strerror(errno), got[SIGPIPE]);

    raise(SIGUSR1);
    printf("raise handled: %d\n", got[SIGUSR1]);
    kill(getpid(), SIGTERM);
    printf("kill self handled: %d\n", got[SIGTERM]);

    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    raise(SIGUSR1);
    printf("blocked, still: %d\n", got[SIGUSR1]);
    sigprocmask(SIG_SETMASK, &old, NULL);
    printf("unblocked: %d\n", got[SIGUSR1]);

    stack_t ss = {.ss_sp = malloc(65536), .ss_size = 65536};
    sigaltstack(&ss, NULL);
    struct sigaction alt = {0};
    alt.sa_handler = on_altstack;
    alt.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR2, &alt, NULL);
    raise(SIGUSR2);
    printf("ran on alternate stack: %d\n",
           (char *)handler_stack >= (char *)ss.ss_sp && (char *)handler_stack < (char *)ss.ss_sp + 65536);

    pid_t child = fork();
    if (child == 0) { volatile int *p = 0; *p = 1; _exit(0); }
    int status;
    waitpid(child, &status, 0);
    printf("child signaled: %d by %d\n", WIFSIGNALED(status), WTERMSIG(status));
    child = fork();
    if (child == 0) { pause(); _exit(0); }
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    printf("child killed: %d by %d, SIGCHLD seen: %d\n", WIFSIGNALED(status), WTERMSIG(status),
           got[SIGCHLD] > 0);
    child = fork();
    if (child == 0) _exit(42);
    waitpid(child, &status, 0);
    printf("child exit: %d\n", WEXITSTATUS(status));

    signal(SIGCHLD, SIG_DFL);
    printf("system: %d\n", WEXITSTATUS(system("echo from system; exit 3")));
    FILE *p = popen("echo from popen | tr a-z A-Z", "r");
    char line[64];
    fgets(line, sizeof line, p);
    printf("popen: %s", line);
    printf("pclose: %d\n", pclose(p));
    return 0;
}
