/* SPDX-License-Identifier: MIT */
/*
 * The server side of libbaton-session, shared between its files:
 *
 *   server.c         the handle: new/free, dispatch, links, timers and
 *                    ticks, accept, settle, refusals and their episodes
 *   server-client.c  sessions and their client links: HELLO, session
 *                    frames, acks, flush and close, the session calls
 *   server-move.c    the current server's side of a move: the queue and
 *                    window per peer, OFFER, MOVE, TAKE and EXPORT,
 *                    TAKEN and DECLINE, on_moved
 *   server-take.c    the next server's side: what was announced (OFFER,
 *                    struct expect), RESUME and TAKE, EXPORT and import
 *   server-peer.c    peer links: connect, HELLO and the HMAC handshake,
 *                    peer frames, a link going down
 *   server-forward.c messages that follow a moved session (held while it
 *                    leaves, forwarded once it is remote, a handle that
 *                    gets its session back), and the servers' own channel
 *
 * Everything runs from baton_session_server_dispatch() on one epoll fd
 * (or from a public call made outside it). A session or link that ends is
 * marked dead and freed by baton__srv_settle() at the end of the
 * dispatch, so that callbacks and the frame loop never see freed memory.
 */
#ifndef BATON_SESSION_SERVER_INTERNAL_H
#define BATON_SESSION_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "list.h"

#define HASH_SIZE 4096
#define ERR_MAX   256

enum { L_LISTEN = 1, L_PEERLISTEN, L_CLIENT, L_PEER_IN, L_PEER_OUT, L_TIMER };
enum { P_CONNECTING, P_WAIT_HELLO, P_WAIT_CHAL, P_WAIT_AUTH, P_READY };
/* S_REMOTE: another server holds the session; the handle (the
 * application's, or a relay kept for servers that forward through us)
 * forwards what is sent to it. */
enum { S_ACTIVE, S_MOVING, S_FROZEN, S_REMOTE, S_DEAD };
/* Kinds of refusal that a remote party can repeat at will: each is logged
 * once per episode (baton__srv_refuse_log()). */
enum { EP_ACCEPT, EP_FULL, EP_DEADLINE, EP_IDLE, EP_CLIENT, EP_PEER, EP_N };

struct episode {
    int64_t first_ms, last_ms;
    unsigned long n;
};

struct peer;
struct expect;

/* One baton_session_move() call, until each of its sessions has an
 * outcome (on_move_done). */
struct move_call {
    char peer[BATON_SESSION_NAME_MAX + 1];
    size_t left, moved, failed;
};

struct slink {
    struct baton__slink l;
    struct baton__list node;  /* on srv->links (not the listeners, nor the timer) */
    struct baton__list fnode; /* on srv->pflush: a peer link with output to write */
    baton_session *s;         /* L_CLIENT: the session, once there is one */
    struct expect *pending;   /* L_CLIENT: a RESUME waiting for its EXPORT */
    struct peer *peer;        /* L_PEER_OUT */
    int pstate;
    uint8_t nonce_out[32], nonce_in[32];
    int64_t deadline;   /* handshake deadline (a listener: end of its rest), 0 none */
    int64_t last_in_ms; /* when it last brought bytes (the idle limit) */
    int rest_ms;        /* a listener: its current rest after accept failed */
    bool paused;        /* a listener: out of epoll while it rests */
    bool pings;         /* L_CLIENT: its client sent PING (the idle limit applies) */
    bool dead;
};

/* At the next server: a session the current server announced (OFFER). */
struct expect {
    uint8_t id[BATON__S_ID_LEN];
    struct slink *peer_link, *client;
    uint64_t handled;
    int64_t deadline;
    /* TAKEs sent for this session and not yet answered. The current
     * server answers them in order, so while more than one is out an
     * answer is for an older one, whose client is gone. */
    unsigned takes;
    struct expect *hnext;    /* srv->ehash's chain */
    struct baton__list node; /* on srv->expects */
};

