/* SPDX-License-Identifier: MIT */
/*
 * libbaton-preload.so - zero-downtime restarts for unmodified servers,
 * loaded by `baton run` through LD_PRELOAD.
 *
 * Who is active. The process `baton run` executes (BATON_RUN_PID is its
 * pid) and the successors libbaton starts for `baton upgrade` (the same
 * command line: BATON_RUN_CMD is its hash) open the coordination directory
 * BATON_RUN_DIR in a constructor and become "the holder". Processes the
 * holder forks share its state (and are "children"); anything the program
 * executes (CGI scripts, helpers) finds neither and stays inert: every
 * wrapper is then a plain call through.
 *
 * Listeners. bind() of a TCP, UDP or unix stream socket looks for an
 * inherited listener under the same name (keys.h: the address as bound,
 * e.g. "tcp://[::]:80/v6only"); if there is one, it is dup3()'d onto the
 * fd number the program's socket() returned, so the program's fd numbering
 * and close-on-exec flag stay as they were, and bind() returns 0. listen()
 * on a fresh socket passes a duplicate to libbaton under that name. The
 * names are also the handle's state (a manifest) so that a successor knows
 * how many listeners it should claim.
 *
 * Readiness. The shim calls baton_ready() when the program first waits for
 * work (accept, accept4, epoll_wait and friends, poll, ppoll, select,
 * pselect) after it has a listener, in any of its processes, and either it
 * has claimed every inherited listener or 2 s have passed since that first
 * wait; inherited listeners it never claimed are then closed by libbaton.
 * A program that never waits in one of those calls is readied 10 s after
 * start (BATON_RUN_READY_MS), if it has a listener by then.
 *
 * Handover. Once a successor serves, the holder (and each child, at its
 * next accept) retires its listener fds: for every epoll registration of
 * such an fd the shim saw (epoll_ctl), it first deletes the registration,
 * then dup3()s a socket that never becomes readable (a unix listener whose
 * path is unlinked at once, or an unbound UDP socket) onto the fd number,
 * then registers that fd again with the same events and data. The order
 * matters: an epoll registration belongs to (fd number, open file), and the
 * listener's open file lives on in the successor and in libbaton, so a
 * dup2() alone would leave the old registration firing for ever, and it
 * could no longer be deleted through the fd. poll() and select() look the
 * fd up on every pass and simply stop seeing the listener. accept() then
 * blocks for ever (blocking socket) or fails with EAGAIN. A blocking accept()
 * that is already waiting when the successor takes over is woken by the
 * shim (it waits on the listener and libbaton's upgrade fd together).
 *
 * Draining. The holder's manager thread then looks every 100 ms for
 * connections accepted on the listeners' ports or paths that its process
 * tree still holds (by socket inode, in /proc), leaving out the subtree of
 * the new owner, and for accept calls still waiting on a live listener
 * (counted per process in shared memory; a process that died inside one,
 * zombie or gone, no longer counts); once there are none, or after
 * BATON_RUN_DRAIN_MS, it sends the program BATON_RUN_STOP_SIGNAL (default
 * SIGTERM), and SIGKILL to its tree 10 s later.
 *
 * Threads. The shim uses libbaton with BATON_NO_THREAD and drives it from
 * its own single manager thread (all signals blocked, like libbaton's
 * thread), which it needs anyway for the readiness and drain timers: one
 * extra thread in the program instead of two.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>

#include "baton.h"
#include "keys.h"

#define SHIM_EXPORT __attribute__((visibility("default")))
#define unlikely(x) __builtin_expect(!!(x), 0)
#define likely(x)   __builtin_expect(!!(x), 1)

/* Fds below this are tracked in a byte map; listeners above it are passed
 * through untouched (servers open their listeners first). */
#define FDMAP       65536
#define MAX_ENTRIES 64
#define MAX_PROG    8
#define MAX_REGS    256
#define MAX_PROCS   512
#define FD_EPOLL    255

#define GRACE_MS       2000
#define READY_MS       10000
#define DRAIN_MS       30000
#define KILL_MS        10000
#define OWNER_TIMEOUT  30000
#define SCAN_MS        100
#define IDLE_CLOSE_MS  1000
#define PRE_READY_TICK 20

/* The exit status of a copy that does not serve (EX_TEMPFAIL): its
 * takeover failed, or the program ended or did something the shim cannot
 * follow before it served. It says why on standard error. */
#define EXIT_NOT_SERVING 75

/* A listener: inherited (named by the predecessor) or registered here. */
struct entry {
    char key[BATON_NAME_MAX + 1];
    int lib_fd; /* the handle's fd; -1 until claimed, or gone */
    int domain, type;
    struct sockaddr_storage addr; /* what getsockname() says once retired */
    socklen_t addrlen;
    int dead; /* the socket its fds become when retired (dead_socket), or -1 */
    bool inherited, claimed;
    bool parked;             /* claimed at a privilege drop, before the program bound it */
    bool adopted;            /* the program has had it on one of its fds */
    bool dropped;            /* parked, never adopted, and closed to new connections */
    bool herd, herd_checked; /* our SO_RCVTIMEO is set (herd_guard) */
    int prog[MAX_PROG];
    int nprog;
};

struct reg {
    int epfd, fd;
    struct epoll_event ev;
};

/* Accept calls that may be on a live listener, per process: a process that
 * dies inside accept() (a worker killed or recycled by its master) must not
 * hold the drain up, so the drain counts only live processes' calls. */
struct in_accept {
    atomic_int pid; /* 0: free */
    atomic_int n;
};

/* Shared by the holder and every process it forks. */
struct shm {
    atomic_int want_ready; /* the holder is not ready yet */
    atomic_int poked;      /* the program waited for work */
    atomic_int superseded;
    atomic_int in_accept_rest; /* of processes that found no free slot */
    struct in_accept in_accept[MAX_PROCS];
    /* The first forked process that bound or listened on an address a
     * listener of ours should have: its pid (set last) and that address. */
    atomic_int child_pid;
    char child_key[BATON_NAME_MAX + 1];
};

static struct {
    bool active; /* holder, or forked from it */
    atomic_bool child;
    baton *b;
    char dir[PATH_MAX];
    int drain_ms, stop_sig, ready_ms, min_backlog;
    int idle_close_ms; /* BATON_RUN_IDLE_CLOSE_MS: conn_idle() */
    bool draining;     /* manager: in drain_wait() */
    int ready_efd, upgrade_fd, ctl_fd;
    int retire_efd; /* readable once the copy retires (drain_wait) */
    struct shm *shm;
    pthread_mutex_t mu;
    struct entry e[MAX_ENTRIES];
    int ne, ninherited;
    struct reg regs[MAX_REGS];
    int nregs;
    bool retired;
    bool ready;       /* holder: baton_ready() succeeded */
    bool force_ready; /* holder: the program drops its privileges (ready_early) */
    pthread_mutex_t ready_mu;
    pthread_cond_t ready_cv;
    int ready_result;                /* 0 pending, 1 ready, -1 failed */
    _Atomic(atomic_int *) in_accept; /* ours; NULL until our first accept */
    int log_fd;
    int err_fd;             /* the program's standard error as it started */
    atomic_bool gave_up;    /* this copy does not serve, and said why */
    int lock_fd;            /* libbaton's lock file, held until ready */
    int fork_lock_fd;       /* lock_fd if held when the program forks */
    char **keep_env;        /* LD_PRELOAD and BATON_RUN_* as we started */
    char pidfile[PATH_MAX]; /* BATON_RUN_PIDFILE, absolute; "" if none */
    char pid_saved[64];     /* what it said when we moved it away */
    bool pid_hidden;        /* moved away at a takeover, not yet replaced */
    uint64_t start_ms;
} S = {
    .mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP,
    .ready_mu = PTHREAD_MUTEX_INITIALIZER,
    .ready_cv = PTHREAD_COND_INITIALIZER,
    .ready_efd = -1,
    .retire_efd = -1,
    .upgrade_fd = -1,
    .ctl_fd = -1,
    .log_fd = -1,
    .err_fd = -1,
    .lock_fd = -1,
    .fork_lock_fd = -1,
};

