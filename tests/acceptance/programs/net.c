#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
int main(void) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    int fd = open("/etc/hostname", O_RDONLY);
    char data[] = "ping";
    struct iovec iov = {data, 4};
    char control[CMSG_SPACE(sizeof(int))];
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    printf("sendmsg: %zd\n", sendmsg(sv[0], &msg, 0));
    char got[8] = {0};
    struct iovec riov = {got, sizeof got};
    char rcontrol[CMSG_SPACE(sizeof(int))];
    struct msghdr rmsg = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = rcontrol,
                          .msg_controllen = sizeof rcontrol};
    struct pollfd p = {sv[1], POLLIN, 0};
    printf("poll: %d revents=%d\n", poll(&p, 1, 1000), p.revents);
    fd_set set; FD_ZERO(&set); FD_SET(sv[1], &set);
    struct timeval tv = {1, 0};
    printf("select: %d isset=%d\n", select(sv[1] + 1, &set, NULL, NULL, &tv), FD_ISSET(sv[1], &set));
    printf("recvmsg: %zd %s\n", recvmsg(sv[1], &rmsg, 0), got);
    int passed; memcpy(&passed, CMSG_DATA(CMSG_FIRSTHDR(&rmsg)), sizeof passed);
    char host[64] = {0};
    read(passed, host, sizeof host - 1);
    printf("passed fd > 2: %d, reads: %s", passed > 2, host);
    struct pollfd bad = {999, POLLIN, 0};
    printf("poll bad fd: %d revents=%d\n", poll(&bad, 1, 0), bad.revents);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1), .sin_addr.s_addr = htonl(0x7f000001)};
    printf("connect refused: %d\n", connect(s, (struct sockaddr *)&a, sizeof a));
    return 0;
}
