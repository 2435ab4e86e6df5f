/* SPDX-License-Identifier: MIT */
/*
 * The libc functions the shim wraps, as the program calls them. Each is a
 * plain call through unless its fd is a listener the shim tracks (an fd
 * map lookup) or the shim waits for the program's first wait for work.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "keys.h"
#include "shim.h"

/* The program waits for work: readiness may come now. */
static void poke(void)
{
    uint64_t one = 1;
    int e = errno;

    if (S.ne == 0 || !S.active)
        return;
    if (atomic_exchange(&S.shm->poked, 1) == 0 && write(S.ready_efd, &one, sizeof(one)) < 0) {
        /* The manager also looks every PRE_READY_TICK ms. */
    }
    errno = e;
}

void baton_run__poke(void)
{
    if (S.shm && atomic_load_explicit(&S.shm->want_ready, memory_order_relaxed))
        poke();
}

#define POKE()                                                                                     \
    do {                                                                                           \
        if (unlikely(S.shm && atomic_load_explicit(&S.shm->want_ready, memory_order_relaxed)))     \
            poke();                                                                                \
    } while (0)

/* In a forked process, a bind() that fails because the address is in use
 * may be one to a listener this copy inherited (which only the process
 * `baton run` started can take). */
static int bind_in_child(int fd, const struct sockaddr *sa, socklen_t len)
{
    int r = REAL(bind)(fd, sa, len);

    if (r < 0 && errno == EADDRINUSE && sa && S.shm)
        baton_run__child_note(fd, sa, len);
    return r;
}

SHIM_EXPORT int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    char key[BATON_NAME_MAX + 1];
    struct entry *en;
    int type, e = errno, r = -1;

    if (unlikely(S.active && atomic_load(&S.child)))
        return bind_in_child(fd, sa, len);
    if (!is_holder() || !sa || fdmap_get(fd) || fd >= FDMAP)
        return REAL(bind)(fd, sa, len);
    type = baton_run__sock_type(fd);
    if ((type != SOCK_STREAM && type != SOCK_DGRAM) ||
        baton_run__key(sa, len, type, baton_run__v6only(fd, sa->sa_family), key, sizeof(key)) < 0) {
        errno = e;
        return REAL(bind)(fd, sa, len);
    }
    pthread_mutex_lock(&S.mu);
    en = baton_run__find_free(key);
    if (en)
        r = baton_run__adopt(en, fd);
    pthread_mutex_unlock(&S.mu);
    errno = e;
    if (r == 0)
        return 0;
    r = REAL(bind)(fd, sa, len);
    /* A datagram socket never listens: it is a listener once bound. */
    if (r == 0 && type == SOCK_DGRAM && baton_run__key_port(key) != 0) {
        e = errno;
        pthread_mutex_lock(&S.mu);
        if (!fdmap_get(fd))
            baton_run__register(fd, type);
        pthread_mutex_unlock(&S.mu);
        errno = e;
    }
    return r;
}

/* The accept queue of a listener the shim passes on is at least this deep
 * (BATON_RUN_MIN_BACKLOG; 0 leaves the program's). At a takeover the old
 * copy stops accepting while the new one, just started, is cold and shares
 * the cores with it: a shallow queue overflows, and the kernel drops SYNs
 * and final ACKs that come back only 1 s and 3 s later. Python's
 * socketserver (http.server) asks for 5, which 20 clients overflow even
 * without a restart; servers that care ask for 511 (nginx, Apache, Node)
 * or SOMAXCONN (Go). */
static int backlog_floor(int fd, int backlog)
{
    if (backlog >= 0 && backlog < S.min_backlog && (is_holder() || entry_of(fd)))
        return S.min_backlog;
    return backlog;
}

