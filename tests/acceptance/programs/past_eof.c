/* File mappings past the end of their file, as Linux answers them: SIGBUS
 * (BUS_ADRERR, si_addr the address) for the program's own access, EFAULT for a
 * system call's (write(2) from, pread(2) into such a buffer), in private and shared
 * mappings, the file grown after it was mapped; a shared mapping's file truncated
 * after it was mapped (pages touched, written and untouched; then in a forked
 * child). A private mapping's file truncated after it was mapped is left out:
 * kvmdune's private pages are copies, which keep their bytes (Linux takes them
 * away: SIGBUS).
 * With an argument ("shared" or "private"), a read past the end with no handler:
 * death by SIGBUS (status 135). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static sigjmp_buf back;
static volatile int code;
static volatile char *fault_address;
static char *base;
static long page;

static void on_bus(int signo, siginfo_t *info, void *context) {
    code = info->si_code;
    fault_address = info->si_addr;
    siglongjmp(back, 1);
}

static void report_fault(const char *what) {
    printf("%s: SIGBUS code %d at offset %ld\n", what, code, (long)(fault_address - base));
}

static void read_at(const char *what, long offset) {
    if (sigsetjmp(back, 1) == 0) {
        char c = ((volatile char *)base)[offset];
        printf("%s: read %d\n", what, c);
    } else report_fault(what);
}

static void write_at(const char *what, long offset) {
    if (sigsetjmp(back, 1) == 0) {
        ((volatile char *)base)[offset] = 'w';
        printf("%s: wrote\n", what);
    } else report_fault(what);
}

static void syscall_from(const char *what, int sink, long offset) {
    errno = 0;
    long n = write(sink, base + offset, 16);
    printf("%s: write(2) %ld %s\n", what, n, n < 0 ? strerrordesc_np(errno) : "");
}

static void syscall_into(const char *what, int source, long offset) {
    errno = 0;
    long n = pread(source, base + offset, 16, 0);
    printf("%s: pread(2) %ld %s\n", what, n, n < 0 ? strerrordesc_np(errno) : "");
}

static int new_file(long size) {
    char path[] = "/tmp/kvmdune-mapeof-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    if (ftruncate(fd, size) != 0) exit(2);
    pwrite(fd, "hello", 5, 0);
    return fd;
}

static void past_the_end(int kind, int sink, int source) {
    int fd = new_file(5);
    base = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, kind, fd, 0);
    read_at("  last page's tail", 100);
    read_at("  page 1", page + 7);
    write_at("  write page 2", 2 * page + 9);
    syscall_from("  buffer in page 0", sink, 0);
    syscall_from("  buffer across the end", sink, page - 8);
    syscall_from("  buffer past the end", sink, page);
    syscall_into("  read into page 1", source, page);
    ftruncate(fd, 3 * page);
    pwrite(fd, "X", 1, page + 7);
    read_at("  page 1 after growing", page + 7);
    read_at("  page 1 after growing, unwritten", page + 8);
    write_at("  write page 2 after growing", 2 * page + 9);
    read_at("  page 3 after growing", 3 * page);
    char back_in_file = 0;
    pread(fd, &back_in_file, 1, 2 * page + 9);
    printf("  the file at page 2: %d\n", back_in_file);
    munmap(base, 4 * page);
    close(fd);
}

static void truncated_after_mapping(int kind, int sink, int source) {
    int fd = new_file(4 * page);
    base = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, kind, fd, 0);
    read_at("  page 1 touched", page);
    write_at("  page 2 written", 2 * page + 1);
    ftruncate(fd, page);
    read_at("  page 0", 3);
    read_at("  page 1 touched before", page + 5);
    read_at("  page 2 written before", 2 * page + 1);
    read_at("  page 3 untouched", 3 * page + 2);
    syscall_from("  buffer in page 3", sink, 3 * page);
    syscall_from("  buffer across the new end", sink, page - 8);
    syscall_into("  read across the new end", source, page - 8);
    pid_t child = fork();
    if (child == 0) {                  /* the shared file's slot reached in a new VM */
        read_at("  child: page 0", 3);
        read_at("  child: page 3", 3 * page + 2);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    ftruncate(fd, 4 * page);
    read_at("  page 2 after growing again", 2 * page + 1);
    munmap(base, 4 * page);
    close(fd);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    page = sysconf(_SC_PAGESIZE);
    int pipes[2]; pipe2(pipes, O_NONBLOCK); int sink = pipes[1]; fcntl(sink, F_SETPIPE_SZ, 1 << 20);
    int source = open("/dev/zero", O_RDONLY);
    if (argc > 1) {
        int fd = new_file(5);
        base = mmap(NULL, 2 * page, PROT_READ, argv[1][0] == 's' ? MAP_SHARED : MAP_PRIVATE, fd, 0);
        printf("reading past the end\n");
        return ((volatile char *)base)[page];
    }
    struct sigaction action = {.sa_sigaction = on_bus, .sa_flags = SA_SIGINFO};
    sigaction(SIGBUS, &action, NULL);
    printf("private\n");
    past_the_end(MAP_PRIVATE, sink, source);
    printf("shared\n");
    past_the_end(MAP_SHARED, sink, source);
    printf("shared, truncated after mapping\n");
    truncated_after_mapping(MAP_SHARED, sink, source);
    return 0;
}
