/* SPDX-License-Identifier: MIT */
/*
 * Every kind of listener is taken over: argv[1] is tcp4, tcp6, udp or
 * unix. The successor's socket is the owner's (the same inode), what was
 * queued on it before the takeover (a connection, a datagram) reaches the
 * successor, and new traffic does too. A unix socket's path survives the
 * old owner's exit.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX], addr[PATH_MAX + 16], sock_path[PATH_MAX];
static const char *kind;

static bool is(const char *k)
{
    return strcmp(kind, k) == 0;
}

static int family(void)
{
    return is("tcp6") ? AF_INET6 : AF_INET;
}

/* Answer one datagram with "<tag> <payload>". */
static int serve_dgram(int fd, const char *tag)
{
    struct sockaddr_storage from;
    socklen_t fl = sizeof(from);
    char buf[256], resp[300];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, T_TIMEOUT) != 1)
        return -ETIMEDOUT;
    n = recvfrom(fd, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&from, &fl);
    if (n < 0)
        return -errno;
    buf[n] = 0;
    snprintf(resp, sizeof(resp), "%s %s", tag, buf);
    if (sendto(fd, resp, strlen(resp), 0, (struct sockaddr *)&from, fl) < 0)
        return -errno;
    return 0;
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "l", addr, 0));
    T_OK(baton_ready(b));
    t_tell(chan, is("unix") ? 0 : t_port(lfd));
    t_tell(chan, t_ino(lfd));
    /* Serve nothing: what arrives now waits for the successor. */
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    t_tell(chan, T_MSG_SUPERSEDED);
    baton_free(b);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    lfd = T_OK(baton_listen(b, "l", addr, 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_ino(lfd));
    T_HEAR_EQ(chan, T_MSG_GO);
    for (int i = 0; i < 2; i++) {
        if (is("udp"))
            T_OK(serve_dgram(lfd, "gen2"));
        else
            T_OK(t_serve_one(lfd, "gen2", T_TIMEOUT));
    }
    t_tell(chan, T_MSG_DONE);
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

static int client(int port)
{
    if (is("unix"))
        return T_OK(t_unix_connect(sock_path, T_TIMEOUT));
    if (is("udp")) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
        int fd = T_SYS(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        T_SYS(connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
        return fd;
    }
    return T_OK(t_tcp_connect(family(), port, T_TIMEOUT));
}

static void answer(int fd, const char *want)
{
    char buf[256];

    if (is("udp")) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        T_EQ(poll(&p, 1, T_TIMEOUT), 1);
        n = T_SYS(recv(fd, buf, sizeof(buf) - 1, 0));
        buf[n] = 0;
    } else {
        ssize_t n = T_OK(t_read_line(fd, buf, sizeof(buf), T_TIMEOUT));
        T_GT(n, 0);
        buf[n - 1] = 0;
    }
    T_STREQ(buf, want);
}

static void send_req(int fd, const char *req)
{
    char line[64];

    snprintf(line, sizeof(line), is("udp") ? "%s" : "%s\n", req);
    T_OK(t_write_all(fd, line, strlen(line)));
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ;
    long long ino;
    int port, early, late;
    struct stat st;

    t_init(argc, argv);
    if (argc != 2)
        t_fail(__FILE__, __LINE__, "usage: %s tcp4|tcp6|udp|unix", argv[0]);
    kind = argv[1];
    t_path(dir, "run");
    t_path(sock_path, "web.sock");
    if (is("tcp4"))
        snprintf(addr, sizeof(addr), "tcp://127.0.0.1:0");
    else if (is("tcp6"))
        snprintf(addr, sizeof(addr), "tcp://[::1]:0");
    else if (is("udp"))
        snprintf(addr, sizeof(addr), "udp://127.0.0.1:0");
    else if (is("unix"))
        snprintf(addr, sizeof(addr), "unix:%s", sock_path);
    else
        t_fail(__FILE__, __LINE__, "unknown kind %s", kind);
    if (is("tcp6") && !t_have_ipv6())
        t_skip("no IPv6 loopback (::1) here");

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    ino = t_hear(owner.chan, T_TIMEOUT);

    /* Queued before the takeover. */
    early = client(port);
    send_req(early, "early");

    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), ino);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    if (is("unix")) {
        /* The path belongs to the service: the old owner left it. */
        T_SYS(stat(sock_path, &st));
        T_ASSERT(S_ISSOCK(st.st_mode));
    }

    /* Arriving after the old owner is gone. */
    late = client(port);
    send_req(late, "late");

    t_tell(succ.chan, T_MSG_GO);
    answer(early, "gen2 early");
    answer(late, "gen2 late");
    T_HEAR_EQ(succ.chan, T_MSG_DONE);
    close(early);
    close(late);
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
