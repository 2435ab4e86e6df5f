/* SPDX-License-Identifier: MIT */
/*
 * baton-session.h - move live client sessions, with their state, from one
 * host to another without the client application losing, duplicating or
 * reordering a message.
 *
 * The session layer is a separate library, libbaton-session, because it
 * needs OpenSSL (libssl for TLS 1.3 on every link, libcrypto for the peer
 * key's HMAC-SHA-256), and libbaton itself depends on libc alone.
 *
 * Model. A session is a framed, bidirectional message stream between one
 * client and the server that currently holds it. Each side numbers what it
 * sends (1, 2, 3, ...) and counts what it has handled; acknowledgements
 * carry that count, and a side keeps every message until the other has
 * acknowledged it (as XMPP stream management does). A server moves a
 * session by telling its client where to go (MOVE, with a one-use resume
 * token); the client presents the token to the next server (RESUME), which
 * takes the session's state, counters and unacknowledged messages from the
 * current server over an authenticated peer link (TAKE), and both sides
 * resend what the other has not handled. docs/session-protocol.md has the
 * frames.
 *
 * Event loops. Every handle has one pollable fd (an epoll fd): put it in
 * your poll/epoll set for POLLIN and call the handle's dispatch function
 * when it is readable. Dispatch never blocks; the callbacks run from it.
 * Callbacks may call baton_session_send() and baton_session_close() (a
 * closed session's on_close() runs at once, re-entering the application;
 * the session is freed at the end of the dispatch) but must not free the
 * handle, nor call the handle's dispatch function (-EBUSY). Handles are
 * not thread-safe: use each from one thread.
 *
 * Errors: functions return >= 0 on success, a negative errno value on
 * failure, and keep a message with context for the handle's last_error.
 * The library never prints: messages go to the log callback, if any.
 *
 * Addresses are "tcp://A.B.C.D:PORT" or "tcp://[v6]:PORT" with numeric
 * hosts only (resolving a name would block the event loop).
 */
#ifndef BATON_SESSION_H
#define BATON_SESSION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest message payload. */
#define BATON_SESSION_MSG_MAX 65536
/* The largest state an export callback may produce. */
#define BATON_SESSION_STATE_MAX 65536
/* Unacknowledged messages a session keeps per direction, in count and in
 * bytes; a send beyond either fails with -ENOBUFS. */
#define BATON_SESSION_QUEUE_MAX   1024
#define BATON_SESSION_QUEUE_BYTES (1u << 20)
/* Sessions moving to one peer at a time, unless the options say. */
#define BATON_SESSION_MOVE_WINDOW 64
/* The shortest pre-shared peer key accepted, in bytes. */
#define BATON_SESSION_KEY_MIN 16
/* Peer names at most this many bytes. */
#define BATON_SESSION_NAME_MAX 63
/* Addresses at most this many bytes. */
#define BATON_SESSION_ADDR_MAX 255

/* Log levels, the same numbers as syslog. */
enum {
    BATON_SESSION_LOG_ERR = 3,
    BATON_SESSION_LOG_WARNING = 4,
    BATON_SESSION_LOG_INFO = 6,
    BATON_SESSION_LOG_DEBUG = 7,
};

typedef struct baton_session_server baton_session_server;
typedef struct baton_session baton_session;
typedef struct baton_session_client baton_session_client;

/*
 * Server side.
 *
 * Errors passed to on_close(): 0 the client closed the session, or -errno:
 * -ECONNRESET the connection broke, -EPROTO a malformed or unexpected
 * frame, -EMSGSIZE an oversized frame, -EBADMSG a counter that
 * acknowledges more than was sent, -EPROTONOSUPPORT another protocol
 * version, -ETIMEDOUT nothing from the client for idle_timeout_ms.
 *
 * What remote parties can make the server hold is bounded: each link reads
 * only the frame types its state allows (a client before HELLO, a peer
 * before authentication: a few small ones), so a connection buffers at
 * most the largest of those; a connection must become a session or an
 * authenticated peer within handshake_timeout_ms; a session's client must
 * send something (the client library pings) every idle_timeout_ms; there
 * are at most max_sessions sessions. A refusal is logged once per episode
 * of like refusals, not once per connection.
 */
