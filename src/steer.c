/* SPDX-License-Identifier: MIT */
/*
 * UDP flow steering: datagrams of an older generation's flows, read by the
 * newest from the socket they share, forwarded to that generation's
 * process over a unix datagram socket in the coordination directory
 * (docs/udp-steering.md).
 *
 * Each process that takes forwarded datagrams binds DIR/steer.GEN (GEN its
 * generation's low 16 bits). The directory is the trust boundary, as for
 * the control socket: it is ours and closed to group and others, so only
 * our uid can reach the socket. The router keeps a connected socket per
 * generation it forwards to; a generation whose socket refuses (its
 * process exited) is remembered as gone.
 *
 * A forwarded datagram is one unix datagram: a header (version, the
 * sender's address length, the address in 28 bytes) and the payload, sent
 * and read with one sendmsg()/recvmsg() each and no copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
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
/* The receive buffer of a steering socket: room for a burst while the
 * process that reads it is busy. */
#define STEER_RCVBUF (4 << 20)
/* The first byte of a connection ID baton_quic_cid_make() made. */
#define CID_MARK 0xb7

static void steer_leaf(int gen, char *buf, size_t len)
{
    snprintf(buf, len, "steer.%u", (unsigned)(gen & 0xffff));
}

BATON_EXPORT int baton_steer_open(baton *b)
{
    struct sockaddr_un sa;
    int fd, r, sz = STEER_RCVBUF;

    BATON__ARG(b);
    if (b->steer_fd >= 0)
        return b->steer_fd;
    steer_leaf(b->generation, b->steer_leaf, sizeof(b->steer_leaf));
    r = baton__dir_name(b->dirfd, b->dir_by_fd, b->dir, b->steer_leaf, &sa);
    if (r < 0)
        return baton__fail(b, -r, "steer socket %s/%s: name too long", b->dir, b->steer_leaf);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return baton__fail(b, errno, "socket(AF_UNIX, SOCK_DGRAM)");
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    /* A socket of this generation left by a process that died (a successor
     * that failed before ready): nobody reads it. */
    unlinkat(b->dirfd, b->steer_leaf, 0);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        b->steer_leaf[0] = 0;
        return baton__fail(b, e, "bind(%s/steer.%u)", b->dir, (unsigned)(b->generation & 0xffff));
    }
    (void)fchmodat(b->dirfd, b->steer_leaf, 0600, 0);
    b->steer_fd = fd;
    return fd;
}

void baton__steer_free(baton *b, bool unlink)
{
    if (b->steer_fd >= 0) {
        close(b->steer_fd);
        b->steer_fd = -1;
        if (unlink && b->steer_leaf[0])
            unlinkat(b->dirfd, b->steer_leaf, 0);
    }
    for (unsigned i = 0; i < b->nsteer_to; i++)
        if (b->steer_to[i].fd >= 0)
            close(b->steer_to[i].fd);
    b->nsteer_to = 0;
}

/* The connected socket to generation gen's process, -ESRCH if it is gone. */
static int steer_target(baton *b, uint16_t gen)
{
    struct baton__steer_to *t = NULL;
    struct sockaddr_un sa;
    char leaf[24];
    int fd;

    for (unsigned i = 0; i < b->nsteer_to; i++)
        if (b->steer_to[i].gen == gen) {
            t = &b->steer_to[i];
            break;
        }
    if (t)
        return t->fd >= 0 ? t->fd : -ESRCH;
    /* A new one: reuse the slot of a generation that is gone, or the
     * oldest (a cap on draining generations keeps them few). */
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
    t->gen = gen;
    t->fd = -1;
    steer_leaf(gen, leaf, sizeof(leaf));
    if (baton__dir_name(b->dirfd, b->dir_by_fd, b->dir, leaf, &sa) < 0)
        return -ESRCH;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return e == ENOENT || e == ECONNREFUSED ? -ESRCH : -e;
    }
    t->fd = fd;
    return fd;
}

static void steer_gone(baton *b, int fd)
{
    for (unsigned i = 0; i < b->nsteer_to; i++)
        if (b->steer_to[i].fd == fd) {
            close(fd);
            b->steer_to[i].fd = -1;
        }
}

BATON_EXPORT int baton_steer_route(baton *b, int generation, const void *buf, size_t len,
                                   const struct sockaddr *from, socklen_t fromlen)
{
    uint8_t hdr[HDR_LEN] = {STEER_VERSION};
    struct iovec iov[2];
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    uint16_t gen = (uint16_t)(generation & 0xffff);
    int fd;

    BATON__ARG(b && (buf || !len) && (from || !fromlen));
    if ((uint16_t)(b->generation & 0xffff) == gen)
        return 0;
    if (len > DGRAM_MAX)
        return -EMSGSIZE;
    if (fromlen > (socklen_t)ADDR_ROOM)
        return -EINVAL;
    fd = steer_target(b, gen);
    if (fd < 0)
        return fd;
    hdr[1] = (uint8_t)fromlen;
    if (fromlen)
        memcpy(hdr + 2, from, fromlen);
    iov[0] = (struct iovec){hdr, HDR_LEN};
    iov[1] = (struct iovec){(void *)buf, len};
    if (sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        if (errno == EAGAIN || errno == ENOBUFS)
            return -EAGAIN;
        if (errno == ECONNREFUSED || errno == ENOTCONN || errno == EPIPE) {
            steer_gone(b, fd);
            return -ESRCH;
        }
        return -errno;
    }
    return 1;
}

BATON_EXPORT ssize_t baton_steer_recv(baton *b, void *buf, size_t cap, struct sockaddr *from,
                                      socklen_t *fromlen)
{
    uint8_t hdr[HDR_LEN];
    struct iovec iov[2] = {{hdr, HDR_LEN}, {buf, cap}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t n;

    BATON__ARG(b && (buf || !cap) && (!from || fromlen));
    if (b->steer_fd < 0)
        return -EBADF;
    for (;;) {
        n = recvmsg(b->steer_fd, &m, MSG_DONTWAIT);
        if (n < 0)
            return errno == EINTR ? -EINTR : -errno;
        if (m.msg_flags & MSG_TRUNC)
            return -EMSGSIZE;
        /* Only our own uid can reach the socket; a datagram that is not
         * ours in form is dropped all the same. */
        if (n < HDR_LEN || hdr[0] != STEER_VERSION || hdr[1] > ADDR_ROOM) {
            m.msg_flags = 0;
            continue;
        }
        break;
    }
    if (from) {
        socklen_t l = hdr[1] < *fromlen ? hdr[1] : *fromlen;
        memcpy(from, hdr + 2, l);
        *fromlen = hdr[1];
    }
    return n - HDR_LEN;
}

BATON_EXPORT int baton_quic_cid_make(int generation, uint8_t *cid, size_t len)
{
    size_t got = 0;

    BATON__ARG(cid);
    if (len < 4 || len > 20)
        return -EINVAL;
    while (got < len - 3) {
        ssize_t n = getrandom(cid + 3 + got, len - 3 - got, 0);
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
    return 0;
}

static int cid_gen(const uint8_t *cid)
{
    return cid[0] == CID_MARK ? (cid[1] << 8) | cid[2] : -ENOENT;
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