SHIM_EXPORT int listen(int fd, int backlog)
{
    int r = REAL(listen)(fd, backlog_floor(fd, backlog)), e = errno, type;

    if (r == 0 && S.active && atomic_load(&S.child) && S.shm && !fdmap_get(fd)) {
        struct sockaddr_storage ss;
        socklen_t l = sizeof(ss);
        if (REAL(getsockname)(fd, (struct sockaddr *)&ss, &l) == 0)
            baton_run__child_note(fd, (struct sockaddr *)&ss, l);
        errno = e;
    }
    if (r < 0 || !is_holder() || fd >= FDMAP)
        return r;
    if (!fdmap_get(fd) &&
        ((type = baton_run__sock_type(fd)) == SOCK_STREAM || type == SOCK_DGRAM)) {
        pthread_mutex_lock(&S.mu);
        if (!fdmap_get(fd))
            baton_run__register(fd, type);
        pthread_mutex_unlock(&S.mu);
    }
    errno = e;
    return r;
}

/* A blocking accept() that found no connection after the listener polled
 * readable (another process took it) gives up after this long, so that it
 * goes back to watching for the takeover too. Set on the listening socket
 * (shared with every copy, all of which go through this wrapper) only when
 * the program set no receive timeout of its own. */
#define HERD_TIMEOUT_MS 100

static void herd_guard(struct entry *en, int fd)
{
    struct timeval tv = {0}, herd = {.tv_usec = HERD_TIMEOUT_MS * 1000};
    socklen_t l = sizeof(tv);

    en->herd = getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &l) == 0 &&
               ((tv.tv_sec == 0 && tv.tv_usec == 0) ||
                (tv.tv_sec == herd.tv_sec && tv.tv_usec == herd.tv_usec)) &&
               setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &herd, sizeof(herd)) == 0;
    en->herd_checked = true;
}

/* An accepted socket inherits the listener's SO_RCVTIMEO: with the herd
 * guard's, a blocking recv() on the connection would fail with EAGAIN after
 * 100 ms of quiet (a pre-forked worker then drops an idle keep-alive
 * connection). Any copy may have set it on the shared listener, so every
 * connection is looked at; a timeout the program set itself is kept. */
static int unherd(int conn)
{
    struct timeval tv = {0};
    socklen_t l = sizeof(tv);
    int e = errno;

    if (conn >= 0 && getsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, &l) == 0 && tv.tv_sec == 0 &&
        tv.tv_usec == HERD_TIMEOUT_MS * 1000) {
        tv.tv_usec = 0;
        setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    errno = e;
    return conn;
}

/* Read at each call, not cached: the flag belongs to the open file, and
 * programs set it whenever they like (redis with fcntl(F_SETFL) after
 * listen(), others with ioctl(FIONBIO)), as may another copy sharing it.
 * An fd that cannot be read counts as non-blocking: the call goes straight
 * through and fails as it would without the shim. */
static bool nonblocking(int fd)
{
    int fl = REAL(fcntl)(fd, F_GETFL);
    return fl < 0 || (fl & O_NONBLOCK);
}

static int accept_live(atomic_int *cnt, struct entry *en, int fd, struct sockaddr *a, socklen_t *l,
                       int flags, bool four)
{
    int r, e;

    POKE();
    baton_run__retire_if_superseded();
    if (S.retired) {
        /* On a socket nobody can connect to now: not counted. */
        atomic_fetch_sub(cnt, 1);
        r = four ? REAL(accept4)(fd, a, l, flags) : REAL(accept)(fd, a, l);
        e = errno;
        atomic_fetch_add(cnt, 1);
        errno = e;
        return r;
    }
    if (S.upgrade_fd < 0 || nonblocking(fd))
        return four ? REAL(accept4)(fd, a, l, flags) : REAL(accept)(fd, a, l);
    /* A blocking accept must wake when a successor takes over, or this
     * process would take one more connection after the takeover. */
    if (!en->herd_checked)
        herd_guard(en, fd);
    for (;;) {
        struct pollfd p[3] = {{.fd = fd, .events = POLLIN},
                              {.fd = S.upgrade_fd, .events = POLLIN},
                              {.fd = S.retire_efd, .events = POLLIN}};
        if (REAL(poll)(p, 3, -1) < 0)
            return -1; /* EINTR: the program's signal handler runs */
        if ((p[1].revents | p[2].revents) & POLLIN) {
            pthread_mutex_lock(&S.mu);
            baton_run__retire();
            pthread_mutex_unlock(&S.mu);
            /* Now a socket nobody can connect to: blocks as asked. */
            atomic_fetch_sub(cnt, 1);
            r = four ? REAL(accept4)(fd, a, l, flags) : REAL(accept)(fd, a, l);
            e = errno;
            atomic_fetch_add(cnt, 1);
            errno = e;
            return r;
        }
        r = four ? REAL(accept4)(fd, a, l, flags) : REAL(accept)(fd, a, l);
        if (r >= 0 || errno != EAGAIN || !en->herd)
            return r;
    }
}

