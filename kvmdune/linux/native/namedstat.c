/* The stat answers of sandbox paths accepted by name (namedstat.h says why the
 * identity kept stands for the name checked). Per serving thread, so that no lock is
 * taken: each thread that serves calls (the serving thread, a vCPU's thread in a
 * direct spell) remembers what it checked itself. */
#define _GNU_SOURCE
#include "namedstat.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* A few paths: what one program stats again and again is a handful of zone and
 * configuration files. */
#define NAMEDSTAT_ENTRIES 8
/* Longer paths are not remembered (they take the full check every time). */
#define NAMEDSTAT_PATH_BYTES 256
/* What identifies the file, and what struct stat is made of. */
#define NAMEDSTAT_MASK (STATX_BASIC_STATS | STATX_MNT_ID)
#define NAMEDSTAT_FLAGS (AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT)

typedef struct {
    unsigned generation;                /* 0: empty */
    int flags;
    uint32_t dev_major, dev_minor;
    uint64_t ino, mnt_id;
    struct statx_timestamp ctime;
    char path[NAMEDSTAT_PATH_BYTES];
} NamedStat;

static __thread NamedStat entries[NAMEDSTAT_ENTRIES];
static __thread unsigned next_entry;
static unsigned generations;            /* atomic */

unsigned namedstat_new_generation(void) {
    unsigned generation;
    do
        generation = __atomic_add_fetch(&generations, 1, __ATOMIC_RELAXED);
    while (generation == 0);
    return generation;
}

/* One name on one mount, unchanged since: see namedstat.h. */
static int qualifies(const struct statx *stx) {
    return (stx->stx_mask & NAMEDSTAT_MASK) == NAMEDSTAT_MASK && stx->stx_nlink == 1
        && !S_ISDIR(stx->stx_mode);
}

static int same_file(const NamedStat *entry, const struct statx *stx) {
    return entry->dev_major == stx->stx_dev_major && entry->dev_minor == stx->stx_dev_minor
        && entry->ino == stx->stx_ino && entry->mnt_id == stx->stx_mnt_id
        && entry->ctime.tv_sec == stx->stx_ctime.tv_sec
        && entry->ctime.tv_nsec == stx->stx_ctime.tv_nsec;
}

/* struct stat as the kernel's newfstatat fills it (fs/stat.c cp_new_stat): the
 * padding zeroed, devices encoded as glibc's makedev does for the kernel's 12-bit
 * majors and 20-bit minors. */
static void stat_from_statx(const struct statx *stx, struct stat *st) {
    memset(st, 0, sizeof *st);
    st->st_dev = makedev(stx->stx_dev_major, stx->stx_dev_minor);
    st->st_ino = stx->stx_ino;
    st->st_nlink = stx->stx_nlink;
    st->st_mode = stx->stx_mode;
    st->st_uid = stx->stx_uid;
    st->st_gid = stx->stx_gid;
    st->st_rdev = makedev(stx->stx_rdev_major, stx->stx_rdev_minor);
    st->st_size = (off_t)stx->stx_size;
    st->st_blksize = stx->stx_blksize;
    st->st_blocks = (blkcnt_t)stx->stx_blocks;
    st->st_atim.tv_sec = stx->stx_atime.tv_sec;
    st->st_atim.tv_nsec = stx->stx_atime.tv_nsec;
    st->st_mtim.tv_sec = stx->stx_mtime.tv_sec;
    st->st_mtim.tv_nsec = stx->stx_mtime.tv_nsec;
    st->st_ctim.tv_sec = stx->stx_ctime.tv_sec;
    st->st_ctim.tv_nsec = stx->stx_ctime.tv_nsec;
}

static NamedStat *find(unsigned generation, const char *path, int flags) {
    for (int i = 0; i < NAMEDSTAT_ENTRIES; i++)
        if (entries[i].generation == generation && entries[i].flags == flags
            && strcmp(entries[i].path, path) == 0)
            return &entries[i];
    return NULL;
}

int namedstat_lookup(unsigned generation, const char *path, int flags, struct stat *st) {
    struct statx stx;
    flags &= NAMEDSTAT_FLAGS;
    if (generation == 0 || path[0] != '/')
        return 0;
    NamedStat *entry = find(generation, path, flags);
    if (entry == NULL || statx(AT_FDCWD, path, flags, NAMEDSTAT_MASK, &stx) != 0
        || !qualifies(&stx) || !same_file(entry, &stx))
        return 0;
    stat_from_statx(&stx, st);
    return 1;
}

int namedstat_remember(unsigned generation, const char *path, int flags, int held,
                       struct stat *st) {
    struct statx stx;
    flags &= NAMEDSTAT_FLAGS;
    if (statx(held, "", AT_EMPTY_PATH, NAMEDSTAT_MASK, &stx) != 0)
        return 0;
    stat_from_statx(&stx, st);
    if (generation == 0 || path[0] != '/' || strlen(path) >= NAMEDSTAT_PATH_BYTES
        || !qualifies(&stx))
        return 1;
    NamedStat *entry = find(generation, path, flags);
    if (entry == NULL)
        entry = &entries[next_entry++ % NAMEDSTAT_ENTRIES];
    entry->generation = generation;
    entry->flags = flags;
    entry->dev_major = stx.stx_dev_major;
    entry->dev_minor = stx.stx_dev_minor;
    entry->ino = stx.stx_ino;
    entry->mnt_id = stx.stx_mnt_id;
    entry->ctime = stx.stx_ctime;
    strcpy(entry->path, path);
    return 1;
}