static _Atomic unsigned char fdmap[FDMAP];

/* The wrapped functions, from the next object in the search order. */
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_listen)(int, int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*real_epoll_wait)(int, struct epoll_event *, int, int);
static int (*real_epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
static int (*real_epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *,
                                const sigset_t *);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static int (*real_poll_chk)(struct pollfd *, nfds_t, int, size_t);
static int (*real_ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
static int (*real_select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
static int (*real_pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                           const sigset_t *);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_fcntl64)(int, int, ...);
static int (*real_unlink)(const char *);
static int (*real_getsockname)(int, struct sockaddr *, socklen_t *);
static int (*real_setuid)(uid_t);
static int (*real_seteuid)(uid_t);
static int (*real_setreuid)(uid_t, uid_t);
static int (*real_setresuid)(uid_t, uid_t, uid_t);
static int (*real_setfsuid)(uid_t);
static int (*real_unlinkat)(int, const char *, int);

static void resolve(void)
{
#define R(name, sym) name = dlsym(RTLD_NEXT, sym)
    R(real_bind, "bind");
    R(real_listen, "listen");
    R(real_accept, "accept");
    R(real_accept4, "accept4");
    R(real_epoll_ctl, "epoll_ctl");
    R(real_epoll_wait, "epoll_wait");
    R(real_epoll_pwait, "epoll_pwait");
    R(real_epoll_pwait2, "epoll_pwait2");
    R(real_poll, "poll");
    R(real_poll_chk, "__poll_chk");
    R(real_ppoll, "ppoll");
    R(real_select, "select");
    R(real_pselect, "pselect");
    R(real_close, "close");
    R(real_dup, "dup");
    R(real_dup2, "dup2");
    R(real_dup3, "dup3");
    R(real_fcntl, "fcntl");
    R(real_fcntl64, "fcntl64");
    R(real_unlink, "unlink");
    R(real_getsockname, "getsockname");
    R(real_setuid, "setuid");
    R(real_seteuid, "seteuid");
    R(real_setreuid, "setreuid");
    R(real_setresuid, "setresuid");
    R(real_setfsuid, "setfsuid");
    R(real_unlinkat, "unlinkat");
#undef R
    if (!real_fcntl64) /* glibc before 2.28: nobody calls it */
        real_fcntl64 = real_fcntl;
}

/* Another library's constructor may call us before ours ran. */
#define REAL(name) (real_##name ? real_##name : (resolve(), real_##name))

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Only to BATON_RUN_LOG (a path, or "stderr"): never into the program's
 * own output otherwise. Keeps errno. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    char buf[700];
    int e = errno, n;
    va_list ap;

    if (S.log_fd < 0)
        return;
    n = snprintf(buf, sizeof(buf), "baton-preload[%d]: ", (int)getpid());
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    if (write(S.log_fd, buf, (size_t)n) < 0) {
        /* Nowhere else to say it. */
    }
    errno = e;
}

/* For the person who ran `baton run`: why this copy does not serve. To the
 * program's standard error as it was at start (the program may have
 * pointed fd 2 at a log file since), and to the log. Keeps errno. */
__attribute__((format(printf, 1, 2))) static void complain(const char *fmt, ...)
{
    char buf[1024];
    int e = errno, n;
    va_list ap;

    n = snprintf(buf, sizeof(buf), "baton run: %s[%d]: ", program_invocation_short_name,
                 (int)getpid());
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    say("%.*s", n, buf);
    buf[n++] = '\n';
    if (write(S.err_fd >= 0 ? S.err_fd : 2, buf, (size_t)n) < 0) {
        /* Nowhere else to say it. */
    }
    errno = e;
}

static void lib_log(void *ctx, int level, const char *msg)
{
    say("libbaton: %s", msg);
}

static int fdmap_get(int fd)
{
    return fd >= 0 && fd < FDMAP ? atomic_load_explicit(&fdmap[fd], memory_order_relaxed) : 0;
}

static void fdmap_set(int fd, int v)
{
    if (fd >= 0 && fd < FDMAP)
        atomic_store_explicit(&fdmap[fd], (unsigned char)v, memory_order_relaxed);
}

static struct entry *entry_of(int fd)
{
    int v = fdmap_get(fd);
    return v >= 1 && v <= S.ne ? &S.e[v - 1] : NULL;
}

static bool is_holder(void)
{
    return S.active && !atomic_load(&S.child);
}

/* --- The manifest: what a successor should claim. ------------------------ */

/* Called with S.mu held, in the holder. */
static void manifest_update(void)
{
    char buf[MAX_ENTRIES * (BATON_NAME_MAX + 2) + 16];
    size_t o = 0;

    o += (size_t)snprintf(buf, sizeof(buf), "%s", BATON_RUN_MANIFEST);
    for (int i = 0; i < S.ne; i++)
        if (S.e[i].lib_fd >= 0 && (!S.e[i].inherited || S.e[i].claimed) && !S.e[i].dropped)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s\n", S.e[i].key);
    if (baton_set_state(S.b, buf, o) < 0)
        say("baton_set_state: %s", baton_last_error(S.b));
}

static void manifest_read(void)
{
    const void *data;
    size_t len, ml = strlen(BATON_RUN_MANIFEST);
    const char *p, *end;

    if (baton_state(S.b, &data, &len) < 0 || len < ml || memcmp(data, BATON_RUN_MANIFEST, ml))
        return;
    p = (const char *)data + ml;
    end = (const char *)data + len;
    while (p < end && S.ne < MAX_ENTRIES) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > 0 && n <= BATON_NAME_MAX) {
            struct entry *e = &S.e[S.ne++];
            memset(e, 0, sizeof(*e));
            memcpy(e->key, p, n);
            e->lib_fd = -1;
            e->dead = -1;
            e->inherited = true;
            S.ninherited++;
        }
        p += n + 1;
    }
    say("predecessor passed %d listener(s)", S.ninherited);
}

/* --- Listener bookkeeping. ------------------------------------------------ */

static void prog_add(struct entry *e, int fd)
{
    if (e->nprog < MAX_PROG && fd < FDMAP) {
        e->prog[e->nprog++] = fd;
        fdmap_set(fd, (int)(e - S.e) + 1);
    }
}

static void regs_drop(int fd, bool by_epfd)
{
    for (int i = 0; i < S.nregs;)
        if ((by_epfd ? S.regs[i].epfd : S.regs[i].fd) == fd)
            S.regs[i] = S.regs[--S.nregs];
        else
            i++;
}

/* The program stops using fd (close, or dup2 over it): its epoll
 * registrations go first, while fd still names the listener; the open file
 * lives on in libbaton, and the registration with it. */
static void forget(int fd)
{
    int v, e = errno;

    pthread_mutex_lock(&S.mu);
    v = fdmap_get(fd);
    if (v == FD_EPOLL) {
        regs_drop(fd, true);
    } else if (v >= 1 && v <= S.ne) {
        struct entry *en = &S.e[v - 1];
        for (int i = 0; i < S.nregs; i++)
            if (S.regs[i].fd == fd)
                REAL(epoll_ctl)(S.regs[i].epfd, EPOLL_CTL_DEL, fd, NULL);
        regs_drop(fd, false);
        for (int i = 0; i < en->nprog; i++)
            if (en->prog[i] == fd)
                en->prog[i--] = en->prog[--en->nprog];
    }
    fdmap_set(fd, 0);
    pthread_mutex_unlock(&S.mu);
    errno = e;
}

