/* SPDX-License-Identifier: MIT */
/*
 * UDP flow steering: datagrams of an older generation's flows, read by the
 * newest from the socket they share, forwarded to that generation's
 * process over a unix seqpacket connection to a socket in the coordination
 * directory (docs/udp-steering.md).
 *
 * Each process that takes forwarded datagrams listens on DIR/steer.GEN
 * (GEN its generation's low 16 bits), a SOCK_SEQPACKET socket: datagram
 * boundaries, and flow control by socket buffer rather than by the tiny
 * queue of a unix datagram socket (net.unix.max_dgram_qlen, 10 by default:
 * a burst of eleven would be dropped). The directory is the trust
 * boundary, as for the control socket: it is ours and closed to group and
 * others, so only our uid can connect, and each connection's peer
 * credentials are checked all the same. The router keeps a connection per
 * generation it forwards to; one that is refused or breaks (its process
 * exited) is remembered as gone.
 *
 * A forwarded datagram is one packet: a header (version, the sender's
 * address length, the address in 28 bytes) and the payload, sent and read
 * with one sendmsg()/recvmsg() each and no copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define STEER_VERSION 1
#define ADDR_ROOM     ((int)sizeof(struct sockaddr_in6))
#define HDR_LEN       (2 + ADDR_ROOM)
#define DGRAM_MAX     65535
/* The send buffer of a forwarding connection: room for a burst while the
 * process that reads it is busy. */
#define STEER_SNDBUF (4 << 20)
/* A connection ID baton_quic_cid_make() made: this byte, the generation
 * (2 bytes), a check byte (CID_CHECK ^ both), then random bytes. A
 * client's random ID passes for one with odds of 1 in 65,536, and then
 * names a live generation with odds of a few in 65,536 more. */
#define CID_MARK  0xb7
#define CID_CHECK 0x5a

static void steer_leaf(int gen, char *buf, size_t len)
{
    snprintf(buf, len, "steer.%u", (unsigned)(gen & 0xffff));
}

BATON_EXPORT int baton_steer_open(baton *b)
{
    struct epoll_event ev = {.events = EPOLLIN};
    struct sockaddr_un sa;
    struct stat st;
    char tmp[48];
    int lfd, ep, r, e;

    BATON__ARG(b);
    if (b->steer_fd >= 0)
        return b->steer_fd;
    steer_leaf(b->generation, b->steer_leaf, sizeof(b->steer_leaf));
    /* Bound under a name of our own, then renamed over steer.GEN: a socket
     * of this generation left by a process that failed before it served
     * is replaced, never unlinked from under whoever serves on it. */
    snprintf(tmp, sizeof(tmp), ".%s.%d", b->steer_leaf, (int)getpid());
    r = baton__dir_name(b->dirfd, b->dir_by_fd, b->dir, tmp, &sa);
    if (r < 0)
        return baton__fail(b, -r, "steer socket %s/%s: name too long", b->dir, tmp);
    lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (lfd < 0)
        return baton__fail(b, errno, "socket(AF_UNIX, SOCK_SEQPACKET)");
    unlinkat(b->dirfd, tmp, 0);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 64) < 0 ||
        fchmodat(b->dirfd, tmp, 0600, 0) < 0 ||
        fstatat(b->dirfd, tmp, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
        renameat(b->dirfd, tmp, b->dirfd, b->steer_leaf) < 0) {
        e = errno;
        close(lfd);
        unlinkat(b->dirfd, tmp, 0);
        b->steer_leaf[0] = 0;
        return baton__fail(b, e, "bind/listen(%s/%s)", b->dir, tmp);
    }
    b->steer_ino = st.st_ino;
    b->steer_dev = st.st_dev;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) {
        e = errno;
        if (ep >= 0)
            close(ep);
        close(lfd);
        b->steer_lfd = -1;
        baton__steer_free(b, true);
        return baton__fail(b, e, "epoll for the steer socket");
    }
    b->steer_lfd = lfd;
    b->steer_fd = ep;
    return ep;
}

