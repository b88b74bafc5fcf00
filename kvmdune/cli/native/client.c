/* kvmdune's start-up client: the installed `kvmdune` command.
 *
 * Python with `site` takes longer to start than a whole `kvmdune run -- true` may, so
 * `kvmdune run` and `kvmdune sandbox` go through this small program first. It hands
 * the run to the caller's resident server (kvmdune/cli/resident.py: everything
 * imported, one fresh worker forked per run before any VM exists), passing what the
 * run is made of as descriptors: stdio and every other open descriptor, /dev/kvm
 * opened here (so that revoking a user's access to KVM still holds), cwd and root.
 * The worker checks the caller's confinement against its own (from /proc, never from
 * what this program says), adopts what it can (cgroup, rlimits, umask, ignored
 * signals, environment) and refuses otherwise; signals reaching this program are
 * forwarded to the worker through a pidfd, and the worker's end (exit status or
 * death by signal) becomes this program's.
 *
 * A caller with a controlling terminal gets a server of its own session (never
 * detached from it), whose workers join the caller's process group: Ctrl-C, Ctrl-Z,
 * fg and bg, /dev/tty and SIGWINCH then reach the guest from the terminal itself,
 * as they reach the in-process VMM.
 *
 * Whenever anything is off -- another command, KVMDUNE_STARTUP=inprocess, a socket
 * directory with the wrong owner or mode, a server that cannot start or that
 * refuses -- it executes the in-process Python path, which is always correct, just
 * slower. Nothing is handed over before the worker accepts, so the
 * fallback starts from exactly the state the caller gave.
 *
 * The wire format is shared with resident.py (PROTOCOL_* there); see its docstring.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KVMDUNE_PYTHON
#error "KVMDUNE_PYTHON (the interpreter that runs kvmdune) must be defined by setup.py"
#endif
#ifndef KVMDUNE_PACKAGE_ROOT
#error "KVMDUNE_PACKAGE_ROOT (where the kvmdune package was built) must be defined"
#endif

/* Must match resident.py. */
#define PROTOCOL_VERSION 1u
#define MAGIC_REQUEST 0x5244564bu   /* "KVDR" */
#define MAGIC_REPLY 0x4144564bu     /* "KVDA" */
#define MAGIC_STATUS 0x5344564bu    /* "KVDS" */
enum reply_kind { REPLY_CHALLENGE = 1, REPLY_ACCEPTED = 2, REPLY_REFUSED = 3, REPLY_NAME = 4,
                  REPLY_STOPPED = 5 };
/* The descriptors every request carries first, in this order. */
enum { PASSED_KVM, PASSED_CWD, PASSED_ROOT, PASSED_FIXED };

/* Below the kernel's SCM_MAX_FD (253) with the fixed ones; more falls back. */
#define MAX_CALLER_FDS 240
#define CLIENT_SUFFIX "/kvmdune/cli/kvmdune-client"
#define SERVER_START_TIMEOUT_MS 30000
#define CONNECT_RETRY_MS 10
#define STATUS_IN_PROCESS_FAILED 125

/* argv[1] the package root, argv[2] the ignored signals (SigIgn's hex): Python's
 * start-up ignores SIGPIPE and SIGXFSZ itself, hiding whether this caller did. */
static const char FALLBACK_CODE[] =
    "import sys;sys.path[0]=sys.argv.pop(1);sys.argv[0]='kvmdune';"
    "from kvmdune.cli import inherited;inherited.record(int(sys.argv.pop(1),16));"
    "from kvmdune.cli.main import main;sys.exit(main())";
static const char SERVER_CODE[] =
    "import sys;sys.path.insert(0,sys.argv[1]);"
    "from kvmdune.cli.resident import serve_main;serve_main(sys.argv[2:])";

static char package_root[PATH_MAX];
static int tracing;
static int worker_pidfd = -1;
/* With a controlling terminal: the server and its workers are of this session. */
static int in_session;

/* ---- the in-process path ---------------------------------------------------- */

