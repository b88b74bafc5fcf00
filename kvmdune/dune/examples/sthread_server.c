/* sthread_server.c - a server that handles each connection in an sthread (Wedge, on
 * kvmdune's Dune API: include/sthread.h), so that one compromised handler cannot
 * read another connection's data.
 *
 *     gcc -O2 -static -o sthread_server sthread_server.c $(kvmdune config --cflags --libs)
 *     kvmdune run -- ./sthread_server serve [CONNECTIONS]
 *     kvmdune run -- ./sthread_server attack [ATTACK...]
 *
 * Each connection is a socketpair: the server's end goes to the handler, the client
 * (this program's main thread) writes a request and reads the reply. A connection's
 * session (its user's name and secret) lives in a tag of its own; its handler's
 * context grants that tag, the server's end of its socket, and read and write.
 *
 * `serve` handles CONNECTIONS connections at once (each sthread a vCPU of its own),
 * two rounds: the second runs in the recycled sthreads of the first. `attack` serves
 * alice, then one compromised handler per attack (all without ATTACK), each aimed at
 * alice's secret and descriptor (their addresses and numbers are handed to it, as
 * an exploit would find them); each attack runs in the recycled sthread of the
 * previous connection. Then alice is served again, and her secret and the server's
 * master key are checked. The verdicts go to stdout; the exit status is 0 when every
 * connection got what it should.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sthread.h>

#define MAX_CONNECTIONS 8
#define REQUEST_SIZE 128
#define REPLY_SIZE 256
#define SECRET_MARK "secret-of-"
#define DEEP_BUFFER 4096
#define RESIDUE_SCAN (12 * 1024)
/* The call ring of vCPU 0 (kvmdune/machine/layout.py: CALL_RING, just below the
 * top of the user half): the program's own, never mapped in an sthread's root. */
#define CALL_RING_ADDRESS 0x7fffffffe000UL

/* Set after sthread_init: no sthread's copy of the globals has it. */
static char master_key[64];
/* A handler's last reply, in its private copy of the globals. */
static char last_reply[REPLY_SIZE];

struct session {
	char name[32];
	char secret[64];
};

/* What a handler gets, in its connection's tag. */
struct handler_args {
	int fd;                         /* the server's end of its connection */
	struct session *session;
	/* For compromised handlers, what an exploit would find: another connection's
	 * secret and descriptor. */
	char *other_secret;
	int other_fd;
};

struct connection {
	int client_fd, server_fd;
	tag_t tag;
	struct session *session;
	struct handler_args *args;
	sthread_t sthread;
};

static void die(const char *what, int error)
{
	fprintf(stderr, "sthread-server: %s (%d)\n", what, error);
	exit(1);
}

// the handlers (they run in sthreads)

static const char *errno_name(int error)
{
	switch (error) {
	case EPERM: return "EPERM";
	case EFAULT: return "EFAULT";
	case EBADF: return "EBADF";
	}
	return "another error";
}

/* "-1 EPERM" or the count, for a reply. */
static void outcome(char *out, size_t size, long result)
{
	if (result < 0)
		snprintf(out, size, "-1 %s", errno_name(errno));
	else
		snprintf(out, size, "%ld", result);
}

static void reply(const struct handler_args *args, const char *text)
{
	if (write(args->fd, text, strlen(text)) < 0)
		exit(2);
}

/* The reply is made deep in the stack, and kept in a global: the residue a
 * recycled sthread must not find. */
static void __attribute__((noinline)) greet(const struct handler_args *args)
{
	char deep[DEEP_BUFFER];

	snprintf(deep, sizeof(deep), "hello %s, your secret is %s", args->session->name,
		 args->session->secret);
	snprintf(last_reply, sizeof(last_reply), "%.*s", (int)sizeof(last_reply) - 1, deep);
	reply(args, deep);
}

