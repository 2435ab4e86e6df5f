/* SPDX-License-Identifier: MIT */
/*
 * baton.h - hand a running service's listeners, named fds and state to a
 * successor process without refusing, resetting or losing a connection.
 *
 * The one public header of libbaton. Every fallible function returns an int:
 * >= 0 on success, a negative errno value on failure. A message with context
 * is then available from baton_last_error(). The library never prints, never
 * installs signal handlers and never calls exit().
 *
 * Fd ownership: fds returned by baton_listen() and baton_fd() belong to the
 * handle and stay valid until baton_free(); do not close them yourself.
 * baton_add_fd() takes a duplicate; the caller's fd stays the caller's.
 */
#ifndef BATON_H
#define BATON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BATON_VERSION_MAJOR 0
#define BATON_VERSION_MINOR 1
#define BATON_VERSION_PATCH 0

/* Names of fds are at most this many bytes, without the terminating NUL. */
#define BATON_NAME_MAX 127
/* Addresses ("tcp://host:port", "unix:/path") at most this many bytes. */
#define BATON_ADDR_MAX 255

/* Flags for baton_options.flags. */
enum {
    /* No internal thread: the application polls baton_control_fd() and calls
     * baton_dispatch() when it is readable. For single-threaded event loops. */
    BATON_NO_THREAD = 1u << 0,
    /* baton_open() waits (up to ready_timeout_ms) for an upgrade already in
     * progress instead of failing with -EBUSY. */
    BATON_WAIT_LOCK = 1u << 1,
    /* Never inherit: fail with -EEXIST if an owner is serving. */
    BATON_NO_INHERIT = 1u << 2,
    /* This process takes live connections from its predecessor: it polls
     * baton_conn_fd() and calls baton_conn_accept(). Without it the
     * predecessor's baton_handoff() fails with -EOPNOTSUPP at once. */
    BATON_TAKE_CONNS = 1u << 3,
    /* Under systemd: park every named fd in the unit's fd store
     * (FDSTORE=1), so that after a crash and Restart= the new process gets
     * the same sockets back and no connect is refused. Needs
     * FileDescriptorStoreMax= > 0 (and NotifyAccess=all). Also enabled by
     * BATON_FDSTORE=1 in the environment. */
    BATON_FDSTORE = 1u << 4,
    /* Keep a standby successor: once ready, start a copy of our executable
     * ahead of time (our argv and environment, as baton_upgrade(b, NULL)
     * would) that libbaton parks before its main(). baton_upgrade(b, NULL)
     * and `baton upgrade` wake it instead of starting a process, which
     * takes the exec and the dynamic loader off the upgrade's path. Woken,
     * it first checks that its executable and every library it mapped are
     * still the files at their paths; if one was replaced (the usual
     * upgrade), it execs afresh. Its main() runs only when woken, so it
     * reads its configuration then. It ends, before main(), when this
     * process steps down or frees the handle. See baton_upgrade(3). */
    BATON_STANDBY = 1u << 5,
};

/* The largest per-connection state baton_handoff() carries. */
#define BATON_CONN_STATE_MAX 32768

/* Log levels passed to the log callback; the same numbers as syslog. */
enum {
    BATON_LOG_ERR = 3,
    BATON_LOG_WARNING = 4,
    BATON_LOG_INFO = 6,
    BATON_LOG_DEBUG = 7,
};

typedef struct baton baton;

/*
 * Options for baton_open(). Zero-initialise the whole struct
 * (`struct baton_options o = {0};`, or designated initialisers) and set
 * what you need: resv is room for fields of later versions and must be
 * zero, or baton_open() fails with -EINVAL, so that a program built
 * against a newer libbaton never runs with an older one that would
 * silently ignore what it asked for.
 */