/* This process's ignored signals, bit N-1 for signal N (as SigIgn). */
static unsigned long long ignored_signals(void)
{
    unsigned long long mask = 0;
    for (int sig = 1; sig < NSIG && sig <= 64; sig++) {
        struct sigaction action;
        if (sigaction(sig, NULL, &action) == 0 && action.sa_handler == SIG_IGN)
            mask |= 1ULL << (sig - 1);
    }
    return mask;
}

static void in_process(char **argv, const char *why)
{
    if (tracing)
        fprintf(stderr, "kvmdune: start-up: in-process (%s)\n", why);
    int argc = 0;
    while (argv[argc])
        argc++;
    char **args = calloc(argc + 5, sizeof(char *));
    if (!args)
        _exit(STATUS_IN_PROCESS_FAILED);
    char ignored[2 * sizeof(unsigned long long) + 1];
    snprintf(ignored, sizeof ignored, "%llx", ignored_signals());
    args[0] = KVMDUNE_PYTHON;
    args[1] = "-c";
    args[2] = (char *)FALLBACK_CODE;
    args[3] = package_root;
    args[4] = ignored;
    for (int i = 1; i < argc; i++)
        args[4 + i] = argv[i];
    execv(KVMDUNE_PYTHON, args);
    fprintf(stderr, "kvmdune: cannot execute %s: %s\n", KVMDUNE_PYTHON, strerror(errno));
    _exit(STATUS_IN_PROCESS_FAILED);
}

static void find_package_root(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    size_t suffix = strlen(CLIENT_SUFFIX);
    if (n > (ssize_t)suffix) {
        exe[n] = 0;
        if (strcmp(exe + n - suffix, CLIENT_SUFFIX) == 0) {
            exe[n - suffix] = 0;
            snprintf(package_root, sizeof package_root, "%s", exe);
            return;
        }
    }
    snprintf(package_root, sizeof package_root, "%s", KVMDUNE_PACKAGE_ROOT);
}

/* ---- the server's name: its code's version ----------------------------------- */

struct names { char **items; size_t count, capacity; };

static int has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), s = strlen(suffix);
    return n >= s && strcmp(name + n - s, suffix) == 0;
}

static int add_name(struct names *names, const char *path)
{
    if (names->count == names->capacity) {
        size_t capacity = names->capacity ? names->capacity * 2 : 256;
        char **items = realloc(names->items, capacity * sizeof(char *));
        if (!items)
            return -1;
        names->items = items;
        names->capacity = capacity;
    }
    names->items[names->count] = strdup(path);
    return names->items[names->count++] ? 0 : -1;
}

/* Every .py and .so under `relative` (relative to the package root), as os.walk
 * lists them: directories are entered, symbolic links to them are not. */
static int collect_sources(const char *relative, struct names *names)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", package_root, relative);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    struct dirent *entry;
    int result = 0;
    while (result == 0 && (entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        char child[PATH_MAX];
        snprintf(child, sizeof child, "%s/%s", relative, entry->d_name);
        int is_dir = entry->d_type == DT_DIR;
        if (entry->d_type == DT_UNKNOWN) {
            struct stat st;
            char full[PATH_MAX];
            snprintf(full, sizeof full, "%s/%s", package_root, child);
            is_dir = lstat(full, &st) == 0 && S_ISDIR(st.st_mode);
        }
        if (is_dir)
            result = collect_sources(child, names);
        else if (has_suffix(entry->d_name, ".py") || has_suffix(entry->d_name, ".so"))
            result = add_name(names, child);
    }
    closedir(dir);
    return result;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t hash, const char *bytes, size_t length)
{
    for (size_t i = 0; i < length; i++)
        hash = (hash ^ (unsigned char)bytes[i]) * FNV_PRIME;
    return hash;
}

/* FNV-1a over "path\0size\0mtime_ns\0" of every source, sorted: resident.py's
 * code_version() computes the same, so an edited or reinstalled package gets a new
 * server and a stale one is never used. */