struct peer {
    char name[BATON_SESSION_NAME_MAX + 1];
    char client_addr[BATON_SESSION_ADDR_MAX + 1];
    struct baton__saddr addr;
    struct slink *link;
    uint32_t batch;
    /* Moves to this peer: waiting for a place in the window (waiting),
     * announced and not yet told to their client (offered), both in the
     * order they were asked for, and how many are in the window
     * (announced and not yet taken nor called off). */
    struct baton__list waiting, offered;
    unsigned inflight;
    /* Moves that have taken far longer than moves here usually do (a
     * client that is gone, or a lost SYN that costs a second): each keeps
     * its deadline but leaves the window, up to a window's worth of them,
     * so that a few cannot hold up every other session's move. usual_ms
     * is a running average of how long moves took. */
    unsigned stragglers;
    int64_t usual_ms;
    /* Application messages (baton_session_server_send_peer()) waiting
     * for the link to be authenticated. */
    struct baton__squeue pmsgs;
    struct baton__list node; /* on srv->peers */
};

struct baton_session {
    baton_session_server *srv;
    uint8_t id[BATON__S_ID_LEN];
    char hex[2 * BATON__S_ID_LEN + 1];
    struct slink *link;
    int state;
    uint64_t in_handled, in_acked_sent, out_sent;
    struct baton__squeue q; /* q.base: what the client acknowledged */
    struct peer *mpeer;
    struct move_call *mcall; /* the call that moves it, until its outcome */
    uint32_t batch;
    int64_t offered_ms;
    bool offered, straggler, move_sent, token_ok;
    uint8_t token[BATON__S_TOK_LEN];
    int64_t deadline;
    void *data;
    /* Forwarding (server-forward.c). held: what waits while the session
     * is S_FROZEN, or while it is reuniting (each entry a kind byte, then
     * the message). fwd: where a remote session's forwards go (the link
     * its EXPORT went on). flush_link: reuniting, our FLUSH is out there.
     * origins: peer links we took the session from, which may forward to
     * it and are told GONE when it ends. app: the application holds the
     * handle (false: a relay kept for origins). back: reuniting, the link
     * the session came back on, on which our forwards come back before
     * our FLUSH. sent_fwd: this record forwarded on fwd, so the session
     * may come back while our forwards are on their way (the record is
     * kept, and a return flushes). */
    struct baton__squeue held;
    struct slink *fwd, *flush_link, *back;
    struct slink **origins;
    unsigned norigins;
    bool app, reuniting, sent_fwd;
    baton_session *hnext;     /* srv->hash's chain */
    struct baton__list node;  /* on srv->sessions */
    struct baton__list mnode; /* on mpeer's waiting or offered list, or none */
    struct baton__list dnode; /* on srv->dirty (it has output to flush), or none */
};

struct baton_session_server {
    struct baton_session_server_options o;
    uint8_t *key;
    int epfd, timerfd;
    int tick_ms; /* the timer's period, 0 off */
    bool in_dispatch;
    struct slink lsn, plsn, tmr;
    /* Newest first, as each list has always been walked; dirty too, so
     * that the last session marked is the first flushed. */
    struct baton__list links, sessions, dirty, expects, peers, pflush;
    baton_session *hash[HASH_SIZE];
    struct expect *ehash[HASH_SIZE];
    size_t count;
    uint8_t *scratch;
    /* TLS contexts (NULL with the insecure option): client links we
     * accept, peer links we accept, peer links we open. */
    struct ssl_ctx_st *tls_client, *tls_peer_in, *tls_peer_out;
    struct episode ep[EP_N];
    char err[ERR_MAX];
};

static inline unsigned baton__srv_hkey(const uint8_t *id)
{
    return baton__s_get32(id) % HASH_SIZE;
}

/* ---- server.c ---- */