/* Counted in S.shm->in_accept while the call may still be on a live
 * listener, so that the drain does not stop a process that is about to
 * hold a new connection. Counted first, then checked: a retirement after
 * the check is seen by the drain. */
static int accept_slow(struct entry *en, int fd, struct sockaddr *a, socklen_t *l, int flags,
                       bool four)
{
    atomic_int *cnt;
    int r, e;

    if (!S.shm)
        return four ? REAL(accept4)(fd, a, l, flags) : REAL(accept)(fd, a, l);
    cnt = baton_run__in_accept_counter();
    atomic_fetch_add(cnt, 1);
    if (S.retired) {
        atomic_fetch_sub(cnt, 1);
        return four ? REAL(accept4)(fd, a, l, flags) : REAL(accept)(fd, a, l);
    }
    r = accept_live(cnt, en, fd, a, l, flags, four);
    e = errno;
    atomic_fetch_sub(cnt, 1);
    errno = e;
    return unherd(r);
}

SHIM_EXPORT int accept(int fd, struct sockaddr *a, socklen_t *l)
{
    struct entry *en = entry_of(fd);
    return unlikely(en != NULL) ? accept_slow(en, fd, a, l, 0, false) : REAL(accept)(fd, a, l);
}

SHIM_EXPORT int accept4(int fd, struct sockaddr *a, socklen_t *l, int flags)
{
    struct entry *en = entry_of(fd);
    return unlikely(en != NULL) ? accept_slow(en, fd, a, l, flags, true)
                                : REAL(accept4)(fd, a, l, flags);
}

SHIM_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    int r, e;

    struct epoll_event copy;

    if (!entry_of(fd))
        return REAL(epoll_ctl)(epfd, op, fd, ev);
    if (ev && (ev->events & EPOLLEXCLUSIVE) && steered_of(fd)) {
        /* The kernel takes it for sockets, not for the epoll fd a steered
         * socket's fd is: every waiter wakes instead of one. */
        copy = *ev;
        copy.events &= ~(uint32_t)EPOLLEXCLUSIVE;
        ev = &copy;
    }
    pthread_mutex_lock(&S.mu);
    r = REAL(epoll_ctl)(epfd, op, fd, ev);
    e = errno;
    if (r == 0) {
        int i;
        for (i = 0; i < S.nregs; i++)
            if (S.regs[i].epfd == epfd && S.regs[i].fd == fd)
                break;
        if (op == EPOLL_CTL_DEL) {
            if (i < S.nregs)
                S.regs[i] = S.regs[--S.nregs];
        } else if (ev && (i < S.nregs || S.nregs < MAX_REGS)) {
            if (i == S.nregs)
                S.nregs++;
            S.regs[i] = (struct reg){.epfd = epfd, .fd = fd, .ev = *ev};
            if (!fdmap_get(epfd))
                fdmap_set(epfd, FD_EPOLL);
        }
    }
    pthread_mutex_unlock(&S.mu);
    errno = e;
    return r;
}

SHIM_EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int n, int timeout)
{
    POKE();
    return REAL(epoll_wait)(epfd, ev, n, timeout);
}

SHIM_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int n, int timeout,
                            const sigset_t *ss)
{
    POKE();
    return REAL(epoll_pwait)(epfd, ev, n, timeout, ss);
}