static int code_version(char *out, size_t size)
{
    struct names names = {0};
    if (collect_sources("kvmdune", &names) < 0 || names.count == 0)
        return -1;
    qsort(names.items, names.count, sizeof(char *), compare_names);
    uint64_t hash = FNV_OFFSET;
    for (size_t i = 0; i < names.count; i++) {
        char full[PATH_MAX], field[64];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", package_root, names.items[i]);
        if (stat(full, &st) < 0)
            return -1;
        hash = fnv1a(hash, names.items[i], strlen(names.items[i]) + 1);
        int n = snprintf(field, sizeof field, "%lld", (long long)st.st_size);
        hash = fnv1a(hash, field, n + 1);
        n = snprintf(field, sizeof field, "%lld",
                     (long long)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec);
        hash = fnv1a(hash, field, n + 1);
        free(names.items[i]);
    }
    free(names.items);
    snprintf(out, size, "%016llx", (unsigned long long)hash);
    return 0;
}

/* ---- the socket directory and the server -------------------------------------- */

/* The caller's private directory: created 0700 when missing, then checked with
 * lstat (a directory, ours, mode 0700: nobody else can have bound a socket there). */
static const char *socket_directory(char *out, size_t size, const char **why)
{
    const char *chosen = getenv("KVMDUNE_RESIDENT_DIR");
    if (chosen && *chosen)
        snprintf(out, size, "%s", chosen);
    else
        snprintf(out, size, "/tmp/kvmdune-%u", (unsigned)geteuid());
    if (mkdir(out, 0700) < 0 && errno != EEXIST) {
        *why = "cannot create the socket directory";
        return NULL;
    }
    struct stat st;
    if (lstat(out, &st) < 0 || !S_ISDIR(st.st_mode)) {
        *why = "the socket directory is not a directory";
        return NULL;
    }
    if (st.st_uid != geteuid()) {
        *why = "the socket directory belongs to another user";
        return NULL;
    }
    if ((st.st_mode & 07777) != 0700) {
        *why = "the socket directory's mode is not 0700";
        return NULL;
    }
    return out;
}

static int connect_to(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0)
        return fd;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

/* A server of its own session, its environment fixed (nothing of this caller's
 * PYTHONPATH, LD_PRELOAD...), python -I; stderr to the directory's log. */
static void exec_server(const char *directory, const char *version, int ready)
{
    char log[PATH_MAX];
    snprintf(log, sizeof log, "%s/server.log", directory);
    int null = open("/dev/null", O_RDWR);
    int log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (null < 0 || log_fd < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
        dup2(log_fd, 2) < 0 || dup2(ready, 3) < 0)
        _exit(127);
    syscall(SYS_close_range, 4, ~0u, 0);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    umask(077);
    if (chdir("/") < 0)
        _exit(127);
    char *environment[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C.UTF-8", NULL};
    char *args[] = {KVMDUNE_PYTHON, "-I", "-c", (char *)SERVER_CODE, package_root,
                    (char *)directory, (char *)version, "3",
                    in_session ? "session" : "detached", NULL};
    execve(KVMDUNE_PYTHON, args, environment);
    _exit(127);
}

/* Start a server (detached: the grandchild of this process) and wait until it
 * listens, or says it could not. */
static void start_server(const char *directory, const char *version)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return;
    pid_t child = fork();
    if (child == 0) {
        /* A session of its own, or (for a terminal's caller) a process group of its
         * own in the caller's session: never the caller's job. */
        if (in_session)
            setpgid(0, 0);
        else
            setsid();
        if (fork() == 0)
            exec_server(directory, version, ready[1]);
        _exit(0);
    }
    close(ready[1]);
    if (child > 0)
        waitpid(child, NULL, 0);
    struct pollfd wait_for = {.fd = ready[0], .events = POLLIN};
    char byte;
    if (poll(&wait_for, 1, SERVER_START_TIMEOUT_MS) > 0)
        (void)!read(ready[0], &byte, 1);
    close(ready[0]);
}

static int connect_server(const char *directory, const char *version)
{
    char path[PATH_MAX];
    if (in_session)
        snprintf(path, sizeof path, "%s/server-%s-session%d.sock", directory, version,
                 (int)getsid(0));
    else
        snprintf(path, sizeof path, "%s/server-%s.sock", directory, version);
    int fd = connect_to(path);
    if (fd >= 0)
        return fd;
    start_server(directory, version);
    /* Another client may have started it (the loser of the lock exits at once). */
    for (int waited = 0; waited < SERVER_START_TIMEOUT_MS; waited += CONNECT_RETRY_MS) {
        fd = connect_to(path);
        if (fd >= 0 || (errno != ENOENT && errno != ECONNREFUSED))
            return fd;
        usleep(CONNECT_RETRY_MS * 1000);
    }
    return -1;
}

