/* The vDSO's data pages across fork and exec, as a program sees them: after an
 * exec, the old image's data pages are gone (a read there faults), whether the
 * process read them before the exec or not, in a forked child or in the process
 * that started; and the new image reads its own as the old one did. Prints only
 * what is the same on every run, for comparison with the native run. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define MAX_PAGES 16

static int find_mapping(const char *name, unsigned long *start, unsigned long *end) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, maps))
        if (strstr(line, name) && sscanf(line, "%lx-%lx", start, end) == 2)
            found = 1;
    fclose(maps);
    return found;
}

static int mapped(unsigned long address) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long start, end;
    int found = 0;
    while (!found && fgets(line, sizeof line, maps))
        if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start <= address && address < end)
            found = 1;
    fclose(maps);
    return found;
}

static void touch_read(unsigned long address) { (void)*(volatile char *)address; }

/* The signal that ends a child reading ``address`` (0: none). */
static int signal_of(unsigned long address) {
    pid_t child = fork();
    if (child == 0) {
        touch_read(address);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static sigjmp_buf probe_return;
static volatile int probe_signal;

static void probe_fault(int signal) {
    probe_signal = signal;
    siglongjmp(probe_return, 1);
}

/* The signal reading ``address`` raises in this very process (0: none): a forked
 * child would read through translations of its own, never this one's. */
static int signal_here(unsigned long address) {
    struct sigaction action = {0}, old_segv, old_bus;
    action.sa_handler = probe_fault;
    sigaction(SIGSEGV, &action, &old_segv);
    sigaction(SIGBUS, &action, &old_bus);
    probe_signal = 0;
    if (sigsetjmp(probe_return, 1) == 0)
        touch_read(address);
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return probe_signal;
}

/* The data pages, from [vvar] to the end of [vvar_vclock] (if right after it). */
static int data_pages(unsigned long *start, unsigned long *end) {
    unsigned long clock_start, clock_end;
    if (!find_mapping("[vvar]", start, end))
        return 0;
    if (find_mapping("[vvar_vclock]", &clock_start, &clock_end) && clock_start == *end)
        *end = clock_end;
    return 1;
}

static void exec_after(const char *self, const char *how, unsigned long start,
                       unsigned long end) {
    char first[32], last[32];
    snprintf(first, sizeof first, "%lx", start);
    snprintf(last, sizeof last, "%lx", end);
    fflush(stdout);
    execl(self, self, "after", how, first, last, (char *)NULL);
    perror("execl");
    _exit(127);
}

/* In the new image: the old data pages fault, the new ones read as before. */
static int after(const char *how, unsigned long old_start, unsigned long old_end) {
    unsigned long start, end;
    for (unsigned long page = old_start; page < old_end; page += PAGE)
        if (!mapped(page))
            printf("%s: old page %lu: signal %d\n", how, (page - old_start) / PAGE,
                   signal_here(page));
    if (!data_pages(&start, &end) || end - start != old_end - old_start) {
        printf("%s: data pages differ\n", how);
        return 0;
    }
    for (unsigned long page = start; page < end; page += PAGE)
        printf("%s: new page %lu: signal %d\n", how, (page - start) / PAGE, signal_of(page));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "after") == 0)
        return after(argv[2], strtoul(argv[3], NULL, 16), strtoul(argv[4], NULL, 16));
    unsigned long start, end;
    if (!data_pages(&start, &end) || (end - start) / PAGE > MAX_PAGES) {
        printf("no vdso data pages\n");
        return 0;
    }
    int readable[MAX_PAGES];
    for (unsigned long page = start; page < end; page += PAGE)
        readable[(page - start) / PAGE] = signal_of(page) == 0;
    static const char *const hows[] = {"child, untouched", "child, read"};
    for (int read = 0; read < 2; read++) {
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            for (unsigned long page = start; read && page < end; page += PAGE)
                if (readable[(page - start) / PAGE])
                    touch_read(page);
            exec_after(argv[0], hows[read], start, end);
        }
        int status;
        waitpid(child, &status, 0);
        printf("%s: status %d\n", hows[read], status);
    }
    for (unsigned long page = start; page < end; page += PAGE)
        if (readable[(page - start) / PAGE])
            touch_read(page);
    exec_after(argv[0], "itself, read", start, end);
}
