/* Pipes, sockets and a terminal as a program sees them: what it reads and writes,
 * and when Linux makes it wait, fail or take a signal. Its output must match the
 * native run byte for byte on every system-call path (test_pipes.py).
 * `pipes all` runs every case; `pipes native <n>` moves n small messages through a
 * pipe and a socket pair without ever waiting (the fast path serves them all). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PIPE_CAPACITY 65536
#define LARGE (512 * 1024)
/* Small enough for the fast path to take in one piece list (its guest pages need not
 * be contiguous): a write of it to a pipe goes through in part, without waiting. */
#define MEDIUM (200 * 1024)

static volatile sig_atomic_t signals_seen;

static void count_signal(int signo) {
    (void)signo;
    signals_seen++;
}

static void on_signal(int signo, int flags) {
    struct sigaction action = {.sa_handler = count_signal, .sa_flags = flags};
    sigemptyset(&action.sa_mask);
    sigaction(signo, &action, NULL);
}

static void nap(long ms) {
    struct timespec time = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&time, &time) < 0 && errno == EINTR) {
    }
}

static const char *outcome(ssize_t result) {
    static char text[64];
    if (result >= 0)
        snprintf(text, sizeof text, "%zd", result);
    else
        snprintf(text, sizeof text, "-1 %s", strerrorname_np(errno));
    return text;
}

/* Reads exactly `length` bytes (or to end of file); their sum, and the count. */
static unsigned long drain(int fd, size_t length, size_t chunk, long pause_ms, size_t *got) {
    static unsigned char buffer[LARGE];
    unsigned long sum = 0;
    *got = 0;
    while (*got < length) {
        size_t want = length - *got < chunk ? length - *got : chunk;
        ssize_t n = read(fd, buffer, want);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            sum = sum * 31 + buffer[i];
        *got += (size_t)n;
        if (pause_ms)
            nap(pause_ms);
    }
    return sum;
}

static unsigned char *pattern(size_t length) {
    unsigned char *data = malloc(length);
    for (size_t i = 0; i < length; i++)
        data[i] = (unsigned char)(i * 7 + i / 251);
    return data;
}

static void ping_pong(const char *what, int to_child[2], int to_parent[2]) {
    pid_t child = fork();
    if (child == 0) {
        char message[32];
        close(to_child[1]);
        close(to_parent[0]);
        for (;;) {
            ssize_t n = read(to_child[0], message, sizeof message);
            if (n <= 0)
                _exit(0);
            message[0]++;
            write(to_parent[1], message, (size_t)n);
        }
    }
    close(to_child[0]);
    close(to_parent[1]);
    char message[32] = "a round trip";
    int rounds = 0;
    for (int i = 0; i < 500; i++) {
        message[0] = (char)('a' + i % 20);
        write(to_child[1], message, 12);
        ssize_t n = read(to_parent[0], message, sizeof message);
        if (n == 12 && message[0] == (char)('a' + i % 20 + 1))
            rounds++;
    }
    close(to_child[1]);
    waitpid(child, NULL, 0);
    close(to_parent[0]);
    printf("%s ping-pong: %d of 500 round trips\n", what, rounds);
}

/* One large write to a slow reader: Linux waits until all of it is written. */
static void large_write(const char *what, int ends[2], int vectored) {
    unsigned char *data = pattern(LARGE);
    pid_t child = fork();
    if (child == 0) {
        close(ends[0]);
        ssize_t n;
        if (vectored) {
            struct iovec pieces[3] = {{data, 1000}, {data + 1000, LARGE / 2 - 1000},
                                      {data + LARGE / 2, LARGE / 2}};
            n = writev(ends[1], pieces, 3);
        } else {
            n = write(ends[1], data, LARGE);
        }
        printf("%s %s of %d to a slow reader: %s\n", what, vectored ? "writev" : "write",
               LARGE, outcome(n));
        fflush(stdout);
        _exit(0);
    }
    close(ends[1]);
    size_t got;
    unsigned long sum = drain(ends[0], LARGE, 4096, 0, &got);
    unsigned long expected = 0;
    for (size_t i = 0; i < LARGE; i++)
        expected = expected * 31 + data[i];
    waitpid(child, NULL, 0);
    close(ends[0]);
    printf("%s reader got %zu bytes, %s\n", what, got, sum == expected ? "intact" : "CORRUPT");
    free(data);
}

