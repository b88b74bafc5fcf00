/* Hostile-argument fuzz of every x86-64 system-call number.
 *
 * For each number 0..FUZZ_LAST_NUMBER, a few numbers past the table, the x32
 * range, numbers with the x32 bit (0x40000000) and absurd numbers, this makes a
 * series of calls with argument vectors drawn from a fixed set of hostile
 * values: NULL, tiny and unaligned addresses, kernel-half and non-canonical
 * addresses, a read-only page, a pointer straddling its end, the unmapped page
 * past it, a writable page of garbage (and its last bytes), huge lengths, -1, small integers and closed descriptors.  Each value
 * is tried in every argument position (the others zero), then seeded random
 * vectors mix them.  The result of each call is ignored: the point is that the
 * program reaches its end (the VMM serving it must neither die nor wedge).
 *
 * Nothing here may end, block or lastingly change the process or the machine,
 * natively or under kvmdune (where calls reach the host as the unprivileged
 * user running it).  So:
 *   - what a pointer points at is garbage that cannot make a call act: the
 *     read-only page and the writable scratch page hold 0xa5 bytes (every
 *     pointer inside is non-canonical, every string runs into an unmapped page,
 *     every timespec and size is invalid, and no futex word equals any value
 *     tried); the scratch page is refilled before every call, and an unmapped
 *     page follows it, so the kernel can write nowhere else;
 *   - descriptors 0, 1 and 2 are /dev/null, reset after every call that
 *     succeeded (together with closing whatever a call opened), so no call can
 *     block on them, print, or damage a real file; the program's own output
 *     goes to a descriptor no value names;
 *   - calls listed in skip_reason() are not made at all, and adjust() pins the
 *     arguments of the rest where a hostile value would end, block or change
 *     the process or the machine (each case says why).
 *
 * Usage: syscall_fuzz [-v] [-x NR]... [SEED].  -v prints each call before it is
 * made (to find the one that kills a VMM); -x leaves number NR out (to look
 * past a known failure).  The last line is "fuzz: done ...".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FUZZ_LAST_NUMBER 479    /* past the last call of Linux 6.18 (469) */
#define X32_BIT 0x40000000L
#define OUT_FD 777              /* the program's own stdout: no hostile value names it */
#define NULL_FD 778             /* the /dev/null that 0, 1 and 2 are reset to */
#define RESET_EVERY 64
#define RANDOM_VECTORS 32
#define X32_RANDOM_VECTORS 8
/* Larger than PID_MAX_LIMIT (4194304): names no process. */
#define INVALID_PID 0x3ffffff0L

#define PAGE 4096UL

static unsigned long page;      /* read-only, 0xa5 bytes, the next page unmapped */
static unsigned long scratch;   /* writable, 0xa5 bytes again before every call,
                                   the next page unmapped */
static unsigned long values[32];
static int nvalues;
static int just_closed_fd;
static int verbose;
static unsigned long long rng_state;
static unsigned long calls, successes, skipped;
static long excluded[64];
static int nexcluded;