void baton__steer_free(baton *b, bool unlink)
{
    struct stat st;

    if (b->steer_fd >= 0)
        close(b->steer_fd);
    if (b->steer_lfd >= 0)
        close(b->steer_lfd);
    b->steer_fd = b->steer_lfd = -1;
    /* Ours only: another process of the same generation number may serve
     * on the name now. */
    if (unlink && b->steer_leaf[0] &&
        fstatat(b->dirfd, b->steer_leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        st.st_ino == b->steer_ino && st.st_dev == b->steer_dev)
        unlinkat(b->dirfd, b->steer_leaf, 0);
    b->steer_leaf[0] = 0;
    for (unsigned i = 0; i < b->nsteer_in; i++)
        close(b->steer_in[i]);
    free(b->steer_in);
    b->steer_in = NULL;
    b->nsteer_in = b->steer_in_cap = 0;
    for (unsigned i = 0; i < b->nsteer_to; i++)
        if (b->steer_to[i].fd >= 0)
            close(b->steer_to[i].fd);
    b->nsteer_to = 0;
}

/* A generation found gone is asked again after this long: generation
 * numbers come back (a rollback, then another upgrade). */
#define GONE_RECHECK_MS 1000

static void target_forget(baton *b, struct baton__steer_to *t)
{
    *t = b->steer_to[--b->nsteer_to];
}

/* The connected socket to generation gen's process: the fd, -ESRCH if it
 * is gone (its socket missing or refusing), -EAGAIN (its backlog is
 * full), or another -errno (ours: nothing is remembered). */
static int steer_target(baton *b, uint16_t gen)
{
    struct baton__steer_to *t = NULL;
    struct sockaddr_un sa;
    char leaf[24];
    int fd, e;

    for (unsigned i = 0; i < b->nsteer_to; i++)
        if (b->steer_to[i].gen == gen) {
            t = &b->steer_to[i];
            break;
        }
    if (t && t->fd >= 0)
        return t->fd;
    if (t && baton__now_ms() - t->gone_ms < GONE_RECHECK_MS) {
        /* Generation numbers come back (a rollback, then another
         * upgrade): a socket of that name bound since is asked at once. */
        struct stat st;
        steer_leaf(gen, leaf, sizeof(leaf));
        if (fstatat(b->dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_ino == t->gone_ino)
            return -ESRCH;
    }
    if (!t) {
        /* A new one: a free slot, or one of a generation that is gone, or
         * (with more than 64 generations alive) the first's, whose
         * connection is made again when it is needed. */
        if (b->nsteer_to < sizeof(b->steer_to) / sizeof(b->steer_to[0])) {
            t = &b->steer_to[b->nsteer_to++];
        } else {
            t = &b->steer_to[0];
            for (unsigned i = 0; i < b->nsteer_to; i++)
                if (b->steer_to[i].fd < 0) {
                    t = &b->steer_to[i];
                    break;
                }
            if (t->fd >= 0)
                close(t->fd);
        }
    }
    t->gen = gen;
    t->fd = -1;
    steer_leaf(gen, leaf, sizeof(leaf));
    if (baton__dir_name(b->dirfd, b->dir_by_fd, b->dir, leaf, &sa) < 0) {
        target_forget(b, t);
        return -ENAMETOOLONG;
    }
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        e = errno;
        target_forget(b, t);
        return -e;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &(int){STEER_SNDBUF}, sizeof(int));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        e = errno;
        close(fd);
        if (e == ENOENT || e == ECONNREFUSED) {
            struct stat st;
            t->gone_ms = baton__now_ms();
            t->gone_ino = fstatat(b->dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_ino : 0;
            return -ESRCH;
        }
        /* A full backlog, or a failure of ours (no fds, no memory): not
         * a verdict on that generation. */
        target_forget(b, t);
        return -e;
    }
    t->fd = fd;
    return fd;
}

/* The connection fd broke: its process exited. Forgotten, not marked gone:
 * the caller connects again once, since a process of the same generation
 * number may be there now (see steer_target). */
static void steer_broken(baton *b, int fd)
{
    for (unsigned i = 0; i < b->nsteer_to; i++)
        if (b->steer_to[i].fd == fd) {
            close(fd);
            b->steer_to[i].fd = -1;
            b->steer_to[i].gone_ms = 0;
        }
}

int baton__steer_sendv(baton *b, int generation, const struct iovec *iov, int iovcnt)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};

    for (int tries = 0;; tries++) {
        int fd = steer_target(b, (uint16_t)(generation & 0xffff));
        if (fd < 0)
            return fd;
        if (sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
            return 1;
        if (errno == EAGAIN || errno == ENOBUFS)
            return -EAGAIN;
        if (errno != ECONNREFUSED && errno != ENOTCONN && errno != EPIPE && errno != ECONNRESET)
            return -errno;
        /* Broken: asked once more on a new connection, whose refusal
         * says whether that generation is gone. */
        steer_broken(b, fd);
        if (tries)
            return -ESRCH;
    }
}