static void slow_reader_case(void) {
    /* The reader sleeps first, so the writer finds the pipe full part way. */
    int ends[2];
    unsigned char *data = pattern(MEDIUM);
    pipe(ends);
    pid_t child = fork();
    if (child == 0) {
        close(ends[0]);
        ssize_t n = write(ends[1], data, MEDIUM);
        printf("pipe write of %d while the reader sleeps: %s\n", MEDIUM, outcome(n));
        fflush(stdout);
        _exit(0);
    }
    close(ends[1]);
    nap(100);
    size_t got;
    drain(ends[0], MEDIUM, 1000, 0, &got);
    waitpid(child, NULL, 0);
    close(ends[0]);
    printf("slow reader got %zu bytes\n", got);
    free(data);
}

static void nonblocking(void) {
    int ends[2];
    char buffer[100];
    unsigned char *data = pattern(LARGE);
    pipe2(ends, O_NONBLOCK);
    printf("nonblocking pipe, empty read: %s\n", outcome(read(ends[0], buffer, sizeof buffer)));
    size_t total = 0;
    ssize_t n;
    while ((n = write(ends[1], data, 1000)) > 0)
        total += (size_t)n;
    printf("nonblocking pipe filled with %zu bytes, then: %s\n", total, outcome(n));
    printf("a large write to the full pipe: %s\n", outcome(write(ends[1], data, LARGE)));
    size_t got;
    drain(ends[0], 10000, 10000, 0, &got);
    printf("after reading %zu, a large write: %s\n", got, outcome(write(ends[1], data, LARGE)));
    printf("a small write: %s\n", outcome(write(ends[1], data, 10)));
    close(ends[0]);
    close(ends[1]);

    int pair[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair);
    printf("nonblocking socket, empty read: %s\n", outcome(read(pair[0], buffer, sizeof buffer)));
    total = 0;
    while ((n = write(pair[1], data, LARGE)) > 0)
        total += (size_t)n;
    printf("nonblocking socket took %s bytes before: %s\n", total > 0 ? "some" : "no",
           outcome(n));
    close(pair[0]);
    close(pair[1]);

    /* O_NONBLOCK set later with fcntl, then cleared. */
    pipe(ends);
    fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) | O_NONBLOCK);
    printf("pipe made nonblocking by fcntl, empty read: %s\n",
           outcome(read(ends[0], buffer, sizeof buffer)));
    fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) & ~O_NONBLOCK);
    close(ends[1]);
    printf("blocking again, writer gone: %s\n", outcome(read(ends[0], buffer, sizeof buffer)));
    close(ends[0]);
    free(data);
}

static void broken(void) {
    int ends[2];
    signals_seen = 0;
    on_signal(SIGPIPE, 0);
    pipe(ends);
    close(ends[0]);
    ssize_t n = write(ends[1], "x", 1);
    printf("write to a pipe without readers: %s, SIGPIPE taken %d times\n", outcome(n),
           (int)signals_seen);
    struct iovec piece = {"xyz", 3};
    n = writev(ends[1], &piece, 1);
    printf("writev to it: %s, SIGPIPE taken %d times\n", outcome(n), (int)signals_seen);
    close(ends[1]);

    int pair[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
    close(pair[0]);
    n = write(pair[1], "x", 1);
    printf("write to a closed socket: %s, SIGPIPE taken %d times\n", outcome(n),
           (int)signals_seen);
    close(pair[1]);
    signal(SIGPIPE, SIG_DFL);

    pipe(ends);
    pid_t child = fork();
    if (child == 0) {
        close(ends[0]);
        nap(50);
        write(ends[1], "x", 1);
        _exit(0);
    }
    close(ends[0]);
    close(ends[1]);
    int status;
    waitpid(child, &status, 0);
    printf("a writer without readers, SIGPIPE not caught: %s %d\n",
           WIFSIGNALED(status) ? "killed by" : "exited", WIFSIGNALED(status) ? WTERMSIG(status)
                                                                             : WEXITSTATUS(status));
}

static void sockets(void) {
    int to_child[2], to_parent[2];
    signal(SIGPIPE, SIG_IGN);
    socketpair(AF_UNIX, SOCK_STREAM, 0, to_child);
    socketpair(AF_UNIX, SOCK_STREAM, 0, to_parent);
    /* One socket pair each way, each used in one direction. */
    ping_pong("stream socket", (int[2]){to_child[0], to_child[1]},
              (int[2]){to_parent[0], to_parent[1]});
    int pair[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
    large_write("stream socket", pair, 0);
    socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
    large_write("stream socket", pair, 1);

    socketpair(AF_UNIX, SOCK_DGRAM, 0, pair);
    size_t sizes[] = {1, 100, 5000, 70000};
    char *data = (char *)pattern(70000);
    for (int i = 0; i < 4; i++)
        printf("datagram of %zu sent: %s\n", sizes[i], outcome(write(pair[1], data, sizes[i])));
    char buffer[4096];
    for (int i = 0; i < 4; i++) {
        struct iovec pieces[2] = {{buffer, 10}, {buffer + 10, sizeof buffer - 10}};
        ssize_t n = i % 2 ? readv(pair[0], pieces, 2) : read(pair[0], buffer, sizeof buffer);
        printf("datagram read: %s, first byte %d\n", outcome(n), n > 0 ? buffer[0] : -1);
    }
    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair);
    write(pair[1], "one", 3);
    write(pair[1], "three", 5);
    for (int i = 0; i < 2; i++)
        printf("seqpacket read: %s\n", outcome(read(pair[0], buffer, sizeof buffer)));
    close(pair[0]);
    close(pair[1]);
    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, pair);
    printf("empty nonblocking datagram socket: %s\n", outcome(read(pair[0], buffer, 10)));
    close(pair[0]);
    printf("datagram to a closed peer: %s\n", outcome(write(pair[1], "x", 1)));
    close(pair[1]);
    free(data);
    signal(SIGPIPE, SIG_DFL);
}