struct baton_session_server_options {
    /* The pre-shared key of the peer link between servers (at least
     * BATON_SESSION_KEY_MIN bytes; copied). May be NULL with key_len 0 if
     * this server never moves sessions nor takes any. */
    const void *key;
    size_t key_len;
    /* How long a moving session may wait for its client to show up at the
     * next server before the move is called off (0: 10000 ms). */
    int move_timeout_ms;
    /* How many sessions may be moving to one peer at a time (0:
     * BATON_SESSION_MOVE_WINDOW). baton_session_move() queues the rest and
     * starts each as an earlier one is taken or called off, so that a
     * client's pause is the time its own move takes, not the time a
     * thousand take; its move_timeout_ms starts when it leaves the queue.
     * A move that takes far longer than usual (a client that is gone)
     * leaves the window while it waits out its timeout. */
    int move_window;
    /* The most sessions this server holds, moving ones and those arriving
     * from another server included (0: half the soft RLIMIT_NOFILE when the
     * server is created, as each session holds an fd). A HELLO or RESUME
     * over it is answered CLOSE(FULL): the client library reports -EUSERS,
     * and a moving session stays at its current server. */
    int max_sessions;
    /* How long a client connection may take from accept to its session
     * (HELLO answered, or RESUME answered with RESUMED), and a peer link to
     * authenticate; then it is closed (0: 10000 ms). */
    int handshake_timeout_ms;
    /* A session whose client sent nothing for this long is closed, with
     * on_close(s, -ETIMEDOUT) (0: 60000 ms). The client library pings
     * every third of it (the server tells it in PONG), so only a client
     * that is gone, or that does not dispatch, reaches it. Not applied
     * while a session moves. */
    int idle_timeout_ms;
    void *ctx; /* passed to every callback */

    /*
     * A session's life on this server starts with exactly one of:
     * on_open() (a client opened a new session here) or import_state()
     * (the session arrived from another server; on_open() is not called
     * for it, even with import_state NULL). It ends with exactly one of:
     * on_close() (closed, broken, timed out, or baton_session_server_free()),
     * on_moved(s, 0) (the next server has it; no on_close() follows), or
     * import_state() returning an error (no on_close() follows). So an
     * application that keeps data with a session allocates it in on_open()
     * and import_state(), and frees it in on_close() and on_moved(s, 0).
     * A move that fails (on_moved(s, err < 0)) ends nothing.
     *
     * With keep_moved (below), on_moved(s, 0) ends nothing either: the
     * handle lives on as a remote session, and ends with on_close() or
     * baton_session_release(); a session that comes back to a handle that
     * is still remote here gets import_state() on that handle (its data
     * still set), not a new one.
     */
    void (*on_open)(void *ctx, baton_session *s);
    /* A message, in order, exactly once per session lifetime across moves.
     * data is valid during the call only. Counted as handled (and so
     * acknowledged) when the callback returns. Required. */
    void (*on_message)(void *ctx, baton_session *s, const void *data, size_t len);
    /* The session ended (err as above); s is freed after the call. */
    void (*on_close)(void *ctx, baton_session *s, int err);
    /* Write the session's application state (at most cap bytes) for the
     * next server: 0 or -errno (the move of this session then fails and it
     * stays here). NULL: no state. */
    int (*export_state)(void *ctx, baton_session *s, void *buf, size_t cap, size_t *ret_len);
    /* A session arrived from another server with its state: 0 to accept,
     * -errno to refuse (the client is told the session is lost; no
     * on_close() follows). NULL: state ignored. Called before any
     * on_message() of the session. */
    int (*import_state)(void *ctx, baton_session *s, const void *data, size_t len);
    /* The outcome of baton_session_move() for s: 0 the next server has it
     * (s is freed after the call), or -errno and s stays here: -ETIMEDOUT
     * (the client did not come), -ECONNRESET (the next server went away),
     * -EACCES (the next server refused our key or certificate, or we its:
     * the log says which), -ECONNREFUSED,
     * -ECONNABORTED (the next server declined it), -EMSGSIZE (its exported
     * state was too large), -ENOMEM, or what export_state() returned. A
     * moving session whose client link ends gets on_close(-ECONNABORTED)
     * instead. */
    void (*on_moved)(void *ctx, baton_session *s, int err);
    void (*log)(void *ctx, int level, const char *msg);
    /*
     * TLS 1.3 on both links (docs/session-protocol.md, "Transport
     * security"). Required unless insecure is set.
     *
     * tls_cert_file, tls_key_file: PEM files of this server's certificate
     * chain and private key, presented to clients, which verify it, and,
     * with tls_ca_file, to peers.
     *
     * tls_ca_file: the authority peers' certificates must chain to. With
     * it, peer links are authenticated by certificates on both ends: the
     * next server's certificate must be valid for tls_peer_name if set,
     * else for the IP address of its peer address, and the connecting
     * server's must chain to the authority and, if tls_peer_name is set,
     * be valid for it too (without a name, any certificate the authority
     * signed is a peer's: use an authority of the deployment's own).
     * Without it, peer links are authenticated by a TLS 1.3 pre-shared
     * key derived from key: both ends must use it, and a server that
     * answers with a certificate instead is refused. Either way the peer
     * key's own handshake (PHELLO..PAUTH) runs inside.
     *
     * Files are read once, by baton_session_server_new().
     */
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_ca_file;
    const char *tls_peer_name;
    /* Nonzero: plain TCP on every link. Nothing is encrypted; a peer link
     * is authenticated at its handshake only, and resume tokens travel in
     * clear. Only where nobody else can read or write the network. */
    int insecure;
    /* Every session of one baton_session_move() call has its outcome:
     * moved of them went to peer, failed did not (their move was called
     * off, or they ended while moving). Called once per call that
     * returned > 0, after the last session's on_moved() or on_close(),
     * also from baton_session_server_free(). Optional. */
    void (*on_move_done)(void *ctx, const char *peer, size_t moved, size_t failed);
    /* A message another server sent with baton_session_server_send_peer(),
     * in the order it sent them, and in order with the sessions it moves
     * here: a message it sent before moving a session arrives before that
     * session's import_state(). data is valid during the call only.
     * Optional (without it such messages are dropped, and logged). */
    void (*on_peer_message)(void *ctx, const void *data, size_t len);
    /*
     * Nonzero: a session handle outlives its moves. After on_moved(s, 0)
     * the handle stays valid as a remote session (baton_session_state()
     * says BATON_SESSION_REMOTE): what the application sends to it is
     * forwarded, in order, to the server that holds the session, however
     * often it moved on; if the session comes back here, it comes back to
     * the same handle (import_state() is called on it; on_open() is not).
     * A remote handle ends with on_close(s, err) when the session ends
     * wherever it is (err as it ended there, -ENOENT if that server no
     * longer knew it), or with -ECONNRESET when the link to the server it
     * went to breaks, or with -ESHUTDOWN from baton_session_server_free();
     * or, with no callback, when the application calls
     * baton_session_release(). Zero: on_moved(s, 0) ends the handle, as
     * it always did; messages already on their way still follow the
     * session.
     */
    int keep_moved;
    /* Room for later fields: must be zero (zero-initialise the whole
     * struct), else -EINVAL. */
    uint32_t resv[1];
};