BATON_EXPORT int baton_steer_route(baton *b, int generation, const void *buf, size_t len,
                                   const struct sockaddr *from, socklen_t fromlen)
{
    uint8_t hdr[HDR_LEN] = {STEER_VERSION};
    struct iovec iov[2];
    uint16_t gen = (uint16_t)(generation & 0xffff);

    BATON__ARG(b && (buf || !len) && (from || !fromlen));
    if ((uint16_t)(b->generation & 0xffff) == gen)
        return 0;
    if (len > DGRAM_MAX)
        return -EMSGSIZE;
    if (fromlen > (socklen_t)ADDR_ROOM)
        return -EINVAL;
    hdr[1] = (uint8_t)fromlen;
    if (fromlen)
        memcpy(hdr + 2, from, fromlen);
    iov[0] = (struct iovec){hdr, HDR_LEN};
    iov[1] = (struct iovec){(void *)buf, len};
    return baton__steer_sendv(b, gen, iov, 2);
}

static void steer_drop_in(baton *b, unsigned i);

/* Connections whose router closed them (it made room for another
 * generation, or exited) and that hold nothing more to read. */
static void steer_purge(baton *b)
{
    for (unsigned i = 0; i < b->nsteer_in;) {
        struct pollfd p = {b->steer_in[i], POLLIN | POLLRDHUP, 0};
        if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) &&
            !(p.revents & POLLIN))
            steer_drop_in(b, i);
        else
            i++;
    }
}

/* Take the connections waiting on our socket: only our own uid's (the
 * directory already keeps others out). */