/* send and recv (sendto and recvfrom without an address) and their flags. */
static void send_receive(void) {
    int pair[2];
    char buffer[200];
    signals_seen = 0;
    on_signal(SIGPIPE, 0);
    socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
    printf("recv MSG_DONTWAIT on a blocking socket: %s\n",
           outcome(recv(pair[0], buffer, sizeof buffer, MSG_DONTWAIT)));
    printf("send: %s\n", outcome(send(pair[1], "peek and take", 13, 0)));
    ssize_t n = recv(pair[0], buffer, 4, MSG_PEEK);
    printf("recv MSG_PEEK: %s \"%.*s\"\n", outcome(n), n > 0 ? (int)n : 0, buffer);
    n = recv(pair[0], buffer, sizeof buffer, 0);
    printf("recv: %s \"%.*s\"\n", outcome(n), n > 0 ? (int)n : 0, buffer);
    unsigned char *data = pattern(MEDIUM);
    pid_t child = fork();
    if (child == 0) {
        close(pair[0]);
        printf("send of %d to a slow reader: %s\n", MEDIUM,
               outcome(send(pair[1], data, MEDIUM, MSG_NOSIGNAL)));
        fflush(stdout);
        _exit(0);
    }
    nap(100);
    size_t got;
    drain(pair[0], MEDIUM, 3000, 0, &got);
    waitpid(child, NULL, 0);
    printf("slow reader got %zu bytes\n", got);
    close(pair[0]);
    n = send(pair[1], "x", 1, MSG_NOSIGNAL);
    printf("send MSG_NOSIGNAL to a closed peer: %s, SIGPIPE taken %d times\n", outcome(n),
           (int)signals_seen);
    n = send(pair[1], "x", 1, 0);
    printf("send to a closed peer: %s, SIGPIPE taken %d times\n", outcome(n),
           (int)signals_seen);
    close(pair[1]);
    signal(SIGPIPE, SIG_DFL);
    free(data);
}

static void epoll(void) {
    int ends[2], poller = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = 0x1234567890ULL}, ready[4];
    pipe(ends);
    epoll_ctl(poller, EPOLL_CTL_ADD, ends[0], &event);
    printf("epoll_wait, nothing ready: %s\n", outcome(epoll_wait(poller, ready, 4, 0)));
    printf("epoll_wait 30 ms, nothing ready: %s\n", outcome(epoll_wait(poller, ready, 4, 30)));
    write(ends[1], "x", 1);
    int n = epoll_wait(poller, ready, 4, -1);
    printf("epoll_wait, one ready: %s, events %x data %llx\n", outcome(n), ready[0].events,
           (unsigned long long)ready[0].data.u64);
    n = epoll_pwait(poller, ready, 4, 0, NULL);
    printf("epoll_pwait: %s\n", outcome(n));
    printf("epoll_wait, no room: %s\n", outcome(epoll_wait(poller, ready, 0, 0)));
    printf("epoll_wait, not epoll: %s\n", outcome(epoll_wait(ends[0], ready, 4, 0)));
    close(ends[0]);
    close(ends[1]);
    close(poller);
}

