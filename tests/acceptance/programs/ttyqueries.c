/* The terminal queries isatty and stdio make (TCGETS, TIOCGWINSZ) on what is no
 * terminal -- a file, a directory, both ends of a pipe, a socket, /dev/null -- and on
 * a closed number, with a bad argument pointer, on a pseudo-terminal (which answers),
 * and with FIOCLEX between them. `ttyqueries DIR`: the probes, in a scratch DIR.
 * `ttyqueries loop N`: N rounds of both queries on a file. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

static const char *outcome(long result) {
    if (result == 0)
        return "0";
    switch (errno) {
    case ENOTTY: return "ENOTTY";
    case EBADF: return "EBADF";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    default: return "other";
    }
}

static void probe(const char *what, long fd) {
    struct termios terminal;
    struct winsize window;
    long got = syscall(SYS_ioctl, fd, TCGETS, &terminal);
    printf("%s: TCGETS %s", what, outcome(got));
    got = syscall(SYS_ioctl, fd, TIOCGWINSZ, &window);
    printf(", TIOCGWINSZ %s", outcome(got));
    got = syscall(SYS_ioctl, fd, TCGETS, (void *)16);
    printf(", TCGETS to a bad pointer %s", outcome(got));
    printf(", isatty %d\n", isatty((int)fd));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 2 && !strcmp(argv[1], "loop")) {
        long rounds = strtol(argv[2], NULL, 10);
        int fd = open(argv[0], O_RDONLY);
        struct termios terminal;
        struct winsize window;
        for (long i = 0; i < rounds; i++)
            if (ioctl(fd, TCGETS, &terminal) != -1 || errno != ENOTTY
                || ioctl(fd, TIOCGWINSZ, &window) != -1 || errno != ENOTTY) {
                printf("round %ld failed\n", i);
                return 1;
            }
        printf("%ld rounds\n", rounds);
        return 0;
    }
    if (argc < 2 || chdir(argv[1]) < 0)
        return 2;
    int file = open("file", O_CREAT | O_RDWR, 0600);
    probe("file", file);
    probe("directory", open(".", O_RDONLY | O_DIRECTORY));
    int ends[2];
    pipe(ends);
    probe("pipe read end", ends[0]);
    probe("pipe write end", ends[1]);
    int pair[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
    probe("socket", pair[0]);
    probe("/dev/null", open("/dev/null", O_RDWR));
    close(file);
    probe("closed", file);
    probe("-1", -1);
    probe("2^32 + the pipe's read end", (1L << 32) + ends[0]);
    ioctl(ends[0], FIOCLEX);
    printf("FIOCLEX then F_GETFD: %d\n", fcntl(ends[0], F_GETFD));
    probe("pipe read end after FIOCLEX", ends[0]);
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0) {
        int terminal = open(ptsname(master), O_RDWR | O_NOCTTY);
        struct termios settings;
        printf("pty: TCGETS %s", outcome(ioctl(terminal, TCGETS, &settings)));
        printf(", c_lflag %#x, isatty %d\n", settings.c_lflag, isatty(terminal));
        probe("pty, master side", master);
    }
    return 0;
}
