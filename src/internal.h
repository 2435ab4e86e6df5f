/* SPDX-License-Identifier: MIT */
/* Internal declarations shared by the library's source files. */
#ifndef BATON_INTERNAL_H
#define BATON_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "baton.h"
#include "wire.h"

#define BATON_EXPORT __attribute__((visibility("default")))

#define BATON__DEFAULT_TIMEOUT_MS 10000
/* Control peers served at once; more are refused at accept so that a flood
 * of connects costs the owner nothing but the accept. */
#define BATON__MAX_PEERS 32

enum baton__kind {
    BATON__KIND_FD = 0,
    BATON__KIND_TCP = 1,
    BATON__KIND_UDP = 2,
    BATON__KIND_UNIX = 3,
    BATON__KIND_MAX = 3,
};

struct baton__entry {
    /* One allocation: the name, then the address ("" for plain named
     * fds). Small entries keep a takeover of thousands of fds from paying
     * a page fault every ten of them. */
    char *name;
    char *addr;
    uint8_t kind;
    bool claimed;   /* inherited entries only: the application asked for it */
    bool activated; /* passed by systemd: matched by name, any address */
    int fd;
};

/* Named fds, in the order they were added (entries are only ever
 * appended), with a hash index by name: a takeover of thousands of fds
 * looks every name up several times. */
struct baton__table {
    struct baton__entry *v;
    size_t n, cap;
    uint32_t *slots; /* entry index + 1, 0 = empty; nslots a power of 2 */
    size_t nslots;
};

/* A process talking to us on the control socket: a successor, or the tool. */
/* When each step of a takeover happened, in monotonic microseconds (0: not
 * reached), for DIR/last-upgrade. */
struct baton__times {
    uint64_t spawned, connected, fds_sent, ready, committed, serving;
};

struct baton__peer {
    int fd;
    int phase;
    pid_t pid;
    uid_t uid;
    uint64_t job;      /* the job token it sent in REQ, 0 none */
    uint64_t deadline; /* monotonic ms */
    /* Takeover: what we are sending, snapshotted at HELLO. */
    size_t sent, total;
    int state_fd;
    uint64_t state_len;
    /* Upgrade requests: waiting for the job's outcome. */
    bool waits_job;
    /* Our successor: takes connections; the application's thread is
     * using the link in baton_handoff() (the dispatcher keeps off). */
    bool takes_conns;
    bool app_busy;
    /* The tool waits for the outcome of a probation (after the job's). */
    bool waits_prob;
    /* A takeover that waits until generations over the cap have exited. */
    bool waits_room;
    struct baton__times t;
};

/* A connection handed to us, waiting for baton_conn_accept(). */
struct baton__qconn {
    int fd;
    uint32_t id, len;
    char *state;
};

enum {
    BATON__PEER_FREE = 0,
    BATON__PEER_REQ,       /* accepted, waiting for the request */
    BATON__PEER_SENDING,   /* sending fd batches, then state and END */
    BATON__PEER_READY,     /* waiting for READY */
    BATON__PEER_PUBLISH,   /* COMMIT sent, waiting for PUBLISHED */
    BATON__PEER_SUCCESSOR, /* our successor took over; link kept open */
    BATON__PEER_UPGRADE,   /* the tool waits for a started successor */
};

/*
 * A successor we started ourselves (baton upgrade, baton_upgrade()). Its
 * processes are known by the token in their BATON_JOB (sent in REQ), and
 * by the pid we started. Once its upgrade is reported failed it may never
 * take over: its peers are dropped, its token refused from then on, and
 * its processes ended (see struct baton__doomed).
 */
struct baton__job {
    pid_t pid;      /* the process we started, while we watch it; 0 none */
    int pidfd;      /* watched until it exits or the job ends */
    uint64_t token; /* 0: no job yet */
    uint64_t deadline;
    int result; /* valid once done */
    bool done;
    bool exited;   /* the process we started exited 0 before READY (it forked?) */
    bool local;    /* baton_upgrade() in this process waits for it */
    bool recorded; /* DIR/last-upgrade says how it went */
    bool notify;   /* baton_upgrade_start(): a failure is an upgrade event */
    pid_t started; /* the process started (or woken) for it, even once reaped */
    uint64_t spawned_us;
    char msg[256];
};