struct baton_options {
    const char *dir;      /* coordination directory (created 0700 if absent) */
    int ready_timeout_ms; /* how long a successor may take from connect to READY; 0 = 10000 */
    uid_t allowed_uid;    /* extra uid allowed to take over; (uid_t)-1 = only our euid */
    unsigned flags;       /* BATON_* flags above, or'ed; unknown bits give -EINVAL */
    /* Called from any thread of the library, possibly concurrently with the
     * application; msg is valid only during the call. May be NULL. Failures
     * that a call returns come at BATON_LOG_DEBUG (the caller is told);
     * BATON_LOG_WARNING is for what no call returns, such as a successor
     * that failed and was dropped while we serve on. It may run while the
     * library holds the handle's lock: it must not call baton_* functions
     * on the handle. */
    void (*log)(void *ctx, int level, const char *msg);
    void *log_ctx;
    /* Probation, in ms (0: none; at most BATON_PROBATION_MAX_MS). After a
     * successor takes over, this process keeps its listeners and may serve
     * again until the successor has lived this long. If the successor dies
     * (or frees its handle) within it, this process becomes the owner
     * again: control socket, owner record, same generation. See
     * baton_upgrade_event(). A successor that stops without dying is
     * decided by the deadline: it passes. */
    int probation_ms;
    /* The most generations alive at once: the serving one, those draining
     * and an incoming successor (0: BATON_MAX_GENERATIONS_DEFAULT; else 2
     * to BATON_MAX_GENERATIONS_MAX). A takeover that would exceed it first
     * ends the oldest draining generations (SIGTERM, SIGKILL kill_grace_ms
     * later) and waits until they have exited. */
    int max_generations;
    /* The drain bound, in ms (0: none; at most BATON_PROBATION_MAX_MS):
     * once this process has been draining that long, the owner of the day
     * ends it (SIGTERM, then SIGKILL kill_grace_ms later). */
    int drain_timeout_ms;
    /* The grace between SIGTERM and SIGKILL when a generation is ended (0:
     * 3000; at most 60000). */
    int kill_grace_ms;
    uint64_t resv[6]; /* must be zero */
};

#define BATON_PROBATION_MAX_MS        86400000 /* a day */
#define BATON_MAX_GENERATIONS_DEFAULT 8
#define BATON_MAX_GENERATIONS_MAX     1024

/*
 * Open the coordination directory opts->dir and, if an owner serves there,
 * take over from it: receive its named fds and its state. Until
 * baton_ready() the process holds the directory's lock, so only one
 * successor at a time can take over.
 *
 * Returns 0 and a handle in *ret. -EBUSY when another successor holds the
 * lock (unless BATON_WAIT_LOCK), -EPERM when the directory is owned by
 * another user or writable by group or others, or the owner runs as a uid
 * we do not accept, -EACCES when the directory cannot be created or opened
 * or the owner refuses our uid, -EPROTO when the owner
 * speaks another protocol version or sends malformed data, -ETIMEDOUT when
 * the owner does not answer within ready_timeout_ms, -EINVAL on bad options.
 * On failure *ret is untouched and nothing stays open. The owner, if any,
 * goes on serving.
 */
int baton_open(const struct baton_options *opts, baton **ret);

/* Close every fd the handle owns, stop its thread and free it. Accepts NULL.
 * Does not unlink unix socket paths: they belong to the service. In a
 * process forked from the one that opened the handle (a prefork server's
 * worker), it frees only that process's copies and tells nobody: the
 * parent owns on. A forked child calls no other baton_* function on it. */
void baton_free(baton *b);

/* The predecessor's generation + 1 after a takeover; for a fresh start 1,
 * or one above the newest generation still alive in the directory (its
 * owner died while it drained): a generation number names one process. */
int baton_generation(const baton *b);

/* 1 if this process took over from a predecessor, else 0. */
int baton_inherited(const baton *b);

/*
 * A listening socket named name on address ("tcp://HOST:PORT" with an IPv4
 * address, "[v6]" or a host name; "udp://HOST:PORT"; "unix:PATH").
 * Returns the inherited socket when the predecessor passed one with this
 * name and the same socket address: the same kind, and address resolved
 * (getaddrinfo) to the address the inherited socket is bound to, with
 * port 0 matching any port ("tcp://localhost:80" reuses the socket that
 * "tcp://127.0.0.1:0" got if it got port 80); for unix sockets the same
 * path or another name of the same socket file. Otherwise a new bound
 * (and, for stream sockets, listening) socket. An inherited socket of this
 * name whose address differs is closed at baton_ready(). backlog <= 0 means SOMAXCONN.
 * The fd is close-on-exec, blocking unless inherited non-blocking (the file
 * status flags are shared with the predecessor), and owned by the handle.
 * Returns the fd, -EEXIST if the name is taken in this process, -EINVAL on
 * a malformed address or name, -ENAMETOOLONG (a name over BATON_NAME_MAX,
 * or a unix path too long), -EADDRNOTAVAIL (the host does not resolve), or
 * the socket/bind/listen error.
 */
