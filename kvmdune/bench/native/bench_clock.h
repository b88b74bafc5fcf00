/* Clocks and statistics the benchmark programs share: monotonic nanoseconds, the
 * TSC, the TSC's rate against the monotonic clock, and the median of a sample. */
#ifndef KVMDUNE_BENCH_CLOCK_H
#define KVMDUNE_BENCH_CLOCK_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* How long calibrate_tsc() watches both clocks: long enough for a stable ratio. */
#define TSC_CALIBRATION_NS 20000000ull

static double cycles_per_ns;

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t cycles(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

/* Sets cycles_per_ns. */
static inline void calibrate_tsc(void)
{
	uint64_t t0 = now_ns(), c0 = cycles();

	while (now_ns() - t0 < TSC_CALIBRATION_NS)
		;
	cycles_per_ns = (double)(cycles() - c0) / (double)(now_ns() - t0);
}

static inline int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of values[0..n) (sorts them). */
static inline double median_of(double *values, int n)
{
	qsort(values, n, sizeof(*values), compare_doubles);
	return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

#endif
