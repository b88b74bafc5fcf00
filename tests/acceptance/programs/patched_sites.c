/* Call sites the loader patches (sitepatch.py), checked from inside: registers,
 * flags and the red zone across `mov $N,%eax; syscall`, `xor %eax,%eax; syscall` and
 * `<relocated instruction>; syscall` sites of the program's own code (the last one
 * reads the stack at -8(%rsp), as libc's syscall() reads 8(%rsp), with the number set
 * before it), libc's own syscall(), a signal while a patched read waits (SA_RESTART
 * and not), and threads calling through the same sites at once. Everything printed
 * must match a native run byte for byte; the site bytes go to stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* out[]: rax, rcx - the return address, r11's CF and ZF, rdi rsi rdx r10 r8 r9 rbx
 * rbp r12 r13 r14, the red zone at -8 and -128, CF and ZF after the call. */
extern void getppid_site(unsigned long *out);
extern void read_site(unsigned long *out);
extern void stack_site(unsigned long *out);
extern const unsigned char getppid_site_call[], read_site_call[], stack_site_call[];
#define SITE(name, setup, nr_insn)                                                   \
    __asm__(".text\n.p2align 4\n.globl " #name "\n" #name ":\n"                         \
            "push %rbx\npush %rbp\npush %r12\npush %r13\npush %r14\npush %r15\n"       \
            "mov %rdi,%r15\n"                                                           \
            "movq $0x1111,-8(%rsp)\nmovq $0x2222,-128(%rsp)\n"                          \
            "mov $0xb1,%ebx\nmov $0xb2,%ebp\nmov $0xb3,%r12d\nmov $0xb4,%r13d\n"        \
            "mov $0xb5,%r14d\nmov $0xa1,%edi\nmov $0xa2,%esi\nmov $0xa3,%edx\n"        \
            "mov $0xa4,%r10d\nmov $0xa5,%r8d\nmov $0xa6,%r9d\n" setup "\n"              \
            ".globl " #name "_call\n" #name "_call:\n" nr_insn "\nsyscall\n1:\n"       \
            "mov %rax,0(%r15)\nsetc %al\nmovzbq %al,%rax\nmov %rax,120(%r15)\n"         \
            "setz %al\nmovzbq %al,%rax\nmov %rax,128(%r15)\n"                           \
            "lea 1b(%rip),%rax\nsub %rax,%rcx\nmov %rcx,8(%r15)\n"                      \
            "and $0x41,%r11\nmov %r11,16(%r15)\n"                                       \
            "mov %rdi,24(%r15)\nmov %rsi,32(%r15)\nmov %rdx,40(%r15)\n"                 \
            "mov %r10,48(%r15)\nmov %r8,56(%r15)\nmov %r9,64(%r15)\n"                   \
            "mov %rbx,72(%r15)\nmov %rbp,80(%r15)\nmov %r12,88(%r15)\n"                 \
            "mov %r13,96(%r15)\nmov %r14,104(%r15)\n"                                   \
            "mov -8(%rsp),%rax\nmov %rax,136(%r15)\nmov -128(%rsp),%rax\n"              \
            "mov %rax,144(%r15)\n"                                                      \
            "pop %r15\npop %r14\npop %r13\npop %r12\npop %rbp\npop %rbx\nret\n"         \
            ".p2align 4,0xcc\n")
SITE(getppid_site, "stc", "mov $110,%eax");       /* getppid, CF set before */
SITE(read_site, "clc", "xor %eax,%eax");          /* read(0xa1, ...): EBADF, ZF set */
/* getppid, CF set before; R9 from the red zone (0x1111) by the moved instruction. */
SITE(stack_site, "stc\nmov $110,%eax", "mov -8(%rsp),%r9");

static void show(const char *name, void (*site)(unsigned long *)) {
    unsigned long out[19];
    memset(out, 0, sizeof out);
    site(out);
    if (site == getppid_site || site == stack_site)
        out[0] = out[0] == (unsigned long)getppid();
    printf("%s:", name);
    for (int i = 0; i < 19; i++)
        printf(" %lx", out[i]);
    printf("\n");
}

static volatile int handled;
static volatile int after_syscall;

static void on_alarm(int signo, siginfo_t *info, void *context) {
    const unsigned char *rip = (const unsigned char *)
        ((ucontext_t *)context)->uc_mcontext.gregs[REG_RIP];
    (void)signo, (void)info;
    handled++;
    after_syscall = rip[-2] == 0x0f && rip[-1] == 0x05;
}

static void *late_writer(void *arg) {
    usleep(300 * 1000);
    if (write(*(int *)arg, "late!", 5) != 5)
        return (void *)1;
    return NULL;
}

/* A read that waits on a pipe while a signal arrives: restarted (SA_RESTART) or EINTR. */
static void interrupted_read(int restart) {
    int fds[2];
    pthread_t writer;
    char buf[8];
    struct sigaction action = {.sa_sigaction = on_alarm, .sa_flags = SA_SIGINFO | restart};
    sigaction(SIGALRM, &action, NULL);
    if (pipe(fds) != 0)
        return;
    handled = after_syscall = 0;
    pthread_create(&writer, NULL, late_writer, &fds[1]);
    ualarm(100 * 1000, 0);
    ssize_t got = read(fds[0], buf, sizeof buf);
    int error = got < 0 ? errno : 0;
    pthread_join(writer, NULL);
    printf("read restart=%d: got %zd errno %d handled %d rip-after-syscall %d\n",
           restart != 0, got, error, handled, after_syscall);
    close(fds[0]);
    close(fds[1]);
}

static void *caller(void *arg) {
    long bad = 0;
    unsigned long out[19];
    for (int i = 0; i < 3000; i++) {
        getppid_site(out);
        bad += out[0] != (unsigned long)getppid() || out[8] != 0xa6 || out[17] != 0x1111;
        stack_site(out);
        bad += out[0] != (unsigned long)getppid() || out[8] != 0x1111 || out[17] != 0x1111;
        bad += syscall(SYS_getppid) != getppid();
    }
    return (void *)bad;
}

int main(void) {
    show("getppid", getppid_site);
    show("read", read_site);
    show("stack", stack_site);
    printf("libc syscall(SYS_getppid): %s\n",
           syscall(SYS_getppid) == getppid() ? "same as getppid()" : "differs");
    fprintf(stderr, "site bytes: %02x %02x %02x\n", getppid_site_call[0], read_site_call[0],
            stack_site_call[0]);
    interrupted_read(SA_RESTART);
    interrupted_read(0);
    pthread_t threads[4];
    long bad = 0;
    for (int i = 0; i < 4; i++)
        pthread_create(&threads[i], NULL, caller, NULL);
    for (int i = 0; i < 4; i++) {
        void *result;
        pthread_join(threads[i], &result);
        bad += (long)result;
    }
    printf("threads: %ld bad calls\n", bad);
    return 0;
}