/* A TCP listener that no packet can reach: bound, with IP_FREEBIND (no
 * privilege needed), to an address that is not the host's and never will
 * be, IPv6's discard-only 100::1 (RFC 6666), or IPv4's TEST-NET-1
 * 192.0.2.1 where there is no IPv6. The kernel delivers only packets for
 * local addresses, so nothing ever connects: it never polls readable, a
 * blocking accept() on it blocks, a non-blocking one fails with EAGAIN. */
static int unreachable_listener(int family)
{
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0xc0000201)};
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, r;

    if (fd < 0)
        return -1;
    s6.sin6_addr.s6_addr[0] = 0x01;
    s6.sin6_addr.s6_addr[15] = 0x01;
    if (family == AF_INET6)
        r = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0 ||
            setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one)) < 0 ||
            REAL(bind)(fd, (struct sockaddr *)&s6, sizeof(s6)) < 0;
    else
        r = setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one)) < 0 ||
            REAL(bind)(fd, (struct sockaddr *)&s4, sizeof(s4)) < 0;
    if (r || REAL(listen)(fd, 1) < 0) {
        REAL(close)(fd);
        return -1;
    }
    return fd;
}

/* A socket that never becomes readable, for retired listener fds: an
 * unreachable TCP listener (for every stream listener, unix ones too), or
 * an unbound UDP socket. It needs no file and no privilege: a program may
 * have dropped its privileges (memcached -u, Apache's User) by the time
 * its processes retire. It is made once per listener, when the holder
 * first sees it (before it forks workers), and all of the listener's fds,
 * in every process, become that one open
 * file, as they all were the listener's one open file (so O_NONBLOCK is
 * one flag for all of them, as it was). getsockname() on them answers the
 * listener's own address (see the wrapper). */
static int dead_socket(const struct entry *en)
{
    int fd;

    if (en->type == SOCK_DGRAM)
        return socket(en->domain, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    fd = unreachable_listener(AF_INET6);
    return fd >= 0 ? fd : unreachable_listener(AF_INET);
}

/* Stop this process's event loop from seeing its listeners. See the top of
 * the file for why the order is DEL, dup3, ADD. Called with S.mu held. */
static void retire_local(void)
{
    int e = errno;

    if (S.retired || !S.active)
        return;
    S.retired = true;
    for (int i = 0; i < S.ne; i++) {
        struct entry *en = &S.e[i];
        if (en->nprog > 0 && en->dead < 0 && (en->dead = dead_socket(en)) < 0)
            say("cannot retire %s: %m", en->key);
        for (int k = 0; k < en->nprog && en->dead >= 0; k++) {
            int fd = en->prog[k], fl = REAL(fcntl)(fd, F_GETFL), fdfl = REAL(fcntl)(fd, F_GETFD);
            int dfl = REAL(fcntl)(en->dead, F_GETFL);
            /* Blocking as the listener was: accept() blocks, or fails with
             * EAGAIN, as the program expects. */
            if (fl >= 0 && dfl >= 0)
                REAL(fcntl)(en->dead, F_SETFL, (dfl & ~O_NONBLOCK) | (fl & O_NONBLOCK));
            for (int j = 0; j < S.nregs; j++)
                if (S.regs[j].fd == fd)
                    REAL(epoll_ctl)(S.regs[j].epfd, EPOLL_CTL_DEL, fd, NULL);
            REAL(dup3)(en->dead, fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
            for (int j = 0; j < S.nregs; j++)
                if (S.regs[j].fd == fd)
                    REAL(epoll_ctl)(S.regs[j].epfd, EPOLL_CTL_ADD, fd, &S.regs[j].ev);
        }
    }
    say("listeners retired: no new connections here");
    errno = e;
}

static void retire_if_superseded(void)
{
    if (!S.retired && S.shm && atomic_load(&S.shm->superseded)) {
        pthread_mutex_lock(&S.mu);
        retire_local();
        pthread_mutex_unlock(&S.mu);
    }
}

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

#define POKE()                                                                                     \
    do {                                                                                           \
        if (unlikely(S.shm && atomic_load_explicit(&S.shm->want_ready, memory_order_relaxed)))     \
            poke();                                                                                \
    } while (0)

/* --- bind, listen. --------------------------------------------------------- */

static int sock_type(int fd)
{
    int type = 0;
    socklen_t l = sizeof(type);
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 ? -1 : type;
}

static int v6only(int fd, int family)
{
    int v = 0;
    socklen_t l = sizeof(v);
    if (family != AF_INET6 || getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) < 0)
        return 0;
    return v;
}

/* The first entry named key or key#n that no program fd uses. */
static struct entry *find_free(const char *key)
{
    char name[BATON_NAME_MAX + 1];

    for (int n = 1; n <= MAX_ENTRIES; n++) {
        bool seen = false;
        if (baton_run__key_variant(key, n, name, sizeof(name)) < 0)
            return NULL;
        for (int i = 0; i < S.ne; i++) {
            if (strcmp(S.e[i].key, name) != 0)
                continue;
            seen = true;
            if (S.e[i].nprog == 0 && !S.e[i].dropped &&
                (S.e[i].lib_fd >= 0 || (S.e[i].inherited && !S.e[i].claimed)))
                return &S.e[i];
        }
        if (!seen)
            return NULL;
    }
    return NULL;
}

/* What en's listener, now on fd, is: its address (getsockname() on a
 * retired fd answers it), type, and the socket it becomes when retired. */
static void entry_learn(struct entry *en, int fd)
{
    en->addrlen = sizeof(en->addr);
    if (REAL(getsockname)(fd, (struct sockaddr *)&en->addr, &en->addrlen) < 0)
        en->addrlen = 0;
    en->domain = en->addrlen > 0 ? en->addr.ss_family : 0;
    en->type = sock_type(fd);
    if (en->dead < 0 && (en->dead = dead_socket(en)) < 0)
        say("%s: no socket to retire it with yet: %m", en->key);
}

/* Hand the program the listener of entry en on its fd. S.mu held. */
static int adopt(struct entry *en, int fd)
{
    int fdfl, lib;

    if (en->lib_fd < 0) {
        lib = baton_fd(S.b, en->key);
        if (lib < 0) {
            say("inherited %s: %s", en->key, baton_last_error(S.b));
            en->claimed = true; /* not usable: never try again */
            return -1;
        }
        en->lib_fd = lib;
        en->claimed = true;
    }
    fdfl = fcntl(fd, F_GETFD);
    if (REAL(dup3)(en->lib_fd, fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        say("dup3(%s onto %d): %m", en->key, fd);
        return -1;
    }
    entry_learn(en, fd);
    prog_add(en, fd);
    en->adopted = true;
    say("fd %d: %s (%s)", fd, en->key, en->inherited ? "inherited" : "kept across re-bind");
    return 0;
}

static void register_listener(int fd, int type);
static _Noreturn void give_up(void);

/* A forked process bound or listened on a TCP address (see
 * check_child_listener): the first one is noted for the holder. */
static void child_note(int fd, const struct sockaddr *sa, socklen_t len)
{
    char key[BATON_NAME_MAX + 1];
    int none = 0, e = errno;

    if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) || sock_type(fd) != SOCK_STREAM ||
        baton_run__key(sa, len, SOCK_STREAM, v6only(fd, sa->sa_family), key, sizeof(key)) < 0 ||
        !atomic_compare_exchange_strong(&S.shm->child_pid, &none, -1)) {
        errno = e;
        return;
    }
    memcpy(S.shm->child_key, key, sizeof(key));
    atomic_store(&S.shm->child_pid, (int)getpid());
    errno = e;
}

/* In a forked process, a bind() that fails because the address is in use
 * may be one to a listener this copy inherited (which only the process
 * `baton run` started can take). */
