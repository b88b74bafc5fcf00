/* The stat answers of sandbox paths accepted by name, remembered per serving thread.
 *
 * A sandbox root that is a single file (or a name that is not canonical) cannot be
 * given to openat2's RESOLVE_BENEATH, so the fast path checks such a path by name:
 * it walks the path, holds the file, reads the held descriptor's name back from
 * /proc/self/fd and compares it with the roots (fastpath.c, hold_named): five system
 * calls with the stat itself. `ls -l` stats /etc/localtime once for every file it
 * lists (glibc's localtime checks whether the zone file changed).
 *
 * So a path string accepted by name is remembered with the identity of the file it
 * reached: device, inode, mount id and change time. A later stat of the same string
 * (absolute, from the same roots) that reaches a file of the same identity is
 * answered from one statx, with neither the walk's checks nor the name read back.
 *
 * Why that identity stands for the name checked: a file that is not a directory and
 * has one link has one name on its mount; renaming it changes its ctime (as do
 * link, unlink, chmod and chown); the same file through another mount (a bind
 * mount) has another mount id; the remembered walk refused magic links and /proc,
 * and reaching the same file on the same mount by a magic link later yields the same
 * stat. What the identity does not see: a directory above the file renamed (its
 * files keep their ctime). Then the answer is the stat of a file that was allowed
 * when it was remembered: the race the full check has too, between reading the name
 * and the fstat, over a longer window, and only ever metadata -- never contents or a
 * descriptor. Files with more than one link and directories always take the full
 * check. */
#ifndef KVMDUNE_NAMEDSTAT_H
#define KVMDUNE_NAMEDSTAT_H

#include <sys/stat.h>

/* A fresh generation for a server's new set of roots: entries remembered under
 * another generation are never used (never 0, so a zeroed entry matches nothing). */
unsigned namedstat_new_generation(void);

/* The stat of `path` (flags: AT_SYMLINK_NOFOLLOW, AT_NO_AUTOMOUNT) into *st when the
 * path was accepted by name under `generation` and reaches the same file: 1; else 0
 * (nothing written: the full check decides). */
int namedstat_lookup(unsigned generation, const char *path, int flags, struct stat *st);

/* `held`, the file `path` reached and was accepted by name, stat'ed into *st: 1, and
 * remembered when it qualifies (absolute path, one link, not a directory); 0 when
 * statx failed and *st is not written. */
int namedstat_remember(unsigned generation, const char *path, int flags, int held,
                       struct stat *st);

#endif