/* ---- the request ---------------------------------------------------------------- */

struct buffer { char *data; size_t length, capacity; };

static int append(struct buffer *b, const void *bytes, size_t length)
{
    if (b->length + length > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->length + length)
            capacity *= 2;
        char *data = realloc(b->data, capacity);
        if (!data)
            return -1;
        b->data = data;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, bytes, length);
    b->length += length;
    return 0;
}

static int append_u32(struct buffer *b, uint32_t value)
{
    return append(b, &value, sizeof value);
}

static int append_strings(struct buffer *b, char **strings, uint32_t count)
{
    if (append_u32(b, count) < 0)
        return -1;
    for (uint32_t i = 0; i < count; i++)
        if (append(b, strings[i], strlen(strings[i]) + 1) < 0)
            return -1;
    return 0;
}

/* This process's open descriptors other than `skip` (the caller's, for the guest). */
static int caller_descriptors(int *fds, int capacity, const int *skip, int skipped)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        int fd = atoi(entry->d_name), skip_it = fd == dirfd(dir);
        for (int i = 0; i < skipped; i++)
            skip_it |= fd == skip[i];
        if (skip_it)
            continue;
        if (count == capacity) {
            count = -1;
            break;
        }
        fds[count++] = fd;
    }
    closedir(dir);
    return count;
}

static int send_with_fds(int sock, const void *bytes, size_t length, const int *fds, int count)
{
    struct iovec iov = {.iov_base = (void *)bytes, .iov_len = length};
    union { struct cmsghdr align; char space[CMSG_SPACE(sizeof(int) * 256)]; } control;
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1};
    if (count > 0) {
        message.msg_control = control.space;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(header), fds, sizeof(int) * count);
    }
    ssize_t sent;
    do
        sent = sendmsg(sock, &message, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent < 0)
        return -1;
    for (size_t done = sent; done < length; done += sent) {
        sent = send(sock, (const char *)bytes + done, length - done, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            sent = 0;
        else if (sent <= 0)
            return -1;
    }
    return 0;
}

/* Exactly `length` bytes, and at most one descriptor with them (-1 if none). */
static int receive(int sock, void *bytes, size_t length, int *fd)
{
    union { struct cmsghdr align; char space[CMSG_SPACE(sizeof(int))]; } control;
    size_t done = 0;
    if (fd)
        *fd = -1;
    while (done < length) {
        struct iovec iov = {.iov_base = (char *)bytes + done, .iov_len = length - done};
        struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1,
                                 .msg_control = control.space,
                                 .msg_controllen = sizeof control.space};
        ssize_t got = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&message); h; h = CMSG_NXTHDR(&message, h))
            if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
                int received = *(int *)CMSG_DATA(h);
                if (fd && *fd < 0)
                    *fd = received;
                else
                    close(received);
            }
        done += got;
    }
    return 0;
}

struct reply { uint32_t magic, kind, value, length; };

/* ---- after the hand-over -------------------------------------------------------- */

/* This process's argument and environment strings, contiguous as the kernel laid
 * them out: room for the guest's command line (/proc/PID/cmdline), as the in-process
 * VMM, the process the caller started, carries the guest's names. Nothing reads
 * argv or environ after the hand-over. */
static char *title_start;
static size_t title_room;

static void find_title_room(char **argv)
{
    extern char **environ;
    char *end = argv[0];
    for (char **arg = argv; *arg; arg++)
        if (*arg == end)
            end += strlen(*arg) + 1;
    for (char **env = environ; *env; env++)
        if (*env == end)
            end += strlen(*env) + 1;
    title_start = argv[0];
    title_room = end - argv[0];
}