static int bind_in_child(int fd, const struct sockaddr *sa, socklen_t len)
{
    int r = REAL(bind)(fd, sa, len);

    if (r < 0 && errno == EADDRINUSE && sa && S.shm)
        child_note(fd, sa, len);
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
    type = sock_type(fd);
    if ((type != SOCK_STREAM && type != SOCK_DGRAM) ||
        baton_run__key(sa, len, type, v6only(fd, sa->sa_family), key, sizeof(key)) < 0) {
        errno = e;
        return REAL(bind)(fd, sa, len);
    }
    pthread_mutex_lock(&S.mu);
    en = find_free(key);
    if (en)
        r = adopt(en, fd);
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
            register_listener(fd, type);
        pthread_mutex_unlock(&S.mu);
        errno = e;
    }
    return r;
}

/* Pass a fresh listener on under its name. S.mu held. */
static void register_listener(int fd, int type)
{
    char key[BATON_NAME_MAX + 1], name[BATON_NAME_MAX + 1];
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    struct entry *en;
    int lib;

    if (REAL(getsockname)(fd, (struct sockaddr *)&ss, &l) < 0 ||
        baton_run__key((struct sockaddr *)&ss, l, type, v6only(fd, ss.ss_family), key,
                       sizeof(key)) < 0 ||
        S.ne >= MAX_ENTRIES)
        return;
    for (int n = 1;; n++) {
        bool taken = false;
        if (baton_run__key_variant(key, n, name, sizeof(name)) < 0)
            return;
        for (int i = 0; i < S.ne && !taken; i++)
            taken = strcmp(S.e[i].key, name) == 0;
        if (!taken)
            break;
    }
    if (baton_add_fd(S.b, name, fd) < 0 || (lib = baton_fd(S.b, name)) < 0) {
        say("passing on %s: %s", name, baton_last_error(S.b));
        return;
    }
    en = &S.e[S.ne++];
    memset(en, 0, sizeof(*en));
    snprintf(en->key, sizeof(en->key), "%s", name);
    en->lib_fd = lib;
    en->dead = -1;
    entry_learn(en, fd);
    prog_add(en, fd);
    manifest_update();
    say("fd %d: %s (new)", fd, name);
}

/* The accept queue of a listener the shim passes on is at least this deep
 * (BATON_RUN_MIN_BACKLOG; 0 leaves the program's). At a handover the old
 * copy stops accepting while the new one, just started, is cold and shares
 * the cores with it: a shallow queue overflows, and the kernel drops SYNs
 * and final ACKs that come back only 1 s and 3 s later. Python's
 * socketserver (http.server) asks for 5, which 20 clients overflow even
 * without a restart; servers that care ask for 511 (nginx, Apache, Node)
 * or SOMAXCONN (Go). */
#define MIN_BACKLOG 128

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
            child_note(fd, (struct sockaddr *)&ss, l);
        errno = e;
    }
    if (r < 0 || !is_holder() || fd >= FDMAP)
        return r;
    if (!fdmap_get(fd) && ((type = sock_type(fd)) == SOCK_STREAM || type == SOCK_DGRAM)) {
        pthread_mutex_lock(&S.mu);
        if (!fdmap_get(fd))
            register_listener(fd, type);
        pthread_mutex_unlock(&S.mu);
    }
    errno = e;
    return r;
}

/* --- accept. ---------------------------------------------------------------- */

/* A blocking accept() that found no connection after the listener polled
 * readable (another process took it) gives up after this long, so that it
 * goes back to watching for the handover too. Set on the listening socket
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
    retire_if_superseded();
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
     * process would take one more connection after the handover. */
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
            retire_local();
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

static bool proc_dead(pid_t pid);

/* This process's slot in S.shm->in_accept: a free one, or one whose process
 * is gone (its pid may be ours now: a fresh process has no calls yet). */
static atomic_int *in_accept_counter(void)
{
    atomic_int *cnt = atomic_load(&S.in_accept);
    pid_t me = getpid();

    if (cnt)
        return cnt;
    pthread_mutex_lock(&S.mu);
    cnt = atomic_load(&S.in_accept);
    for (int pass = 0; pass < 2 && !cnt; pass++)
        for (int i = 0; i < MAX_PROCS && !cnt; i++) {
            struct in_accept *c = &S.shm->in_accept[i];
            int pid = atomic_load(&c->pid);
            if (pass == 0 ? pid != me : pid != 0 && !proc_dead(pid))
                continue;
            if (pid == me || atomic_compare_exchange_strong(&c->pid, &pid, me)) {
                atomic_store(&c->n, 0);
                cnt = &c->n;
            }
        }
    if (!cnt)
        cnt = &S.shm->in_accept_rest;
    atomic_store(&S.in_accept, cnt);
    pthread_mutex_unlock(&S.mu);
    return cnt;
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
    cnt = in_accept_counter();
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

/* --- epoll_ctl, and the waits (readiness only). --------------------------- */

SHIM_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    int r, e;

    if (!entry_of(fd))
        return REAL(epoll_ctl)(epfd, op, fd, ev);
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
    return real_epoll_pwait2(epfd, ev, n, t, ss);
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

/* --- close, dup, fcntl. ---------------------------------------------------- */

SHIM_EXPORT int close(int fd)
{
    if (unlikely(fdmap_get(fd)))
        forget(fd);
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
        prog_add(en, newfd);
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
        forget(newfd);
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
        forget(newfd);
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
 * accepting in the old copy after the handover. Every other command passes
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
    return REAL(fcntl64)(fd, cmd, arg);
}

/* --- getsockname: a retired listener still has its address. ------------- */

/* A retired fd is a unix socket the shim made (dead_socket), but the program
 * still knows it as its listener and may ask for its address when it stops:
 * gunicorn then unlink()s the address if it is a path, and crashed with
 * FileNotFoundError on the dead socket's, leaving its workers behind. */
SHIM_EXPORT int getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
    struct entry *en = S.retired ? entry_of(fd) : NULL;
    int r = -1;

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

/* --- unlink: a unix listener's path belongs to the service. -------------- */

static bool is_listener_path(const char *path)
{
    bool hit = false;

    if (!S.active || !path)
        return false;
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < S.ne && !hit; i++) {
        const char *p = baton_run__key_path(S.e[i].key);
        size_t n = p ? strcspn(p, "#") : 0;
        hit = p && strlen(path) == n && strncmp(p, path, n) == 0 &&
              (S.e[i].lib_fd >= 0 || S.e[i].inherited);
    }
    pthread_mutex_unlock(&S.mu);
    if (hit)
        say("kept %s: the listener's path belongs to the service", path);
    return hit;
}

/* The pid file (BATON_RUN_PIDFILE) names the serving copy: only that copy
 * may remove it (when it stops with no successor). A superseded copy
 * removing it at exit (Apache does) would remove its successor's, and a
 * copy that failed to take over would remove its predecessor's. */
static bool is_pidfile(const char *path)
{
    const char *base = strrchr(S.pidfile, '/');
    const char *pbase = strrchr(path, '/');
    struct stat a, b;
    bool hit;

    if (!S.active || !S.pidfile[0] || strcmp(base + 1, pbase ? pbase + 1 : path) != 0)
        return false;
    hit = strcmp(path, S.pidfile) == 0 || (stat(path, &a) == 0 && stat(S.pidfile, &b) == 0 &&
                                           a.st_dev == b.st_dev && a.st_ino == b.st_ino);
    if (!hit || (is_holder() && S.ready && !S.retired))
        return false;
    say("kept %s: the pid file names the serving copy", path);
    return true;
}

