/* SPDX-License-Identifier: MIT */
/*
 * UDP flow steering for unmodified servers (docs/udp-steering.md, "Under
 * baton run"): every datagram of a flow reaches the generation that owns
 * it, a flow being the peer's address (its 4-tuple with our socket).
 *
 * Which generation owns a flow is the flow table's answer (flows.h), a
 * file in the coordination directory that every generation maps.
 *
 * The steered fd. The program's UDP socket fd becomes an epoll fd (the
 * "mux") over the socket and over libbaton's steering socket (steer.c),
 * so that the program's event loop wakes for either with its registration
 * untouched; its recv calls read a forwarded datagram first, then the
 * socket, and hand each datagram the program does not own to its owner's
 * process (baton__steer_sendv()), with the sender's address and the
 * control messages the socket gave (IP_PKTINFO and the like, which QUIC
 * servers need to answer from the right address). Its send calls, socket
 * options and address queries go to the socket. When the copy retires,
 * the socket leaves the mux: the old copy then only sees what newer ones
 * forward to it, and answers on the socket they share.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "flows.h"
#include "internal.h"
#include "shim.h"

#define STEER_V2        2
#define ADDR_ROOM       28
#define CTL_ROOM        192
#define HDR2_LEN        (2 + ADDR_ROOM + 2 + CTL_ROOM)
#define DGRAM_MAX       65535
#define UIO_MAXIOV_SHIM 64

/* ---- the steered fd ---- */

static unsigned my_gen(void)
{
    return (unsigned)baton_generation(S.b) & 0xffff;
}

/* Make en's program fd fd a mux over the socket (en->real) and the steering
 * socket. In the holder, S.mu held; 0, or -1 (then fd stays the socket,
 * unsteered). */
int baton_run__udp_steer(struct entry *en, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN};
    int sfd, fdfl;

    if (!S.udp_steer || en->type != SOCK_DGRAM || (en->domain != AF_INET && en->domain != AF_INET6))
        return -1;
    /* One socket per program: datagrams forwarded to this copy come on
     * one steering socket, with nothing to say which of several sockets
     * they were read from. */
    for (int i = 0; i < S.ne; i++)
        if (S.e[i].mux >= 0 && &S.e[i] != en) {
            complain("%s is not steered: only one UDP socket per program is (%s is)", en->key,
                     S.e[i].key);
            return -1;
        }
    if (!S.flows) {
        char why[160];
        if (!(S.flows = baton_run__flows_map(S.b->dirfd, why, sizeof(why)))) {
            complain("UDP steering is off: %s", why);
            S.udp_steer = false;
            return -1;
        }
    }
    if (en->mux < 0) {
        pthread_mutex_lock(&S.steer_mu);
        sfd = baton_steer_open(S.b);
        pthread_mutex_unlock(&S.steer_mu);
        if (sfd < 0) {
            say("udp steering off: %s", baton_last_error(S.b));
            S.udp_steer = false;
            return -1;
        }
        en->real = REAL(fcntl)(en->lib_fd, F_DUPFD_CLOEXEC, 0);
        en->mux = epoll_create1(EPOLL_CLOEXEC);
        ev.data.u32 = 0;
        if (en->real < 0 || en->mux < 0 ||
            REAL(epoll_ctl)(en->mux, EPOLL_CTL_ADD, en->real, &ev) < 0 ||
            REAL(epoll_ctl)(en->mux, EPOLL_CTL_ADD, sfd,
                            &(struct epoll_event){.events = EPOLLIN, .data.u32 = 1}) < 0) {
            say("udp steering off for %s: %m", en->key);
            if (en->real >= 0)
                REAL(close)(en->real);
            if (en->mux >= 0)
                REAL(close)(en->mux);
            en->real = en->mux = -1;
            return -1;
        }
    }
    fdfl = REAL(fcntl)(fd, F_GETFD);
    if (REAL(dup3)(en->mux, fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        say("dup3(steering mux onto %d): %m", fd);
        return -1;
    }
    say("fd %d: %s steered by peer (generation %u, idle %d ms)", fd, en->key, my_gen(),
        S.udp_idle_ms);
    return 0;
}

