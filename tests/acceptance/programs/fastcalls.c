/* What the fast system-call path must get exactly right, printed for comparison
 * with the same program run natively: registers, flags and the red zone across a
 * `syscall`; results and errors of the calls the fast path serves (including bad
 * buffers and descriptors); calls it must hand back (/proc paths, pipes); signals
 * arriving during a stream of fast calls. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void report(const char *what, long result) {
    if (result < 0)
        printf("%s: -1 %s\n", what, strerrorname_np(errno));
    else
        printf("%s: %ld\n", what, result);
}

/* getppid through a bare `syscall` with every register and the 128 bytes below RSP
 * holding known values; afterwards everything but RAX, RCX and R11 must be intact,
 * RCX the return address, R11 and RFLAGS the flags from before. */
static void registers_and_red_zone(void) {
    uint64_t bad = 0, rcx_seen = 0, expected_rip = 0, flags_before = 0, flags_after = 0,
             r11_seen = 0;
    __asm__ volatile(
        "sub $256, %%rsp\n\t"               /* our own frame; the red zone below it */
        "mov $0x5a5a5a5a5a5a5a5a, %%rax\n\t"
        "mov $16, %%ecx\n\t"
        "1: mov %%rax, -8(%%rsp,%%rcx,8)\n\t"
        "sub $1, %%ecx\n\t"
        "jnz 1b\n\t"
        "mov $0x1111, %%rbx\n\t" "mov $0x2222, %%rdx\n\t" "mov $0x3333, %%rsi\n\t"
        "mov $0x4444, %%rdi\n\t" "mov $0x5555, %%r8\n\t" "mov $0x6666, %%r9\n\t"
        "mov $0x7777, %%r10\n\t" "mov $0x8888, %%r12\n\t" "mov $0x9999, %%r13\n\t"
        "mov $0xaaaa, %%r14\n\t" "mov $0xbbbb, %%r15\n\t"
        "push %%rbp\n\t" "mov $0xcccc, %%rbp\n\t"
        "stc\n\t"                           /* CF set: must survive */
        "pushf\n\t" "pop %%rax\n\t" "mov %%rax, %[fb]\n\t"
        "mov $110, %%eax\n\t"
        "lea 2f(%%rip), %%rcx\n\t" "mov %%rcx, %[er]\n\t"
        "syscall\n\t"
        "2: mov %%rcx, %[rc]\n\t" "mov %%r11, %[r11]\n\t"
        "pushf\n\t" "pop %%rcx\n\t" "mov %%rcx, %[fa]\n\t"
        "xor %%ecx, %%ecx\n\t"
        "cmp $0xcccc, %%rbp\n\t" "setne %%cl\n\t" "pop %%rbp\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x1111, %%rbx\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x2222, %%rdx\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x3333, %%rsi\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x4444, %%rdi\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x5555, %%r8\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x6666, %%r9\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x7777, %%r10\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x8888, %%r12\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0x9999, %%r13\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0xaaaa, %%r14\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "cmp $0xbbbb, %%r15\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "mov $0x5a5a5a5a5a5a5a5a, %%rax\n\t"
        "mov $16, %%edx\n\t"
        "3: cmp %%rax, -8(%%rsp,%%rdx,8)\n\t" "setne %%cl\n\t" "add %%rcx, %[bad]\n\t"
        "sub $1, %%edx\n\t" "jnz 3b\n\t"
        "add $256, %%rsp\n\t"
        : [bad] "+m"(bad), [rc] "=m"(rcx_seen), [er] "=m"(expected_rip),
          [fb] "=m"(flags_before), [fa] "=m"(flags_after), [r11] "=m"(r11_seen)
        :
        : "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
          "r13", "r14", "r15", "memory", "cc");
    const uint64_t arithmetic = 0x8d5;   /* CF PF AF ZF SF OF */
    printf("registers and red zone intact: %s\n", bad == 0 ? "yes" : "NO");
    printf("rcx is the return address: %s\n", rcx_seen == expected_rip ? "yes" : "no");
    printf("r11 holds the flags: %s\n",
           (r11_seen & arithmetic) == (flags_before & arithmetic) ? "yes" : "no");
    printf("flags preserved: %s\n",
           (flags_after & arithmetic) == (flags_before & arithmetic) ? "yes" : "no");
}