static bool keep_path(const char *path)
{
    return unlikely(S.active && path) && (is_listener_path(path) || is_pidfile(path));
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

/* --- The pid file. ---------------------------------------------------------- */

/* Replace the pid file's content at once (a reader sees the old or the new
 * one, never a partial one). 0, or -1 with errno. */
static int pidfile_put(const char *content, size_t len)
{
    char tmp[PATH_MAX + 32];
    int fd, r, e;

    if (snprintf(tmp, sizeof(tmp), "%s.baton-%d", S.pidfile, (int)getpid()) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -1;
    errno = EIO; /* a short write sets none */
    r = write(fd, content, len) == (ssize_t)len ? 0 : -1;
    e = errno;
    if (REAL(close)(fd) < 0 && r == 0)
        r = -1, e = errno;
    if (r == 0 && rename(tmp, S.pidfile) < 0)
        r = -1, e = errno;
    if (r < 0) {
        REAL(unlink)(tmp);
        errno = e;
    }
    return r;
}

/* At a takeover, before the program runs: a program that checks its pid
 * file at start-up ("httpd (pid N) already running") must not find its
 * predecessor's. The file is moved out of the way, and put back if this
 * copy does not take over (pidfile_restore). */
static void pidfile_hide(void)
{
    int fd = open(S.pidfile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n;

    if (fd < 0)
        return;
    n = read(fd, S.pid_saved, sizeof(S.pid_saved) - 1);
    REAL(close)(fd);
    S.pid_saved[n > 0 ? n : 0] = 0;
    if (REAL(unlink)(S.pidfile) < 0) {
        say("pid file %s: %m", S.pidfile);
        return;
    }
    S.pid_hidden = true;
    say("pid file %s moved away while this copy starts", S.pidfile);
}

/* This copy serves: the pid file names it. */
static void pidfile_claim(void)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());

    if (!S.pidfile[0])
        return;
    if (pidfile_put(buf, (size_t)n) < 0)
        say("pid file %s: %m", S.pidfile);
    S.pid_hidden = false;
}

/* This copy did not take over: the predecessor's pid file comes back. */
static void pidfile_restore(void)
{
    if (!S.pid_hidden)
        return;
    if (pidfile_put(S.pid_saved, strlen(S.pid_saved)) < 0)
        say("pid file %s: cannot put it back: %m", S.pidfile);
    S.pid_hidden = false;
}

/* --- Privilege drops. ------------------------------------------------------ */

/* A program that drops its privileges (memcached -u) can no longer create
 * files in the coordination directory, which baton_ready() does. So the
 * holder becomes ready before its first drop of root's uid: every inherited
 * listener the program has not bound yet is claimed now and parked (its
 * bind() will find it), the predecessor steps down, and the drop goes on
 * once that is done. Listeners the program then never binds are closed
 * later (settle_parked). If the takeover fails, the manager ends this copy
 * (the caller never returns). Everything after this needs no privilege:
 * dead sockets need no file, the drain reads our own /proc entries (which
 * a non-dumpable process may), and the successor connects to a control
 * socket that was bound while we were root. */
static void ready_early(void)
{
    uint64_t one = 1;

    pthread_mutex_lock(&S.mu);
    if (!S.ready && !S.force_ready) {
        int n = 0;
        for (int i = 0; i < S.ne; i++) {
            struct entry *en = &S.e[i];
            int lib;
            if (!en->inherited || en->claimed)
                continue;
            en->claimed = true;
            lib = baton_fd(S.b, en->key);
            if (lib < 0) {
                say("inherited %s: %s", en->key, baton_last_error(S.b));
                continue;
            }
            en->lib_fd = lib;
            en->parked = true;
            n++;
        }
        S.force_ready = true;
        say("the program drops its privileges: ready now (%d listener(s) parked)", n);
        if (write(S.ready_efd, &one, sizeof(one)) < 0) {
            /* The manager also looks every PRE_READY_TICK ms. */
        }
    }
    pthread_mutex_unlock(&S.mu);
    pthread_mutex_lock(&S.ready_mu);
    while (S.ready_result == 0)
        pthread_cond_wait(&S.ready_cv, &S.ready_mu);
    pthread_mutex_unlock(&S.ready_mu);
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
            ready_early();                                                                         \
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

/* --- Starting successors with our environment. ---------------------------- */

/* libbaton's src/spawn.c is compiled into the shim with posix_spawn renamed
 * to this: a program may have replaced its environment (nginx keeps only
 * TZ), and `baton upgrade` must still start the successor with the shim. */
extern char **environ;
int baton_run__posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);
int baton_run__posix_spawnp(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);

static bool ours(const char *kv)
{
    return strncmp(kv, "LD_PRELOAD=", 11) == 0 || strncmp(kv, "BATON_RUN_", 10) == 0;
}

static char **merged_env(char *const envp[])
{
    size_t n = 0, k = 0, m = 0;
    char **v;

    while (envp && envp[n])
        n++;
    while (S.keep_env && S.keep_env[m])
        m++;
    v = calloc(n + m + 1, sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!ours(envp[i]))
            v[k++] = envp[i];
    for (size_t i = 0; i < m; i++)
        v[k++] = S.keep_env[i];
    return v;
}

static int spawn_with(bool p, pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                      const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    char **env = merged_env(envp);
    int r;

    if (!env)
        return ENOMEM;
    r = p ? posix_spawnp(pid, path, fa, attr, argv, env)
          : posix_spawn(pid, path, fa, attr, argv, env);
    free(env);
    return r;
}

int baton_run__posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return spawn_with(false, pid, path, fa, attr, argv, envp);
}

int baton_run__posix_spawnp(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return spawn_with(true, pid, path, fa, attr, argv, envp);
}

/* --- The manager thread. --------------------------------------------------- */

static bool ready_due(uint64_t now, uint64_t *first_poke)
{
    int live = 0, claimed = 0;

    if (S.force_ready)
        return true;
    for (int i = 0; i < S.ne; i++) {
        live += S.e[i].lib_fd >= 0;
        claimed += S.e[i].inherited && S.e[i].claimed;
    }
    if (live == 0)
        return false;
    if (atomic_load(&S.shm->poked)) {
        if (!*first_poke)
            *first_poke = now;
        if (claimed >= S.ninherited || now >= *first_poke + GRACE_MS)
            return true;
    }
    return now >= S.start_ms + (uint64_t)S.ready_ms;
}

static int become_ready(void)
{
    int r;

    pthread_mutex_lock(&S.mu);
    manifest_update();
    r = baton_ready(S.b);
    if (r == 0) {
        /* Inherited listeners nobody claimed are closed now. */
        for (int i = 0; i < S.ne; i++)
            if (S.e[i].inherited && !S.e[i].claimed)
                S.e[i].inherited = false;
        /* Ready early, the holder still waits for the program's first wait
         * for work to settle what it parked (settle_parked). */
        if (!S.force_ready)
            atomic_store(&S.shm->want_ready, 0);
        S.ready = true;
        pidfile_claim();
        S.upgrade_fd = baton_upgrade_fd(S.b);
        S.ctl_fd = baton_control_fd(S.b);
        say("ready: generation %d serves", baton_generation(S.b));
    } else {
        say("baton_ready: %s", baton_last_error(S.b));
    }
    pthread_mutex_unlock(&S.mu);
    return r;
}

/* A forked process bound or listened on an address of ours (child_note):
 * such a listener is not passed on. If this process has no listener of its
 * own, the program serves from children it made after `baton run` started
 * it (a daemon, or a wrapper): give up rather than never become ready. If
 * it has, say so once. S.mu held. */
static void check_child_listener(bool *warned)
{
    int pid = atomic_load(&S.shm->child_pid), own = 0;

    if (pid == 0 || *warned)
        return;
    for (int i = 0; i < S.ne; i++)
        own += S.e[i].lib_fd >= 0 && S.e[i].nprog > 0;
    if (own == 0) {
        complain("pid %d, which it forked, binds %s: only listeners made by the process "
                 "`baton run` started (pid %d) are passed on; run the program in the "
                 "foreground, binding its listeners itself",
                 pid, S.shm->child_key, (int)getpid());
        pthread_mutex_unlock(&S.mu);
        give_up();
    }
    complain("pid %d, which it forked, binds %s: a listener made in a forked process is not "
             "passed on, and the next copy cannot take it over",
             pid, S.shm->child_key);
    *warned = true;
}