int baton_listen(baton *b, const char *name, const char *address, int backlog);

/* The inherited fd named name, now claimed (so it is not closed at
 * baton_ready() and is passed on to our successor); owned by the handle.
 * Also finds fds this process named itself (baton_listen, baton_add_fd's
 * duplicate). -ENOENT if there is no such fd (after baton_ready(), an
 * unclaimed inherited fd is gone). */
int baton_fd(baton *b, const char *name);

/* Pass a duplicate of fd to successors under name (the caller keeps fd).
 * -EEXIST if the name is taken, -EBADF if fd is not open. Thread-safe. */
int baton_add_fd(baton *b, const char *name, int fd);

/* The predecessor's state (as it called baton_set_state()), read-only,
 * valid until baton_free(). *ret_len is 0 when there was none. */
int baton_state(baton *b, const void **ret_data, size_t *ret_len);

/* Keep a copy of data (sealed in a memfd) for our successor; replaces any
 * earlier state. Thread-safe. */
int baton_set_state(baton *b, const void *data, size_t len);

/*
 * We serve now. Closes inherited fds that were not claimed, tells the
 * predecessor (which then steps down), publishes our control socket and
 * owner record, releases the lock and starts answering successors.
 * On failure after a takeover (-ETIMEDOUT, -EPIPE: the predecessor vanished
 * or refused) the predecessor keeps serving if it still lives.
 */
int baton_ready(baton *b);

/* Readable (POLLIN) while upgrade events wait (baton_upgrade_event()):
 * from the moment a successor serves and this process should stop
 * accepting, finish its connections and exit. A program that never reads
 * the events may treat the first readiness as that. Owned by the handle. */
int baton_upgrade_fd(const baton *b);

/* What baton_upgrade_event() returns, in this order for each successor. */
enum {
    BATON_EVENT_NONE = 0,
    /* A successor serves: stop accepting, hand off or drain connections.
     * Without probation, BATON_EVENT_RELEASED follows at once. */
    BATON_EVENT_STEP_DOWN = 1,
    /* The successor is final (it passed its probation, or there was
     * none): exit once drained. */
    BATON_EVENT_RELEASED = 2,
    /* The successor died within its probation: this process is the owner
     * again (same generation), and should accept again. Connections it had
     * confirmed (ev->lost) died with it. Further upgrades may follow. */
    BATON_EVENT_RESUME = 3,
    /* An upgrade started by baton_upgrade_start() failed (ev->error, a
     * negative errno; the library's log says why): this process serves
     * on, as it would after baton_upgrade() returned the error. */
    BATON_EVENT_FAILED = 4,
};

struct baton_event {
    int type;         /* BATON_EVENT_* */
    pid_t pid;        /* the successor */
    int generation;   /* its generation */
    unsigned lost;    /* RESUME: handed connections it had confirmed, now gone */
    int error;        /* FAILED: why, a negative errno */
    unsigned resv[3]; /* zero */
};

/* The next upgrade event, without blocking: its type (BATON_EVENT_NONE when
 * none waits), and its details in *ev unless ev is NULL. Reading one makes
 * baton_upgrade_fd() stop polling readable once none is left. */
int baton_upgrade_event(baton *b, struct baton_event *ev);

/* Tell `baton status` how many connections this process still serves (a
 * draining copy's count is the interesting one); -1: unknown. Cheap when
 * the count did not change. */
int baton_set_conns(baton *b, int n);

/* Wait up to timeout_ms (-1: forever) for a successor to be ready: 1 it is,
 * 0 timeout, -errno. Dispatches control events itself with BATON_NO_THREAD. */
int baton_wait_upgrade(baton *b, int timeout_ms);