static unsigned long rng(void)
{
    /* xorshift64*: deterministic for a seed, the same natively and in the VM. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (unsigned long)(rng_state * 2685821657736338717ULL);
}

static void say(const char *text)
{
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(OUT_FD, text, len);
        if (n <= 0)
            return;
        text += n;
        len -= (size_t)n;
    }
}

static int is_readable(unsigned long value)
{
    return (value >= page && value < page + PAGE) ||
           (value >= scratch && value < scratch + PAGE);
}

/* Not a userspace address the program owns or could own: NULL excluded too. */
static unsigned long unusable_address(unsigned long value)
{
    if (value == 0 || is_readable(value) || value == page + PAGE || value == scratch + PAGE)
        return 8;
    return value;
}

/* The number as the kernel reads it (the low 32 bits), less the x32 bit: the
 * same rules hold for the x32 entry of a call. */
static long number_key(long nr)
{
    return (long)((unsigned int)nr & ~(unsigned int)X32_BIT);
}

/* Why a number is never called (NULL: it is called). */
static const char *skip_reason(long nr)
{
    switch (nr) {
    case SYS_exit: case SYS_exit_group:
        return "ends the process";
    case SYS_rt_sigreturn:
        return "restores registers from the stack: ends the process";
    case SYS_pause:
        return "blocks until a signal (no pointer to make hostile)";
    case SYS_fork: case SYS_vfork:
        return "makes a process (no pointer: clone with hostile pointers is fuzzed)";
    case SYS_clone:
        return "makes a process: fuzz_clone() gives it hostile pointers only";
    case SYS_alarm:
        return "SIGALRM would end the process (no pointer)";
    case SYS_setuid: case SYS_setgid: case SYS_setreuid: case SYS_setregid:
    case SYS_setresuid: case SYS_setresgid: case SYS_setfsuid: case SYS_setfsgid:
    case SYS_setgroups: case SYS_setsid: case SYS_setpgid:
        return "set*id: changes the process's identity";
    case SYS_personality:
        return "changes the process's ABI (no pointer)";
    case SYS_unshare:
        return "changes the process's namespaces (no pointer)";
    case SYS_setpriority: case SYS_ioprio_set:
        return "acts on other processes of the same user (no pointer)";
    case SYS_iopl: case SYS_ioperm:
        return "changes the process's I/O privilege (no pointer)";
    case SYS_vhangup:
        return "hangs up the terminal (no pointer)";
    case SYS_close_range:
        return "would close the program's own output (no pointer)";
    case SYS_shmget: case SYS_msgget: case SYS_semget:
        return "System V objects outlive the process (no pointer)";
    case 335:   /* uretprobe (6.11+) */
        return "outside a uretprobe trampoline it raises SIGILL";
    case 336:   /* uprobe (6.14+) */
        return "outside a uprobe trampoline it raises SIGILL";
    case 513:   /* x32 rt_sigreturn */
        return "x32 rt_sigreturn: restores registers from the stack";
    }
    return NULL;
}

/* Pins the arguments a hostile value must not take; 0 to skip this vector. */
static int adjust(long nr, unsigned long *a)
{
    int i;

    switch (number_key(nr)) {
    /* Signals: only at a pid no process has (never 0 or -1: kill(-1) kills
     * everything the user owns). */
    case SYS_kill: case SYS_tkill:
        a[0] = INVALID_PID;
        break;
    case SYS_tgkill:
        a[0] = a[1] = INVALID_PID;
        break;
    case SYS_rt_sigqueueinfo: case 524:
        a[0] = INVALID_PID;
        break;
    case SYS_rt_tgsigqueueinfo: case 536:
        a[0] = a[1] = INVALID_PID;
        break;
    case SYS_ptrace: case 521:
        if ((unsigned)a[0] == 0)            /* PTRACE_TRACEME ignores the pid */
            a[0] = 0xfff;
        a[1] = INVALID_PID;
        break;
    case SYS_kcmp:
        a[0] = a[1] = INVALID_PID;
        break;
    case SYS_process_vm_readv: case SYS_process_vm_writev: case 539: case 540:
        a[0] = INVALID_PID;
        break;
    /* Scheduling and limits of other processes: only the caller's own. */
    case SYS_sched_setaffinity: case SYS_sched_setparam: case SYS_sched_setscheduler:
    case SYS_sched_setattr: case SYS_prlimit64: case SYS_migrate_pages:
    case SYS_move_pages: case 533:
        a[0] = 0;
        break;
    /* Blocking calls: never without a timeout, never waiting. */
    case SYS_poll:
        a[2] = 0;
        break;
    case SYS_epoll_wait: case SYS_epoll_pwait:
        a[3] = 0;
        break;
    case SYS_select: case SYS_pselect6:
        if (a[4] == 0) a[4] = 8;            /* NULL timeout: forever */
        break;
    case SYS_ppoll:
        if (a[2] == 0) a[2] = 8;
        break;
    case SYS_epoll_pwait2:
        if (a[4] == 0) a[4] = 8;
        break;
    case SYS_rt_sigtimedwait: case 523:
        if (a[2] == 0) a[2] = 8;
        break;
    case SYS_rt_sigsuspend:
        a[0] = unusable_address(a[0]);      /* a readable mask would suspend */
        break;
    case SYS_futex:
        if (a[3] == 0) a[3] = 8;            /* the wait ops' timeout */
        break;
    case SYS_futex_waitv:
        if (a[3] == 0) a[3] = 8;
        break;
    case 455:   /* futex_wait(uaddr, val, mask, flags, timeout, clockid) */
        if (a[4] == 0) a[4] = 8;
        break;
    case SYS_io_getevents:
        if (a[4] == 0) a[4] = 8;
        break;
    case SYS_io_pgetevents:
        if (a[4] == 0) a[4] = 8;
        break;
    case SYS_semtimedop:
        if (a[3] == 0) a[3] = 8;
        break;
    case SYS_mq_timedsend: case SYS_mq_timedreceive:
        if (a[4] == 0) a[4] = 8;
        break;
    case SYS_recvmmsg: case 537:
        if (a[4] == 0) a[4] = 8;
        break;
    case SYS_wait4:
        a[2] |= 1;                          /* WNOHANG */
        break;
    case SYS_waitid: case 529:
        a[3] |= 1;                          /* WNOHANG */
        break;
    case SYS_msgrcv:
        a[4] |= 04000;                      /* IPC_NOWAIT */
        break;
    case SYS_msgsnd:
        a[3] |= 04000;
        break;
    case SYS_flock:
        a[1] |= 4;                          /* LOCK_NB: never wait for /dev/null */
        break;
    case SYS_fcntl:
        if ((unsigned)a[1] == 7 || (unsigned)a[1] == 38)   /* F_SETLKW, F_OFD_SETLKW */
            a[1] -= 1;
        break;
    case SYS_syslog:
        if ((int)a[0] == 2)                 /* SYSLOG_ACTION_READ waits for news */
            a[0] = 3;
        break;
    /* System V objects of other processes of the same user: never removed or set. */
    case SYS_shmctl: case SYS_msgctl:
        if ((a[1] & 0xff) <= 1)             /* IPC_RMID, IPC_SET */
            a[1] = 2;                       /* IPC_STAT */
        break;
    case SYS_semctl:
        if ((a[2] & 0xff) <= 1 || (a[2] & 0xff) == 16 || (a[2] & 0xff) == 17)
            a[2] = 2;                       /* not IPC_RMID/IPC_SET/SETVAL/SETALL */
        break;
    /* The process's own fate. */
    case SYS_seccomp:
        if ((unsigned)a[0] == 0)            /* SECCOMP_SET_MODE_STRICT */
            a[0] = 0xfff;
        break;
    case SYS_prctl:
        switch ((unsigned)a[0]) {
        case 22: case 38: case 59:  /* PR_SET_SECCOMP, NO_NEW_PRIVS, SYSCALL_USER_DISPATCH */
            a[0] = 0xfff;
        }
        break;
    case SYS_arch_prctl:
        switch ((unsigned)a[0]) {
        case 0x1001: case 0x1002: case 0x1012:      /* SET_GS, SET_FS, SET_CPUID */
        case 0x2001: case 0x2002: case 0x2003:      /* MAP_VDSO_* */
        case 0x4002: case 0x5002: case 0x5003:      /* LAM, shadow stack */
            a[0] = 0x1003;                          /* ARCH_GET_FS */
        }
        break;
    case SYS_execve: case 520:
        break;                              /* paths never valid: see the page */
    case SYS_execveat: case 545:
        a[4] &= ~0x1000UL;                  /* AT_EMPTY_PATH would run the descriptor */
        break;
    case SYS_utimensat: case SYS_futimesat:
        if (a[1] == 0) a[1] = 8;            /* NULL path: the times of /dev/null */
        break;
    /* Memory of the program itself: only addresses it does not own. */
    case SYS_munmap: case SYS_mprotect: case SYS_madvise: case SYS_msync:
    case SYS_mlock: case SYS_munlock: case SYS_mlock2: case SYS_remap_file_pages:
    case SYS_mbind: case SYS_pkey_mprotect: case SYS_shmdt: case 450: case 462:
        /* 450 set_mempolicy_home_node, 462 mseal */
        a[0] = unusable_address(a[0]);
        break;
    case SYS_mremap:
        a[0] = unusable_address(a[0]);
        a[4] = unusable_address(a[4]);
        break;
    case SYS_mmap: case SYS_brk: case 453:  /* 453 map_shadow_stack */
        if (a[0] != 0) a[0] = unusable_address(a[0]);
        break;
    case SYS_shmat:
        if (a[1] != 0) a[1] = unusable_address(a[1]);
        break;
    /* The machine: integers pinned to 0 (no magic, no command that acts),
     * pointers only where nothing can be read. */
    case SYS_reboot: case SYS_sethostname: case SYS_setdomainname:
    case SYS_settimeofday: case SYS_clock_settime: case SYS_adjtimex:
    case SYS_clock_adjtime: case SYS_swapon: case SYS_swapoff: case SYS_mount:
    case SYS_umount2: case SYS_pivot_root: case SYS_chroot: case SYS_acct:
    case SYS_kexec_load: case SYS_kexec_file_load: case SYS_init_module:
    case SYS_finit_module: case SYS_delete_module: case SYS_quotactl: case 528:
        for (i = 0; i < 6; i++)
            a[i] = a[i] <= 0xfff ? 0 : unusable_address(a[i]);
        break;
    }
    return 1;
}

/* Descriptors back to the start: 0-2 on /dev/null, nothing else open. */
static void reset_descriptors(void)
{
    int fd;

    for (fd = 0; fd < 3; fd++)
        dup2(NULL_FD, fd);
    if (syscall(SYS_close_range, 3, OUT_FD - 1, 0) != 0)
        for (fd = 3; fd < 64; fd++)
            close(fd);
}

static void call(long nr, unsigned long *vector)
{
    unsigned long a[6];
    long result;
    char line[256];

    memcpy(a, vector, sizeof(a));
    if (!adjust(nr, a)) {
        skipped++;
        return;
    }
    if (verbose) {
        snprintf(line, sizeof(line), "call %ld (%#lx, %#lx, %#lx, %#lx, %#lx, %#lx)\n",
                 nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        say(line);
    }
    /* What the kernel wrote there last time (a valid timespec, a futex word
     * equal to a value tried) must not make this call block. */
    memset((void *)scratch, 0xa5, PAGE);
    result = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    calls++;
    if (result >= 0) {
        successes++;
        reset_descriptors();
    } else if (calls % RESET_EVERY == 0) {
        reset_descriptors();
    }
}

/* Each hostile value in each position (when ``positions``), then random vectors. */
static void fuzz_number(long nr, int positions, int random_vectors)
{
    unsigned long a[6];
    int position, i, v;

    if (skip_reason(number_key(nr)) != NULL) {
        skipped++;
        return;
    }
    for (i = 0; i < nexcluded; i++) {
        if (excluded[i] == nr) {
            skipped++;
            return;
        }
    }
    for (position = 0; positions && position < 6; position++) {
        for (v = 0; v < nvalues; v++) {
            memset(a, 0, sizeof(a));
            a[position] = values[v];
            call(nr, a);
        }
    }
    for (i = 0; i < random_vectors; i++) {
        for (position = 0; position < 6; position++)
            a[position] = values[rng() % (unsigned long)nvalues];
        call(nr, a);
    }
}

/* clone(2) as fork with every pointer it takes made hostile in turn: the stack
 * (the child then faults at once on its first return), the parent's and the
 * child's tid words (written by the kernel, and cleared at the child's exit) and
 * the TLS.  The child ends at once; the parent waits for it, so no process
 * outlives its call. */
static void fuzz_clone(void)
{
    const unsigned long flags = 17 /* SIGCHLD */ | 0x00100000 /* CLONE_PARENT_SETTID */
        | 0x01000000 /* CLONE_CHILD_SETTID */ | 0x00200000 /* CLONE_CHILD_CLEARTID */
        | 0x00080000 /* CLONE_SETTLS */;
    int position, v;

    for (position = 1; position <= 4; position++) {
        for (v = 0; v < nvalues; v++) {
            unsigned long a[5] = {flags, 0, 0, 0, 0};
            long child;

            a[position] = values[v];
            memset((void *)scratch, 0xa5, PAGE);
            child = syscall(SYS_clone, a[0], a[1], a[2], a[3], a[4]);
            if (child == 0)
                syscall(SYS_exit_group, 0);     /* no libc: the TLS may be garbage */
            calls++;
            if (child > 0) {
                successes++;
                while (syscall(SYS_wait4, child, 0, 0, 0) < 0 && errno == EINTR)
                    ;
            }
        }
    }
}

static void setup(void)
{
    static const struct rlimit no_core = {0, 0};
    unsigned long base;
    int null_fd, out;

    /* A clone child given a hostile stack dies of SIGSEGV: no core file. */
    setrlimit(RLIMIT_CORE, &no_core);
    out = fcntl(1, F_DUPFD_CLOEXEC, OUT_FD);
    if (out != OUT_FD) {
        fprintf(stderr, "fuzz: cannot keep stdout at %d\n", OUT_FD);
        exit(2);
    }
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0 || dup2(null_fd, NULL_FD) != NULL_FD) {
        fprintf(stderr, "fuzz: cannot open /dev/null: %s\n", strerror(errno));
        exit(2);
    }
    close(null_fd);
    reset_descriptors();
    just_closed_fd = dup(0);
    close(just_closed_fd);

    /* [read-only page][hole][writable page][hole] */
    base = (unsigned long)mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == (unsigned long)MAP_FAILED) {
        say("fuzz: mmap failed\n");
        exit(2);
    }
    memset((void *)base, 0xa5, PAGE);
    if (munmap((void *)(base + PAGE), PAGE) != 0 ||
        munmap((void *)(base + 3 * PAGE), PAGE) != 0 ||
        mprotect((void *)base, PAGE, PROT_READ) != 0) {
        say("fuzz: cannot make the read-only page\n");
        exit(2);
    }
    page = base;
    scratch = base + 2 * PAGE;

    values[nvalues++] = 0;
    values[nvalues++] = 8;
    values[nvalues++] = 0xfff;
    values[nvalues++] = 0xffff800000000000UL;     /* kernel half */
    values[nvalues++] = 0xffffffffffffffffUL;     /* -1 */
    values[nvalues++] = 0x0000800000000000UL;     /* non-canonical, just past the user half */
    values[nvalues++] = 0x8000000000000000UL;     /* non-canonical */
    values[nvalues++] = page;                     /* read-only */
    values[nvalues++] = page + PAGE - 8;          /* 8 readable bytes, then unmapped */
    values[nvalues++] = page + PAGE;              /* just past the end: unmapped */
    values[nvalues++] = scratch;                  /* writable, garbage to read */
    values[nvalues++] = scratch + PAGE - 4;       /* 4 writable bytes, then unmapped */
    values[nvalues++] = 0x7fffffffffffffffUL;     /* huge length */
    values[nvalues++] = 0xffffffffUL;
    values[nvalues++] = 1000;                     /* a descriptor never opened */
    values[nvalues++] = (unsigned long)just_closed_fd;
    values[nvalues++] = 1;
    values[nvalues++] = 2;
    values[nvalues++] = 3;
}

