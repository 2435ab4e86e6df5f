/* SPDX-License-Identifier: MIT */
/*
 * UDP flow steering (baton_steer_*): through an upgrade, each datagram on
 * the shared UDP socket reaches the generation whose flow it is.
 *
 * A toy protocol: a datagram "G text" belongs to generation G's flow. The
 * owner (generation 1) answers "gen1: G text"; once its successor serves it
 * stops reading the socket and answers only what is forwarded to it. The
 * successor (generation 2) reads the socket and routes each datagram by
 * G: its own it answers "gen2: ...", generation 1's it forwards, and one of
 * no live generation it answers "none: ...".
 *
 * Checked: every datagram answered once, by its own generation (0
 * misrouted, 0 lost), one at a time and in a burst of 100; after generation 1 exits, its datagrams
 * are "none"
 * (-ESRCH), not lost in a dead socket, and a new process of its number is
 * reached at once; a failure of the router's own (no
 * fds) is not taken for a dead generation; a successor that gives up
 * unlinks only its own socket, not the one another process of its
 * generation number took since. Attacks: another uid cannot reach a
 * steering socket (the directory is the boundary); a datagram of the
 * wrong form from our own uid is dropped and the next one handled. And the
 * QUIC helpers on crafted packets.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

static void answer(int ufd, const char *tag, const char *buf, ssize_t n, struct sockaddr *from,
                   socklen_t fl)
{
    char out[600];
    int m = snprintf(out, sizeof(out), "%s: %.*s", tag, (int)n, buf);

    T_SYS(sendto(ufd, out, (size_t)m, 0, from, fl));
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    bool reading = true;
    baton *b;
    int ufd, sfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 1);
    ufd = T_OK(baton_listen(b, "dns", "udp://127.0.0.1:0", 0));
    sfd = T_OK(baton_steer_open(b));
    T_EQ(baton_steer_open(b), sfd); /* once; again is the same fd */
    T_OK(baton_ready(b));
    t_tell(chan, t_port(ufd));
    for (;;) {
        struct pollfd p[3] = {
            {chan, POLLIN, 0}, {sfd, POLLIN, 0}, {reading ? baton_upgrade_fd(b) : -1, POLLIN, 0}};
        struct pollfd u = {ufd, POLLIN, 0};
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        char buf[512];
        ssize_t n;

        /* Until the successor serves, the socket is ours to read. */
        T_SYS(poll(p, 3, 5));
        if (reading && poll(&u, 1, 0) > 0 &&
            (n = recvfrom(ufd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl)) > 0)
            answer(ufd, "gen1", buf, n, (struct sockaddr *)&from, fl);
        if (p[2].revents & POLLIN) {
            reading = false; /* the successor reads it from now on */
            t_tell(chan, T_MSG_SUPERSEDED);
        }
        if (p[0].revents)
            break;
        fl = sizeof(from);
        n = baton_steer_recv(b, buf, sizeof(buf), (struct sockaddr *)&from, &fl);
        if (n >= 0)
            answer(ufd, "gen1", buf, n, (struct sockaddr *)&from, fl);
        else
            T_EQ(n, -EAGAIN);
    }
    baton_free(b);
    return 0;
}

/* A failure of the router's own (out of fds) is not a verdict on the
 * generation it routes to: once fds are free it forwards again. */
