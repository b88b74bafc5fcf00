/* The containment corpus: one program, one attack per case name. Each case tries to
 * reach beyond what the sandbox allows and prints one line:
 *   "contained: <how>"  (denied or faulted; exit 0)
 *   "ESCAPED: <what>"   (the attack worked; exit 1)
 * Run natively, many cases would escape: that is the point of running them under
 * `kvmdune sandbox`. Arguments after the case name are case-specific. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Per thread: a fault in one thread returns to that thread's own jump point. */
static __thread sigjmp_buf fault_jump;
static volatile int fault_signal;

static void on_fault(int signo) { fault_signal = signo; siglongjmp(fault_jump, 1); }

static int contained(const char *how) { printf("contained: %s\n", how); return 0; }
static int escaped(const char *what) { printf("ESCAPED: %s\n", what); return 1; }

static void catch_faults(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_fault;
    sa.sa_flags = SA_NODEFER;
    int faults[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS};
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) sigaction(faults[i], &sa, NULL);
}

/* Can the guest itself read this address? (Then a syscall reading it is no escape.) */
static int guest_can_read(uintptr_t address) {
    if (sigsetjmp(fault_jump, 1)) return 0;
    volatile char c = *(volatile char *)address;
    (void)c;
    return 1;
}

/* Runs `code` bytes of machine code; contained when it faults. */
static int run_code(const unsigned char *code, size_t size, const char *what) {
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memcpy(page, code, size);
    if (sigsetjmp(fault_jump, 1)) {
        char how[96];
        snprintf(how, sizeof how, "%s faulted with signal %d", what, fault_signal);
        return contained(how);
    }
    ((void (*)(void))page)();
    return escaped(what);
}

/* The call stub and ring the fast path maps below the last user page: the stub can
 * be neither written nor remapped, garbage in the ring changes nothing but the
 * guest's own calls, and a jump to the VMM's wait target with a return address in
 * the supervisor half faults. (With the fast path off the pages are not there.) */
#define CALL_STUB 0x7fffffffd000UL
#define CALL_RING 0x7fffffffe000UL
#define CALL_WAIT_TARGET 0xffffffff80000800UL
static int call_ring(void) {
    volatile unsigned char *stub = (volatile unsigned char *)CALL_STUB;
    if (!sigsetjmp(fault_jump, 1)) {
        stub[0] = 0xc3;
        return escaped("wrote the call stub");
    }
    if (mprotect((void *)CALL_STUB, 4096, PROT_READ | PROT_WRITE | PROT_EXEC) == 0)
        return escaped("made the call stub writable");
    if (mmap((void *)CALL_STUB, 8192, PROT_READ | PROT_WRITE | PROT_EXEC,
             MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED)
        return escaped("mapped over the call stub");
    munmap((void *)CALL_STUB, 8192);
    if (guest_can_read(CALL_RING) && !sigsetjmp(fault_jump, 1))
        for (int i = 0; i < 512; i++)
            ((volatile uint64_t *)CALL_RING)[i] = 0xdeadbeefdeadbeefULL * (uint64_t)(i + 1);
    pid_t parent = getppid();
    for (int i = 0; i < 1000; i++)
        if (getppid() != parent)
            return escaped("system calls answered wrongly after the ring was scribbled");
    /* mov rcx, 0xffffffff80000000 ; mov rax, CALL_WAIT_TARGET ; jmp rax */
    static const unsigned char code[] = {0x48, 0xc7, 0xc1, 0x00, 0x00, 0x00, 0x80,
                                         0x48, 0xc7, 0xc0, 0x00, 0x08, 0x00, 0x80, 0xff, 0xe0};
    return run_code(code, sizeof code, "the call stub's wait exit to a supervisor address");
}

static int vmm_pointers(int argc, char **argv) {
    int null = open("/dev/null", O_WRONLY);
    int zero = open("/dev/zero", O_RDONLY);
    for (int i = 0; i < argc; i++) {
        uintptr_t address = strtoull(argv[i], NULL, 0);
        if (guest_can_read(address)) continue;     /* the guest's own memory there */
        if (write(null, (void *)address, 64) >= 0) return escaped("write() read VMM memory");
        if (read(zero, (void *)address, 64) >= 0) return escaped("read() wrote VMM memory");
        struct iovec iov = {(void *)address, 64};
        if (readv(zero, &iov, 1) >= 0) return escaped("readv() wrote VMM memory");
        if (pread(zero, (void *)address, 64, 0) >= 0) return escaped("pread() wrote VMM memory");
        struct stat st;
        if (stat((const char *)address, &st) == 0) return escaped("stat() read a VMM path");
        if (syscall(SYS_getdents64, zero, (void *)address, 64) >= 0)
            return escaped("getdents64() wrote VMM memory");
        int pair[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM, 0, pair) == 0) {
            send(pair[0], "x", 1, 0);
            struct iovec riov = {(void *)address, 64};
            struct msghdr msg = {.msg_iov = &riov, .msg_iovlen = 1};
            if (recvmsg(pair[1], &msg, MSG_DONTWAIT) >= 0) return escaped("recvmsg() wrote VMM memory");
            close(pair[0]); close(pair[1]);
        }
    }
    return contained("every VMM address gave EFAULT");
}

