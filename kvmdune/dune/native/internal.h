/* The library's private state and helpers, shared by init.c, trap.c and entry.S's
 * callers. Nothing here is part of the API. */
#ifndef KVMDUNE_INTERNAL_H
#define KVMDUNE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "dune.h"

#define KVMDUNE_HIDDEN __attribute__((visibility("hidden")))

/* Each thread's Dune state (threads do not run under kvmdune yet; kept per thread
 * so that they can). */
struct kvmdune_thread {
	void *stack_base;             /* the handler stack (0: dune_enter not called) */
	size_t stack_size;
	unsigned long user_fs;        /* the FS base user code runs with */
};

extern __thread struct kvmdune_thread kvmdune_self KVMDUNE_HIDDEN;

/* How the FPU/SSE/AVX state is saved around handlers (init.c sets them once). */
extern unsigned long kvmdune_fpu_area_size KVMDUNE_HIDDEN;
extern unsigned char kvmdune_fpu_uses_xsave KVMDUNE_HIDDEN;

#define KVMDUNE_FPU_ALIGN 64
#define KVMDUNE_XSAVE_HEADER 512      /* XRSTOR faults on junk in its 64 bytes */
#define KVMDUNE_XSAVE_HEADER_SIZE 64

void kvmdune_fpu_detect(void) KVMDUNE_HIDDEN;

/* Save and restore the whole FPU/SSE/AVX state in a KVMDUNE_FPU_ALIGN-aligned area
 * of kvmdune_fpu_area_size bytes. */
static inline void kvmdune_fpu_save(void *area)
{
	memset((char *)area + KVMDUNE_XSAVE_HEADER, 0, KVMDUNE_XSAVE_HEADER_SIZE);
	if (kvmdune_fpu_uses_xsave)
		__asm__ volatile("xsave64 (%0)" : : "r"(area), "a"(-1), "d"(-1) : "memory");
	else
		__asm__ volatile("fxsave64 (%0)" : : "r"(area) : "memory");
}

static inline void kvmdune_fpu_restore(const void *area)
{
	if (kvmdune_fpu_uses_xsave)
		__asm__ volatile("xrstor64 (%0)" : : "r"(area), "a"(-1), "d"(-1) : "memory");
	else
		__asm__ volatile("fxrstor64 (%0)" : : "r"(area) : "memory");
}

/* entry.S */
extern void kvmdune_upcall_entry(void) KVMDUNE_HIDDEN;

/* trap.c: called by the upcall entry with the frame the VMM wrote. */
void kvmdune_upcall_dispatch(struct kvmdune_upcall *up) KVMDUNE_HIDDEN;
void kvmdune_resume_failed(long error) KVMDUNE_HIDDEN __attribute__((noreturn));

#endif