static void wait_ready(void)
{
    uint64_t first_poke = 0, junk;
    bool warned = false;

    for (;;) {
        struct pollfd p = {.fd = S.ready_efd, .events = POLLIN};
        bool due;
        REAL(poll)(&p, 1, PRE_READY_TICK);
        if (read(S.ready_efd, &junk, sizeof(junk)) < 0) {
            /* Nothing pending. */
        }
        pthread_mutex_lock(&S.mu);
        check_child_listener(&warned);
        due = ready_due(now_ms(), &first_poke);
        pthread_mutex_unlock(&S.mu);
        if (due)
            return;
    }
}

/* After a ready at a privilege drop (ready_early): the listeners parked
 * then that the program has not bound by its first wait for work (or 2 s
 * after it, or READY_MS after start) are not its listeners any more. As at
 * an ordinary baton_ready(), which closes them, they stop listening
 * (shutdown() of a listening socket resets its queue and unlistens it) and
 * are not passed on. Returns false if a successor took over meanwhile. */
static bool settle_parked(void)
{
    uint64_t first_poke = 0, junk;

    for (;;) {
        struct pollfd p[3] = {{.fd = S.ready_efd, .events = POLLIN},
                              {.fd = S.ctl_fd, .events = POLLIN},
                              {.fd = S.upgrade_fd, .events = POLLIN}};
        uint64_t now;
        int left = 0;
        REAL(poll)(p, 3, PRE_READY_TICK);
        if (read(S.ready_efd, &junk, sizeof(junk)) < 0) {
            /* Nothing pending. */
        }
        if (p[1].revents & POLLIN)
            baton_dispatch(S.b);
        if (p[2].revents & POLLIN)
            return false;
        now = now_ms();
        if (atomic_load(&S.shm->poked) && !first_poke)
            first_poke = now;
        pthread_mutex_lock(&S.mu);
        for (int i = 0; i < S.ne; i++)
            left += S.e[i].parked && !S.e[i].adopted && !S.e[i].dropped;
        if (left == 0 || (first_poke && now >= first_poke + GRACE_MS) ||
            now >= S.start_ms + (uint64_t)S.ready_ms) {
            for (int i = 0; i < S.ne; i++) {
                struct entry *en = &S.e[i];
                if (!en->parked || en->adopted || en->dropped)
                    continue;
                shutdown(en->lib_fd, SHUT_RD);
                en->dropped = true;
                say("closing %s: parked at the privilege drop, never bound", en->key);
            }
            manifest_update();
            atomic_store(&S.shm->want_ready, 0);
            pthread_mutex_unlock(&S.mu);
            return true;
        }
        pthread_mutex_unlock(&S.mu);
    }
}

/* Serve successors until one takes over. */
static void serve(void)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = S.upgrade_fd, .events = POLLIN},
                              {.fd = S.ctl_fd, .events = POLLIN}};
        if (REAL(poll)(p, 2, -1) < 0)
            continue;
        if (p[1].revents & POLLIN)
            baton_dispatch(S.b);
        if (p[0].revents & POLLIN)
            return;
    }
}

/* --- Draining: connections our process tree still holds. ----------------- */

static pid_t owner_pid(void)
{
    char path[PATH_MAX + 16], line[128];
    FILE *f;
    int pid = 0;

    snprintf(path, sizeof(path), "%s/owner", S.dir);
    f = fopen(path, "re");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "pid %d", &pid) == 1)
            break;
    fclose(f);
    return pid;
}

/* Is fd (ours) a connection accepted on one of our listeners: a connected
 * stream socket whose local port or path is a listener's? */
static bool is_conn(int fd)
{
    struct sockaddr_storage ss, peer;
    socklen_t l = sizeof(ss), pl = sizeof(peer);
    int acc = 1, type = 0;
    socklen_t il = sizeof(int);

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &il) < 0 || acc)
        return false;
    il = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &il) < 0 || type != SOCK_STREAM ||
        REAL(getsockname)(fd, (struct sockaddr *)&ss, &l) < 0 ||
        getpeername(fd, (struct sockaddr *)&peer, &pl) < 0)
        return false;
    for (int i = 0; i < S.ne; i++) {
        const char *key = S.e[i].key, *path;
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            unsigned port =
                ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
            if (strncmp(key, "tcp://", 6) == 0 && baton_run__key_port(key) == port)
                return true;
        } else if (ss.ss_family == AF_UNIX && (path = baton_run__key_path(key)) != NULL) {
            const char *sp = ((struct sockaddr_un *)&ss)->sun_path;
            size_t n = strcspn(path, "#");
            if (l > offsetof(struct sockaddr_un, sun_path) + n && strncmp(sp, path, n) == 0 &&
                sp[n] == 0)
                return true;
        }
    }
    return false;
}

/* Is fd an idle keep-alive connection (baton_run__conn_idle) that the
 * drain has not ended yet? (After shutdown(SHUT_RD), an established
 * connection with nothing unread polls POLLRDHUP.) */
static bool conn_idle(int fd)
{
    struct baton_run__tcp t = {0};
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};

    memset(&ti, 0, sizeof(ti));
    if (S.idle_close_ms <= 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        l < offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof(ti.tcpi_bytes_sent) ||
        ioctl(fd, SIOCINQ, &t.inq) < 0 || ioctl(fd, SIOCOUTQ, &t.outq) < 0 ||
        REAL(poll)(&p, 1, 0) != 0)
        return false;
    t.state = ti.tcpi_state;
    t.last_recv_ms = ti.tcpi_last_data_recv;
    t.last_sent_ms = ti.tcpi_last_data_sent;
    t.bytes_received = ti.tcpi_bytes_received;
    t.bytes_sent = ti.tcpi_bytes_sent;
    return baton_run__conn_idle(&t, (unsigned)S.idle_close_ms);
}

/* One connection of the copy's tree, fd ours or a duplicate: 1 if it
 * counts. An idle keep-alive one is shut down for reading: the program
 * reads what the client has sent (even a request racing with this), answers
 * it, then reads EOF and closes the connection, so the client sees it end
 * between requests rather than a reset at the stop signal. */
static int visit_conn(int fd, pid_t pid)
{
    if (!is_conn(fd))
        return 0;
    if (S.draining && conn_idle(fd) && shutdown(fd, SHUT_RD) == 0)
        say("ending an idle keep-alive connection of pid %d", (int)pid);
    return 1;
}

/* Connections process pid holds: its socket fds are looked at through
 * pidfd_getfd() (a duplicate, closed again), ours directly. Costs what the
 * tree holds, not what the host holds. */
static int proc_conns(pid_t pid)
{
    char path[64], link[64];
    struct dirent *d;
    int n = 0, pidfd = -1;
    bool self = pid == getpid();
    DIR *dir;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    if (!dir) /* gone, or closed to us (a non-dumpable process of another uid) */
        return errno == EACCES ? 1 : 0;
    if (!self)
        pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    while ((d = readdir(dir))) {
        char fp[320];
        ssize_t len;
        int fd, dup;
        if (d->d_name[0] == '.')
            continue;
        snprintf(fp, sizeof(fp), "%s/%s", path, d->d_name);
        len = readlink(fp, link, sizeof(link) - 1);
        if (len <= 0 || strncmp(link, "socket:", 7) != 0)
            continue;
        fd = atoi(d->d_name);
        if (self) {
            n += fd != dirfd(dir) && visit_conn(fd, pid);
            continue;
        }
        dup = pidfd >= 0 ? (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0) : -1;
        if (dup < 0) {
            n++; /* cannot look: assume a connection, until the drain timeout */
            continue;
        }
        n += visit_conn(dup, pid);
        REAL(close)(dup);
    }
    closedir(dir);
    if (pidfd >= 0)
        REAL(close)(pidfd);
    return n;
}

