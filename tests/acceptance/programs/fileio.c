#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
/* File I/O in the directory argv[1]: open/write/lseek/read/fstat/getdents/rename/unlink. */
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (chdir(argv[1]) != 0) { perror("chdir"); return 3; }
    int fd = open("a.txt", O_CREAT | O_RDWR | O_TRUNC, 0640);
    if (fd < 0) { perror("open"); return 4; }
    const char text[] = "line one\nline two\n";
    if (write(fd, text, sizeof text - 1) != (ssize_t)(sizeof text - 1)) return 5;
    off_t end = lseek(fd, 0, SEEK_CUR);
    lseek(fd, 5, SEEK_SET);
    char buf[64] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    struct stat st;
    fstat(fd, &st);
    printf("end=%ld read=%zd [%s] size=%ld mode=%o\n", (long)end, n, buf, (long)st.st_size,
           st.st_mode & 0777);
    close(fd);
    if (rename("a.txt", "b.txt") != 0) perror("rename");
    mkdir("sub", 0755);
    int d = open("sub/c.txt", O_CREAT | O_WRONLY, 0600);
    dprintf(d, "%d\n", 42);
    close(d);
    DIR *dir = opendir(".");
    char *names[16]; int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && count < 16)
        if (e->d_name[0] != '.') names[count++] = strdup(e->d_name);
    closedir(dir);
    for (int i = 0; i < count; i++)
        for (int j = i + 1; j < count; j++)
            if (strcmp(names[i], names[j]) > 0) { char *t = names[i]; names[i] = names[j]; names[j] = t; }
    for (int i = 0; i < count; i++) printf("entry %s\n", names[i]);
    FILE *f = fopen("b.txt", "r");
    char line[64];
    while (fgets(line, sizeof line, f)) printf("got %s", line);
    fclose(f);
    printf("unlink b: %d\n", unlink("b.txt"));
    printf("unlink missing: %d %s\n", unlink("missing"), strerror(errno));
    printf("open missing: %d %s\n", open("/nonexistent/x", O_RDONLY), strerror(errno));
    unlink("sub/c.txt");
    printf("rmdir: %d\n", rmdir("sub"));
    return 0;
}