/* The copy retires: its sockets leave their muxes. S.mu held. */
void baton_run__udp_retire(void)
{
    for (int i = 0; i < S.ne; i++)
        if (S.e[i].mux >= 0 && S.e[i].real >= 0)
            REAL(epoll_ctl)(S.e[i].mux, EPOLL_CTL_DEL, S.e[i].real, NULL);
}

/* The socket behind a program fd: the fd itself unless it is steered. */
int baton_run__udp_real(int fd)
{
    struct entry *en = entry_of(fd);
    return en && en->mux >= 0 && en->real >= 0 ? en->real : fd;
}

/* Copy whole control messages from src (len) into m's room. */
static void ctl_put(struct msghdr *m, const uint8_t *src, size_t len)
{
    size_t room = m->msg_control ? m->msg_controllen : 0, put = 0;
    struct msghdr tmp = {.msg_control = (void *)src, .msg_controllen = len};

    for (struct cmsghdr *c = CMSG_FIRSTHDR(&tmp); c; c = CMSG_NXTHDR(&tmp, c)) {
        size_t l = CMSG_SPACE(c->cmsg_len - CMSG_LEN(0));
        if ((const uint8_t *)c + c->cmsg_len > src + len)
            break;
        if (put + l > room) {
            m->msg_flags |= MSG_CTRUNC;
            break;
        }
        memcpy((uint8_t *)m->msg_control + put, c, c->cmsg_len);
        put += l;
    }
    m->msg_controllen = put;
}

/* Length of the whole control messages of m that fit in room. */
static size_t ctl_fit(const struct msghdr *m, size_t room)
{
    size_t n = 0;

    if (!m->msg_control || m->msg_controllen < sizeof(struct cmsghdr))
        return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)m); c;
         c = CMSG_NXTHDR((struct msghdr *)m, c)) {
        size_t l = CMSG_SPACE(c->cmsg_len - CMSG_LEN(0));
        if (n + l > room)
            break;
        n += l;
    }
    return n;
}

/* A datagram forwarded to us, into m: its length, or -1 with errno. */
static ssize_t take_forwarded(struct msghdr *m)
{
    uint8_t hdr[HDR2_LEN];
    struct iovec iov[1 + UIO_MAXIOV_SHIM];
    struct msghdr r = {.msg_iov = iov};
    size_t cl;
    ssize_t n;

    if (m->msg_iovlen > UIO_MAXIOV_SHIM) {
        errno = EINVAL;
        return -1;
    }
    iov[0] = (struct iovec){hdr, HDR2_LEN};
    memcpy(iov + 1, m->msg_iov, m->msg_iovlen * sizeof(*iov));
    r.msg_iovlen = 1 + m->msg_iovlen;
    for (;;) {
        pthread_mutex_lock(&S.steer_mu);
        n = baton__steer_recvmsg(S.b, &r);
        pthread_mutex_unlock(&S.steer_mu);
        if (n < 0) {
            errno = (int)-n;
            return -1;
        }
        if (n < HDR2_LEN || hdr[0] != STEER_V2 || hdr[1] > ADDR_ROOM)
            continue; /* not ours in form: dropped */
        cl = (size_t)hdr[2 + ADDR_ROOM] | (size_t)(hdr[3 + ADDR_ROOM] & 0x7f) << 8;
        if (cl > CTL_ROOM)
            continue;
        break;
    }
    if (m->msg_name) {
        socklen_t l = hdr[1] < m->msg_namelen ? hdr[1] : m->msg_namelen;
        memcpy(m->msg_name, hdr + 2, l);
        m->msg_namelen = hdr[1];
    }
    m->msg_flags = (r.msg_flags & MSG_TRUNC) | (hdr[3 + ADDR_ROOM] & 0x80 ? MSG_CTRUNC : 0);
    ctl_put(m, hdr + 4 + ADDR_ROOM, cl);
    atomic_fetch_add_explicit(&S.udp_taken, 1, memory_order_relaxed);
    return n - HDR2_LEN;
}