/* A process of a failed job: sent SIGTERM, SIGKILL at kill_at if it still
 * lives, reaped when its pidfd turns readable. */
struct baton__doomed {
    pid_t pid; /* 0: free slot */
    int pidfd;
    uint64_t kill_at; /* monotonic ms; 0: SIGKILL sent */
};
#define BATON__DOOMED_MAX    4
#define BATON__FAILED_TOKENS 8

/* A generation the owner ends: sent SIGTERM, SIGKILL at kill_at if it
 * still lives (0: sent), forgotten when its pidfd turns readable. */
struct baton__ending {
    pid_t pid; /* 0: free slot */
    int pidfd;
    int generation, conns;
    uint64_t kill_at;
};
#define BATON__ENDING_MAX 16

/* How long a successor whose upgrade failed has to exit after SIGTERM. */
#define BATON__KILL_GRACE_MS 3000

struct baton {
    struct baton_options opts;
    pid_t pid; /* the process that opened it (a forked child frees only its copies) */
    char dir[4096];
    int dirfd;
    bool dir_by_fd; /* its entries named as /proc/self/fd/DIRFD/LEAF */
    int lockfd;     /* held from open until ready */
    int generation;
    bool inherited;
    bool ready;
    uint64_t since_ms;          /* realtime ms at which we became the owner */
    uint64_t draining_since_ms; /* realtime ms at which a successor took over */
    int conns;                  /* connections still ours, -1 unknown (gen.PID) */

    /* Predecessor (successor side). */
    uint64_t job_token; /* BATON_JOB: the owner started us for this job */
    int pred_fd;
    pid_t pred_pid;
    struct baton__table inh; /* what the predecessor passed */
    void *state_map;         /* the predecessor's state, mapped read-only */
    size_t state_map_len;

    /* Handed connections (successor side), guarded by mu: [head, acked)
     * are confirmed to the predecessor, [acked, n) not yet. */
    struct baton__qconn *cq;
    size_t cq_head, cq_acked, cq_n, cq_cap;
    int connfd; /* eventfd: connections wait, or none will come */
    /* baton_conn_fd(): an epoll set of connfd and, once we serve, the link
     * itself, so that the application wakes as a batch arrives rather than
     * when the dispatcher has queued it (a thread switch later). */
    int connep;
    bool pred_done;
    /* Owner side: ids of handed connections; one handoff at a time. */
    uint32_t conn_seq;
    bool handoff_busy;
    bool handoff_ended; /* DONE sent: no more connections */