/*
 * A session server accepting clients on listen_fd and peer links from other
 * servers on peer_fd (-1: this server takes no sessions from others). Both
 * are listening stream sockets that stay the caller's (close them after
 * baton_session_server_free()); they are switched to non-blocking mode.
 * Returns 0 and the handle in *ret; -EINVAL on bad options (a key shorter
 * than BATON_SESSION_KEY_MIN, no on_message, neither a certificate and key
 * nor insecure, a certificate, key or CA file that cannot be loaded: the
 * log callback, if any, says which), -EMFILE etc.
 */
int baton_session_server_new(const struct baton_session_server_options *opts, int listen_fd,
                             int peer_fd, baton_session_server **ret);

/* Close every session (on_close(s, -ESHUTDOWN) for each, so that the
 * application can free its data; clients are not told: they see the
 * connection break) and link, and free the handle. Accepts NULL. */
void baton_session_server_free(baton_session_server *srv);

/* Poll for POLLIN, then call baton_session_server_dispatch(). Owned by the
 * handle. */
int baton_session_server_fd(const baton_session_server *srv);

/* Handle whatever is ready without blocking; runs the callbacks. Returns 0
 * or -errno on a failure of the handle itself (not of one session). */
int baton_session_server_dispatch(baton_session_server *srv);

/* Name another server: its peer address (its peer_fd) and the address its
 * clients connect to (sent to clients in MOVE). -EEXIST if the name is
 * taken, -EINVAL on a malformed address or name. */
int baton_session_server_add_peer(baton_session_server *srv, const char *name,
                                  const char *peer_address, const char *client_address);

/*
 * Move n sessions (list NULL and n 0: every session; list NULL with n > 0
 * is -EINVAL) to the peer named peer.
 * Asynchronous: opens and authenticates the peer link if needed, tells the
 * next server which sessions come, then sends each client MOVE; on_moved()
 * reports each session's outcome. Sessions already moving are skipped, and
 * so are sessions that just came back and wait one round trip for their
 * FLUSH (docs/session-protocol.md, "Forwarding").
 * Returns the number of sessions being moved, -ENOENT for an unknown peer,
 * -EINVAL without a key.
 */