static void attack_other_fd(const struct handler_args *args)
{
	char text[REPLY_SIZE], wrote[16], got[16], out[16];
	char byte;

	outcome(wrote, sizeof(wrote), write(args->other_fd, "x", 1));
	outcome(got, sizeof(got), read(args->other_fd, &byte, 1));
	outcome(out, sizeof(out), write(STDOUT_FILENO, "leak\n", 5));
	snprintf(text, sizeof(text), "write(alice's fd) %s, read(alice's fd) %s, "
		 "write(stdout) %s", wrote, got, out);
	reply(args, text);
}

static void attack_open_file(const struct handler_args *args)
{
	char text[REPLY_SIZE], opened[16];

	outcome(opened, sizeof(opened), open("/etc/hostname", O_RDONLY));
	snprintf(text, sizeof(text), "open(/etc/hostname) %s", opened);
	reply(args, text);
}

/* The kernel as a confused deputy: write() of alice's secret to its own socket,
 * read() over it. */
static void attack_syscall_pointer(const struct handler_args *args)
{
	char text[REPLY_SIZE], sent[16], received[16];

	outcome(sent, sizeof(sent), write(args->fd, args->other_secret, 16));
	outcome(received, sizeof(received), read(args->fd, args->other_secret, 16));
	snprintf(text, sizeof(text), "write(own fd, alice's secret) %s, "
		 "read(own fd, into alice's secret) %s", sent, received);
	reply(args, text);
}

static void attack_master_key(const struct handler_args *args)
{
	char text[REPLY_SIZE];

	snprintf(text, sizeof(text), "master key seen: '%s'", master_key);
	strcpy(master_key, "overwritten by a handler");
	reply(args, text);
}

static int __attribute__((noinline)) stack_has_secret(void)
{
	/* Below this frame: where the frames of earlier calls at this depth were. */
	const char *low = (const char *)((uintptr_t)__builtin_frame_address(0) - RESIDUE_SCAN);

	return memmem(low, RESIDUE_SCAN - 64, SECRET_MARK, strlen(SECRET_MARK)) != NULL;
}

static void attack_residue(const struct handler_args *args)
{
	char text[REPLY_SIZE];
	int on_stack = stack_has_secret();

	snprintf(text, sizeof(text), "residue of earlier connections: stack %s, globals %s",
		 on_stack ? "FOUND" : "none", strstr(last_reply, SECRET_MARK) ? "FOUND" : "none");
	reply(args, text);
}

/* These end the handler: the server reports how. */
static void attack_read_other_secret(const struct handler_args *args)
{
	reply(args, args->other_secret[0] ? "read it" : "read a zero");
}

static void attack_write_other_secret(const struct handler_args *args)
{
	strcpy(args->other_secret, "owned");
	reply(args, "wrote it");
}

static void attack_call_ring(const struct handler_args *args)
{
	reply(args, *(volatile char *)CALL_RING_ADDRESS ? "read the ring" : "read a zero");
}

static const struct attack {
	const char *name;
	void (*run)(const struct handler_args *args);
} ATTACKS[] = {
	{"residue", attack_residue},
	{"read-other-secret", attack_read_other_secret},
	{"write-other-secret", attack_write_other_secret},
	{"syscall-pointer", attack_syscall_pointer},
	{"other-fd", attack_other_fd},
	{"open-file", attack_open_file},
	{"master-key", attack_master_key},
	{"call-ring", attack_call_ring},
};
#define ATTACK_COUNT (sizeof(ATTACKS) / sizeof(ATTACKS[0]))

static const struct attack *find_attack(const char *name)
{
	for (size_t i = 0; i < ATTACK_COUNT; i++)
		if (!strcmp(ATTACKS[i].name, name))
			return &ATTACKS[i];
	return NULL;
}

/* The handler: a request "HELLO" or, for a compromised one, "ATTACK name". */
static void *handle(void *arg)
{
	const struct handler_args *args = arg;
	char request[REQUEST_SIZE];
	ssize_t got = read(args->fd, request, sizeof(request) - 1);

	if (got <= 0)
		return (void *)1;
	request[got] = 0;
	if (!strcmp(request, "HELLO")) {
		greet(args);
		return NULL;
	}
	if (!strncmp(request, "ATTACK ", 7) && find_attack(request + 7)) {
		find_attack(request + 7)->run(args);
		return NULL;
	}
	reply(args, "bad request");
	return (void *)1;
}