static void files(const char *dir) {
    char path[4096], buffer[64];
    struct stat st;
    snprintf(path, sizeof path, "%s/data", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    report("write", write(fd, "0123456789abcdef", 16));
    report("pwrite", pwrite(fd, "XY", 2, 4));
    report("lseek", lseek(fd, 0, SEEK_SET));
    memset(buffer, 0, sizeof buffer);
    report("read", read(fd, buffer, sizeof buffer));
    printf("content: %s\n", buffer);
    report("pread", pread(fd, buffer, 3, 10));
    printf("pread content: %.3s\n", buffer);
    report("read at end", read(fd, buffer, sizeof buffer));
    report("fstat", fstat(fd, &st));
    printf("size %lld regular %d\n", (long long)st.st_size, S_ISREG(st.st_mode));
    report("stat", stat(path, &st));
    report("lstat", lstat(path, &st));
    report("fstatat", fstatat(AT_FDCWD, path, &st, 0));
    report("stat missing", stat("/nonexistent/kvmdune", &st));
    report("access", access(path, R_OK | W_OK));
    report("access missing", access("/nonexistent/kvmdune", F_OK));
    report("fsync", fsync(fd));
    int copy = dup(fd);
    report("pread on a dup", pread(copy, buffer, 2, 0));
    close(copy);
    report("read closed", read(copy, buffer, 1));
    report("read bad fd", read(-5, buffer, 1));
    report("read fd 5000", read(5000, buffer, 1));

    /* Buffers the guest may not use: EFAULT, nothing done. */
    char *page = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(page + 4096, 4096);
    lseek(fd, 0, SEEK_SET);
    report("read into unmapped", read(fd, page + 4096, 16));
    report("lseek after EFAULT", lseek(fd, 0, SEEK_CUR));
    mprotect(page, 4096, PROT_READ);
    report("read into read-only", read(fd, page, 4));
    report("write from read-only", write(fd, page, 4));
    report("fstat to read-only", fstat(fd, (struct stat *)page));
    report("stat of a NULL path", syscall(SYS_stat, NULL, &st));
    report("stat of an unmapped path", syscall(SYS_stat, page + 4096, &st));
    close(fd);

    /* A directory listing. */
    for (int i = 0; i < 40; i++) {
        snprintf(path, sizeof path, "%s/entry-%02d", dir, i);
        close(open(path, O_CREAT | O_WRONLY, 0600));
    }
    DIR *d = opendir(dir);
    int entries = 0;
    while (readdir(d) != NULL)
        entries++;
    closedir(d);
    printf("directory entries: %d\n", entries);
}

static void handed_back(void) {
    struct stat st, self;
    char buffer[8];
    int pipe_fds[2];
    report("stat /proc/self/exe", stat("/proc/self/exe", &self));
    report("stat /proc/self/fd/1 works", stat("/proc/self/fd/1", &st));
    report("stat /dev/null", stat("/dev/null", &st));
    printf("/dev/null is a character device: %d\n", S_ISCHR(st.st_mode));
    report("pipe", pipe(pipe_fds));
    report("write to a pipe", write(pipe_fds[1], "pipe", 4));
    report("read from a pipe", read(pipe_fds[0], buffer, sizeof buffer));
    int null = open("/dev/null", O_WRONLY);
    report("write to /dev/null", write(null, "x", 1));
    int zero = open("/dev/zero", O_RDONLY);
    report("read /dev/zero", read(zero, buffer, sizeof buffer));
    printf("zeros: %d\n", buffer[0] == 0 && buffer[7] == 0);
}

static volatile sig_atomic_t alarms;
static void on_alarm(int signo) { (void)signo; alarms++; }

static void signals_during_fast_calls(void) {
    struct sigaction action = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &action, NULL);
    struct itimerval every_ms = {{0, 1000}, {0, 1000}}, off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &every_ms, NULL);
    time_t start = time(NULL);
    long calls = 0;
    while (alarms < 5 && time(NULL) - start < 20) {
        getppid();
        calls++;
    }
    setitimer(ITIMER_REAL, &off, NULL);
    printf("alarms delivered during getppid calls: %s\n", alarms >= 5 ? "yes" : "no");

}

static void clocks(void) {
    struct timespec a, b, real;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    clock_gettime(CLOCK_REALTIME, &real);
    printf("monotonic: %d\n", b.tv_sec > a.tv_sec || (b.tv_sec == a.tv_sec && b.tv_nsec >= a.tv_nsec));
    printf("time agrees with the realtime clock: %d\n", labs(time(NULL) - real.tv_sec) <= 1);
    report("clock_gettime to NULL", syscall(SYS_clock_gettime, CLOCK_MONOTONIC, NULL));
    report("thread CPU clock", clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a) == 0 ? 0 : -1);
}

int main(int argc, char **argv) {
    char dir[] = "/tmp/kvmdune-fastcalls-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 1;
    setvbuf(stdout, NULL, _IONBF, 0);
    registers_and_red_zone();
    files(dir);
    handed_back();
    clocks();
    signals_during_fast_calls();
    char command[4200];
    (void)argc; (void)argv;
    /* Clean up without exec (rm -r): unlink what we made. */
    DIR *d = opendir(dir);
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        snprintf(command, sizeof command, "%s/%s", dir, entry->d_name);
        unlink(command);
    }
    closedir(d);
    rmdir(dir);
    return 0;
}