SHIM_EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int n, const struct timespec *t,
                             const sigset_t *ss)
{
    POKE();
    if (!REAL(epoll_pwait2)) {
        errno = ENOSYS;
        return -1;
    }
    return baton_run__real.epoll_pwait2(epfd, ev, n, t, ss);
}

SHIM_EXPORT int poll(struct pollfd *f, nfds_t n, int timeout)
{
    POKE();
    return REAL(poll)(f, n, timeout);
}

int __poll_chk(struct pollfd *f, nfds_t n, int timeout, size_t flen);

SHIM_EXPORT int __poll_chk(struct pollfd *f, nfds_t n, int timeout, size_t flen)
{
    POKE();
    return REAL(poll_chk)(f, n, timeout, flen);
}

SHIM_EXPORT int ppoll(struct pollfd *f, nfds_t n, const struct timespec *t, const sigset_t *ss)
{
    POKE();
    return REAL(ppoll)(f, n, t, ss);
}

SHIM_EXPORT int select(int n, fd_set *r, fd_set *w, fd_set *x, struct timeval *t)
{
    POKE();
    return REAL(select)(n, r, w, x, t);
}

SHIM_EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *x, const struct timespec *t,
                        const sigset_t *ss)
{
    POKE();
    return REAL(pselect)(n, r, w, x, t, ss);
}

SHIM_EXPORT int close(int fd)
{
    if (unlikely(fdmap_get(fd)))
        baton_run__forget(fd);
    return REAL(close)(fd);
}

static void dup_track(int oldfd, int newfd)
{
    struct entry *en;

    if (newfd < 0 || newfd >= FDMAP)
        return;
    pthread_mutex_lock(&S.mu);
    en = entry_of(oldfd);
    if (en)
        baton_run__prog_add(en, newfd);
    pthread_mutex_unlock(&S.mu);
}

SHIM_EXPORT int dup(int fd)
{
    int r = REAL(dup)(fd), e = errno;

    if (unlikely(r >= 0 && entry_of(fd)))
        dup_track(fd, r);
    errno = e;
    return r;
}

SHIM_EXPORT int dup2(int oldfd, int newfd)
{
    int r, e;

    if (unlikely(oldfd != newfd && fdmap_get(newfd) && fcntl(oldfd, F_GETFD) >= 0))
        baton_run__forget(newfd);
    r = REAL(dup2)(oldfd, newfd);
    e = errno;
    if (unlikely(r >= 0 && oldfd != newfd && entry_of(oldfd)))
        dup_track(oldfd, newfd);
    errno = e;
    return r;
}

SHIM_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    int r, e;

    if (unlikely(oldfd != newfd && fdmap_get(newfd) && fcntl(oldfd, F_GETFD) >= 0))
        baton_run__forget(newfd);
    r = REAL(dup3)(oldfd, newfd, flags);
    e = errno;
    if (unlikely(r >= 0 && entry_of(oldfd)))
        dup_track(oldfd, newfd);
    errno = e;
    return r;
}

/* fcntl() and fcntl64() (what a program built with _FILE_OFFSET_BITS=64
 * calls, CPython among them; the same function on 64-bit) copy an fd with
 * F_DUPFD and F_DUPFD_CLOEXEC. CPython's socket.dup(), socket.fromfd() and
 * os.dup() copy that way: an untracked copy of a listener would go on
 * accepting in the old copy after the takeover. Every other command passes
 * straight through. The third argument is an int or a pointer, by command,
 * or absent; like glibc's own fcntl(), this reads it as a pointer-sized word
 * and passes it on as one, and the callee reads back what was passed. */
#ifdef __USE_FILE_OFFSET64

#error "fcntl.h renames fcntl to fcntl64 here: build the shim without _FILE_OFFSET_BITS=64"

#endif

static int fcntl_dup(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    int r = real(fd, cmd, arg), e = errno;

    if (r >= 0 && entry_of(fd))
        dup_track(fd, r);
    errno = e;
    return r;
}