/* Sets last_error and logs it at level. */
void baton__srv_set_err(baton_session_server *srv, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A refusal of kind ep (EP_*) that a remote party can repeat at will:
 * sets last_error, logs once per episode. */
void baton__srv_refuse_log(baton_session_server *srv, int ep, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Something has a deadline soon: tick fast. */
void baton__srv_arm_timer(baton_session_server *srv);
/* "127.0.0.1:4242", the other end of k, for logs. */
const char *baton__srv_link_who(const struct slink *k, char *buf, size_t cap);
/* A link of kind on fd (which it then owns), on srv->links, with its
 * handshake deadline running; NULL when out of memory (fd left open). */
struct slink *baton__srv_link_new(baton_session_server *srv, int fd, int kind);
/* Out of epoll and dead: freed by baton__srv_settle(). */
void baton__srv_link_kill(baton_session_server *srv, struct slink *k);
/* Write what is buffered and keep epoll in step; a link that broke gets
 * l.eof (its owner notices). */
void baton__srv_link_flush(baton_session_server *srv, struct slink *k);
/* Tell the other side why (CLOSE), best effort, and kill the link. */
void baton__srv_link_refuse(baton_session_server *srv, struct slink *k, int err, const char *text);
/* Start the moves that have room, flush dirty sessions, free the dead. */
void baton__srv_settle(baton_session_server *srv);

/* ---- server-client.c ---- */

baton_session *baton__srv_session_new(baton_session_server *srv, const uint8_t *id);
/* The session of that id here (not S_REMOTE nor S_DEAD), or NULL. */
baton_session *baton__srv_session_find(baton_session_server *srv, const uint8_t *id);
/* The same, remote ones (and relays) too. */
baton_session *baton__srv_session_lookup(baton_session_server *srv, const uint8_t *id);
/* The session ends here (closed, lost or moved away): no callback. */
void baton__srv_session_end(baton_session *s);
/* The session ends and on_close says why (err). */
void baton__srv_session_close(baton_session *s, int err);
void baton__srv_session_free(baton_session_server *srv, baton_session *s);
/* The session has output: flushed by baton__srv_settle(). */
void baton__srv_mark_dirty(baton_session *s);
/* Encode queued messages and acknowledgements and write them. */
void baton__srv_session_flush(baton_session *s);
/* At the session cap: refuse k's HELLO or RESUME (what) with CLOSE(FULL)
 * and return true. */
bool baton__srv_full(baton_session_server *srv, struct slink *k, const char *what);
/* Bad input or a deadline on a client link: tell the client, end the
 * session if there is one. ep is the kind of refusal, for the log. */
void baton__srv_client_error(baton_session_server *srv, struct slink *k, int err, int ep,
                             const char *what);
void baton__srv_on_client_frame(baton_session_server *srv, struct slink *k,
                                const struct baton__sframe *f);
/* The client closed k or it broke. */
void baton__srv_client_eof(baton_session_server *srv, struct slink *k);

/* ---- server-move.c ---- */

/* The session's move is over (done, called off, or the session ended). */
void baton__srv_move_detach(baton_session *s);
/* The outcome of a session of a move call (it moved, or not): the call's
 * on_move_done once the last one is in. */
void baton__srv_move_call_outcome(baton_session_server *srv, struct move_call *mc, bool moved);
/* The session was taken: it ends here, and on_moved says so. */
void baton__srv_move_done(baton_session_server *srv, baton_session *s);
/* The link to p is down: every move to p not yet taken is called off. */
void baton__srv_moves_fail(baton_session_server *srv, struct peer *p, int err);
/* Announce to p as many waiting sessions as its window has room for. */
void baton__srv_peer_offer(baton_session_server *srv, struct peer *p);
/* The same for every peer whose window has room. */
void baton__srv_moves_offer(baton_session_server *srv);
/* Move deadlines and stragglers: true while a move has a deadline. */
bool baton__srv_moves_tick(baton_session_server *srv, int64_t now);
/* Frames from the next server on a link we opened. */
void baton__srv_on_offered(struct peer *p, uint32_t batch);
void baton__srv_on_take(baton_session_server *srv, struct slink *k, const struct baton__sframe *f);
void baton__srv_on_taken(baton_session_server *srv, struct slink *k, const uint8_t *id);
void baton__srv_on_declined(baton_session_server *srv, struct slink *k, const uint8_t *id);

/* ---- server-take.c ---- */

void baton__srv_expect_free(baton_session_server *srv, struct expect *e);
/* Announced sessions past their deadline with no client: forgotten. True
 * while any is announced. */
bool baton__srv_expects_tick(baton_session_server *srv, int64_t now);
/* The peer link k that announced sessions to us is gone. */
void baton__srv_take_peer_down(baton_session_server *srv, struct slink *k);
/* A client's RESUME: ask the current server for its session (TAKE). */
int baton__srv_on_resume(baton_session_server *srv, struct slink *k, const struct baton__sframe *f);
/* Frames from the current server on a link it opened to us. */
void baton__srv_on_offer(baton_session_server *srv, struct slink *k, const struct baton__sframe *f);
void baton__srv_on_refuse(baton_session_server *srv, const struct baton__sframe *f);
void baton__srv_on_export(baton_session_server *srv, struct slink *k,
                          const struct baton__sframe *f);

/* ---- server-forward.c ---- */

/* Write k at the end of this dispatch (settle). */
void baton__srv_link_later(baton_session_server *srv, struct slink *k);
/* Hold a message (or, FLUSH, a marker) of a leaving or reuniting session. */
int baton__srv_hold(baton_session *s, bool flush, const void *data, size_t len);
/* Forward a message to a remote session. */
int baton__srv_forward(baton_session *s, const void *data, size_t len);
/* TAKEN: what s held follows it on k, and s stays as a remote handle or a
 * relay if the application or an origin needs it (true), else it ends. */
bool baton__srv_fwd_taken(baton_session_server *srv, baton_session *s, struct slink *k);
/* The move is called off: what s held goes back in its queue, in order. */
void baton__srv_fwd_requeue(baton_session *s);
/* s came back here (EXPORT on link k) while we held it as remote: it is
 * ours again, and our forwards still on their way come back behind our
 * FLUSH before anything sent from now on. */
void baton__srv_reunite(baton_session_server *srv, baton_session *s, struct slink *k);
/* k (a link we took sessions on) may forward to s. */
void baton__srv_origin_add(baton_session *s, struct slink *k);
/* s ended here with err: its origins are told (GONE). */
void baton__srv_fwd_ended(baton_session *s, int err);
/* A remote handle or relay ends: on_close for the application's. */
void baton__srv_remote_end(baton_session *s, int err);
/* The link k went down: remote sessions forwarding on it end, sessions
 * it was an origin of forget it. */
void baton__srv_fwd_link_down(baton_session_server *srv, struct slink *k);
/* A reuniting session whose FLUSH is late: true while it waits. */
bool baton__srv_reunite_tick(baton_session *s, int64_t now);
/* Frames: FORWARD, FLUSH, RELEASE, PMSG from a current server (k is
 * L_PEER_IN), GONE from a next server (L_PEER_OUT). */
void baton__srv_on_fwd_frame(baton_session_server *srv, struct slink *k,
                             const struct baton__sframe *f);
/* The link to p is authenticated: its waiting application messages go. */
void baton__srv_pmsgs_send(baton_session_server *srv, struct peer *p);
/* The link to p could not be had: they are dropped, and logged. */
void baton__srv_pmsgs_drop(baton_session_server *srv, struct peer *p);

/* ---- server-peer.c ---- */

struct peer *baton__srv_peer_find(baton_session_server *srv, const char *name);
/* Open the peer link to p (non-blocking; the handshake follows). */
int baton__srv_peer_connect(baton_session_server *srv, struct peer *p);
/* The link to p broke or was refused: its moves are called off. */
void baton__srv_peer_down(baton_session_server *srv, struct peer *p, int err);
/* A non-blocking connect on k finished: 0 and the handshake starts, or
 * -errno and the link is down. */
int baton__srv_peer_connected(baton_session_server *srv, struct slink *k);
/* A frame on a peer link: 0, or -errno and the caller ends the link. */
int baton__srv_on_peer_frame(baton_session_server *srv, struct slink *k,
                             const struct baton__sframe *f);
/* A peer link ends with err; what, if not NULL, says what was refused. */
void baton__srv_peer_error(baton_session_server *srv, struct slink *k, int err, const char *what);

#endif