static int bad_addresses(void) {
    uintptr_t addresses[] = {0xffff800000000000ull, 0xffffffff80000000ull,
                             0x0000800000000000ull, 0x8000000000000000ull, 8};
    int null = open("/dev/null", O_WRONLY), zero = open("/dev/zero", O_RDONLY);
    for (size_t i = 0; i < sizeof addresses / sizeof *addresses; i++) {
        if (write(null, (void *)addresses[i], 16) >= 0) return escaped("kernel/non-canonical read");
        if (read(zero, (void *)addresses[i], 16) >= 0) return escaped("kernel/non-canonical write");
    }
    char *page = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(page + 4096, 4096);
    /* Linux fills what is mapped (96 bytes) and stops at the hole, as kvmdune must. */
    if (read(zero, page + 4000, 200) > 96) return escaped("read past the end of a mapping");
    if (read(zero, page, SIZE_MAX) >= 0) return escaped("read with an overflowing length");
    struct iovec iov[2] = {{page, 16}, {(void *)0x10, SIZE_MAX / 2}};
    if (readv(zero, iov, 2) >= 0) return escaped("readv with an overflowing iovec");
    return contained("EFAULT/EINVAL for every bad pointer and length");
}

static int descriptors(void) {
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        if (fstat(fd, &st) == 0) {
            char what[64];
            snprintf(what, sizeof what, "descriptor %d is open", fd);
            return escaped(what);
        }
    }
    return contained("descriptors 3..1023 are all closed");
}

static int path_escape(const char *path, const char *what) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) { char buf[8]; if (read(fd, buf, sizeof buf) >= 0) return escaped(what); }
    return contained(what);
}

static int symlink_swap(const char *allowed, const char *secret) {
    char link[4096], benign[4096];
    snprintf(link, sizeof link, "%s/swap-link", allowed);
    snprintf(benign, sizeof benign, "%s/benign", allowed);
    close(open(benign, O_CREAT | O_WRONLY, 0644));
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < 4000; i++) {
            unlink(link); symlink(benign, link);
            unlink(link); symlink(secret, link);
        }
        _exit(0);
    }
    int leaked = 0;
    for (int i = 0; i < 2000 && !leaked; i++) {
        int fd = open(link, O_RDONLY);
        if (fd >= 0) {
            char buf[64] = {0};
            if (read(fd, buf, sizeof buf - 1) > 0 && strstr(buf, "secret")) leaked = 1;
            close(fd);
        }
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return leaked ? escaped("read the secret through a swapped symlink")
                  : contained("no open through the swapped symlink reached the secret");
}

/* unlink() through a parent directory swapped between a real directory and a symlink
 * to the outside directory holding the victim. */
static int unlink_swap(const char *allowed, const char *outside) {
    char swap[4096], real[4096], victim[4096];
    snprintf(swap, sizeof swap, "%s/swapdir", allowed);
    snprintf(real, sizeof real, "%s/realdir", allowed);
    snprintf(victim, sizeof victim, "%s/swapdir/victim", allowed);
    mkdir(real, 0777);
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < 4000; i++) {
            unlink(swap); symlink(real, swap);
            unlink(swap); symlink(outside, swap);
        }
        _exit(0);
    }
    for (int i = 0; i < 2000; i++) unlink(victim);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return contained("unlink attempts through a swapped directory (the harness checks the victim)");
}

/* A thread bomb: threads until the process limit refuses one (every thread is a
 * host thread of the VMM, counted against RLIMIT_NPROC like a process). */
static void *sleep_forever(void *arg) { for (;;) pause(); return NULL; }
static int thread_bomb(void) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < 100000; i++) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, sleep_forever, NULL) != 0)
            return contained("thread creation refused at the process limit");
    }
    return escaped("started 100000 threads");
}

/* One thread unmaps memory the others are using: the one touching it in a loop
 * must fault at once (not go on through a stale translation, and never see what the
 * freed frames hold next: the main thread fills new mappings with a secret, while
 * the old range stays reserved, unusable); one
 * blocked in read() into it gets EFAULT; one asleep in a futex wait on a word in it
 * stays harmless. */