/* Connections held by pid and its descendants, except skip's subtree. */
static int tree_conns(pid_t pid, pid_t skip, int depth)
{
    char path[64], buf[4096];
    struct dirent *d;
    DIR *dir;
    int n;

    if (pid == skip || depth > 16)
        return 0;
    n = proc_conns(pid);
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    dir = opendir(path);
    while (dir && (d = readdir(dir))) {
        char cp[340];
        FILE *f;
        if (d->d_name[0] == '.')
            continue;
        snprintf(cp, sizeof(cp), "%s/%s/children", path, d->d_name);
        f = fopen(cp, "re");
        if (!f)
            continue;
        while (fgets(buf, sizeof(buf), f)) {
            char *p = buf, *end;
            for (long c; (c = strtol(p, &end, 10)) > 0; p = end)
                n += tree_conns((pid_t)c, skip, depth + 1);
        }
        fclose(f);
    }
    if (dir)
        closedir(dir);
    return n;
}

/* Gone, or a zombie: it holds nothing and accepts nothing. */
static bool proc_dead(pid_t pid)
{
    char path[64], buf[256], *p;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH;
    n = read(fd, buf, sizeof(buf) - 1);
    REAL(close)(fd);
    if (n <= 0)
        return true;
    buf[n] = 0;
    p = strrchr(buf, ')'); /* after the command name, which may hold anything */
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* Accept calls in flight in live processes; a dead one's slot is freed. */
static int in_accept_live(void)
{
    int n = atomic_load(&S.shm->in_accept_rest);

    for (int i = 0; i < MAX_PROCS; i++) {
        struct in_accept *c = &S.shm->in_accept[i];
        int pid = atomic_load(&c->pid), k = atomic_load(&c->n);
        if (pid == 0 || k == 0)
            continue;
        if (!proc_dead(pid))
            n += k;
        else if (atomic_compare_exchange_strong(&c->pid, &pid, 0))
            say("pid %d died in accept: no longer counted", pid);
    }
    return n;
}

static int count_conns(void)
{
    return in_accept_live() + tree_conns(getpid(), owner_pid(), 0);
}

static void kill_tree(pid_t pid, pid_t skip, int sig, int depth)
{
    char path[64], buf[4096];
    struct dirent *d;
    DIR *dir;

    if (pid == skip || depth > 16)
        return;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    dir = opendir(path);
    while (dir && (d = readdir(dir))) {
        char cp[340];
        FILE *f;
        if (d->d_name[0] == '.')
            continue;
        snprintf(cp, sizeof(cp), "%s/%s/children", path, d->d_name);
        f = fopen(cp, "re");
        if (!f)
            continue;
        while (fgets(buf, sizeof(buf), f)) {
            char *p = buf, *end;
            for (long c; (c = strtol(p, &end, 10)) > 0; p = end)
                kill_tree((pid_t)c, skip, sig, depth + 1);
        }
        fclose(f);
    }
    if (dir)
        closedir(dir);
    if (depth > 0)
        kill(pid, sig);
}

/* Sleep ms, dispatching control events at most once: a superseded
 * handle's control fd may stay readable (the successor's link) and must not
 * turn this into a busy loop. */
static void sleep_dispatching(int ms)
{
    struct pollfd p = {.fd = S.ctl_fd, .events = POLLIN};
    uint64_t end = now_ms() + (uint64_t)ms, now;

    if (S.ctl_fd >= 0 && REAL(poll)(&p, 1, ms) > 0)
        baton_dispatch(S.b);
    while ((now = now_ms()) < end) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(end - now) * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Retire the listeners in every process of the copy and wait until its
 * tree holds no connection, or the drain timeout. The connections left. */
static int drain_wait(const char *why)
{
    uint64_t deadline = now_ms() + (uint64_t)S.drain_ms;
    int n = -1;

    atomic_store(&S.shm->superseded, 1);
    /* Wakes every blocking accept() of the copy, in every process (a
     * successor's serving, which wakes them too, may never come). */
    if (write(S.retire_efd, &(uint64_t){1}, sizeof(uint64_t)) < 0) {
        /* Cannot fail: the counter is far from its maximum. */
    }
    pthread_mutex_lock(&S.mu);
    retire_local();
    pthread_mutex_unlock(&S.mu);
    say("%s: draining (at most %d ms)", why, S.drain_ms);
    S.draining = true;
    while (now_ms() < deadline) {
        sleep_dispatching(SCAN_MS);
        n = count_conns();
        if (n == 0)
            break;
    }
    S.draining = false;
    return n;
}

static void drain(const char *why)
{
    uint64_t deadline;
    int n = drain_wait(why);

    say("%s; stopping with signal %d", n == 0 ? "no connections left" : "drain timeout",
        S.stop_sig);
    kill(getpid(), S.stop_sig);
    deadline = now_ms() + KILL_MS;
    while (now_ms() < deadline)
        sleep_dispatching(SCAN_MS);
    say("still alive %d ms after the stop signal: SIGKILL", KILL_MS);
    kill_tree(getpid(), owner_pid(), SIGKILL, 0);
    kill(getpid(), SIGKILL);
}

/* This copy does not serve, and never will (complain() said why): the
 * predecessor's pid file comes back, the listeners are let go, what the
 * copy accepted meanwhile (usually nothing) is finished, and then its
 * process tree ends with EXIT_NOT_SERVING. The program's own clean-up does
 * not run: it would remove what belongs to the copy that serves (its pid
 * file, its unix socket paths). Manager thread only. */
static _Noreturn void give_up(void)
{
    atomic_store(&S.gave_up, true);
    pthread_mutex_lock(&S.mu);
    pidfile_restore();
    pthread_mutex_unlock(&S.mu);
    drain_wait("not serving");
    kill_tree(getpid(), 0, SIGKILL, 0);
    _exit(EXIT_NOT_SERVING);
}

static void *manager(void *arg)
{
    sigset_t all;
    int r;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    wait_ready();
    r = become_ready();
    pthread_mutex_lock(&S.ready_mu);
    S.ready_result = r == 0 ? 1 : -1;
    pthread_cond_broadcast(&S.ready_cv);
    pthread_mutex_unlock(&S.ready_mu);
    if (r < 0) {
        /* Our predecessor serves on (or is gone): do not serve beside it. */
        if (baton_inherited(S.b))
            complain("could not take over from generation %d, which serves on: %s",
                     baton_generation(S.b) - 1, baton_last_error(S.b));
        else
            complain("could not start serving: %s", baton_last_error(S.b));
        give_up();
    }
    if (!S.force_ready || settle_parked())
        serve();
    drain("a successor serves");
    return NULL;
}

/* --- Start-up. ------------------------------------------------------------ */

static void at_prepare(void)
{
    pthread_mutex_lock(&S.mu);
    /* Decided here, under S.mu: S.ready may change as soon as the parent
     * lets go of S.mu. */
    S.fork_lock_fd = S.shm && !S.ready ? S.lock_fd : -1;
}

static void at_parent(void)
{
    pthread_mutex_unlock(&S.mu);
}

static void at_child(void)
{
    static const pthread_mutex_t fresh = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
    static const pthread_mutex_t fresh_ready_mu = PTHREAD_MUTEX_INITIALIZER;
    static const pthread_cond_t fresh_ready_cv = PTHREAD_COND_INITIALIZER;

    atomic_store(&S.child, true);
    atomic_store(&S.in_accept, NULL); /* the parent's: ours comes at our first accept */
    /* libbaton unlocks (LOCK_UN) the open file all copies share at
     * baton_ready(), but if the holder dies before that, a child's copy
     * would keep the lock and stall the next takeover until it exits. */
    if (S.fork_lock_fd >= 0)
        REAL(close)(S.fork_lock_fd);
    S.lock_fd = S.fork_lock_fd = -1;
    /* Not pthread_mutex_unlock(): S.mu is recursive and its owner is the
     * forking thread's tid in the parent, which is not ours, so the unlock
     * would fail with EPERM and leave S.mu locked for ever in the child (a
     * worker would then hang at its first retirement). at_prepare() held it,
     * so the state it guards is consistent, and this is the only thread. */
    S.mu = fresh;
    S.ready_mu = fresh_ready_mu;
    S.ready_cv = fresh_ready_cv;
}

static int read_cmdline_hash(uint64_t *ret)
{
    char buf[65536];
    size_t len = 0;
    ssize_t n;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) > 0)
        len += (size_t)n;
    REAL(close)(fd);
    *ret = baton_run__hash(buf, len);
    return 0;
}