static void transient_failure(baton *b)
{
    struct sockaddr_in to = {
        .sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fds[4096], n = 0;

    while (n < 4096 && (fds[n] = dup(0)) >= 0)
        n++;
    T_EQ(errno, EMFILE);
    T_EQ(baton_steer_route(b, 1, "1 x", 3, (struct sockaddr *)&to, sizeof(to)), -EMFILE);
    while (n > 0)
        close(fds[--n]);
    T_EQ(baton_steer_route(b, 1, "1 x", 3, (struct sockaddr *)&to, sizeof(to)), 1);
}

static int successor_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    struct rlimit rl = {256, 256};
    baton *b;
    int ufd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    ufd = T_OK(baton_listen(b, "dns", "udp://127.0.0.1:0", 0));
    T_EQ(baton_inherited(b), 1);
    T_OK(baton_steer_open(b));
    T_OK(baton_ready(b));
    T_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    transient_failure(b);
    t_tell(chan, T_MSG_DONE);
    for (;;) {
        struct pollfd p[2] = {{chan, POLLIN, 0}, {ufd, POLLIN, 0}};
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        char buf[512];
        ssize_t n;
        int g, r;

        T_SYS(poll(p, 2, 1000));
        if (p[0].revents)
            break;
        n = recvfrom(ufd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (n <= 0)
            continue;
        T_EQ(sscanf(buf, "%d", &g), 1);
        r = baton_steer_route(b, g, buf, (size_t)n, (struct sockaddr *)&from, fl);
        if (r == 0)
            answer(ufd, "gen2", buf, n, (struct sockaddr *)&from, fl);
        else if (r == -ESRCH)
            answer(ufd, "none", buf, n, (struct sockaddr *)&from, fl);
        else
            T_EQ(r, 1);
    }
    baton_free(b);
    return 0;
}

/* Send "G i" and check who answers: the answer's tag. */
static void ask(int cfd, int g, int i, const char *want)
{
    char q[64], a[128], expect[128];
    int n = snprintf(q, sizeof(q), "%d %d", g, i);
    ssize_t m;

    T_SYS(send(cfd, q, (size_t)n, 0));
    m = recv(cfd, a, sizeof(a) - 1, 0);
    if (m < 0)
        T_ASSERT(!"no answer within the timeout: a datagram was lost");
    a[m] = 0;
    snprintf(expect, sizeof(expect), "%s: %s", want, q);
    T_STREQ(a, expect);
}

static void quic_helpers(void)
{
    uint8_t cid[20], pkt[64] = {0};

    T_EQ(baton_quic_cid_make(1, cid, 3), -EINVAL);
    T_EQ(baton_quic_cid_make(1, cid, 21), -EINVAL);
    T_OK(baton_quic_cid_make(0x1234, cid, 18));
    T_EQ(baton_quic_packet_generation(pkt, 0, 18), -EINVAL);
    /* Short header: flags byte, then our ID. */
    pkt[0] = 0x40;
    memcpy(pkt + 1, cid, 18);
    T_EQ(baton_quic_packet_generation(pkt, 30, 18), 0x1234);
    T_EQ(baton_quic_packet_generation(pkt, 10, 18), -EINVAL); /* too short */
    /* Long header, Handshake (type 2), our ID. */
    pkt[0] = 0xc0 | (2 << 4);
    pkt[1] = 0, pkt[2] = 0, pkt[3] = 0, pkt[4] = 1; /* version 1 */
    pkt[5] = 18;
    memcpy(pkt + 6, cid, 18);
    T_EQ(baton_quic_packet_generation(pkt, 40, 18), 0x1234);
    /* A client's first Initial: its own 8-byte ID: a new flow. */
    pkt[0] = 0xc0;
    pkt[5] = 8;
    memset(pkt + 6, 0x55, 8);
    T_EQ(baton_quic_packet_generation(pkt, 40, 18), -ENOENT);
    /* An Initial of the right length but not in form (no marker). */
    pkt[5] = 18;
    memset(pkt + 6, 0x55, 18);
    T_EQ(baton_quic_packet_generation(pkt, 40, 18), -ENOENT);
    /* The marker, but not the check byte: a client's random ID. */
    memcpy(pkt + 6, cid, 18);
    pkt[6 + 3] ^= 1;
    T_EQ(baton_quic_packet_generation(pkt, 40, 18), -ENOENT);
    /* Version negotiation. */
    memcpy(pkt + 6, cid, 18);
    pkt[4] = 0;
    T_EQ(baton_quic_packet_generation(pkt, 40, 18), -ENOENT);
    /* A DCID length that runs past the packet. */
    pkt[4] = 1;
    pkt[5] = 200;
    T_EQ(baton_quic_packet_generation(pkt, 40, 18), -EINVAL);
}

/* A successor that gives up (generation 3) after another process of the
 * same generation number took the name steer.3 must not unlink it. */
static int quitter_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;

    (void)arg;
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 3);
    T_OK(baton_steer_open(b));
    t_tell(chan, T_MSG_DONE);
    T_HEAR_EQ(chan, T_MSG_GO);
    baton_free(b);
    return 0;
}

/* Another uid cannot connect to a steering socket: the directory stops
 * it (and the owner would check its credentials besides). */
static int stranger_main(int chan, void *arg)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    (void)chan;
    const char *d = arg;

    T_ASSERT(strlen(d) + 8 < sizeof(sa.sun_path));
    memcpy(sa.sun_path, d, strlen(d));
    memcpy(sa.sun_path + strlen(d), "/steer.1", 8);
    T_SYS(setresgid(65534, 65534, 65534));
    T_SYS(setresuid(65534, 65534, 65534));
    fd = T_SYS(socket(AF_UNIX, SOCK_SEQPACKET, 0));
    T_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), -1);
    T_EQ(errno, EACCES);
    return 0;
}