    /* Owner side, guarded by mu. */
    pthread_mutex_t mu;
    struct baton__table own; /* what we pass on */
    int own_state_fd;        /* sealed memfd, -1 when none */
    uint64_t own_state_len;
    int ctl_fd;    /* our listening control socket, -1 before ready */
    ino_t ctl_ino; /* the inode we published as control.sock */
    int epfd;
    int timerfd;
    int wakefd;    /* eventfd: stop the thread */
    int upgradefd; /* eventfd: a successor is ready */
    int jobfd;     /* eventfd: the current job finished */
    int inotifyfd; /* changes to control.sock while we own it */
    /* UDP flow steering (steer.c): an epoll fd over our listening socket
     * for datagrams other generations forward to us (DIR/steer.GEN) and
     * the connections to it; the sockets we forward on, by generation
     * (its low 16 bits). */
    int steer_fd, steer_lfd;
    char steer_leaf[24];
    ino_t steer_ino; /* the socket file we bound, to unlink ours only */
    dev_t steer_dev;
    int *steer_in;
    unsigned nsteer_in, steer_in_cap, steer_next;
    struct baton__steer_to {
        uint16_t gen;
        int fd;           /* -1: that generation is gone ... */
        uint64_t gone_ms; /* ... as found then (asked again a second later, */
        ino_t gone_ino;   /* or at once if its socket is no longer this one) */
    } steer_to[64];
    unsigned nsteer_to;
    bool superseded;
    bool takeover_busy;
    /* At the fd limit the control socket is not watched until
     * accept_paused_until (monotonic ms; 0: watched). */
    uint64_t accept_paused_until;
    uint64_t ctl_retry_at; /* putting our control socket back failed: retry then */
    unsigned accept_backoff_ms, accept_refusals;
    struct baton__peer peers[BATON__MAX_PEERS];
    struct baton__job job;
    struct baton__doomed doomed[BATON__DOOMED_MAX];
    /* A standby successor (BATON_STANDBY): started at `at` (monotonic ms,
     * 0: not planned), parked until a job wakes it through fd; deaths:
     * how many in a row died before they were needed (the next one waits
     * the longer). */
    struct baton__standby {
        pid_t pid; /* 0: none */
        int pidfd, fd;
        uint64_t at;
        unsigned deaths;
    } standby;
    /* Upgrade events for baton_upgrade_event(), a ring; upgradefd (an
     * EFD_SEMAPHORE eventfd) counts them. */
    struct baton_event ev[8];
    unsigned ev_head, ev_n;
    /* Our successor's probation (owner side): watched by its pidfd until
     * until (monotonic ms); if it dies first we roll back. */
    struct {
        pid_t pid;
        int pidfd; /* -1: none running */
        int generation;
        uint64_t began, until, until_rt; /* until_rt: realtime ms, for gen.PID */
        uint64_t retry_at;               /* rolling back: try the lock again then */
        bool rolling_back;
        bool await_app;        /* died during a handoff: roll back when it returns */
        uint64_t job;          /* its job token, 0 none */
        struct baton__times t; /* its takeover, for DIR/last-upgrade */
        char why[192];
    } prob;
    unsigned handed; /* connections our successor confirmed (baton_handoff*) */
    /* Draining generations we are ending (gens.c): over the cap, or past
     * their drain bound. */
    struct baton__ending ending[BATON__ENDING_MAX];
    uint64_t gens_check_at; /* monotonic ms: look at the drain bounds again; 0 none */
    uint64_t sweep_at;      /* monotonic ms: baton__dir_sweep() due; 0 none */
    char cap_note[192];     /* what the cap cost this takeover, for DIR/last-upgrade */
    uint64_t failed_tokens[BATON__FAILED_TOKENS]; /* a ring: refused for good */
    unsigned failed_next;
    pthread_t thread;
    bool thread_running;

    /* Our own argv, for starting ourselves again. */
    char **argv;
    char exe[4096];

    char *txbuf; /* BATON__MSG_MAX bytes, used under mu */
};