static void arm_timer(long ms) {
    struct itimerval timer = {{0, ms * 1000}, {0, ms * 1000}};
    setitimer(ITIMER_REAL, &timer, NULL);
}

static void interrupted(void) {
    int ends[2];
    char buffer[100];
    /* Without SA_RESTART: the waiting read fails with EINTR. */
    pipe(ends);
    signals_seen = 0;
    on_signal(SIGALRM, 0);
    arm_timer(20);
    ssize_t n = read(ends[0], buffer, sizeof buffer);
    arm_timer(0);
    printf("read interrupted without SA_RESTART: %s, handler ran: %s\n", outcome(n),
           signals_seen ? "yes" : "no");

    /* A large write interrupted part way returns what it wrote. */
    unsigned char *data = pattern(MEDIUM);
    arm_timer(50);
    n = write(ends[1], data, MEDIUM);
    arm_timer(0);
    printf("large write interrupted: %s\n", outcome(n));
    close(ends[0]);
    close(ends[1]);
    free(data);

    /* With SA_RESTART: the read goes on waiting until the writer writes. */
    pipe(ends);
    pid_t child = fork();
    if (child == 0) {
        close(ends[0]);
        nap(200);
        write(ends[1], "hello", 5);
        _exit(0);
    }
    close(ends[1]);
    signals_seen = 0;
    on_signal(SIGALRM, SA_RESTART);
    arm_timer(20);
    n = read(ends[0], buffer, sizeof buffer);
    arm_timer(0);
    printf("read with SA_RESTART: %s \"%.*s\", handler ran: %s\n", outcome(n),
           n > 0 ? (int)n : 0, buffer, signals_seen ? "yes" : "no");
    waitpid(child, NULL, 0);
    close(ends[0]);
    signal(SIGALRM, SIG_DFL);
}

static void terminal(void) {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
        printf("no terminal here\n");
        return;
    }
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    if (slave < 0) {
        printf("no terminal here\n");
        return;
    }
    char buffer[100];
    printf("terminal write: %s\n", outcome(write(slave, "to the terminal\n", 16)));
    ssize_t n = read(master, buffer, sizeof buffer);
    printf("its master read: %s \"%.*s\"\n", outcome(n), n > 2 ? (int)n - 2 : 0, buffer);
    write(master, "typed\n", 6);
    n = read(slave, buffer, sizeof buffer);
    printf("terminal read: %s\n", outcome(n));
    fcntl(slave, F_SETFL, O_NONBLOCK);
    printf("terminal read, nothing typed: %s\n", outcome(read(slave, buffer, sizeof buffer)));
    close(slave);
    close(master);
}

/* Messages that never wait: written while there is room, read while there is data. */
static void never_waiting(int count) {
    int ends[2], pair[2];
    char message[100] = "a message", buffer[100];
    unsigned long moved = 0;
    pipe(ends);
    socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
    int poller = epoll_create1(0), readied = 0;
    struct epoll_event event = {.events = EPOLLIN, .data.fd = ends[0]}, ready[2];
    epoll_ctl(poller, EPOLL_CTL_ADD, ends[0], &event);
    for (int round = 0; round < count / 100; round++) {
        for (int i = 0; i < 100; i++) {
            moved += (unsigned long)write(ends[1], message, sizeof message);
            moved += (unsigned long)send(pair[0], message, sizeof message, 0);
        }
        for (int i = 0; i < 100; i++) {
            readied += epoll_wait(poller, ready, 2, -1);
            moved += (unsigned long)read(ends[0], buffer, sizeof buffer);
            moved += (unsigned long)recv(pair[1], buffer, sizeof buffer, 0);
        }
    }
    printf("moved %lu bytes, %d times ready\n", moved, readied);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "native") == 0) {
        never_waiting(atoi(argv[2]));
        return 0;
    }
    int to_child[2], to_parent[2], ends[2];
    pipe(to_child);
    pipe(to_parent);
    ping_pong("pipe", to_child, to_parent);
    pipe(ends);
    large_write("pipe", ends, 0);
    pipe(ends);
    large_write("pipe", ends, 1);
    slow_reader_case();
    nonblocking();
    broken();
    sockets();
    send_receive();
    epoll();
    interrupted();
    terminal();
    return 0;
}