/*
 * Start a successor and wait until it is ready (0) or has failed (-errno;
 * this process goes on serving). argv NULL means our own executable
 * (/proc/self/exe) with our original argv and environment. The successor is
 * started with posix_spawn, an empty signal mask and default signal
 * dispositions. Not async-signal-safe: call it from the main loop (e.g.
 * after SIGHUP set a flag), not from a signal handler.
 */
int baton_upgrade(baton *b, char *const argv[]);

/*
 * Start a successor as baton_upgrade() does, without waiting: 0 once it
 * is started (or one already on its way is joined), -errno when none
 * could be. For an event loop, which needs no thread to upgrade: the
 * outcome comes on baton_upgrade_fd(), BATON_EVENT_STEP_DOWN when the
 * successor serves, BATON_EVENT_FAILED when it failed. With
 * BATON_NO_THREAD, baton_dispatch() must keep running meanwhile.
 */
int baton_upgrade_start(baton *b, char *const argv[]);

/*
 * Connection handoff. After the upgrade event, the owner may hand each live
 * connection to its successor instead of draining it, with an opaque state
 * (protocol state, bytes read but not yet processed; at most
 * BATON_CONN_STATE_MAX bytes). Stop reading the connection first, and
 * remove it from your epoll set before you close it (the successor keeps
 * the same open file, so the registration would outlive your fd).
 */

/* Owner: hand off one connection. Blocks the calling thread until the
 * successor's application confirms it (at most ready_timeout_ms). Returns 0
 * once confirmed: then close(fd) (never shutdown(): that would end the
 * connection for the successor too). On -errno the connection is still ours
 * to serve: -EOPNOTSUPP (the successor does not take connections),
 * -ENOTCONN (no successor link), -EPIPE (after baton_handoff_done()),
 * -EBUSY (another thread's handoff is in progress), -ENOTSOCK, -EBADF (fd
 * is not open), -EINVAL (state NULL with len > 0), -EMSGSIZE (state too
 * large), -ETIMEDOUT or -ECONNRESET (the successor did not confirm),
 * -ENOMEM. The caller keeps ownership of fd in every case. */
int baton_handoff(baton *b, int fd, const void *state, size_t len);

struct baton_conn {
    int fd;            /* in: the connection; the caller keeps it */
    const void *state; /* in: its state, len bytes */
    size_t len;
    int result;       /* out: 0 the successor has it, or -errno: still ours */
    unsigned resv[3]; /* must be zero (room for later fields): else -EINVAL */
};

/* Owner: hand off n connections in one pipelined burst (fd batches of up
 * to 253, one confirmation per batch). Each conns[i] is first checked on
 * its own (its result is then -ENOTSOCK, -EBADF, -EINVAL or -EMSGSIZE as
 * for baton_handoff()); if none passes, returns 0. Otherwise returns how
 * many the successor took, or the link's -errno (-ENOTCONN, -EOPNOTSUPP,
 * -EBUSY, -EPIPE, as for baton_handoff()) when none could be sent; each
 * conns[i].result says what became of it. */
int baton_handoff_batch(baton *b, struct baton_conn *conns, size_t n);

/* Owner: no more connections will come; the successor's baton_conn_accept()
 * returns -ENOTCONN once its queue is empty. Returns 0, also when the
 * successor takes no connections (nothing to end); -ENOTCONN (no successor
 * link), -EBUSY (a handoff is in progress), -EPIPE (called before), or the
 * send's -errno (-EAGAIN: the link stayed full for ready_timeout_ms). */
int baton_handoff_done(baton *b);

/* Successor (BATON_TAKE_CONNS): readable while handed connections wait, or
 * once none will come any more, and as a batch arrives on the link (then
 * baton_conn_accept() reads it itself; it may find nothing: -EAGAIN). An
 * epoll fd; owned by the handle. */
int baton_conn_fd(const baton *b);

/* Successor: take one handed connection: returns its fd (ours now,
 * close-on-exec, with the file status flags the owner left on it) and
 * copies its state into state_buf, its length in *ret_len. -EAGAIN when
 * none waits, -ENOTCONN when none will come, -EMSGSIZE when buf_len is too
 * small (*ret_len says how much is needed; the connection stays queued).
 * The first call that finds connections waiting confirms all of them to
 * the predecessor, which then closes its copies: from then on they are
 * ours, even while they wait in the queue (a -EMSGSIZE caller must retry;
 * baton_free() closes what was never taken). */
