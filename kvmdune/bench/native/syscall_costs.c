/* Per-call costs for `kvmdune bench sandbox`:
 *   syscall_costs CASE ITERATIONS MODE [PATH]    one call in a loop, timed
 *   syscall_costs exec MODE PROGRAM [ARGS...]    run a program confined by MODE
 * CASE: getppid (no arguments), read-zero (1-byte read of /dev/zero), clock
 * (libc's clock_gettime of CLOCK_MONOTONIC: the vDSO's where there is one), denied
 * (open of PATH, which every confinement refuses), read-file (a 4 KiB pread of the
 * file PATH, a page further each time, the data left alone), read-file-used (the
 * same, then one byte of each cache line read, as a program using the data would). MODE: none | seccomp (a
 * seccomp-bpf filter: openat gets EACCES, the rest is allowed) | seccomp-allow (a
 * filter that allows everything: its evaluation cost alone) | notify (seccomp user
 * notification: getppid, read and openat go to a supervisor process, which reads the
 * path from the caller's memory and answers EACCES for PATH, else lets them continue).
 * The timed form prints {"case", "iterations", "per_call_ns", "errors"}. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* With deny_open, openat gets EACCES (a filter cannot look at the path); without,
 * the filter only costs its evaluation (how a program is confined when seccomp is
 * paired with another mechanism for paths). */
static int install_bpf(int deny_open) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, deny_open ? SYS_openat : 0xFFFF, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof *filter, filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program);
}

/* A listener for getppid, read and openat; returns its descriptor. */
static int install_notify(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_read, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
    };
    struct sock_fprog program = {sizeof filter / sizeof *filter, filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return -1;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &program);
}

static void send_fd(int sock, int fd) {
    char control[CMSG_SPACE(sizeof(int))] = {0};
    char byte = 0;
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    sendmsg(sock, &msg, 0);
}

static int recv_fd(int sock) {
    char control[CMSG_SPACE(sizeof(int))] = {0};
    char byte;
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    if (recvmsg(sock, &msg, 0) <= 0) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof fd);
    return fd;
}

static const char *denied_path = "/root/.kvmdune-denied";

/* The path an openat of process `pid` names (read from its memory). */
static int read_path(pid_t pid, unsigned long address, char *out, size_t size) {
    struct iovec local = {out, size - 1}, remote = {(void *)address, size - 1};
    ssize_t n = syscall(SYS_process_vm_readv, pid, &local, 1, &remote, 1, 0);
    if (n <= 0) return -1;
    out[n] = 0;
    return 0;
}

/* The supervisor: every notified call continues, except openat of the denied path. */
static void supervise(int listener) {
    struct seccomp_notif *request = calloc(1, 4096);
    struct seccomp_notif_resp *response = calloc(1, 4096);
    for (;;) {
        memset(request, 0, sizeof *request);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, request)) {
            if (errno == EINTR) continue;
            return;
        }
        memset(response, 0, sizeof *response);
        response->id = request->id;
        char path[4096];
        if (request->data.nr == SYS_openat
            && (read_path(request->pid, request->data.args[1], path, sizeof path)
                || !strcmp(path, denied_path))) {
            response->error = -EACCES;
        } else {
            response->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        }
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, response);
    }
}

/* Confine the rest of this process by MODE; with notify, a forked supervisor
 * serves the calls until this process exits. */
static int confine(const char *mode) {
    if (!strcmp(mode, "seccomp")) return install_bpf(1);
    if (!strcmp(mode, "seccomp-allow")) return install_bpf(0);
    if (strcmp(mode, "notify")) return 0;
    int pair[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
    pid_t supervisor = fork();
    if (supervisor == 0) {
        close(pair[0]);
        int listener = recv_fd(pair[1]);
        if (listener < 0) _exit(1);
        supervise(listener);
        _exit(0);
    }
    close(pair[1]);
    int listener = install_notify();
    if (listener < 0) { perror("seccomp notify"); return -1; }
    send_fd(pair[0], listener);
    close(listener);
    close(pair[0]);
    return 0;
}

/* read-file's buffer and span: the first pages of PATH, at most FILE_SPAN bytes. */
#define FILE_PAGE 4096
#define FILE_SPAN (16L << 20)
static char file_page[FILE_PAGE] __attribute__((aligned(FILE_PAGE)));
static volatile unsigned char file_sink;

static long read_file_page(int fd, long i, off_t span, int used) {
    if (pread(fd, file_page, FILE_PAGE, (i * FILE_PAGE) % span) != FILE_PAGE)
        return 1;
    if (used) {
        unsigned char sum = 0;
        for (int j = 0; j < FILE_PAGE; j += 64)
            sum += (unsigned char)file_page[j];
        file_sink = sum;
    }
    return 0;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "exec")) {
        if (confine(argv[2])) return 126;
        execv(argv[3], argv + 3);
        perror("execv");
        return 127;
    }
    if (argc < 4) { fprintf(stderr, "usage: syscall_costs CASE ITERATIONS MODE [PATH]\n"); return 2; }
    const char *name = argv[1];
    long iterations = atol(argv[2]);
    if (argc > 4) denied_path = argv[4];
    int zero = open("/dev/zero", O_RDONLY);
    int reads_file = !strncmp(name, "read-file", 9), used = !strcmp(name, "read-file-used");
    int file = reads_file && argc > 4 ? open(argv[4], O_RDONLY) : -1;
    off_t span = file >= 0 ? lseek(file, 0, SEEK_END) / FILE_PAGE * FILE_PAGE : 0;
    if (span > FILE_SPAN) span = FILE_SPAN;
    if (reads_file && span <= 0) { fprintf(stderr, "read-file: PATH must be a file of 4 KiB or more\n"); return 2; }
    if (confine(argv[3])) return 1;
    char byte;
    struct timespec clock_value;
    long errors = 0;
    double start = now_ns();
    for (long i = 0; i < iterations; i++) {
        if (!strcmp(name, "getppid")) syscall(SYS_getppid);
        else if (!strcmp(name, "read-zero")) { if (read(zero, &byte, 1) != 1) errors++; }
        else if (!strcmp(name, "clock")) { if (clock_gettime(CLOCK_MONOTONIC, &clock_value)) errors++; }
        else if (reads_file) errors += read_file_page(file, i, span, used);
        else { int fd = open(denied_path, O_RDONLY); if (fd < 0) errors++; else close(fd); }
    }
    double elapsed = now_ns() - start;
    printf("{\"case\": \"%s\", \"iterations\": %ld, \"per_call_ns\": %.1f, \"errors\": %ld}\n",
           name, iterations, elapsed / iterations, errors);
    return 0;
}