/* baton.c */
void baton__log(const baton *b, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int baton__fail(baton *b, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* steer.c: close the steering sockets (and, unlink, remove ours). */
void baton__steer_free(baton *b, bool unlink);
/* steer.c, for the preload shim, which forwards its own packet form: send
 * iov as one packet to generation's process (1; -ESRCH, -EAGAIN, -errno as
 * baton_steer_route()), and read one packet forwarded to us (its length,
 * m->msg_flags set; -EAGAIN when none waits; -EBADF before
 * baton_steer_open()). Not thread-safe, as the public calls. */
struct iovec;
struct msghdr;
int baton__steer_sendv(baton *b, int generation, const struct iovec *iov, int iovcnt);
ssize_t baton__steer_recvmsg(baton *b, struct msghdr *m);
/* Check an argument at the door of a public function (sd-daemon's
 * assert_return): -EINVAL, with a message naming the function and the
 * condition that failed. */
#define BATON__ARG(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return baton__fail(NULL, EINVAL, "%s: invalid argument: %s", __func__, #cond);         \
    } while (0)
/* The calling thread's last failure message. */
const char *baton__last_err(void);
uint64_t baton__now_ms(void);
uint64_t baton__realtime_ms(void);
int baton__wait_fd(int fd, short events, uint64_t deadline);
bool baton__pid_gone(pid_t pid, int wait_ms);
/* Replace an entry's address. */
int baton__entry_set_addr(struct baton__entry *e, const char *addr);
/* Room for n entries, so that adding them neither copies nor rehashes. */
int baton__table_reserve(struct baton__table *t, size_t n);
int baton__table_add(struct baton__table *t, const char *name, const char *addr, int kind, int fd);
struct baton__entry *baton__table_find(struct baton__table *t, const char *name);
void baton__table_close(struct baton__table *t);
bool baton__name_ok(const char *name);

/* coord.c */
int baton__dir_open(baton *b);
int baton__lock(baton *b);
/* One try at the lock, for a rollback: 0, -EBUSY or another -errno. */
int baton__lock_try(baton *b);
void baton__unlock(baton *b);
/* Check an open coordination directory: not writable by group or others,
 * and (ours) owned by our euid; *ret_by_fd tells whether its entries
 * can be named through /proc/self/fd. -EPERM with the reason in why. */
int baton__dir_check(int dirfd, const char *dir, bool ours, bool *ret_by_fd, char *why, size_t len);
/* The unix socket address of leaf in the directory (dirfd, or the path dir
 * when !by_fd): 0 or -ENAMETOOLONG. */
struct sockaddr_un;
int baton__dir_name(int dirfd, bool by_fd, const char *dir, const char *leaf,
                    struct sockaddr_un *sa);
int baton__connect(baton *b, uint64_t deadline, int *ret_fd);
int baton__ctl_create(baton *b, int *ret_fd, char *ret_tmp, size_t tmp_len);
int baton__ctl_publish(baton *b, int fd, const char *tmp);
int baton__record_write(baton *b);
int baton__record_write_locked(baton *b);
/* The owner record, DIR/owner (docs/control-protocol.md, "The coordination
 * directory"). One reader for the library, the tool and the shim. */
#define BATON__RECORD_MAX_FDS   4096      /* a record naming more is garbled */
#define BATON__RECORD_MAX_BYTES (4 << 20) /* and one larger */
struct baton__record_fd {
    char name[BATON_NAME_MAX + 1], kind[8], addr[BATON_ADDR_MAX + 1], local[96];
};
struct baton__record {
    int pid, generation;
    unsigned long long since_ms;
    size_t nfds;
    struct baton__record_fd *fds; /* baton__record_free() frees it */
};
/* Reads dirfd's record: 0, -ENOENT (none) or another open error, -EPROTO
 * (garbled: a wrong first line, an unknown line, a pid or generation
 * missing or < 1), -ENOMEM. *rec is untouched on error. */
int baton__record_read(int dirfd, struct baton__record *rec);
void baton__record_free(struct baton__record *rec);
/* The pid the owner record names (0: none or unreadable). */
pid_t baton__record_pid(baton *b);

/* Every live generation has DIR/gen.PID (docs/control-protocol.md): written
 * when it starts serving, when it starts draining and when the count of
 * its connections changes; removed when its handle is freed. */
struct baton__gen {
    int pid, generation, conns; /* conns -1: unknown */
    bool draining;
    bool rolling_back; /* its successor died on probation: it takes over again */
    unsigned long long start, since_ms, draining_since_ms;
    unsigned long long probation_until; /* realtime ms its successor's probation ends; 0 none */
    unsigned long long drain_until;     /* realtime ms its drain bound ends; 0 none */
    int standby_pid;                    /* its parked successor (BATON_STANDBY); 0 none */
};
int baton__gen_write(baton *b);
void baton__gen_remove(baton *b);
/* The connections a draining copy still has (the baton run shim knows). */
void baton__gen_conns(baton *b, int n);
/* The live generations (pid alive with the recorded start time), newest
 * first, in *ret (free()) : their number, or -errno. */
int baton__gens_read(int dirfd, struct baton__gen **ret);
/* How many gen.PID names DIR holds, alive or not (a bound on gens_read's
 * count, from the names alone), or -errno. */
int baton__gens_count(int dirfd);
/* The process's start time (/proc/PID/stat, clock ticks since boot); 0 if
 * it is gone or unreadable. */
/* Numeric field (3 or more) of /proc/PID/stat: 0 when unreadable. */
unsigned long long baton__proc_stat_field(pid_t pid, int field);
unsigned long long baton__proc_start(pid_t pid);

/* DIR/last-upgrade: how the last takeover of this directory went, written
 * by the owner it replaced (or that stayed). */
struct baton__upgrade {
    int result;
    int from_pid, from_gen, to_pid, to_gen;
    bool job; /* the owner started the successor (baton upgrade) */
    unsigned long long at_ms;
    long long us[6]; /* spawned .. serving from the first known step; -1 not reached */
    char text[256];
};
void baton__upgrade_write(baton *b, const struct baton__peer *p, int result, const char *text);
int baton__upgrade_read(int dirfd, struct baton__upgrade *u);
uint64_t baton__now_us(void);
int baton__ctl_ensure(baton *b, int *ctl_fd);
void baton__dir_sweep(baton *b);
void baton__ctl_retire(baton *b);

/* fdpass.c */
int baton__send(int fd, const void *buf, size_t len, const int *fds, size_t nfds);
int baton__recv(int fd, void *buf, size_t cap, int *fds, size_t maxfds, size_t *ret_len,
                size_t *ret_nfds);
int baton__send_msg(int fd, int type, const void *payload, size_t len, const int *fds, size_t nfds);
int baton__send_error(int fd, int err, const char *msg);
void baton__close_fds(int *fds, size_t n);

/* listen.c */
int baton__addr_kind(const char *address);
int baton__listen_new(baton *b, const char *address, int backlog, int *ret_fd);
int baton__fd_matches(int fd, int kind);
/* Is fd a socket of kind bound to the socket address that address names
 * (resolved; port 0 matches any port; a unix path or another name of the
 * same socket file)? */
int baton__addr_matches(int fd, int kind, const char *address);

/* state.c */
int baton__state_make(const void *data, size_t len, int *ret_fd);
int baton__state_map(baton *b, int fd, uint64_t len);

/* owner.c */
int baton__owner_init(baton *b);
int baton__owner_start(baton *b, int ctl_fd);
void baton__owner_stop(baton *b);
/* In a process forked from the handle's: close this process's copies of the
 * owner's fds without telling anyone anything (the parent still uses them). */
void baton__owner_forget(baton *b);
int baton__owner_dispatch(baton *b);
/* The next upgrade event (baton_upgrade_event()). */
int baton__event_pop(baton *b, struct baton_event *ev);
/* The application is done with the successor link: a rollback that waited
 * for it goes ahead. Called with b->mu held. */
void baton__prob_app_done(baton *b);
int baton__job_start(baton *b, char *const argv[], int timeout_ms, bool local);
void baton__drop_peer(baton *b, struct baton__peer *p, int err, const char *why);
uint64_t baton__peer_tag(const baton *b, const struct baton__peer *p);

/* gens.c: the cap on live generations and the drain bound, enforced by
 * the owner. Called with b->mu held. */
/* A takeover wants to start: 0 go ahead, 1 wait until the generations
 * ended to make room have exited (baton__gens_exited() says when). */
int baton__gens_room(baton *b);
/* Look at the drain bounds now: end those past theirs. */
void baton__gens_check(baton *b);
/* An ending generation's pidfd turned readable (slot from its epoll tag). */
void baton__gens_exited(baton *b, int slot);
/* SIGKILL to those past their grace; the next time to look, 0 none. */
uint64_t baton__gens_expire(baton *b, uint64_t now);
void baton__gens_forget(baton *b);
int baton__ep_add(baton *b, int fd, uint32_t events, uint64_t tag);
#define BATON__TAG_ENDING  10
#define BATON__TAG_STANDBY 11

/* fault.c: the chaos tests' injection points (BATON_FAULT). */
void baton__fault(const char *point);

/* conn.c */
void baton__pred_event(baton *b);
void baton__conn_free(baton *b);

/* successor.c */
int baton__takeover(baton *b);
int baton__takeover_finish(baton *b, int *ctl_fd, const char *tmp);

/* spawn.c */
int baton__argv_load(baton *b);
/* Start argv (NULL: ourselves) with BATON_JOB=token in its environment. */
int baton__spawn(baton *b, char *const argv[], uint64_t token, pid_t *ret_pid, int *ret_pidfd);
/* The same with var ("NAME=value") instead; with keep_fd >= 0, that fd is
 * inherited as fd 3 and no other beyond 0-2. */
int baton__spawn_with(baton *b, char *const argv[], const char *var, int keep_fd, pid_t *ret_pid,
                      int *ret_pidfd);

/* standby.c: a successor started ahead, parked before its main()
 * (BATON_STANDBY). Called with b->mu held, on the owner's thread. */
void baton__standby_init(baton *b);
void baton__standby_start(baton *b);
void baton__standby_end(baton *b);
void baton__standby_forget(baton *b);
void baton__standby_exited(baton *b);
void baton__standby_release(baton *b, pid_t pid);
/* 1: woken for token, its pid and pidfd now the caller's; 0: none. */
int baton__standby_take(baton *b, uint64_t token, pid_t *ret_pid, int *ret_pidfd);

/* systemd.c: sd_notify and socket activation, without libsystemd. */
int baton__sd_listen_fds(baton *b);
void baton__sd_notify_ready(baton *b);
/* MAINPID and STATUS= (a rollback: we serve again). */
void baton__sd_notify_status(baton *b, const char *status);

#endif