int baton_conn_accept(baton *b, void *state_buf, size_t buf_len, size_t *ret_len);

/*
 * UDP flow steering (docs/udp-steering.md). Through an upgrade the old and
 * the new generation share their UDP sockets, and each datagram must reach
 * the generation that owns its flow: a QUIC connection, say, lives in one
 * process only. The newest generation reads the sockets; an older one stops
 * reading them once its successor serves (its upgrade event) and gets the
 * datagrams of its flows from the newest, forwarded over a unix socket in
 * the coordination directory, and answers them on its own copy of the
 * socket. Which generation owns a datagram is the application's rule: for
 * QUIC, the generation in the connection ID the server chose
 * (baton_quic_cid_make(), baton_quic_packet_generation()); for a protocol
 * of connected flows, its own table of the peers each generation serves.
 */

/* Start taking forwarded datagrams: binds DIR/steer.GEN (GEN our
 * generation) and returns the fd to poll for POLLIN (then
 * baton_steer_recv()), owned by the handle. Call it once after
 * baton_open(), before baton_ready(). -ENAMETOOLONG, -errno. */
int baton_steer_open(baton *b);

/* A datagram from a shared UDP socket whose flow is generation's (any int;
 * compared by its low 16 bits). Returns 0 when that is ours (handle it),
 * 1 when it was forwarded to that generation's process, -ESRCH when no
 * process of that generation takes datagrams any more (it exited, or never
 * called baton_steer_open(): handle it as a datagram of no flow), -EAGAIN
 * when that process's queue is full (dropped, as the network would),
 * -EMSGSIZE (over 65,535 bytes), -EINVAL (from longer than a
 * sockaddr_in6). Not thread-safe: from the thread that reads the socket. */
int baton_steer_route(baton *b, int generation, const void *buf, size_t len,
                      const struct sockaddr *from, socklen_t fromlen);

/* Read one datagram another generation forwarded to us: its length, its
 * sender's address in *from (*fromlen: in, the room; out, its length).
 * -EAGAIN when none waits, -EMSGSIZE when cap is too small (the datagram
 * is dropped), -EBADF before baton_steer_open(). The address it was sent
 * to is not carried: a server bound to a wildcard address answers from
 * the address its flow has used so far. The steering calls share no state
 * with the rest of the handle: another thread may run baton_upgrade()
 * meanwhile. */
ssize_t baton_steer_recv(baton *b, void *buf, size_t cap, struct sockaddr *from,
                         socklen_t *fromlen);

/* Fill cid (len bytes, 4..20) with a server-chosen QUIC connection ID that
 * names generation: a marker byte, the generation's low 16 bits, a check
 * byte, then random bytes. 0, -EINVAL (len out of range), -errno from
 * getrandom(). */
int baton_quic_cid_make(int generation, uint8_t *cid, size_t len);

/* The generation (low 16 bits) named by the destination connection ID of a
 * QUIC packet whose server-chosen IDs are cid_len bytes, or -ENOENT when
 * the packet names none: a client's first Initial or 0-RTT packet (its
 * random ID), version negotiation, or an ID not made by
 * baton_quic_cid_make() (a new flow: the newest generation's). -EINVAL on
 * a packet too short to hold its header. */
int baton_quic_packet_generation(const void *pkt, size_t len, size_t cid_len);

/* With BATON_NO_THREAD: an fd to poll for POLLIN; call baton_dispatch() when
 * readable. Owned by the handle. -EINVAL without BATON_NO_THREAD. */
int baton_control_fd(const baton *b);

/* With BATON_NO_THREAD: handle pending control events without blocking. */
int baton_dispatch(baton *b);

/*
 * A message describing the last failure of a baton call made by the
 * calling thread ("" if none), as dlerror() does: per thread, so that the
 * library's own thread never overwrites it. b may be NULL, which is how
 * to read why baton_open() failed. A call that succeeds leaves it as it
 * was. The string stays valid until the next failing baton call in this
 * thread.
 */
const char *baton_last_error(const baton *b);

/* "MAJOR.MINOR.PATCH" */
const char *baton_version(void);

/* A static description of a -errno value returned by this library. */
const char *baton_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* BATON_H */