// the server

static void open_connection(struct connection *c, const char *name)
{
	int fds[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds))
		die("socketpair failed", errno);
	c->client_fd = fds[0];
	c->server_fd = fds[1];
	c->tag = tag_new();
	if (c->tag < 0)
		die("tag_new failed", c->tag);
	c->session = smalloc(c->tag, sizeof(*c->session));
	c->args = smalloc(c->tag, sizeof(*c->args));
	if (!c->session || !c->args)
		die("smalloc failed", 0);
	snprintf(c->session->name, sizeof(c->session->name), "%s", name);
	snprintf(c->session->secret, sizeof(c->session->secret), SECRET_MARK "%s-%08x", name,
		 (unsigned)(strlen(name) * 2654435761u));
	*c->args = (struct handler_args){c->server_fd, c->session, NULL, -1};
}

static void close_connection(struct connection *c)
{
	close(c->client_fd);
	close(c->server_fd);
	tag_delete(c->tag);
}

static void start_handler(struct connection *c, const char *request)
{
	sc_t sc;
	int ret;

	sc_init(&sc);
	if (sc_mem_add(&sc, c->tag, PROT_READ | PROT_WRITE)
	    || sc_fd_add(&sc, c->server_fd, PROT_READ | PROT_WRITE)
	    || sc_sys_add(&sc, SYS_read) || sc_sys_add(&sc, SYS_write))
		die("cannot make the context", 0);
	if (write(c->client_fd, request, strlen(request)) != (ssize_t)strlen(request))
		die("cannot send the request", errno);
	ret = sthread_create(&c->sthread, &sc, handle, c->args);
	if (ret)
		die("sthread_create failed", ret);
}

/* Joins the handler; the verdict and what the client got, in one line. */
static void finish_handler(struct connection *c, char *got, size_t size,
			   struct sthread_exit *end, int *how)
{
	void *ret = NULL;
	ssize_t n;

	*how = sthread_join_exit(c->sthread, &ret, end);
	if (*how < 0)
		die("sthread_join failed", *how);
	/* Whatever the handler wrote before it ended (maybe nothing). */
	n = recv(c->client_fd, got, size - 1, MSG_DONTWAIT);
	got[n > 0 ? n : 0] = 0;
	if (*how == STHREAD_RETURNED && ret)
		*how = -1;            /* the handler itself failed */
}

static const char *where(uintptr_t address, const struct connection *victim)
{
	uintptr_t secret = (uintptr_t)victim->session->secret;

	if (address >= secret && address < secret + sizeof(victim->session->secret))
		return "alice's secret";
	if (address >= CALL_RING_ADDRESS && address < CALL_RING_ADDRESS + 4096)
		return "the call ring";
	return "memory it was not granted";
}

static const char *sthread_origin(const struct sthread_exit *end)
{
	return end->recycled < 0 ? "fresh" : "recycled";
}

static int serve(int count)
{
	struct connection connections[MAX_CONNECTIONS];
	static const char *const names[MAX_CONNECTIONS] = {"alice", "bob", "carol", "dave",
							  "erin", "frank", "grace", "heidi"};
	int failures = 0;

	for (int round = 1; round <= 2; round++) {
		for (int i = 0; i < count; i++) {
			open_connection(&connections[i], names[i]);
			start_handler(&connections[i], "HELLO");
		}
		for (int i = 0; i < count; i++) {
			struct connection *c = &connections[i];
			char got[REPLY_SIZE], expected[REPLY_SIZE];
			struct sthread_exit end;
			int how;

			finish_handler(c, got, sizeof(got), &end, &how);
			snprintf(expected, sizeof(expected), "hello %s, your secret is %s",
				 c->session->name, c->session->secret);
			bool ok = how == STHREAD_RETURNED && !strcmp(got, expected);
			failures += !ok;
			printf("round %d, %s (%s sthread): '%s': %s\n", round, names[i],
			       sthread_origin(&end), got, ok ? "ok" : "WRONG");
		}
		for (int i = 0; i < count; i++)
			close_connection(&connections[i]);
	}
	return failures ? 1 : 0;
}