int main(void)
{
    struct t_proc own, next, stranger;
    struct timeval tv = {2, 0};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    int cfd, port, raw;

    quic_helpers();
    t_path(dir, "svc");
    t_spawn(&own, owner_main, NULL);
    port = (int)t_hear(own.chan, 5000);
    cfd = T_SYS(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    T_SYS(setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
    sa.sin_port = htons((uint16_t)port);
    T_SYS(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)));
    ask(cfd, 1, 0, "gen1");

    t_spawn(&next, successor_main, NULL);
    T_EQ(t_hear(next.chan, 5000), T_MSG_DONE);
    T_EQ(t_hear(own.chan, 5000), T_MSG_SUPERSEDED);
    /* Both generations live: each datagram reaches its own. */
    for (int i = 1; i <= 200; i++) {
        ask(cfd, 1, i, "gen1");
        ask(cfd, 2, i, "gen2");
    }
    ask(cfd, 7, 0, "none");
    /* A burst: 100 of generation 1's datagrams at once, every one
     * forwarded (a unix datagram socket's queue of 10 would drop most). */
    for (int i = 0; i < 100; i++) {
        char q[32];
        int n = snprintf(q, sizeof(q), "1 burst %d", i);
        T_SYS(send(cfd, q, (size_t)n, 0));
    }
    for (int i = 0; i < 100; i++) {
        char a[128];
        ssize_t m = recv(cfd, a, sizeof(a) - 1, 0);
        T_GT(m, 0);
        a[m] = 0;
        T_ASSERT(strncmp(a, "gen1: 1 burst ", 14) == 0);
    }

    /* A datagram not in form, from our own uid: dropped; the next one is
     * answered. */
    raw = T_SYS(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    T_ASSERT(strlen(dir) + 8 < sizeof(su.sun_path));
    memcpy(su.sun_path, dir, strlen(dir));
    memcpy(su.sun_path + strlen(dir), "/steer.1", 8);
    T_SYS(connect(raw, (struct sockaddr *)&su, sizeof(su)));
    T_SYS(send(raw, "\x09zz", 3, 0));
    close(raw);
    ask(cfd, 1, 1000, "gen1");

    if (geteuid() == 0) {
        t_spawn(&stranger, stranger_main, dir);
        T_EQ(t_proc_wait(&stranger, 5000), 0);
    } else {
        t_log("not root: the other-uid attack is skipped");
    }

    /* Generation 1 exits: its flows have no process now, and the router
     * says so (-ESRCH) rather than send into a dead socket. */
    t_tell(own.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&own, 5000), 0);
    ask(cfd, 1, 2000, "none");
    ask(cfd, 2, 2000, "gen2");
    {
        /* A new process of generation 1's number binds steer.1 (a
         * rollback, then another upgrade): the router reaches it at once,
         * not a second later, when it would have taken the flow for its
         * own. */
        char path[PATH_MAX + 16], tmp[PATH_MAX + 16], pkt[256];
        struct pollfd p;
        int l, c;
        ssize_t n;

        snprintf(path, sizeof(path), "%s/steer.1", dir);
        snprintf(tmp, sizeof(tmp), "%s/.steer.1.test", dir);
        T_ASSERT(strlen(tmp) < sizeof(su.sun_path));
        memset(su.sun_path, 0, sizeof(su.sun_path));
        memcpy(su.sun_path, tmp, strlen(tmp));
        l = T_SYS(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        T_SYS(bind(l, (struct sockaddr *)&su, sizeof(su)));
        T_SYS(listen(l, 4));
        T_SYS(rename(tmp, path));
        T_SYS(send(cfd, "1 3000", 6, 0));
        p = (struct pollfd){l, POLLIN, 0};
        T_EQ(poll(&p, 1, 5000), 1);
        c = T_SYS(accept(l, NULL, NULL));
        p = (struct pollfd){c, POLLIN, 0};
        T_EQ(poll(&p, 1, 5000), 1);
        n = T_SYS(recv(c, pkt, sizeof(pkt), 0));
        T_EQ(n, 30 + 6); /* version 1: 30 bytes of header, then the datagram */
        T_ASSERT(memcmp(pkt + 30, "1 3000", 6) == 0);
        close(c);
        close(l);
        T_SYS(unlink(path));
    }
    {
        struct t_proc quit;
        struct stat st;
        char path[PATH_MAX + 16], tmp[PATH_MAX + 16];
        int other;

        t_spawn(&quit, quitter_main, NULL);
        T_EQ(t_hear(quit.chan, 5000), T_MSG_DONE);
        /* Another process of generation 3 takes the name. */
        snprintf(path, sizeof(path), "%s/steer.3", dir);
        snprintf(tmp, sizeof(tmp), "%s/.steer.3.test", dir);
        T_ASSERT(strlen(tmp) < sizeof(su.sun_path));
        memset(su.sun_path, 0, sizeof(su.sun_path));
        memcpy(su.sun_path, tmp, strlen(tmp));
        other = T_SYS(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        T_SYS(bind(other, (struct sockaddr *)&su, sizeof(su)));
        T_SYS(rename(tmp, path));
        t_tell(quit.chan, T_MSG_GO);
        T_EQ(t_proc_wait(&quit, 5000), 0);
        T_SYS(stat(path, &st)); /* still there: the quitter unlinked only its own */
        close(other);
        unlink(path);
    }
    t_tell(next.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&next, 5000), 0);
    close(cfd);
    return 0;
}
