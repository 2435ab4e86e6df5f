/* SPDX-License-Identifier: MIT */
/*
 * The preload shim's shared state and the functions its files call across.
 * Nothing here is exported from libbaton-preload.so (preload.sym exports
 * only the wrapped libc functions).
 *
 * The files, one concept each:
 *   shim.c       the state, the real functions underneath, the log;
 *   wrap.c       the libc wrappers the program calls;
 *   listeners.c  the listener table: names, adoption, the manifest, retiring;
 *   manager.c    the per-process manager: start-up, readiness, serving;
 *   stop.c       draining a superseded copy and stopping it;
 *   proctree.c   the process tree under the holder, walked in one place;
 *   pidfile.c    the program's pid file (--pidfile);
 *   spawn.c      successors started with the shim's environment;
 *   drain.c      the drain's decisions, pure (tests/run-drain.c);
 *   keys.c       names of addresses and other pure parts (tests/run-keys.c).
 */
#ifndef BATON_RUN_SHIM_H
#define BATON_RUN_SHIM_H

#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "baton.h"

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
#define MIN_BACKLOG    128

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
    /* UDP steering (udp.c): the epoll fd the program's fds are, over the
     * socket (real, our copy of it) and the steering socket; -1 if the
     * entry is not steered. */
    int mux, real;
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

struct baton_run__state {
    bool active; /* holder, or forked from it */
    atomic_bool child;
    baton *b;
    char dir[PATH_MAX];
    int drain_ms, stop_sig, ready_ms, min_backlog;
    int idle_close_ms;                 /* BATON_RUN_IDLE_CLOSE_MS: baton_run__conn_idle() */
    bool draining;                     /* manager: draining (stop.c) */
    int probation_ms, max_generations; /* BATON_RUN_PROBATION_MS, BATON_RUN_MAX_GENERATIONS */
    /* upgrade_fd: readable once a successor is final (every process of the
     * copy watches it); lib_upgrade_fd: the library's events, which the
     * manager reads (a successor on probation is not final). */
    int ready_efd, upgrade_fd, lib_upgrade_fd, ctl_fd;
    int retire_efd; /* readable once the copy retires (stop.c) */
    struct shm *shm;
    pthread_mutex_t mu;
    struct entry e[MAX_ENTRIES];
    int ne, ninherited;
    struct reg regs[MAX_REGS];
    int nregs;
    bool retired;
    bool ready;       /* holder: baton_ready() succeeded */
    bool force_ready; /* holder: the program drops its privileges (baton_run__ready_early) */
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
    /* UDP steering (udp.c): BATON_RUN_UDP_STEER (default on), its idle
     * time BATON_RUN_UDP_IDLE_MS, the shared flow table, and the
     * library's steering calls, one thread at a time. */
    bool udp_steer;
    int udp_idle_ms;
    struct flows *flows;
    pthread_mutex_t steer_mu;
    atomic_uint udp_taken, udp_forwarded, udp_dropped, udp_reads;
    atomic_bool udp_child_said;
};

extern struct baton_run__state baton_run__s;
#define S baton_run__s

extern _Atomic unsigned char baton_run__fdmap[FDMAP];

/* The wrapped functions, from the next object in the search order. */
struct baton_run__real {
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*poll_chk)(struct pollfd *, nfds_t, int, size_t);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);
    int (*unlink)(const char *);
    int (*unlinkat)(int, const char *, int);
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    int (*setuid)(uid_t);
    int (*seteuid)(uid_t);
    int (*setreuid)(uid_t, uid_t);
    int (*setresuid)(uid_t, uid_t, uid_t);
    int (*setfsuid)(uid_t);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    int (*recvmmsg)(int, struct mmsghdr *, unsigned, int, struct timespec *);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    int (*sendmmsg)(int, struct mmsghdr *, unsigned, int);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*getpeername)(int, struct sockaddr *, socklen_t *);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*ioctl)(int, unsigned long, ...);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
};

extern struct baton_run__real baton_run__real;
void baton_run__resolve(void);

/* Another library's constructor may call us before ours ran. */
#define REAL(name)                                                                                 \
    (baton_run__real.name ? baton_run__real.name : (baton_run__resolve(), baton_run__real.name))