/* Hand the datagram just read into m (n bytes) to generation gen. */
static int forward(unsigned gen, const struct msghdr *m, size_t n, const void *name,
                   socklen_t namelen)
{
    uint8_t hdr[HDR2_LEN] = {STEER_V2};
    struct iovec iov[1 + UIO_MAXIOV_SHIM];
    size_t cl = ctl_fit(m, CTL_ROOM), left = n;
    int k = 1, r;

    if (namelen > ADDR_ROOM || n > DGRAM_MAX)
        return -EINVAL;
    hdr[1] = (uint8_t)namelen;
    memcpy(hdr + 2, name, namelen);
    hdr[2 + ADDR_ROOM] = (uint8_t)cl;
    /* The high bit: control messages were left out (no room), or the
     * socket truncated them already. */
    hdr[3 + ADDR_ROOM] =
        (uint8_t)(cl >> 8) | (cl < m->msg_controllen || (m->msg_flags & MSG_CTRUNC) ? 0x80 : 0);
    if (cl)
        memcpy(hdr + 4 + ADDR_ROOM, m->msg_control, cl);
    iov[0] = (struct iovec){hdr, HDR2_LEN};
    for (size_t i = 0; i < m->msg_iovlen && left > 0; i++) {
        size_t l = m->msg_iov[i].iov_len < left ? m->msg_iov[i].iov_len : left;
        iov[k++] = (struct iovec){m->msg_iov[i].iov_base, l};
        left -= l;
    }
    pthread_mutex_lock(&S.steer_mu);
    r = baton__steer_sendv(S.b, (int)gen, iov, k);
    pthread_mutex_unlock(&S.steer_mu);
    return r;
}

static bool would_block(int real, int flags)
{
    int fl;

    if (flags & MSG_DONTWAIT)
        return true;
    fl = REAL(fcntl)(real, F_GETFL);
    return fl < 0 || (fl & O_NONBLOCK);
}

/* Read the socket into m: n >= 0 when the datagram is ours (m filled as
 * recvmsg() fills it), -2 when it went to another generation (or was
 * dropped), -1 with errno. */
static ssize_t read_socket(struct entry *en, struct msghdr *m, int flags, unsigned me)
{
    struct sockaddr_storage from;
    void *name = m->msg_name;
    socklen_t room = m->msg_namelen, fromlen;
    uint64_t key[4];
    int owner, r;
    ssize_t n;

    /* Read into a name of our own, whatever room the program gave. */
    m->msg_name = &from;
    m->msg_namelen = sizeof(from);
    n = REAL(recvmsg)(en->real, m, flags | MSG_DONTWAIT);
    fromlen = m->msg_namelen;
    m->msg_name = name;
    m->msg_namelen = room;
    if (n < 0)
        return -1;
    if (!baton_run__flow_key((struct sockaddr *)&from, fromlen, key) ||
        (owner = baton_run__flow_claim(S.flows, key, me, now_ms(), (unsigned)S.udp_idle_ms,
                                       FLOW_READ)) < 0 ||
        (unsigned)owner == me)
        goto mine;
    r = forward((unsigned)owner, m, (size_t)n, &from, fromlen);
    if (r == 1) {
        atomic_fetch_add_explicit(&S.udp_forwarded, 1, memory_order_relaxed);
        return -2;
    }
    if (r == -ESRCH) {
        /* Its generation is gone: the flow is ours now. */
        baton_run__flow_claim(S.flows, key, me, now_ms(), (unsigned)S.udp_idle_ms, FLOW_TAKE);
        goto mine;
    }
    atomic_fetch_add_explicit(&S.udp_dropped, 1, memory_order_relaxed);
    return -2; /* its queue is full: dropped, as the network would */
mine:
    if (name) {
        memcpy(name, &from, fromlen < room ? fromlen : room);
        m->msg_namelen = fromlen;
    } else {
        m->msg_namelen = 0;
    }
    return n;
}

/* The program reads its steered fd. A copy that has not retired reads the
 * socket first and looks for forwarded datagrams only when the socket has
 * none (and every 32nd read, lest a flood starve them): most of the time
 * nothing is forwarded to the newest copy, and looking costs a system
 * call. A retired copy reads only what is forwarded to it. */