#define AREA_SIZE (1 << 20)
#define SECRET_WORD 0x5ec12e75ec12e7ULL
static volatile int toucher_state;      /* 1 running, 2 faulted, 3 saw the secret */
static int unmap_pipe[2];
static volatile long reader_result, reader_errno;

static void *toucher(void *arg) {
    volatile uint64_t *word = arg;
    if (sigsetjmp(fault_jump, 1)) { toucher_state = 2; return NULL; }
    for (;;) {
        uint64_t value = word[0];
        if (value == SECRET_WORD) { toucher_state = 3; return NULL; }
        word[1] = value + 1;
        toucher_state = 1;
    }
}

static void *blocked_reader(void *arg) {
    reader_result = read(unmap_pipe[0], arg, 4096);
    reader_errno = errno;
    return NULL;
}

static void *futex_sleeper(void *arg) {
    syscall(SYS_futex, arg, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    return NULL;
}

static int unmap_under_thread(void) {
    char *area = mmap(NULL, AREA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(area, 0, AREA_SIZE);
    pipe(unmap_pipe);
    pthread_t threads[3];
    pthread_create(&threads[0], NULL, toucher, area);
    pthread_create(&threads[1], NULL, blocked_reader, area + 4096);
    pthread_create(&threads[2], NULL, futex_sleeper, area + 8192);
    while (toucher_state == 0) sched_yield();
    usleep(50000);
    munmap(area, AREA_SIZE);
    /* Kept unusable, so the new mappings land elsewhere (on frames just freed). */
    mmap(area, AREA_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    for (int i = 0; i < 64 && toucher_state == 1; i++) {
        uint64_t *fresh = mmap(NULL, AREA_SIZE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (size_t j = 0; j < AREA_SIZE / 8; j++) fresh[j] = SECRET_WORD;
    }
    for (int i = 0; i < 1000 && toucher_state == 1; i++) usleep(10000);
    if (toucher_state == 3) return escaped("a thread read new memory through an unmapped address");
    if (toucher_state != 2) return escaped("a thread kept using memory unmapped under it");
    write(unmap_pipe[1], "data", 4);
    pthread_join(threads[1], NULL);
    if (reader_result != -1 || reader_errno != EFAULT)
        return escaped("a read into unmapped memory did not fail with EFAULT");
    return contained("the thread using it faulted at once, a read into it got EFAULT");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: hostile CASE [ARGS]\n"); return 2; }
    const char *c = argv[1];
    catch_faults();
    if (!strcmp(c, "vmm-pointers")) return vmm_pointers(argc - 2, argv + 2);
    if (!strcmp(c, "bad-addresses")) return bad_addresses();
    if (!strcmp(c, "descriptors")) return descriptors();
    if (!strcmp(c, "int80")) { static const unsigned char code[] = {0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3}; return run_code(code, sizeof code, "int 0x80"); }
    if (!strcmp(c, "sysenter")) { static const unsigned char code[] = {0x0f, 0x34, 0xc3}; return run_code(code, sizeof code, "sysenter"); }
    if (!strcmp(c, "vsyscall")) { static const unsigned char code[] = {0x48, 0xc7, 0xc0, 0x00, 0x00, 0x60, 0xff, 0xff, 0xd0, 0xc3}; return run_code(code, sizeof code, "call into the vsyscall page"); }
    if (!strcmp(c, "far-jump-32")) { static const unsigned char code[] = {0x6a, 0x23, 0x68, 0, 0x10, 0, 0, 0x48, 0xcb}; return run_code(code, sizeof code, "far return to a 32-bit segment"); }
    if (!strcmp(c, "privileged")) { static const unsigned char code[] = {0xfa, 0xf4, 0xc3}; return run_code(code, sizeof code, "cli; hlt"); }
    if (!strcmp(c, "write-trampoline")) { static const unsigned char code[] = {0x48, 0xb8, 0, 0, 0, 0x80, 0xff, 0xff, 0xff, 0xff, 0xc6, 0x00, 0xc3, 0xc3}; return run_code(code, sizeof code, "write to the trampoline"); }
    if (!strcmp(c, "write-gdt")) { static const unsigned char code[] = {0x48, 0xb8, 0, 0, 1, 0x80, 0xff, 0xff, 0xff, 0xff, 0xc6, 0x00, 0xc3, 0xc3}; return run_code(code, sizeof code, "write to the GDT"); }
    if (!strcmp(c, "call-ring")) return call_ring();
    if (!strcmp(c, "write-idt")) { static const unsigned char code[] = {0x48, 0xb8, 0, 0x20, 1, 0x80, 0xff, 0xff, 0xff, 0xff, 0xc6, 0x00, 0xc3, 0xc3}; return run_code(code, sizeof code, "write to the IDT"); }
    if (!strcmp(c, "self-modifying")) {
        volatile unsigned char *code = (unsigned char *)&main;
        if (sigsetjmp(fault_jump, 1)) return contained("writing its own code faulted");
        code[0] = code[0];
        return escaped("wrote to its read-only code");
    }
    if (!strcmp(c, "kill-parent")) return kill(getppid(), SIGKILL) == 0 ? escaped("killed its parent") : contained("kill(getppid()) denied");
    if (!strcmp(c, "kill-all")) return kill(-1, SIGKILL) == 0 ? escaped("kill(-1) succeeded") : contained("kill(-1) denied");
    if (!strcmp(c, "stop-group")) return kill(0, SIGSTOP) == 0 ? escaped("stopped its group") : contained("kill(0, SIGSTOP) denied");
    if (!strcmp(c, "ptrace")) return ptrace(PTRACE_TRACEME, 0, 0, 0) == 0 ? escaped("PTRACE_TRACEME succeeded") : contained("ptrace refused");
    if (!strcmp(c, "prctl")) return prctl(PR_SET_DUMPABLE, 1) == 0 ? escaped("made the VMM dumpable") : contained("prctl refused");
    if (!strcmp(c, "seccomp")) return syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL) == 0 ? escaped("seccomp applied to the VMM") : contained("seccomp refused");
    if (!strcmp(c, "path")) return path_escape(argv[2], argv[3]);
    if (!strcmp(c, "symlink-swap")) return symlink_swap(argv[2], argv[3]);
    if (!strcmp(c, "unlink-swap")) return unlink_swap(argv[2], argv[3]);
    if (!strcmp(c, "vmm-descriptor-paths")) {
        for (int fd = 3; fd < 64; fd++) {
            char path[64];
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            if (open(path, O_RDONLY) >= 0) return escaped("reopened a VMM descriptor through /proc/self/fd");
        }
        return contained("/proc/self/fd/3..63 name nothing the guest does not own");
    }
    if (!strcmp(c, "hardlink")) { char to[4096]; snprintf(to, sizeof to, "%s/hard", argv[2]); return link(argv[3], to) == 0 ? escaped("hard-linked the secret in") : contained("link refused"); }
    if (!strcmp(c, "rename-out")) { char from[4096], to[4096]; snprintf(from, sizeof from, "%s/data.txt", argv[2]); snprintf(to, sizeof to, "%s/moved-out", argv[3]); return rename(from, to) == 0 ? escaped("renamed a file out") : contained("rename out refused"); }
    if (!strcmp(c, "openat-dotdot")) { int dir = open(argv[2], O_RDONLY | O_DIRECTORY); int fd = openat(dir, argv[3], O_RDONLY); return fd >= 0 ? escaped("openat from an allowed directory with ..") : contained("openat with .. refused"); }
    if (!strcmp(c, "fork-bomb")) {
        for (int i = 0; i < 100000; i++) {
            pid_t pid = fork();
            if (pid == 0) { pause(); _exit(0); }
            if (pid < 0) return contained("fork refused at the process limit");
        }
        return escaped("forked 100000 processes");
    }
    if (!strcmp(c, "thread-bomb")) return thread_bomb();
    if (!strcmp(c, "unmap-under-thread")) return unmap_under_thread();
    if (!strcmp(c, "memory-bomb")) {
        char *p = mmap(NULL, 1ull << 40, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return contained("1 TiB mapping refused");
        for (uint64_t off = 0; off < (1ull << 40); off += 4096) p[off] = 1;
        return escaped("touched 1 TiB");
    }
    if (!strcmp(c, "cpu-loop")) { signal(SIGXCPU, SIG_DFL); for (volatile unsigned long i = 0;; i++) {} }
    if (!strcmp(c, "disk-fill")) {
        signal(SIGXFSZ, SIG_IGN);   /* EFBIG instead of the signal, as a careful program would */
        int fd = open(argv[2], O_CREAT | O_WRONLY | O_TRUNC, 0644);
        static char block[1 << 16];
        for (long total = 0; total < (1L << 31); total += sizeof block)
            if (write(fd, block, sizeof block) < 0) return contained("write refused at the file-size limit");
        return escaped("wrote 2 GiB");
    }
    if (!strcmp(c, "huge-args")) {
        size_t size = 64 << 20;
        char *big = malloc(size + 1);
        memset(big, 'a', size); big[size] = 0;
        char *args[] = {"/bin/true", big, NULL};
        execve("/bin/true", args, NULL);
        return errno == E2BIG ? contained("execve with 64 MiB of arguments: E2BIG") : escaped("huge argv accepted");
    }
    fprintf(stderr, "unknown case %s\n", c);
    return 2;
}