/* Only to BATON_RUN_LOG (a path, or "stderr"): never into the program's
 * own output otherwise. Keeps errno. */
__attribute__((format(printf, 1, 2))) void baton_run__say(const char *fmt, ...);
#define say(...) baton_run__say(__VA_ARGS__)

/* For the person who ran `baton run`: why this copy does not serve. To the
 * program's standard error as it was at start (the program may have
 * pointed fd 2 at a log file since), and to the log. Keeps errno. */
__attribute__((format(printf, 1, 2))) void baton_run__complain(const char *fmt, ...);
#define complain(...) baton_run__complain(__VA_ARGS__)

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline int fdmap_get(int fd)
{
    return fd >= 0 && fd < FDMAP ? atomic_load_explicit(&baton_run__fdmap[fd], memory_order_relaxed)
                                 : 0;
}

static inline void fdmap_set(int fd, int v)
{
    if (fd >= 0 && fd < FDMAP)
        atomic_store_explicit(&baton_run__fdmap[fd], (unsigned char)v, memory_order_relaxed);
}

/* The listener program fd fd is one of, or NULL. */
static inline struct entry *entry_of(int fd)
{
    int v = fdmap_get(fd);
    return v >= 1 && v <= S.ne ? &S.e[v - 1] : NULL;
}

/* The process `baton run` started (or a successor of it), not a child. */
static inline bool is_holder(void)
{
    return S.active && !atomic_load(&S.child);
}

/* listeners.c: the listener table. Unless said otherwise, S.mu held. */
void baton_run__manifest_update(void);
void baton_run__manifest_read(void);
void baton_run__prog_add(struct entry *e, int fd);
void baton_run__forget(int fd); /* takes S.mu */
void baton_run__retire(void);
void baton_run__retire_if_superseded(void); /* takes S.mu */
int baton_run__sock_type(int fd);
int baton_run__v6only(int fd, int family);
struct entry *baton_run__find_free(const char *key);
int baton_run__adopt(struct entry *en, int fd);
void baton_run__register(int fd, int type);
void baton_run__child_note(int fd, const struct sockaddr *sa, socklen_t len);
bool baton_run__is_listener_path(const char *path); /* takes S.mu */

/* wrap.c: the program waits for work (a blocking read the shim does for
 * it): readiness may come now. */
void baton_run__poke(void);

/* manager.c: readiness. */
void baton_run__ready_early(void);

/* stop.c: a copy that no longer serves, or never will. Manager thread. */
void baton_run__drain(const char *why);
_Noreturn void baton_run__give_up(void);
/* The calling process's slot for counting its accept calls. */
atomic_int *baton_run__in_accept_counter(void);

/* proctree.c. */
typedef void baton_run__visit_fn(pid_t pid, int depth, void *arg);
void baton_run__tree_walk(pid_t pid, pid_t skip, baton_run__visit_fn *visit, void *arg);
void baton_run__kill_tree(pid_t pid, pid_t skip, int sig);
bool baton_run__has_children(void);
bool baton_run__proc_dead(pid_t pid);

/* pidfile.c. */
void baton_run__pidfile_name(void);
bool baton_run__is_pidfile(const char *path);
void baton_run__pidfile_hide(void);
void baton_run__pidfile_claim(void);
void baton_run__pidfile_restore(void);

/* udp.c: UDP flow steering. */
#define UDP_IDLE_MS 30000
struct flows;
int baton_run__udp_steer(struct entry *en, int fd); /* S.mu held */
void baton_run__udp_retire(void);                   /* S.mu held */
int baton_run__udp_real(int fd);
ssize_t baton_run__udp_recvmsg(struct entry *en, int fd, struct msghdr *m, int flags);
void baton_run__udp_sent(const struct sockaddr *to, socklen_t len);
unsigned baton_run__udp_live(void);

/* The steered entry program fd fd is one of, or NULL. */
static inline struct entry *steered_of(int fd)
{
    struct entry *en = entry_of(fd);
    return en && en->mux >= 0 ? en : NULL;
}

/* spawn.c. */
void baton_run__keep_env(void);

#endif