int main(int argc, char **argv)
{
    static const long extra[] = {
        1000, 0x7fff, 0xffff, 0x7fffffffL, 0xffffffffL, 0x100000027L /* getpid + 2^32 */,
        -1L, -2L, (long)0x8000000000000000UL,
    };
    char line[160];
    long nr;
    size_t i;
    int option;

    while ((option = getopt(argc, argv, "vx:")) != -1) {
        if (option == 'v') {
            verbose = 1;
        } else if (option == 'x' && nexcluded < 64) {
            excluded[nexcluded++] = strtol(optarg, NULL, 0);
        } else {
            fprintf(stderr, "usage: %s [-v] [-x NR]... [SEED]\n", argv[0]);
            return 2;
        }
    }
    rng_state = optind < argc ? strtoull(argv[optind], NULL, 0) : 1;
    if (rng_state == 0)
        rng_state = 1;
    setup();

    for (nr = 0; nr <= FUZZ_LAST_NUMBER; nr++)
        fuzz_number(nr, 1, RANDOM_VECTORS);
    for (nr = 512; nr <= 547; nr++)               /* the x32 compat range, no x32 bit */
        fuzz_number(nr, 1, RANDOM_VECTORS);
    /* With the x32 bit (refused where x32 is off, as on Debian's kernels): the
     * number is what is hostile here, so random vectors only. */
    for (nr = 0; nr <= FUZZ_LAST_NUMBER; nr++)
        fuzz_number(X32_BIT | nr, 0, X32_RANDOM_VECTORS);
    for (nr = 512; nr <= 547; nr++)
        fuzz_number(X32_BIT | nr, 0, X32_RANDOM_VECTORS);
    for (i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
        fuzz_number(extra[i], 1, RANDOM_VECTORS);
    fuzz_clone();

    reset_descriptors();
    snprintf(line, sizeof(line), "fuzz: done %lu calls, %lu succeeded, %lu skipped\n",
             calls, successes, skipped);
    say(line);
    return 0;
}