int baton_session_move(baton_session_server *srv, const char *peer, baton_session *const *list,
                       size_t n);

/* A listening TCP socket on address ("tcp://A.B.C.D:PORT" or
 * "tcp://[V6]:PORT"; port 0: any), with SO_REUSEADDR, close-on-exec and
 * non-blocking, for listen_fd or peer_fd: the fd, or -EINVAL (a malformed
 * address), -errno from socket(), bind() or listen(). backlog <= 0: 4096. */
int baton_session_listen(const char *address, int backlog);

/* Read a peer key from path into buf (cap bytes): the file's bytes, less
 * one trailing newline. 0 and the length in *ret_len, or -EACCES (the
 * file is readable or writable by group or others: a key must be its
 * owner's only), -EINVAL (shorter than BATON_SESSION_KEY_MIN, or longer
 * than cap), -errno from open() or read(). Certificates and their keys
 * need no helper: the library reads the tls_* files itself. */
int baton_session_load_key(const char *path, void *buf, size_t cap, size_t *ret_len);

/* The number of sessions this server holds (moving ones included). */
size_t baton_session_server_count(const baton_session_server *srv);

/* A message describing the last failure ("" if none). */
const char *baton_session_server_last_error(const baton_session_server *srv);

/*
 * Queue a message to the session's client, wherever the session is: 0,
 * -EMSGSIZE (over BATON_SESSION_MSG_MAX), -ENOBUFS (too much
 * unacknowledged, or the peer link's buffer is full), -ENOTCONN (closed).
 * A session here gets it in its queue. One being handed to the next server
 * (BATON_SESSION_LEAVING) holds it: it follows the session to the next
 * server if the move completes, and goes back in the queue here, in
 * order, if the move is called off. A remote session (keep_moved) gets it
 * forwarded over the peer link to the server it went to, which delivers
 * it, or forwards it on. Messages from this server reach the client in the
 * order they were sent, across any number of moves, and exactly once,
 * unless the session ends first.
 */
int baton_session_send(baton_session *s, const void *data, size_t len);

/* Where a session is, as its handle here sees it. */
enum {
    BATON_SESSION_ENDED = 0,   /* it ended (only seen inside on_close()) */
    BATON_SESSION_HERE = 1,    /* this server holds it and serves its client */
    BATON_SESSION_MOVING = 2,  /* a move was asked for; the client may be on its way */
    BATON_SESSION_LEAVING = 3, /* handed to the next server: sends are held */
    BATON_SESSION_REMOTE = 4,  /* another server holds it: sends are forwarded */
};
/* One of the above (BATON_SESSION_ENDED for NULL). */
int baton_session_state(const baton_session *s);

/* The application is done with a remote session's handle (keep_moved):
 * nothing more is forwarded from here, no callback follows, and s is
 * freed. 0, -EBUSY (the session is not remote: close it, or wait for its
 * move's on_moved()), -EINVAL (NULL). */
int baton_session_release(baton_session *s);

/* Send an application message to the server named peer (as named by
 * baton_session_server_add_peer()) over the peer link, which is opened if
 * need be; it arrives there in on_peer_message(), in order with what else
 * this server sends it (messages, and sessions moved there). 0 (queued),
 * -ENOENT (no such peer), -EMSGSIZE (over BATON_SESSION_MSG_MAX),
 * -ENOBUFS (the link's buffer is full), -EINVAL (no key). Messages queued
 * while the link is down are dropped if it cannot be opened; the log says
 * how many. */
int baton_session_server_send_peer(baton_session_server *srv, const char *peer, const void *data,
                                   size_t len);

/* End the session: the client is told (CLOSE) and on_close(s, 0) runs at
 * once. 0, -ENOTCONN (closed already), -EXDEV (it is leaving or remote:
 * the server that holds it closes it), -EINVAL (s NULL). */
int baton_session_close(baton_session *s);

/* The session's id, 32 hex digits (the same on every server). */
const char *baton_session_id(const baton_session *s);

/* An application pointer kept with the session (not moved). */
void baton_session_set_data(baton_session *s, void *data);
void *baton_session_data(const baton_session *s);