/* The worker's NAME message: comm, NUL, then (with_argv) the arguments NUL-separated. */
static void show_name(const char *body, size_t length, int with_argv)
{
    char comm[16] = "";
    size_t comm_length = strnlen(body, length);
    memcpy(comm, body, comm_length < 15 ? comm_length : 15);
    prctl(PR_SET_NAME, comm, 0, 0, 0);
    if (!with_argv || comm_length >= length || title_room < 2)
        return;
    size_t args = length - comm_length - 1;
    if (args > title_room - 1)
        args = title_room - 1;
    memset(title_start, 0, title_room);
    memcpy(title_start, body + comm_length + 1, args);
    for (size_t i = 0; i < args; i++)   /* one string, as the worker's (setproctitle) */
        if (title_start[i] == 0)
            title_start[i] = ' ';
}

static void forward(int sig, siginfo_t *info, void *context)
{
    (void)context;
    int saved = errno;
    /* In the caller's session the worker shares this process group: what the
     * terminal sends (SI_KERNEL) reaches it directly, only what was sent to this
     * process by kill(2) (SI_USER, SI_QUEUE, SI_TKILL: <= 0) is passed on. */
    if (!in_session || info->si_code <= 0)
        syscall(SYS_pidfd_send_signal, worker_pidfd, sig, NULL, 0);
    errno = saved;
}

static void forward_unless_ignored(int sig, const struct sigaction *action)
{
    struct sigaction old;
    if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
        sigaction(sig, action, NULL);
}

/* Signals sent to this process go to the worker, except those the caller ignores
 * (the worker ignores them too). This process never stops by itself: it stops when
 * the server says the worker stopped (REPLY_STOPPED), so that the caller (a shell
 * waiting for its job) sees it stopped only then, and continues with it. */
static void forward_signals(void)
{
    static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
                                    SIGALRM, SIGCONT, SIGWINCH, SIGTSTP, SIGTTIN, SIGTTOU};
    struct sigaction action = {.sa_sigaction = forward, .sa_flags = SA_RESTART | SA_SIGINFO};
    sigfillset(&action.sa_mask);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        int sig = forwarded[i];
        if (in_session && (sig == SIGCONT || sig == SIGWINCH))
            continue;
        forward_unless_ignored(sig, &action);
    }
    /* The real-time signals too: the guest may handle any of them. */
    for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
        forward_unless_ignored(sig, &action);
}

/* End as the worker ended: its exit status, or death by the same signal. */
static void end_like(int status)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);   /* the worker dumped core if it was to */
        signal(sig, SIG_DFL);
        sigset_t only;
        sigemptyset(&only);
        sigaddset(&only, sig);
        sigprocmask(SIG_UNBLOCK, &only, NULL);
        raise(sig);
        _exit(128 + sig);
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : STATUS_IN_PROCESS_FAILED);
}