SHIM_EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (unlikely(cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        return fcntl_dup(REAL(fcntl), fd, cmd, arg);
    if (unlikely(cmd == F_GETFL || cmd == F_SETFL))
        fd = baton_run__udp_real(fd); /* a steered fd's flags are its socket's */
    return REAL(fcntl)(fd, cmd, arg);
}

SHIM_EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (unlikely(cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        return fcntl_dup(REAL(fcntl64), fd, cmd, arg);
    if (unlikely(cmd == F_GETFL || cmd == F_SETFL))
        fd = baton_run__udp_real(fd);
    return REAL(fcntl64)(fd, cmd, arg);
}

/* A retired fd is a unix socket the shim made (dead_socket), but the program
 * still knows it as its listener and may ask for its address when it stops:
 * gunicorn then unlink()s the address if it is a path, and crashed with
 * FileNotFoundError on the dead socket's, leaving its workers behind. */
SHIM_EXPORT int getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
    struct entry *en = S.retired ? entry_of(fd) : NULL;
    int r = -1;

    if (unlikely(steered_of(fd)))
        return REAL(getsockname)(baton_run__udp_real(fd), sa, len);
    if (likely(!en))
        return REAL(getsockname)(fd, sa, len);
    pthread_mutex_lock(&S.mu);
    if (en == entry_of(fd) && en->addrlen > 0 && sa && len) {
        memcpy(sa, &en->addr, *len < en->addrlen ? *len : en->addrlen);
        *len = en->addrlen;
        r = 0;
    }
    pthread_mutex_unlock(&S.mu);
    return r == 0 ? 0 : REAL(getsockname)(fd, sa, len);
}

static bool keep_path(const char *path)
{
    return unlikely(S.active && path) &&
           (baton_run__is_listener_path(path) || baton_run__is_pidfile(path));
}

SHIM_EXPORT int unlink(const char *path)
{
    return keep_path(path) ? 0 : REAL(unlink)(path);
}

SHIM_EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
    if (dirfd == AT_FDCWD && !(flags & AT_REMOVEDIR) && keep_path(path))
        return 0;
    return REAL(unlinkat)(dirfd, path, flags);
}

/* Would the process lose root's uid (any id given, -1 meaning unchanged,
 * that is not 0, while we are root)? */
static bool drops_root(uid_t a, uid_t b, uid_t c)
{
    return (a != (uid_t)-1 && a != 0) || (b != (uid_t)-1 && b != 0) || (c != (uid_t)-1 && c != 0);
}

#define BEFORE_DROP(a, b, c)                                                                       \
    do {                                                                                           \
        if (unlikely(S.active) && is_holder() && !S.ready && drops_root(a, b, c) &&                \
            geteuid() == 0)                                                                        \
            baton_run__ready_early();                                                              \
    } while (0)

SHIM_EXPORT int setuid(uid_t uid)
{
    BEFORE_DROP(uid, -1, -1);
    return REAL(setuid)(uid);
}

SHIM_EXPORT int seteuid(uid_t euid)
{
    BEFORE_DROP(euid, -1, -1);
    return REAL(seteuid)(euid);
}

SHIM_EXPORT int setreuid(uid_t ruid, uid_t euid)
{
    BEFORE_DROP(ruid, euid, -1);
    return REAL(setreuid)(ruid, euid);
}

SHIM_EXPORT int setresuid(uid_t ruid, uid_t euid, uid_t suid)
{
    BEFORE_DROP(ruid, euid, suid);
    return REAL(setresuid)(ruid, euid, suid);
}

/* File access is checked against the fsuid: dropping it alone is enough to
 * lose the directory. */
SHIM_EXPORT int setfsuid(uid_t fsuid)
{
    BEFORE_DROP(fsuid, -1, -1);
    return REAL(setfsuid)(fsuid);
}

/* ---- UDP sockets steered by peer (udp.c) ----
 * The program's fd is an epoll fd over its socket and the steering socket:
 * reads go through the steering, everything else to the socket. Any other
 * fd is a plain call through (one byte of the fd map read). */

/* A read of an unsteered UDP listener is a wait for work too: a server
 * that only ever blocks in recvfrom() would otherwise be readied only by
 * the fallback (BATON_RUN_READY_MS). */