/* The process `baton run` executed, or a successor libbaton started with
 * the same command line; nothing else the program executes. */
static bool should_activate(void)
{
    const char *pid = getenv("BATON_RUN_PID"), *cmd = getenv("BATON_RUN_CMD");
    char hex[32];
    uint64_t h;

    if (read_cmdline_hash(&h) < 0)
        return false;
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
    if (pid && atoi(pid) == (int)getpid()) {
        setenv("BATON_RUN_CMD", hex, 1);
        return true;
    }
    return cmd && strcmp(cmd, hex) == 0;
}

/* The fd of DIR/lock, which libbaton holds from baton_open() to
 * baton_ready(). */
static int find_lock_fd(void)
{
    char want[PATH_MAX + 8], link[PATH_MAX + 8], fp[64];
    struct dirent *d;
    DIR *dir = opendir("/proc/self/fd");
    int fd = -1;

    snprintf(want, sizeof(want), "%s/lock", S.dir);
    while (dir && fd < 0 && (d = readdir(dir))) {
        ssize_t n;
        snprintf(fp, sizeof(fp), "/proc/self/fd/%.20s", d->d_name);
        n = readlink(fp, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = 0;
            if (strcmp(link, want) == 0)
                fd = atoi(d->d_name);
        }
    }
    if (dir)
        closedir(dir);
    return fd;
}

static void keep_env(void)
{
    size_t n = 0, k = 0;

    for (char **e = environ; *e; e++)
        n += ours(*e);
    S.keep_env = calloc(n + 1, sizeof(char *));
    for (char **e = environ; S.keep_env && *e; e++)
        if (ours(*e))
            S.keep_env[k++] = strdup(*e);
}

/* BATON_RUN_PIDFILE, made absolute against our working directory. */
static void pidfile_name(void)
{
    const char *v = getenv("BATON_RUN_PIDFILE");
    char cwd[PATH_MAX];

    if (!v || !*v)
        return;
    if (v[0] == '/')
        snprintf(S.pidfile, sizeof(S.pidfile), "%s", v);
    else if (getcwd(cwd, sizeof(cwd)) &&
             snprintf(S.pidfile, sizeof(S.pidfile), "%s/%s", cwd, v) >= (int)sizeof(S.pidfile))
        S.pidfile[0] = 0;
}

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

static void open_log(void)
{
    const char *v = getenv("BATON_RUN_LOG");

    if (!v || !*v)
        return;
    if (strcmp(v, "stderr") == 0 || strcmp(v, "-") == 0)
        S.log_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    else
        S.log_fd = open(v, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* Does this process have children (live or zombie)? */
static bool has_children(void)
{
    char path[64], buf[32];
    struct dirent *d;
    bool any = false;
    DIR *dir = opendir("/proc/self/task");

    while (dir && !any && (d = readdir(dir))) {
        FILE *f;
        if (d->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%.20s/children", d->d_name);
        f = fopen(path, "re");
        any = f && fgets(buf, sizeof(buf), f) && buf[0] >= '0' && buf[0] <= '9';
        if (f)
            fclose(f);
    }
    if (dir)
        closedir(dir);
    return any;
}

/* The holder exits before it served: the program failed, or it is one that
 * daemonizes (the process `baton run` started exits, a child serves). The
 * person who ran it must not take that for success: say so, put the pid
 * file back, end the children, and exit non-zero. */
static void at_holder_exit(int status, void *arg)
{
    bool kids;

    if (!is_holder() || S.ready)
        return;
    if (!atomic_exchange(&S.gave_up, true)) {
        kids = has_children();
        complain("exited with status %d before it served%s; %s", status,
                 kids ? ", leaving processes behind (ended now): the process `baton run` starts "
                        "must be the one that serves (run it in the foreground, not daemonized)"
                      : "",
                 baton_inherited(S.b) ? "the running copy serves on" : "nothing serves");
        pthread_mutex_lock(&S.mu);
        pidfile_restore();
        pthread_mutex_unlock(&S.mu);
        if (kids)
            kill_tree(getpid(), 0, SIGKILL, 0);
    }
    if (status == 0) {
        fflush(NULL);
        _exit(EXIT_NOT_SERVING);
    }
}

/* Before the program runs, nothing has been done that needs undoing. */
static _Noreturn void cannot_start(const char *fmt, const char *detail)
{
    complain(fmt, S.dir, detail);
    _exit(EXIT_NOT_SERVING);
}

__attribute__((constructor)) static void shim_init(void)
{
    const char *dir = getenv("BATON_RUN_DIR");
    struct baton_options o = {0};
    sigset_t all, old;
    pthread_t t;
    int r;

    resolve();
    if (!dir || !*dir || strlen(dir) >= sizeof(S.dir) || !should_activate())
        return;
    open_log();
    S.err_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    snprintf(S.dir, sizeof(S.dir), "%s", dir);
    S.drain_ms = env_int("BATON_RUN_DRAIN_MS", DRAIN_MS);
    S.stop_sig = env_int("BATON_RUN_STOP_SIGNAL", SIGTERM);
    S.ready_ms = env_int("BATON_RUN_READY_MS", READY_MS);
    S.min_backlog = env_int("BATON_RUN_MIN_BACKLOG", MIN_BACKLOG);
    S.idle_close_ms = env_int("BATON_RUN_IDLE_CLOSE_MS", IDLE_CLOSE_MS);
    S.start_ms = now_ms();
    pidfile_name();
    keep_env();
    S.shm = mmap(NULL, sizeof(*S.shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    S.ready_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    S.retire_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (S.shm == MAP_FAILED || S.ready_efd < 0 || S.retire_efd < 0)
        cannot_start("%s: cannot start: %s", strerror(errno));
    o.dir = S.dir;
    o.ready_timeout_ms = env_int("BATON_RUN_TAKEOVER_TIMEOUT_MS", OWNER_TIMEOUT);
    o.allowed_uid = (uid_t)-1;
    o.flags = BATON_NO_THREAD | BATON_WAIT_LOCK;
    o.log = lib_log;
    r = baton_open(&o, &S.b);
    if (r < 0)
        cannot_start("%s: %s",
                     *baton_last_error(NULL) ? baton_last_error(NULL) : baton_strerror(r));
    if (baton_inherited(S.b))
        manifest_read();
    if (S.pidfile[0] && baton_inherited(S.b))
        pidfile_hide();
    S.lock_fd = find_lock_fd();
    /* Before the program forks workers: they watch it too. */
    S.upgrade_fd = baton_upgrade_fd(S.b);
    atomic_store(&S.shm->want_ready, 1);
    pthread_atfork(at_prepare, at_parent, at_child);
    S.active = true;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    r = pthread_create(&t, NULL, manager, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0)
        cannot_start("%s: pthread_create: %s", strerror(r));
    pthread_detach(t);
    on_exit(at_holder_exit, NULL);
    say("generation %d in %s", baton_generation(S.b), S.dir);
}