/*
 * Client side.
 *
 * Errors passed to on_lost(): 0 the server closed the session, -ECONNABORTED
 * the session is lost (its server went away before handing it on),
 * -EACCES a resume token was refused or the server failed TLS
 * authentication (its certificate), -ENOENT the next server does not know
 * the session, -EUSERS the server is full (its max_sessions), -EPROTO/
 * -EMSGSIZE/-EBADMSG/-EPROTONOSUPPORT bad input from the server,
 * -ETIMEDOUT no answer in time (or the server's idle limit passed: the
 * application did not call dispatch), -ECONNREFUSED.
 *
 * A live session pings its server (PING) whenever it has written nothing
 * to it for a third of the server's idle limit, which the server's answer
 * (PONG) tells; the pings come from baton_session_client_dispatch(), so
 * call it when the fd is readable, as always.
 */
struct baton_session_client_options {
    /* How long to wait for the first server's WELCOME, and in a move for
     * the connection to the next server until RESUME is written (0: 5000
     * ms). Once RESUME is out only the servers end the move (RESUMED, a
     * refusal, a broken connection, or STAY from the current server),
     * unless six of these timeouts pass. */
    int timeout_ms;
    void *ctx;
    /* The session is established (once, after the first server welcomed
     * us). Optional. */
    void (*on_open)(void *ctx, baton_session_client *c);
    /* A message from the server, in order, exactly once. Required. */
    void (*on_message)(void *ctx, baton_session_client *c, const void *data, size_t len);
    /* The session moved to address (err 0), or a move was called off and
     * the session stays where it was (err < 0: -ECANCELED the server
     * called it off, or its application refused to hand the session
     * over; -ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -EACCES, -ENOENT,
     * -EUSERS, -EBADMSG, -ECONNABORTED from the next server). Whatever the
     * next server says, a move that fails ends only the move: the session
     * is lost (on_lost) only when the current server's connection is gone
     * too (docs/session-protocol.md, "What ends a move"). pause_us is how
     * long sends were held back. Optional. */
    void (*on_moved)(void *ctx, baton_session_client *c, const char *address, int err,
                     uint64_t pause_us);
    /* The session ended (err as above). The handle stays valid (free it). */
    void (*on_lost)(void *ctx, baton_session_client *c, int err);
    void (*log)(void *ctx, int level, const char *msg);
    /* TLS 1.3 to every server (the first and each one a move sends us
     * to), required unless insecure is set: the server's certificate must
     * chain to an authority in tls_ca_file (NULL: the system's, from
     * OpenSSL's default paths) and be valid for tls_server_name if set
     * (one name for every server of the deployment), else for the IP
     * address connected to. A server that fails it is refused: -EACCES.
     * The file is read once, by baton_session_client_connect(). */
    const char *tls_ca_file;
    const char *tls_server_name;
    /* Nonzero: plain TCP. Nothing is encrypted, the server is not
     * authenticated, and the resume token travels in clear. */
    int insecure;
    /* Room for later fields: must be zero (zero-initialise the whole
     * struct), else -EINVAL. */
    uint64_t resv[5];
};

/* Start connecting to address and open a session. Non-blocking: messages
 * sent before the server answered are queued. 0 and the handle in *ret, or
 * -EINVAL (malformed address, no on_message, a CA file that cannot be
 * loaded: the log callback, if any, says why), -errno from socket(). */
int baton_session_client_connect(const struct baton_session_client_options *opts,
                                 const char *address, baton_session_client **ret);

/* Close every link and free. Accepts NULL. The server sees the session
 * end only if baton_session_client_close() was called first. */
void baton_session_client_free(baton_session_client *c);

/* Poll for POLLIN, then call baton_session_client_dispatch(). */
int baton_session_client_fd(const baton_session_client *c);
int baton_session_client_dispatch(baton_session_client *c);

/* Queue a message to the server (sent at once if possible, kept until
 * acknowledged, resent after a move): 0, -EMSGSIZE, -ENOBUFS, -ENOTCONN
 * (the session ended). */
int baton_session_client_send(baton_session_client *c, const void *data, size_t len);

/* Tell the server the session is over and stop. */
int baton_session_client_close(baton_session_client *c);

/* 1 while the session lives, 0 once it ended. */
int baton_session_client_alive(const baton_session_client *c);

/* The session id (32 hex digits; "" until the server welcomed us). */
const char *baton_session_client_id(const baton_session_client *c);

/* The address of the server that holds the session now. */
const char *baton_session_client_address(const baton_session_client *c);

const char *baton_session_client_last_error(const baton_session_client *c);

/* A static description of an error passed to a callback or returned (a
 * negative errno value; a positive one is "unknown"). */
const char *baton_session_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* BATON_SESSION_H */