#define POKE_IF_LISTENER(fd)                                                                       \
    do {                                                                                           \
        if (unlikely(fdmap_get(fd)))                                                               \
            POKE();                                                                                \
    } while (0)

SHIM_EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    struct entry *en = steered_of(fd);

    if (likely(!en)) {
        POKE_IF_LISTENER(fd);
        return REAL(recvmsg)(fd, m, flags);
    }
    return baton_run__udp_recvmsg(en, fd, m, flags);
}

SHIM_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
                             socklen_t *fromlen)
{
    struct entry *en = steered_of(fd);
    struct iovec iov = {buf, len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    if (likely(!en)) {
        POKE_IF_LISTENER(fd);
        return REAL(recvfrom)(fd, buf, len, flags, from, fromlen);
    }
    if (from && fromlen) {
        m.msg_name = from;
        m.msg_namelen = *fromlen;
    }
    n = baton_run__udp_recvmsg(en, fd, &m, flags);
    if (n >= 0 && from && fromlen)
        *fromlen = m.msg_namelen;
    return n;
}

SHIM_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    return recvfrom(fd, buf, len, flags, NULL, NULL);
}

/* One datagram at a time through the steering: the first as the program
 * asked (it may block), the rest only while more wait. */
SHIM_EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags, struct timespec *t)
{
    struct entry *en = steered_of(fd);
    unsigned i;

    if (likely(!en)) {
        POKE_IF_LISTENER(fd);
        return REAL(recvmmsg)(fd, v, n, flags, t);
    }
    for (i = 0; i < n; i++) {
        ssize_t r = baton_run__udp_recvmsg(en, fd, &v[i].msg_hdr,
                                           (flags & ~MSG_WAITFORONE) | (i ? MSG_DONTWAIT : 0));
        if (r < 0) {
            if (i == 0)
                return -1;
            break;
        }
        v[i].msg_len = (unsigned)r;
    }
    return (int)i;
}

SHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (likely(!steered_of(fd)))
        return REAL(sendmsg)(fd, m, flags);
    if (m && m->msg_name)
        baton_run__udp_sent(m->msg_name, m->msg_namelen);
    return REAL(sendmsg)(baton_run__udp_real(fd), m, flags);
}

SHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags,
                           const struct sockaddr *to, socklen_t tolen)
{
    if (likely(!steered_of(fd)))
        return REAL(sendto)(fd, buf, len, flags, to, tolen);
    if (to)
        baton_run__udp_sent(to, tolen);
    return REAL(sendto)(baton_run__udp_real(fd), buf, len, flags, to, tolen);
}

SHIM_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    return REAL(send)(baton_run__udp_real(fd), buf, len, flags);
}

SHIM_EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
    if (likely(!steered_of(fd)))
        return REAL(sendmmsg)(fd, v, n, flags);
    for (unsigned i = 0; i < n; i++)
        if (v[i].msg_hdr.msg_name)
            baton_run__udp_sent(v[i].msg_hdr.msg_name, v[i].msg_hdr.msg_namelen);
    return REAL(sendmmsg)(baton_run__udp_real(fd), v, n, flags);
}

SHIM_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    return REAL(setsockopt)(baton_run__udp_real(fd), level, name, val, len);
}

SHIM_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    return REAL(getsockopt)(baton_run__udp_real(fd), level, name, val, len);
}

SHIM_EXPORT int getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
    return REAL(getpeername)(baton_run__udp_real(fd), sa, len);
}

SHIM_EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    return REAL(connect)(baton_run__udp_real(fd), sa, len);
}

/* FIONBIO, FIONREAD and the like are the socket's. */
SHIM_EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);
    return REAL(ioctl)(baton_run__udp_real(fd), req, arg);
}

/* read() and write() on a steered fd: a datagram each, as on the socket
 * (a program that only receives, a syslog collector, may read()). */
SHIM_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    if (likely(!steered_of(fd)))
        return REAL(read)(fd, buf, len);
    return recvfrom(fd, buf, len, 0, NULL, NULL);
}

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    return REAL(write)(baton_run__udp_real(fd), buf, len);
}
