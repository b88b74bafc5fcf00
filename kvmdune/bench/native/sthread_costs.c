/* Create+join latency for `kvmdune bench sthreads`, timed inside the program (start-up
 * not counted), one JSON line per operation with the median of N in nanoseconds:
 *   sthread_costs native N     fork+waitpid and pthread_create+join (run natively)
 *   sthread_costs sthreads N   pthread_create+join, then an sthread created fresh
 *                              (root, private copies, worker thread; destroyed at
 *                              join) and recycled (restored by its dirty bits at
 *                              join), each running a function that returns at once
 *                              (run under kvmdune) */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sthread.h>

#include "bench_clock.h"

static void *nothing(void *arg) { return arg; }

static void report(const char *name, double *samples, int n)
{
	printf("{\"name\": \"%s\", \"ns\": %.0f}\n", name, median_of(samples, n));
}

static int fork_wait(void)
{
	int status;
	pid_t child = fork();

	if (child == 0)
		_exit(0);
	return child < 0 || waitpid(child, &status, 0) != child ? -1 : 0;
}

static int pthread_once_round(void)
{
	pthread_t thread;

	return pthread_create(&thread, NULL, nothing, NULL) || pthread_join(thread, NULL) ? -1 : 0;
}

static sc_t context;

static int sthread_round(void)
{
	sthread_t st;
	void *ret;

	if (sthread_create(&st, &context, nothing, (void *)7))
		return -1;
	return sthread_join(st, &ret) == STHREAD_RETURNED && ret == (void *)7 ? 0 : -1;
}

static int measure(const char *name, int (*round)(void), double *samples, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t start = now_ns();

		if (round()) {
			fprintf(stderr, "sthread_costs: %s failed\n", name);
			return 1;
		}
		samples[i] = (double)(now_ns() - start);
	}
	report(name, samples, n);
	return 0;
}

int main(int argc, char **argv)
{
	int n = argc == 3 ? atoi(argv[2]) : 0;
	double *samples = n > 0 ? calloc((size_t)n, sizeof(double)) : NULL;
	int ret;

	if (!samples) {
		fprintf(stderr, "usage: sthread_costs native|sthreads N\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[1], "native"))
		return measure("fork+wait", fork_wait, samples, n)
		       || measure("pthread_create+join", pthread_once_round, samples, n);
	if (strcmp(argv[1], "sthreads"))
		return 2;
	if ((ret = sthread_init())) {
		fprintf(stderr, "sthread_costs: sthread_init: %d\n", ret);
		return 1;
	}
	sc_init(&context);
	if (measure("pthread_create+join", pthread_once_round, samples, n))
		return 1;
	sthread_set_pool(0);            /* every join destroys: each create is fresh */
	if (measure("sthread fresh", sthread_round, samples, n))
		return 1;
	sthread_set_pool(1);
	if (sthread_round())            /* one in the pool: every create recycles it */
		return 1;
	return measure("sthread recycled", sthread_round, samples, n);
}