static int attack(int count, char **names)
{
	struct connection alice, mallory;
	char got[REPLY_SIZE], expected[REPLY_SIZE], alice_secret[64];
	struct sthread_exit end;
	int how, failures = 0;

	sthread_set_pool(1);    /* each connection runs in the previous one's sthread */
	open_connection(&alice, "alice");
	snprintf(alice_secret, sizeof(alice_secret), "%s", alice.session->secret);
	snprintf(expected, sizeof(expected), "hello alice, your secret is %s", alice_secret);
	start_handler(&alice, "HELLO");
	finish_handler(&alice, got, sizeof(got), &end, &how);
	failures += how != STHREAD_RETURNED || strcmp(got, expected);
	printf("alice: '%s'\n", got);
	for (int i = 0; i < count; i++) {
		const struct attack *a = find_attack(names[i]);
		char request[REQUEST_SIZE];

		open_connection(&mallory, "mallory");
		mallory.args->other_secret = alice.session->secret;
		mallory.args->other_fd = alice.server_fd;
		snprintf(request, sizeof(request), "ATTACK %s", a->name);
		start_handler(&mallory, request);
		finish_handler(&mallory, got, sizeof(got), &end, &how);
		printf("attack %s (%s sthread): ", a->name, sthread_origin(&end));
		if (how == STHREAD_FAULTED)
			printf("killed by a page fault (%s) at %s\n",
			       end.fec & 0x2 ? "write" : "read", where(end.address, &alice));
		else if (how == STHREAD_EXCEPTION)
			printf("killed by exception %d\n", end.vector);
		else
			printf("replied '%s'; %d system call%s denied\n", got, end.denied,
			       end.denied == 1 ? "" : "s");
		close_connection(&mallory);
	}
	/* Alice again, after them all. */
	start_handler(&alice, "HELLO");
	finish_handler(&alice, got, sizeof(got), &end, &how);
	failures += how != STHREAD_RETURNED || strcmp(got, expected);
	printf("alice again: '%s'\n", got);
	bool intact = !strcmp(alice.session->secret, alice_secret)
		      && !strcmp(master_key, "the server's master key");
	printf("alice's secret and the master key: %s\n", intact ? "intact" : "CHANGED");
	close_connection(&alice);
	return failures || !intact ? 1 : 0;
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr, "usage: sthread_server serve [CONNECTIONS (1-%d)]\n"
		"       sthread_server attack [ATTACK...]\nattacks:", MAX_CONNECTIONS);
	for (size_t i = 0; i < ATTACK_COUNT; i++)
		fprintf(stderr, " %s", ATTACKS[i].name);
	fprintf(stderr, "\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int ret;

	if (argc < 2)
		usage();
	for (int i = 2; !strcmp(argv[1], "attack") && i < argc; i++)
		if (!find_attack(argv[i]))
			usage();
	ret = sthread_init();
	if (ret)
		die("sthread_init failed", ret);
	snprintf(master_key, sizeof(master_key), "the server's master key");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[1], "serve")) {
		int count = argc > 2 ? atoi(argv[2]) : 4;

		if (argc > 3 || count < 1 || count > MAX_CONNECTIONS)
			usage();
		return serve(count);
	}
	if (!strcmp(argv[1], "attack")) {
		char *all[ATTACK_COUNT];

		if (argc > 2)
			return attack(argc - 2, argv + 2);
		for (size_t i = 0; i < ATTACK_COUNT; i++)
			all[i] = (char *)ATTACKS[i].name;
		return attack((int)ATTACK_COUNT, all);
	}
	usage();
}