static void steer_accept(baton *b)
{
    for (;;) {
        struct epoll_event ev = {.events = EPOLLIN};
        struct ucred cr;
        socklen_t cl = sizeof(cr);
        int fd = accept4(b->steer_lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

        if (fd < 0)
            return;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 || cr.uid != geteuid()) {
            close(fd);
            continue;
        }
        if (b->nsteer_in == b->steer_in_cap)
            steer_purge(b);
        if (b->nsteer_in == b->steer_in_cap) {
            unsigned cap = b->steer_in_cap ? 2 * b->steer_in_cap : 8;
            int *n = realloc(b->steer_in, cap * sizeof(*n));
            if (!n) {
                close(fd); /* its router sees it closed, and asks again later */
                continue;
            }
            b->steer_in = n;
            b->steer_in_cap = cap;
        }
        ev.data.fd = fd;
        if (epoll_ctl(b->steer_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        b->steer_in[b->nsteer_in++] = fd;
    }
}

static void steer_drop_in(baton *b, unsigned i)
{
    close(b->steer_in[i]); /* leaves the epoll set with its last fd */
    b->steer_in[i] = b->steer_in[--b->nsteer_in];
}

ssize_t baton__steer_recvmsg(baton *b, struct msghdr *m)
{
    ssize_t n;

    if (b->steer_fd < 0)
        return -EBADF;
    /* The connections we have first, new ones only when they hold
     * nothing: while datagrams flow, a look for a new connection would be
     * one more system call each. */
    for (int pass = 0; pass < 2; pass++) {
        unsigned had = b->nsteer_in;
        /* Round robin over the connections (one per generation that
         * forwards to us: usually one), so that none starves another. */
        for (unsigned tried = 0; tried < b->nsteer_in;) {
            unsigned i = b->steer_next++ % b->nsteer_in;
            m->msg_flags = 0;
            n = recvmsg(b->steer_in[i], m, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                steer_drop_in(b, i); /* that generation's reader went away */
                continue;
            }
            if (n < 0) {
                tried++;
                continue;
            }
            return n;
        }
        if (pass == 0) {
            steer_accept(b);
            if (b->nsteer_in == had && had > 0)
                break; /* nothing new: nothing to read */
        }
    }
    return -EAGAIN;
}

BATON_EXPORT ssize_t baton_steer_recv(baton *b, void *buf, size_t cap, struct sockaddr *from,
                                      socklen_t *fromlen)
{
    uint8_t hdr[HDR_LEN];
    struct iovec iov[2] = {{hdr, HDR_LEN}, {buf, cap}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t n;

    BATON__ARG(b && (buf || !cap) && (!from || fromlen));
    for (;;) {
        n = baton__steer_recvmsg(b, &m);
        if (n < 0)
            return n;
        if (m.msg_flags & MSG_TRUNC)
            return -EMSGSIZE;
        /* Our own uid's, but not ours in form: dropped all the same. */
        if (n < HDR_LEN || hdr[0] != STEER_VERSION || hdr[1] > ADDR_ROOM)
            continue;
        if (from) {
            socklen_t l = hdr[1] < *fromlen ? hdr[1] : *fromlen;
            memcpy(from, hdr + 2, l);
            *fromlen = hdr[1];
        }
        return n - HDR_LEN;
    }
}

BATON_EXPORT int baton_quic_cid_make(int generation, uint8_t *cid, size_t len)
{
    size_t got = 0;

    BATON__ARG(cid);
    if (len < 4 || len > 20)
        return -EINVAL;
    while (got < len - 4) {
        ssize_t n = getrandom(cid + 4 + got, len - 4 - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    cid[0] = CID_MARK;
    cid[1] = (uint8_t)(generation >> 8);
    cid[2] = (uint8_t)generation;
    cid[3] = (uint8_t)(CID_CHECK ^ cid[1] ^ cid[2]);
    return 0;
}

static int cid_gen(const uint8_t *cid)
{
    return cid[0] == CID_MARK && cid[3] == (uint8_t)(CID_CHECK ^ cid[1] ^ cid[2])
               ? (cid[1] << 8) | cid[2]
               : -ENOENT;
}

BATON_EXPORT int baton_quic_packet_generation(const void *pkt, size_t len, size_t cid_len)
{
    const uint8_t *p = pkt;

    if (!p || len < 1 || cid_len < 4 || cid_len > 20)
        return -EINVAL;
    if (!(p[0] & 0x80)) {
        /* Short header: the flags byte, then our connection ID. */
        if (len < 1 + cid_len)
            return -EINVAL;
        return cid_gen(p + 1);
    }
    /* Long header: flags, version (4), DCID length, DCID, ... */
    if (len < 6)
        return -EINVAL;
    if (p[1] == 0 && p[2] == 0 && p[3] == 0 && p[4] == 0)
        return -ENOENT; /* version negotiation */
    if (len < 6 + (size_t)p[5])
        return -EINVAL;
    /* A client's first Initial and its 0-RTT carry the ID it chose, which
     * is not one of ours unless it is in form: those start new flows. An
     * Initial or Handshake packet after our first answer carries ours. */
    if (p[5] != cid_len)
        return -ENOENT;
    return cid_gen(p + 6);
}
