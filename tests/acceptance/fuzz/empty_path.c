/* Path calls given an empty path (no AT_EMPTY_PATH): Linux answers ENOENT and
 * acts on nothing.  A sandbox that resolved "" against the working directory
 * would act on that directory itself (found by the fuzz: chmod("") made the
 * sandbox's writable root mode 07777).  Prints each call's errno and, at the
 * end, the working directory's mode. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static void show(const char *name, long result)
{
    printf("%s: %s\n", name, result < 0 ? strerrorname_np(errno) : "ok");
}

int main(void)
{
    struct stat st;

    show("chmod", chmod("", 07777));
    show("chown", chown("", getuid(), getgid()));
    show("truncate", truncate("", 0));
    show("utimes", utimes("", NULL));
    show("mkdir", mkdir("", 0777));
    show("rmdir", rmdir(""));
    show("unlink", unlink(""));
    show("open", open("", O_RDONLY));
    show("creat", open("", O_CREAT | O_WRONLY, 0666));
    show("stat", stat("", &st));
    show("access", access("", F_OK));
    show("chdir", chdir(""));
    show("rename", rename("", "moved"));
    show("link", link("", "linked"));
    show("symlink", symlink("target", ""));
    show("fchmodat", fchmodat(AT_FDCWD, "", 07777, 0));
    if (stat(".", &st) != 0)
        return 1;
    printf("cwd mode: %o\n", st.st_mode & 07777);
    return 0;
}