static int has_controlling_terminal(void)
{
    char stat[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;   /* cannot tell: assume so */
    ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    if (n <= 0)
        return 1;
    stat[n] = 0;
    char *after_name = strrchr(stat, ')');
    int tty = 0;
    /* ") state ppid pgrp session tty_nr" */
    if (!after_name || sscanf(after_name + 1, " %*c %*d %*d %*d %d", &tty) != 1)
        return 1;
    return tty != 0;
}

int main(int argc, char **argv)
{
    find_package_root();
    find_title_room(argv);
    const char *mode = getenv("KVMDUNE_STARTUP");
    tracing = getenv("KVMDUNE_STARTUP_TRACE") != NULL;
    if (argc < 2 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "sandbox") != 0))
        in_process(argv, "not run or sandbox");
    if (mode && strcmp(mode, "inprocess") == 0)
        in_process(argv, "KVMDUNE_STARTUP=inprocess");
    in_session = has_controlling_terminal();

    char directory_buffer[PATH_MAX], version[17];
    const char *why = NULL;
    const char *directory = socket_directory(directory_buffer, sizeof directory_buffer, &why);
    if (!directory)
        in_process(argv, why);
    if (code_version(version, sizeof version) < 0)
        in_process(argv, "cannot read the package's sources");
    int sock = connect_server(directory, version);
    if (sock < 0)
        in_process(argv, "no server (see the socket directory's server.log)");

    const char *device = getenv("KVMDUNE_KVM_DEVICE");
    int fixed[PASSED_FIXED];
    fixed[PASSED_KVM] = open(device && *device ? device : "/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fixed[PASSED_KVM] < 0)
        in_process(argv, "cannot open /dev/kvm here (the in-process path says why)");
    fixed[PASSED_CWD] = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    fixed[PASSED_ROOT] = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fixed[PASSED_CWD] < 0 || fixed[PASSED_ROOT] < 0)
        in_process(argv, "cannot open the working or root directory");

    int fds[PASSED_FIXED + MAX_CALLER_FDS];
    int skip[] = {sock, fixed[PASSED_KVM], fixed[PASSED_CWD], fixed[PASSED_ROOT]};
    memcpy(fds, fixed, sizeof fixed);
    int callers = caller_descriptors(fds + PASSED_FIXED, MAX_CALLER_FDS, skip, 4);
    if (callers < 0)
        in_process(argv, "too many open descriptors to pass");

    struct buffer request = {0};
    extern char **environ;
    uint32_t environment_count = 0;
    while (environ[environment_count])
        environment_count++;
    int failed = append_u32(&request, MAGIC_REQUEST) | append_u32(&request, PROTOCOL_VERSION)
                 | append_u32(&request, 0) /* length, below */
                 | append_u32(&request, PASSED_FIXED + callers);
    for (int i = 0; i < callers; i++)
        failed |= append_u32(&request, fds[PASSED_FIXED + i]);
    failed |= append_strings(&request, argv + 1, argc - 1);
    failed |= append_strings(&request, environ, environment_count);
    if (failed)
        in_process(argv, "out of memory");
    uint32_t total = request.length;
    memcpy(request.data + 8, &total, sizeof total);
    if (send_with_fds(sock, request.data, request.length, fds, PASSED_FIXED + callers) < 0)
        in_process(argv, "the server went away");

    struct reply reply;
    char reason[512] = "";
    for (;;) {
        int pidfd;
        if (receive(sock, &reply, sizeof reply, &pidfd) < 0 || reply.magic != MAGIC_REPLY)
            in_process(argv, "the server went away");
        size_t length = reply.length < sizeof reason ? reply.length : sizeof reason - 1;
        if (receive(sock, reason, length, NULL) < 0)
            in_process(argv, "the server went away");
        reason[length] = 0;
        if (reply.kind == REPLY_CHALLENGE) {
            /* Only a caller that can see the worker in /proc may have it: a caller
             * that Landlock (or another LSM) confines cannot open this. */
            char path[64];
            snprintf(path, sizeof path, "/proc/%u/mem", reply.value);
            int proof = open(path, O_RDONLY | O_CLOEXEC);
            uint32_t answer = MAGIC_REPLY;
            if (send_with_fds(sock, &answer, sizeof answer, &proof, proof >= 0) < 0)
                in_process(argv, "the server went away");
            if (proof >= 0)
                close(proof);
            continue;
        }
        if (reply.kind == REPLY_ACCEPTED && pidfd >= 0) {
            worker_pidfd = pidfd;
            break;
        }
        in_process(argv, reply.kind == REPLY_REFUSED ? reason : "a bad reply");
    }

    /* The worker holds the caller's descriptors now: this process keeps only 0-2
     * (as the in-process VMM does), so that a pipe the guest closes is closed. */
    for (int i = 0; i < PASSED_FIXED + callers; i++)
        if (fds[i] > 2)
            close(fds[i]);
    forward_signals();
    for (;;) {
        uint32_t message[4];
        if (receive(sock, message, 2 * sizeof(uint32_t), NULL) < 0)
            break;
        if (message[0] == MAGIC_STATUS)
            end_like((int)message[1]);
        if (message[0] != MAGIC_REPLY || receive(sock, message + 2, 2 * sizeof(uint32_t), NULL) < 0
            || message[3] > 65536)
            break;
        if (message[1] == REPLY_STOPPED) {
            raise(SIGSTOP);
            continue;
        }
        if (message[1] != REPLY_NAME)
            break;
        char *body = malloc(message[3] + 1);
        if (!body || receive(sock, body, message[3], NULL) < 0)
            break;
        show_name(body, message[3], message[2] != 0);
        free(body);
    }
    fprintf(stderr, "kvmdune: the resident server ended without the run's status\n");
    _exit(STATUS_IN_PROCESS_FAILED);
}