ssize_t baton_run__udp_recvmsg(struct entry *en, int fd, struct msghdr *m, int flags)
{
    void *name = m->msg_name;
    socklen_t namelen = m->msg_namelen;
    size_t ctllen = m->msg_controllen;
    uint64_t deadline = 0; /* of a blocking read with SO_RCVTIMEO; 0: none yet */
    bool timed = false;
    unsigned me;
    ssize_t n;

    if (!is_holder()) {
        /* A forked worker: its reads are not steered. */
        if (!atomic_exchange(&S.udp_child_said, true))
            say("fd %d: %s read in forked pid %d: not steered (only the process baton run "
                "started is)",
                fd, en->key, (int)getpid());
        return REAL(recvmsg)(en->real, m, flags);
    }
    if ((flags & (MSG_PEEK | MSG_ERRQUEUE)) || m->msg_iovlen > UIO_MAXIOV_SHIM)
        return REAL(recvmsg)(en->real, m, flags);
    me = my_gen();
    for (;;) {
        bool retired = S.retired,
             fwd_first =
                 retired ||
                 (atomic_fetch_add_explicit(&S.udp_reads, 1, memory_order_relaxed) & 31) == 0;

        m->msg_name = name;
        m->msg_namelen = namelen;
        m->msg_controllen = ctllen;
        if (fwd_first) {
            n = take_forwarded(m);
            if (n >= 0 || (errno != EAGAIN && errno != EBADF))
                return n;
        }
        if (!retired) {
            n = read_socket(en, m, flags, me);
            if (n >= 0)
                return n;
            if (n == -2)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            if (!fwd_first) {
                m->msg_name = name;
                m->msg_namelen = namelen;
                m->msg_controllen = ctllen;
                n = take_forwarded(m);
                if (n >= 0 || (errno != EAGAIN && errno != EBADF))
                    return n;
            }
        }
        if (would_block(en->real, flags)) {
            errno = EAGAIN;
            return -1;
        }
        {
            /* Blocking: the program waits for work (readiness may come
             * now), for as long as its SO_RCVTIMEO says, counted from the
             * first wait: datagrams handed to other copies meanwhile do
             * not start it again. */
            struct pollfd p = {.fd = en->mux, .events = POLLIN};
            int ms = -1, r;
            baton_run__poke();
            if (!timed) {
                struct timeval tv = {0};
                socklen_t tl = sizeof(tv);
                timed = true;
                if (REAL(getsockopt)(en->real, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) == 0 &&
                    (tv.tv_sec || tv.tv_usec))
                    deadline =
                        now_ms() + (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
            }
            if (deadline) {
                uint64_t t = now_ms();
                if (t >= deadline) {
                    errno = EAGAIN;
                    return -1;
                }
                ms = (int)(deadline - t);
            }
            r = REAL(poll)(&p, 1, ms);
            if (r < 0)
                return -1;
            if (r == 0 && deadline) {
                errno = EAGAIN;
                return -1;
            }
        }
    }
}

/* What the program sends is the socket's; a peer we send to is a flow of
 * ours, unless a live generation owns it. */
void baton_run__udp_sent(const struct sockaddr *to, socklen_t len)
{
    uint64_t key[4];

    /* A retired copy's sends keep nothing: a server that sends on its own
     * (a heartbeat) would hold its peer for ever. Its flows live while
     * their peers send. */
    if (is_holder() && !S.retired && S.flows && baton_run__flow_key(to, len, key))
        baton_run__flow_claim(S.flows, key, my_gen(), now_ms(), (unsigned)S.udp_idle_ms, FLOW_SENT);
}

/* Flows of this copy's generation still live: what keeps a draining copy
 * from stopping, beside its connections. */
unsigned baton_run__udp_live(void)
{
    if (!S.flows || !S.b)
        return 0;
    return baton_run__flows_live(S.flows, my_gen(), now_ms(), (unsigned)S.udp_idle_ms);
}
