/* SPDX-License-Identifier: MIT */
/*
 * The server side: sessions, client links, peer links and moves.
 *
 * Everything runs from baton_session_server_dispatch() on one epoll fd. A
 * session or link that ends is marked dead and freed at the end of the
 * dispatch, so that callbacks and the frame loop never see freed memory.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "internal.h"

#define HASH_SIZE    4096
#define TICK_MS      50
#define HANDSHAKE_MS 10000
#define IDLE_MS      60000
/* A move is a straggler after this long, or 8 times the usual, if more. */
#define STRAGGLER_MS 250
#define ERR_MAX      256
/* A listener that cannot accept (no fds) rests this long, doubling. */
#define ACCEPT_REST_MIN_MS 100
#define ACCEPT_REST_MAX_MS 1000
/* An episode of refusals ends after this long without one. */
#define EPISODE_QUIET_MS 10000

enum { L_LISTEN = 1, L_PEERLISTEN, L_CLIENT, L_PEER_IN, L_PEER_OUT, L_TIMER };
enum { P_CONNECTING, P_WAIT_HELLO, P_WAIT_CHAL, P_WAIT_AUTH, P_READY };
enum { S_ACTIVE, S_MOVING, S_FROZEN, S_DEAD };
/* Kinds of refusal that a remote party can repeat at will: each is logged
 * once per episode (refuse_log()). */
enum { EP_ACCEPT, EP_FULL, EP_DEADLINE, EP_IDLE, EP_CLIENT, EP_PEER, EP_N };

struct episode {
    int64_t first_ms, last_ms;
    unsigned long n;
};

struct peer;
struct expect;

struct slink {
    struct baton__slink l;
    struct slink *next, *prev;
    baton_session *s;       /* L_CLIENT: the session, once there is one */
    struct expect *pending; /* L_CLIENT: a RESUME waiting for its EXPORT */
    struct peer *peer;      /* L_PEER_OUT */
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
    struct expect *hnext, *next, *prev;
};

/* A list of sessions, in the order they were asked to move. */
struct slist {
    baton_session *head, *tail;
    unsigned n;
};

struct peer {
    char name[BATON_SESSION_NAME_MAX + 1];
    char client_addr[BATON_SESSION_ADDR_MAX + 1];
    struct baton__saddr addr;
    struct slink *link;
    uint32_t batch;
    /* Moves to this peer: waiting for a place in the window (waiting),
     * announced and not yet told to their client (offered), and how many
     * are in the window (announced and not yet taken nor called off). */
    struct slist waiting, offered;
    unsigned inflight;
    /* Moves that have taken far longer than moves here usually do (a
     * client that is gone, or a lost SYN that costs a second): each keeps
     * its deadline but leaves the window, up to a window's worth of them,
     * so that a few cannot hold up every other session's move. usual_ms
     * is a running average of how long moves took. */
    unsigned stragglers;
    int64_t usual_ms;
    struct peer *next;
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
    struct slist *list; /* mpeer's waiting or offered list, or NULL */
    uint32_t batch;
    int64_t offered_ms;
    bool offered, straggler, move_sent, token_ok, dirty;
    uint8_t token[BATON__S_TOK_LEN];
    int64_t deadline;
    void *data;
    baton_session *next, *prev, *hnext, *dnext, *lnext, *lprev;
};

struct baton_session_server {
    struct baton_session_server_options o;
    uint8_t *key;
    int epfd, timerfd;
    int tick_ms; /* the timer's period, 0 off */
    bool in_dispatch;
    struct slink lsn, plsn, tmr;
    struct slink *links;
    baton_session *sessions, *dirty, *hash[HASH_SIZE];
    struct expect *expects, *ehash[HASH_SIZE];
    struct peer *peers;
    size_t count;
    uint8_t *scratch;
    struct episode ep[EP_N];
    char err[ERR_MAX];
};

static void set_err(baton_session_server *srv, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(baton_session_server *srv, int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(srv->err, sizeof(srv->err), fmt, ap);
    va_end(ap);
    if (srv->o.log)
        srv->o.log(srv->o.ctx, level, srv->err);
}

static unsigned hkey(const uint8_t *id)
{
    return baton__s_get32(id) % HASH_SIZE;
}

static baton_session *find_session(baton_session_server *srv, const uint8_t *id)
{
    for (baton_session *s = srv->hash[hkey(id)]; s; s = s->hnext)
        if (s->state != S_DEAD && memcmp(s->id, id, BATON__S_ID_LEN) == 0)
            return s;
    return NULL;
}

static struct expect *find_expect(baton_session_server *srv, const uint8_t *id)
{
    for (struct expect *e = srv->ehash[hkey(id)]; e; e = e->hnext)
        if (memcmp(e->id, id, BATON__S_ID_LEN) == 0)
            return e;
    return NULL;
}

/* Run the timer every ms (0: stop it). */
static void timer_set(baton_session_server *srv, int ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    struct itimerspec it = {t, t};

    if (srv->tick_ms == ms)
        return;
    if (timerfd_settime(srv->timerfd, 0, &it, NULL) == 0)
        srv->tick_ms = ms;
}

/* Something has a deadline soon: tick fast. */
static void arm_timer(baton_session_server *srv)
{
    timer_set(srv, TICK_MS);
}

/* The tick while only idle limits and episodes are watched: they need no
 * precision, and a server with nothing else to do should not wake 20
 * times a second for them. */
static int slow_tick_ms(const baton_session_server *srv)
{
    int ms = srv->o.idle_timeout_ms / 4;

    return ms < TICK_MS ? TICK_MS : ms > 1000 ? 1000 : ms;
}

/* "127.0.0.1:4242", the other end of k, for logs. */
static const char *link_who(const struct slink *k, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (getpeername(k->l.fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
        }
    }
    if (port)
        baton__s_fmt(buf, cap, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    else
        baton__s_fmt(buf, cap, "on a local socket");
    return buf;
}

static const char *const ep_what[EP_N] = {
    [EP_ACCEPT] = "failed accepts",
    [EP_FULL] = "sessions refused because the server is full",
    [EP_DEADLINE] = "connections closed at their handshake deadline",
    [EP_IDLE] = "sessions closed at the idle limit",
    [EP_CLIENT] = "client connections refused for bad input",
    [EP_PEER] = "peer connections refused",
};

/* Refusals that a remote party can repeat at will (connections, bad
 * frames, exhausted fds) are logged once per episode, so that a flood
 * costs a line, not a line per connection: the first one says what was
 * refused and why, and when the episode ends (EPISODE_QUIET_MS without
 * one) a line counts them. last_error has each. */
static void refuse_log(baton_session_server *srv, int ep, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void refuse_log(baton_session_server *srv, int ep, const char *fmt, ...)
{
    struct episode *e = &srv->ep[ep];
    int64_t now = baton__s_now_ms();
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(srv->err, sizeof(srv->err), fmt, ap);
    va_end(ap);
    e->last_ms = now;
    if (e->n++)
        return;
    e->first_ms = now;
    if (srv->o.log) {
        char line[ERR_MAX + 128];
        baton__s_fmt(line, sizeof(line),
                     "%s (further %s are counted, not logged, until %d s pass "
                     "without one)",
                     srv->err, ep_what[ep], EPISODE_QUIET_MS / 1000);
        srv->o.log(srv->o.ctx, BATON_SESSION_LOG_WARNING, line);
    }
    if (!srv->tick_ms)
        timer_set(srv, slow_tick_ms(srv));
}

/* End the episodes that have been quiet long enough: true if one is still
 * open. */
static bool episodes_tick(baton_session_server *srv, int64_t now)
{
    bool open = false;

    for (int i = 0; i < EP_N; i++) {
        struct episode *e = &srv->ep[i];
        if (!e->n)
            continue;
        if (now - e->last_ms < EPISODE_QUIET_MS) {
            open = true;
            continue;
        }
        if (e->n > 1 && srv->o.log) {
            char line[160];
            baton__s_fmt(line, sizeof(line), "%lu %s in %lld ms (the first was logged); none since",
                         e->n, ep_what[i], (long long)(e->last_ms - e->first_ms));
            srv->o.log(srv->o.ctx, BATON_SESSION_LOG_INFO, line);
        }
        e->n = 0;
    }
    return open;
}

static void list_add(struct slist *l, baton_session *s)
{
    s->list = l;
    s->lnext = NULL;
    s->lprev = l->tail;
    if (l->tail)
        l->tail->lnext = s;
    else
        l->head = s;
    l->tail = s;
    l->n++;
}

static void list_remove(baton_session *s)
{
    struct slist *l = s->list;

    if (!l)
        return;
    if (s->lprev)
        s->lprev->lnext = s->lnext;
    else
        l->head = s->lnext;
    if (s->lnext)
        s->lnext->lprev = s->lprev;
    else
        l->tail = s->lprev;
    l->n--;
    s->list = NULL;
    s->lnext = s->lprev = NULL;
}

/* The session's move is over (done, called off, or the session ended):
 * it leaves its peer's lists and frees its place in the window. */
static void move_detach(baton_session *s)
{
    list_remove(s);
    if (s->mpeer && s->offered) {
        if (s->straggler)
            s->mpeer->stragglers--;
        else
            s->mpeer->inflight--;
    }
    s->offered = s->straggler = false;
}

static void mark_dirty(baton_session *s)
{
    if (s->dirty)
        return;
    s->dirty = true;
    s->dnext = s->srv->dirty;
    s->srv->dirty = s;
}

/* ---- links ---- */

/* A new link may carry only its handshake's frames, so that until it is
 * a session or an authenticated peer it costs a page of buffer at most,
 * and only until its handshake deadline. */
static struct slink *link_new(baton_session_server *srv, int fd, int kind)
{
    struct slink *k = calloc(1, sizeof(*k));
    uint32_t allow = kind == L_CLIENT    ? BATON__S_RX_CLIENT_NEW
                     : kind == L_PEER_IN ? BATON__S_RX_PEER_NEW
                                         : BATON__S_RX_NEXT_NEW;

    if (!k)
        return NULL;
    baton__slink_init(&k->l, fd, kind, allow);
    if (kind == L_CLIENT)
        k->l.wmax = BATON__S_WBUF_CLIENT_MAX;
    k->last_in_ms = baton__s_now_ms();
    k->deadline = k->last_in_ms + srv->o.handshake_timeout_ms;
    k->next = srv->links;
    if (srv->links)
        srv->links->prev = k;
    srv->links = k;
    arm_timer(srv);
    return k;
}

static void link_kill(baton_session_server *srv, struct slink *k)
{
    if (k->dead)
        return;
    k->dead = true;
    if (k->l.events)
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, k->l.fd, NULL);
    k->l.events = 0;
}

static void link_free(baton_session_server *srv, struct slink *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else
        srv->links = k->next;
    if (k->next)
        k->next->prev = k->prev;
    baton__slink_release(&k->l);
    free(k);
}

/* Write what is buffered and keep epoll in step; a broken link is killed
 * (its owner notices through l.eof). */
static void link_flush(baton_session_server *srv, struct slink *k)
{
    int r;

    if (k->dead || !k->l.connected)
        return;
    r = baton__slink_flush(&k->l);
    if (r < 0) {
        k->l.eof = true;
        k->l.err = r;
        return;
    }
    if (k->l.events && baton__slink_watch(&k->l, srv->epfd, k) < 0)
        k->l.eof = true;
}

/* Tell the other side why, best effort, and end the link. */
static void link_refuse(baton_session_server *srv, struct slink *k, int err, const char *text)
{
    baton__slink_put_close(&k->l, baton__s_err_code(err), text);
    (void)baton__slink_flush(&k->l);
    link_kill(srv, k);
}

/* ---- sessions ---- */

static baton_session *session_new(baton_session_server *srv, const uint8_t *id)
{
    baton_session *s = calloc(1, sizeof(*s));
    unsigned h;

    if (!s)
        return NULL;
    s->srv = srv;
    memcpy(s->id, id, BATON__S_ID_LEN);
    baton__s_hex(id, s->hex);
    h = hkey(id);
    s->hnext = srv->hash[h];
    srv->hash[h] = s;
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->count++;
    return s;
}

/* The session ends here (closed, lost or moved away): no callback. */
static void session_end(baton_session *s)
{
    baton_session_server *srv = s->srv;

    if (s->state == S_DEAD)
        return;
    move_detach(s);
    s->state = S_DEAD;
    srv->count--;
    if (s->link) {
        s->link->s = NULL;
        link_kill(srv, s->link);
        s->link = NULL;
    }
}

static void session_close(baton_session *s, int err)
{
    baton_session_server *srv = s->srv;

    if (s->state == S_DEAD)
        return;
    session_end(s);
    if (srv->o.on_close)
        srv->o.on_close(srv->o.ctx, s, err);
}

static void session_free(baton_session_server *srv, baton_session *s)
{
    baton_session **pp = &srv->hash[hkey(s->id)];

    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    baton__squeue_free(&s->q);
    free(s);
}

/* A malformed or hostile frame on a client link, or a deadline passed:
 * tell the client, end the session if there is one; everything else
 * carries on. ep is the kind of refusal, for the log. */
static void client_error(baton_session_server *srv, struct slink *k, int err, int ep,
                         const char *what)
{
    char text[200], who[64];

    baton__s_fmt(text, sizeof(text), "%s: %s", what, baton_session_strerror(err));
    refuse_log(srv, ep, "client %s, session %s: %s; connection closed",
               link_who(k, who, sizeof(who)), k->s ? k->s->hex : "(none yet)", text);
    link_refuse(srv, k, err, text);
    if (k->pending) {
        k->pending->client = NULL;
        k->pending = NULL;
    }
    if (k->s) {
        baton_session *s = k->s;
        s->link = NULL;
        k->s = NULL;
        session_close(s, err);
    }
}

/* Encode queued messages and acknowledgements and write them. */
static void session_flush(baton_session *s)
{
    baton_session_server *srv = s->srv;
    struct slink *k = s->link;
    uint64_t before;

    if (!k || k->dead || (s->state != S_ACTIVE && s->state != S_MOVING))
        return;
    before = s->out_sent;
    if (baton__s_encode_data(&k->l, &s->q, &s->out_sent, s->in_handled) < 0)
        return;
    if (s->out_sent != before)
        s->in_acked_sent = s->in_handled;
    if (s->in_handled > s->in_acked_sent) {
        uint8_t *p = baton__slink_put(&k->l, BATON__S_ACK, 8);
        if (p) {
            baton__s_put64(p, s->in_handled);
            s->in_acked_sent = s->in_handled;
        }
    }
    link_flush(srv, k);
    if (k->l.eof) {
        s->link = NULL;
        k->s = NULL;
        link_kill(srv, k);
        session_close(s, k->l.err ? k->l.err : -ECONNRESET);
    }
}

/* An acknowledgement from the client: it may not exceed what we sent. */
static int session_ack(baton_session *s, uint64_t ack)
{
    if (ack > s->q.base + s->q.count)
        return -EBADMSG;
    if (ack > s->q.base) {
        baton__squeue_ack(&s->q, ack);
        if (s->out_sent < ack)
            s->out_sent = ack;
    }
    return 0;
}

static int on_client_session_frame(baton_session_server *srv, struct slink *k,
                                   const struct baton__sframe *f)
{
    baton_session *s = k->s;
    int r;

    switch (f->type) {
    case BATON__S_DATA:
        if ((r = session_ack(s, f->u.data.ack)) < 0)
            return r;
        if (f->u.data.seq <= s->in_handled)
            return 0; /* a resend of what we handled: drop it */
        if (f->u.data.seq != s->in_handled + 1)
            return -EPROTO;
        srv->o.on_message(srv->o.ctx, s, f->u.data.data, f->u.data.len);
        s->in_handled++;
        mark_dirty(s);
        return 0;
    case BATON__S_ACK:
        return session_ack(s, f->u.ack.count);
    case BATON__S_PING: {
        /* The answer tells the client how often to ping. One PONG waits
         * unsent at most: a client that pings and never reads must not
         * make us queue an answer to each. */
        uint8_t *p;
        k->pings = true;
        if (k->l.pong)
            return 0;
        p = baton__slink_put(&k->l, BATON__S_PONG, 4);
        if (!p)
            return k->l.eof ? 0 : -ENOMEM;
        baton__s_put32(p, (uint32_t)srv->o.idle_timeout_ms);
        k->l.pong = true;
        mark_dirty(s);
        return 0;
    }
    case BATON__S_CLOSE:
        s->link = NULL;
        k->s = NULL;
        link_kill(srv, k);
        session_close(s, baton__s_code_err(f->u.close.code));
        return 0;
    }
    return -EPROTO;
}

/* At the session cap a new session is refused with CLOSE(FULL), which the
 * client library reports as -EUSERS; the sessions held are untouched.
 * what: "HELLO" or "RESUME". */
static bool server_full(baton_session_server *srv, struct slink *k, const char *what)
{
    char who[64];

    if (srv->count < (size_t)srv->o.max_sessions)
        return false;
    refuse_log(srv, EP_FULL,
               "client %s: %s refused: the server holds %zu sessions, its maximum "
               "(max_sessions)",
               link_who(k, who, sizeof(who)), what, srv->count);
    link_refuse(srv, k, -EUSERS, "server full: it holds as many sessions as it may");
    return true;
}

static int on_hello(baton_session_server *srv, struct slink *k)
{
    uint8_t id[BATON__S_ID_LEN], *p;
    baton_session *s;
    int r;

    if (server_full(srv, k, "HELLO"))
        return 0;
    if ((r = baton__s_random(id, sizeof(id))) < 0)
        return r;
    s = session_new(srv, id);
    if (!s)
        return -ENOMEM;
    p = baton__slink_put(&k->l, BATON__S_WELCOME, BATON__S_ID_LEN);
    if (!p) {
        session_end(s);
        return -ENOMEM;
    }
    memcpy(p, id, BATON__S_ID_LEN);
    s->link = k;
    k->s = s;
    k->deadline = 0;
    baton__slink_allow(&k->l, BATON__S_RX_CLIENT);
    if (srv->o.on_open)
        srv->o.on_open(srv->o.ctx, s);
    mark_dirty(s);
    return 0;
}

/* At the next server: a client presents a session id and token. We ask
 * the server that announced the session to hand it over (TAKE); it checks
 * the token, which only it knows. */
/* A RESUME refused before anything was asked of the current server:
 * anyone may send one, so it is logged once per episode. */
static int resume_refuse(baton_session_server *srv, struct slink *k, int err, const char *why)
{
    char who[64];

    refuse_log(srv, EP_CLIENT, "client %s: RESUME refused: %s", link_who(k, who, sizeof(who)), why);
    link_refuse(srv, k, err, why);
    return 0;
}

static int on_resume(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    struct expect *e = find_expect(srv, f->u.resume.id);
    baton_session *held = find_session(srv, f->u.resume.id);
    uint8_t *p;

    if (held && held->state != S_FROZEN)
        return resume_refuse(srv, k, -EACCES, "resume token refused: already used");
    if (!e || !e->peer_link || e->peer_link->dead)
        return resume_refuse(srv, k, -ENOENT, "unknown session: no server announced it here");
    if (e->client)
        return resume_refuse(srv, k, -EACCES,
                             "resume token refused: a resume is already in progress");
    /* Refused here, before the TAKE, the session stays at the current
     * server and its client goes on there. A session of ours coming back
     * (frozen) replaces itself and does not count. */
    if (!held && server_full(srv, k, "RESUME"))
        return 0;
    p = baton__slink_put(&e->peer_link->l, BATON__S_TAKE, 48);
    if (!p)
        return -ENOMEM;
    memcpy(p, f->u.resume.id, 16);
    memcpy(p + 16, f->u.resume.token, 32);
    link_flush(srv, e->peer_link);
    e->client = k;
    e->handled = f->u.resume.handled;
    e->takes++;
    k->pending = e;
    baton__slink_allow(&k->l, BATON__S_RX_CLIENT_RESUMING);
    return 0;
}

static void on_client_frame(baton_session_server *srv, struct slink *k,
                            const struct baton__sframe *f)
{
    int r = -EPROTO;

    if (k->s)
        r = on_client_session_frame(srv, k, f);
    else if (k->pending)
        r = -EPROTO; /* nothing may come before RESUMED */
    else if (f->type == BATON__S_HELLO)
        r = on_hello(srv, k);
    else if (f->type == BATON__S_RESUME)
        r = on_resume(srv, k, f);
    else if (f->type == BATON__S_CLOSE) {
        link_kill(srv, k);
        r = 0;
    }
    if (r < 0) {
        char what[64];
        baton__s_fmt(what, sizeof(what), "%s frame", baton__sframe_name(f->type));
        client_error(srv, k, r, EP_CLIENT, what);
    }
}

/* ---- moves: the current server's side ---- */

static void move_fail(baton_session *s, int err)
{
    baton_session_server *srv = s->srv;

    move_detach(s);
    /* The client was told to move: tell it the move is off, so that it
     * comes back now rather than wait for the next server (STAY goes out
     * with the session's flush at the end of this dispatch). */
    if (s->move_sent && s->link && !s->link->dead)
        (void)baton__slink_put(&s->link->l, BATON__S_STAY, 0);
    s->mpeer = NULL;
    s->move_sent = s->token_ok = false;
    s->deadline = 0;
    if (s->state == S_FROZEN) {
        s->state = S_ACTIVE;
        if (!s->link || s->link->dead || baton__slink_watch(&s->link->l, srv->epfd, s->link) < 0) {
            session_close(s, -ECONNABORTED);
            return;
        }
    }
    if (s->state == S_MOVING)
        s->state = S_ACTIVE;
    /* A moving client does not ping: its idle time starts afresh. */
    if (s->link)
        s->link->last_in_ms = baton__s_now_ms();
    mark_dirty(s);
    if (srv->o.on_moved)
        srv->o.on_moved(srv->o.ctx, s, err);
}

/* The peer link to p broke or was refused: every session not yet taken
 * stays here. */
static void peer_down(baton_session_server *srv, struct peer *p, int err)
{
    set_err(srv, BATON_SESSION_LOG_WARNING, "peer %s: link down: %s; moves called off", p->name,
            err == -EACCES ? "authentication failed: wrong key" : baton_session_strerror(err));
    if (p->link) {
        p->link->peer = NULL;
        link_kill(srv, p->link);
        p->link = NULL;
    }
    for (baton_session *s = srv->sessions; s; s = s->next)
        if (s->mpeer == p && (s->state == S_MOVING || s->state == S_FROZEN))
            move_fail(s, err);
}

/* Announce to p as many waiting sessions as the window has room for, in
 * frames of at most BATON__S_OFFER_MAX. A session's move deadline starts
 * here: the next server keeps an announced session about as long. */
static void peer_offer(baton_session_server *srv, struct peer *p)
{
    int64_t deadline = baton__s_now_ms() + srv->o.move_timeout_ms;
    unsigned window = (unsigned)srv->o.move_window;

    if (!p->link || p->link->pstate != P_READY)
        return;
    while (p->waiting.head && p->inflight < window) {
        uint32_t n = window - p->inflight;
        uint8_t *f;
        if (n > p->waiting.n)
            n = p->waiting.n;
        if (n > BATON__S_OFFER_MAX)
            n = BATON__S_OFFER_MAX;
        f = baton__slink_put(&p->link->l, BATON__S_OFFER, 8 + 16 * n);
        if (!f)
            break;
        p->batch++;
        baton__s_put32(f, p->batch);
        baton__s_put32(f + 4, n);
        for (uint32_t i = 0; i < n; i++) {
            baton_session *s = p->waiting.head;
            memcpy(f + 8 + 16 * i, s->id, 16);
            list_remove(s);
            list_add(&p->offered, s);
            s->offered = true;
            s->batch = p->batch;
            s->offered_ms = deadline - srv->o.move_timeout_ms;
            s->deadline = deadline;
            p->inflight++;
        }
        arm_timer(srv);
    }
    link_flush(srv, p->link);
}

/* The next server knows the sessions of batch: send their clients MOVE. */
static void on_offered(baton_session_server *srv, struct peer *p, uint32_t batch)
{
    size_t al = strlen(p->client_addr);
    baton_session *s, *n;

    for (s = p->offered.head; s; s = n) {
        uint8_t *f;
        n = s->lnext;
        if (s->batch != batch)
            continue;
        list_remove(s);
        if (s->state != S_MOVING || s->move_sent || !s->link)
            continue;
        if (baton__s_random(s->token, sizeof(s->token)) < 0 ||
            !(f = baton__slink_put(&s->link->l, BATON__S_MOVE, (uint32_t)(34 + al)))) {
            move_fail(s, -ENOMEM);
            continue;
        }
        memcpy(f, s->token, 32);
        baton__s_put16(f + 32, (uint16_t)al);
        memcpy(f + 34, p->client_addr, al);
        s->token_ok = true;
        s->move_sent = true;
        mark_dirty(s);
    }
}

/* TAKE: the next server has our client, which showed the token. Check it
 * (one use only), freeze the session and export it. */
static void on_take(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    baton_session *s = find_session(srv, f->u.take.id);
    size_t slen = 0, need;
    uint8_t *p;
    int r = 0;

    if (!s || s->state != S_MOVING || !s->mpeer || s->mpeer->link != k || !s->token_ok ||
        !baton__s_equal(s->token, f->u.take.token, BATON__S_TOK_LEN)) {
        set_err(srv, BATON_SESSION_LOG_WARNING,
                "TAKE with a forged, replayed or stale token refused");
        p = baton__slink_put(&k->l, BATON__S_REFUSE, 20);
        if (p) {
            memcpy(p, f->u.take.id, 16);
            baton__s_put32(p + 16, s ? BATON__SC_TOKEN : BATON__SC_UNKNOWN);
        }
        return;
    }
    s->token_ok = false;
    if (srv->o.export_state)
        r = srv->o.export_state(srv->o.ctx, s, srv->scratch, BATON_SESSION_STATE_MAX, &slen);
    if (r < 0 || slen > BATON_SESSION_STATE_MAX) {
        p = baton__slink_put(&k->l, BATON__S_REFUSE, 20);
        if (p) {
            memcpy(p, s->id, 16);
            baton__s_put32(p + 16, BATON__SC_REFUSED);
        }
        move_fail(s, r < 0 ? r : -EMSGSIZE);
        return;
    }
    need = 48 + slen + 4 * s->q.count + s->q.bytes;
    p = baton__slink_put(&k->l, BATON__S_EXPORT, (uint32_t)need);
    if (!p) {
        move_fail(s, -ENOMEM);
        return;
    }
    memcpy(p, s->id, 16);
    baton__s_put64(p + 16, s->in_handled);
    baton__s_put64(p + 24, s->q.base);
    baton__s_put64(p + 32, s->q.base + s->q.count);
    baton__s_put32(p + 40, (uint32_t)slen);
    memcpy(p + 44, srv->scratch, slen);
    p += 44 + slen;
    baton__s_put32(p, (uint32_t)s->q.count);
    p += 4;
    for (uint64_t q = s->q.base + 1; q <= s->q.base + s->q.count; q++) {
        const struct baton__smsg *m = baton__squeue_get(&s->q, q);
        baton__s_put32(p, m->len);
        memcpy(p + 4, m->data, m->len);
        p += 4 + m->len;
    }
    s->state = S_FROZEN;
    /* Stop reading the old link but keep it open: if the next server dies
     * before it confirms, the client falls back to it. */
    if (s->link && s->link->l.events) {
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, s->link->l.fd, NULL);
        s->link->l.events = 0;
    }
}

static void finish_moved(baton_session_server *srv, baton_session *s)
{
    struct peer *p = s->mpeer;

    if (p && s->offered && !s->straggler) {
        int64_t took = baton__s_now_ms() - s->offered_ms;
        p->usual_ms = p->usual_ms ? (7 * p->usual_ms + took) / 8 : took;
    }
    session_end(s);
    if (srv->o.on_moved)
        srv->o.on_moved(srv->o.ctx, s, 0);
}

static void on_taken(baton_session_server *srv, struct slink *k, const uint8_t *id)
{
    baton_session *s = find_session(srv, id);

    if (s && s->state == S_FROZEN && s->mpeer && s->mpeer->link == k)
        finish_moved(srv, s);
}

/* DECLINE: the next server did not take the session after all (its
 * client had gone): the move is off and the session is ours again. */
static void on_declined(baton_session_server *srv, struct slink *k, const uint8_t *id)
{
    baton_session *s = find_session(srv, id);

    if (s && s->state == S_FROZEN && s->mpeer && s->mpeer->link == k)
        move_fail(s, -ECONNABORTED);
}

/* ---- moves: the next server's side ---- */

static void expect_free(baton_session_server *srv, struct expect *e)
{
    struct expect **pp = &srv->ehash[hkey(e->id)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        srv->expects = e->next;
    if (e->next)
        e->next->prev = e->prev;
    if (e->client)
        e->client->pending = NULL;
    free(e);
}

static void on_offer(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    int64_t deadline = baton__s_now_ms() + srv->o.move_timeout_ms + 1000;
    uint8_t *p;

    for (uint32_t i = 0; i < f->u.offer.n; i++) {
        const uint8_t *id = f->u.offer.ids + 16 * i;
        struct expect *e = find_expect(srv, id);
        if (e) {
            e->peer_link = k;
            e->deadline = deadline;
            continue;
        }
        e = calloc(1, sizeof(*e));
        if (!e)
            break;
        memcpy(e->id, id, 16);
        e->peer_link = k;
        e->deadline = deadline;
        e->hnext = srv->ehash[hkey(id)];
        srv->ehash[hkey(id)] = e;
        e->next = srv->expects;
        if (srv->expects)
            srv->expects->prev = e;
        srv->expects = e;
    }
    arm_timer(srv);
    p = baton__slink_put(&k->l, BATON__S_OFFERED, 8);
    if (p) {
        baton__s_put32(p, f->u.offer.batch);
        baton__s_put32(p + 4, f->u.offer.n);
    }
}

static void on_refuse(baton_session_server *srv, const struct baton__sframe *f)
{
    struct expect *e = find_expect(srv, f->u.refuse.id);
    int err = baton__s_code_err(f->u.refuse.code);
    struct slink *c;

    if (e && e->takes)
        e->takes--;
    /* No client waits, or the refusal answers an older TAKE (its client
     * left) and the current client's is still out. */
    if (!e || !e->client || e->takes)
        return;
    c = e->client;
    e->client = NULL;
    c->pending = NULL;
    set_err(srv, BATON_SESSION_LOG_WARNING, "resume refused by the current server: %s",
            baton_session_strerror(err));
    link_refuse(srv, c, err,
                err == -EACCES ? "resume token refused: forged, replayed or stale"
                               : "the current server refused to hand the session over");
    /* A forged token must not spoil the real client's move. */
    if (err != -EACCES)
        expect_free(srv, e);
}

static int import_session(baton_session_server *srv, struct slink *c, uint64_t h,
                          const struct baton__sframe *f)
{
    baton_session *s, *old = find_session(srv, f->u.exp.id);
    const uint8_t *m = f->u.exp.msgs;
    uint8_t *p;
    int r = 0;

    /* We held this session before and have not heard the confirmation of
     * its last move yet: the session came back, so it was taken. */
    if (old && old->state == S_FROZEN)
        finish_moved(srv, old);
    else if (old)
        return -EEXIST;
    s = session_new(srv, f->u.exp.id);
    if (!s)
        return -ENOMEM;
    s->in_handled = s->in_acked_sent = f->u.exp.in_handled;
    s->q.base = f->u.exp.out_acked;
    for (uint32_t i = 0; i < f->u.exp.nmsg && r == 0; i++) {
        uint32_t ml;
        const uint8_t *d = baton__sframe_export_next(&m, &ml);
        r = baton__squeue_push(&s->q, d, ml);
    }
    if (r == 0 && srv->o.import_state)
        r = srv->o.import_state(srv->o.ctx, s, f->u.exp.state, f->u.exp.state_len);
    if (r < 0) {
        session_end(s);
        link_refuse(srv, c, -ECONNABORTED, "session lost: the next server could not import it");
        return 0;
    }
    /* The client's count must lie between what it acknowledged and what
     * was sent. */
    if (h < s->q.base || h > s->q.base + s->q.count) {
        session_end(s);
        if (srv->o.on_close)
            srv->o.on_close(srv->o.ctx, s, -EBADMSG);
        link_refuse(srv, c, -EBADMSG, "RESUME count acknowledges more than was sent");
        return 0;
    }
    baton__squeue_ack(&s->q, h);
    s->out_sent = h;
    p = baton__slink_put(&c->l, BATON__S_RESUMED, 8);
    if (p)
        baton__s_put64(p, s->in_handled);
    s->link = c;
    c->s = s;
    c->deadline = 0;
    c->last_in_ms = baton__s_now_ms();
    baton__slink_allow(&c->l, BATON__S_RX_CLIENT);
    mark_dirty(s);
    return 0;
}

static void on_export(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    struct expect *e = find_expect(srv, f->u.exp.id);
    baton_session *held;
    struct slink *c;
    uint64_t h;
    uint8_t *p;

    if (e && e->takes)
        e->takes--;
    /* The client that asked for it is gone (it went back to the current
     * server, or away), or this answers an older TAKE: we must not take a
     * session nobody here will serve. DECLINE, and the current server
     * keeps it (a TAKEN here would end it there under its client). */
    if (!e || !e->client || e->client->dead || e->takes) {
        set_err(srv, BATON_SESSION_LOG_WARNING,
                "EXPORT of a session whose client went away: declined");
        p = baton__slink_put(&k->l, BATON__S_DECLINE, 16);
        if (p)
            memcpy(p, f->u.exp.id, 16);
        if (e && !e->takes && (!e->client || e->client->dead))
            expect_free(srv, e);
        return;
    }
    /* Sessions opened since the RESUME may have filled the server: decline,
     * and the current server keeps the session for its client. */
    held = find_session(srv, f->u.exp.id);
    if (!(held && held->state == S_FROZEN) && server_full(srv, e->client, "RESUME")) {
        p = baton__slink_put(&k->l, BATON__S_DECLINE, 16);
        if (p)
            memcpy(p, f->u.exp.id, 16);
        expect_free(srv, e);
        return;
    }
    p = baton__slink_put(&k->l, BATON__S_TAKEN, 16);
    if (p)
        memcpy(p, f->u.exp.id, 16);
    c = e->client;
    h = e->handled;
    e->client = NULL;
    c->pending = NULL;
    expect_free(srv, e);
    if (import_session(srv, c, h, f) < 0)
        link_refuse(srv, c, -ECONNABORTED, "session lost: import failed");
}

/* ---- peer links ---- */

static void peer_send_hello(baton_session_server *srv, struct slink *k)
{
    uint8_t *p = baton__slink_put(&k->l, BATON__S_PHELLO, 32);

    if (p && baton__s_random(k->nonce_out, 32) == 0)
        memcpy(p, k->nonce_out, 32);
    k->pstate = P_WAIT_CHAL;
}

/* Mutual challenge-response: the connecting side sends a nonce; the
 * accepting side answers with its nonce and a MAC over both; the
 * connecting side checks it and answers with its own MAC over both. The
 * labels differ so that one MAC cannot be reflected as the other. */
static int on_peer_auth(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    uint8_t mac[32], *p;

    if (k->l.kind == L_PEER_IN && k->pstate == P_WAIT_HELLO && f->type == BATON__S_PHELLO) {
        memcpy(k->nonce_in, f->u.auth.nonce, 32);
        if (baton__s_random(k->nonce_out, 32) < 0 ||
            baton__s_hmac(srv->key, srv->o.key_len, "baton-s-accept", k->nonce_in, k->nonce_out,
                          mac) < 0)
            return -EIO;
        p = baton__slink_put(&k->l, BATON__S_PCHAL, 64);
        if (!p)
            return -ENOMEM;
        memcpy(p, k->nonce_out, 32);
        memcpy(p + 32, mac, 32);
        k->pstate = P_WAIT_AUTH;
        return 0;
    }
    if (k->l.kind == L_PEER_IN && k->pstate == P_WAIT_AUTH && f->type == BATON__S_PAUTH) {
        if (baton__s_hmac(srv->key, srv->o.key_len, "baton-s-connect", k->nonce_in, k->nonce_out,
                          mac) < 0)
            return -EIO;
        if (!baton__s_equal(mac, f->u.auth.mac, 32))
            return -EACCES;
        k->pstate = P_READY;
        k->deadline = 0;
        baton__slink_allow(&k->l, BATON__S_RX_PEER);
        return 0;
    }
    if (k->l.kind == L_PEER_OUT && k->pstate == P_WAIT_CHAL && f->type == BATON__S_PCHAL) {
        memcpy(k->nonce_in, f->u.auth.nonce, 32);
        if (baton__s_hmac(srv->key, srv->o.key_len, "baton-s-accept", k->nonce_out, k->nonce_in,
                          mac) < 0)
            return -EIO;
        if (!baton__s_equal(mac, f->u.auth.mac, 32))
            return -EACCES;
        if (baton__s_hmac(srv->key, srv->o.key_len, "baton-s-connect", k->nonce_out, k->nonce_in,
                          mac) < 0)
            return -EIO;
        p = baton__slink_put(&k->l, BATON__S_PAUTH, 32);
        if (!p)
            return -ENOMEM;
        memcpy(p, mac, 32);
        k->pstate = P_READY;
        k->deadline = 0;
        baton__slink_allow(&k->l, BATON__S_RX_NEXT);
        if (k->peer)
            peer_offer(srv, k->peer);
        return 0;
    }
    return -EPROTO;
}

static int on_peer_frame(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    if (f->type == BATON__S_CLOSE)
        return baton__s_code_err(f->u.close.code) ?: -ECONNRESET;
    if (k->pstate != P_READY)
        return on_peer_auth(srv, k, f);
    if (k->l.kind == L_PEER_IN) {
        if (f->type == BATON__S_OFFER)
            on_offer(srv, k, f);
        else if (f->type == BATON__S_EXPORT)
            on_export(srv, k, f);
        else if (f->type == BATON__S_REFUSE)
            on_refuse(srv, f);
        else
            return -EPROTO;
        return 0;
    }
    if (f->type == BATON__S_OFFERED && k->peer)
        on_offered(srv, k->peer, f->u.offer.batch);
    else if (f->type == BATON__S_TAKE)
        on_take(srv, k, f);
    else if (f->type == BATON__S_TAKEN)
        on_taken(srv, k, f->u.welcome.id);
    else if (f->type == BATON__S_DECLINE)
        on_declined(srv, k, f->u.welcome.id);
    else
        return -EPROTO;
    return 0;
}

/* The accepting side lost a peer link: sessions announced over it and not
 * yet exported are lost for the clients waiting here. */
static void peer_in_down(baton_session_server *srv, struct slink *k)
{
    struct expect *e = srv->expects, *n;

    for (; e; e = n) {
        n = e->next;
        if (e->peer_link != k)
            continue;
        if (e->client) {
            struct slink *c = e->client;
            e->client = NULL;
            c->pending = NULL;
            link_refuse(srv, c, -ECONNABORTED,
                        "session lost: the current server went away before handing it over");
        }
        expect_free(srv, e);
    }
}

/* A peer link ends with err; what, if not NULL, says what was refused. A
 * link that another server opened to us is anyone's to open, so its
 * refusals are logged once per episode; a link we opened is our own
 * peer's, and its failure calls moves off (peer_down() logs that). */
static void peer_link_error(baton_session_server *srv, struct slink *k, int err, const char *what)
{
    char who[64], text[BATON__S_TEXT_MAX];
    bool told = what != NULL; /* a bad frame, which nothing else logs */

    if (!what)
        what = err == -EACCES      ? "authentication failed: wrong key"
               : err == -ETIMEDOUT ? "no authentication within the handshake deadline"
                                   : baton_session_strerror(err);
    if (k->dead || err == -ECONNRESET)
        ; /* it ended, nothing was refused */
    else if (k->l.kind == L_PEER_IN)
        refuse_log(srv, err == -ETIMEDOUT ? EP_DEADLINE : EP_PEER, "peer link from %s%s closed: %s",
                   link_who(k, who, sizeof(who)),
                   k->pstate == P_READY ? "" : " (not authenticated)", what);
    else if (told || err == -EACCES) /* peer_down() logs the rest */
        set_err(srv, err == -EACCES ? BATON_SESSION_LOG_ERR : BATON_SESSION_LOG_WARNING,
                "peer link to %s closed: %s", k->peer ? k->peer->name : "?", what);
    if (!k->dead && err != -ECONNRESET) {
        baton__s_fmt(text, sizeof(text), "%s: %s", what, baton_session_strerror(err));
        baton__slink_put_close(&k->l, err == -EACCES ? BATON__SC_AUTH : baton__s_err_code(err),
                               err == -EACCES ? "peer authentication failed: wrong key" : text);
    }
    (void)baton__slink_flush(&k->l);
    link_kill(srv, k);
    if (k->l.kind == L_PEER_IN)
        peer_in_down(srv, k);
    else if (k->peer)
        peer_down(srv, k->peer, err);
}

/* ---- the event loop ---- */

/* What a link is, in its state, for a log line. */
static const char *link_state(const struct slink *k)
{
    if (k->l.kind == L_CLIENT)
        return k->s         ? "a client link"
               : k->pending ? "a client link while its RESUME is answered"
                            : "a client link before HELLO or RESUME";
    if (k->pstate != P_READY)
        return "a peer link before authentication";
    return "a peer link";
}

/* A frame the decoder refused: say which, how long, and why. */
static void bad_frame(baton_session_server *srv, struct slink *k, int err,
                      const struct baton__sframe *f)
{
    char what[200];

    if (err == -EPROTONOSUPPORT)
        baton__s_fmt(what, sizeof(what), "a frame of another protocol version on %s",
                     link_state(k));
    else
        baton__s_fmt(what, sizeof(what), "%s frame (type %u, %u bytes) on %s: %s",
                     baton__sframe_name(f->type), f->type, f->len, link_state(k),
                     f->why ? f->why : "refused");
    if (k->l.kind == L_CLIENT)
        client_error(srv, k, err, EP_CLIENT, what);
    else
        peer_link_error(srv, k, err, what);
}

static void handle_link(baton_session_server *srv, struct slink *k, uint32_t ev)
{
    struct baton__sframe f;
    int r;

    /* The session was exported in this dispatch (TAKE came first): what
     * its client sent since is the next server's to handle, and handling
     * it here too would run it twice. Leave it unread; if the move is
     * called off, the link is watched again and it is read then. */
    if (k->l.kind == L_CLIENT && k->s && k->s->state == S_FROZEN)
        return;
    if (!k->l.connected && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int e = 0;
        socklen_t el = sizeof(e);
        getsockopt(k->l.fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e) {
            set_err(srv, BATON_SESSION_LOG_WARNING, "peer %s: connect: %s",
                    k->peer ? k->peer->name : "?", strerror(e));
            peer_link_error(srv, k, -e, NULL);
            return;
        }
        k->l.connected = true;
        peer_send_hello(srv, k);
    }
    if (ev & EPOLLOUT)
        link_flush(srv, k);
    if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) && baton__slink_read(&k->l) > 0)
        k->last_in_ms = baton__s_now_ms();
    while (!k->dead && (r = baton__slink_next(&k->l, &f)) != 0) {
        if (r < 0) {
            bad_frame(srv, k, r, &f);
            return;
        }
        if (k->l.kind == L_CLIENT) {
            on_client_frame(srv, k, &f);
        } else if ((r = on_peer_frame(srv, k, &f)) < 0) {
            peer_link_error(srv, k, r, NULL);
            return;
        }
    }
    if (k->dead)
        return;
    if (k->l.kind != L_CLIENT)
        link_flush(srv, k);
    if (k->l.eof) {
        if (k->l.kind == L_CLIENT) {
            baton_session *s = k->s;
            link_kill(srv, k);
            if (k->pending) {
                k->pending->client = NULL;
                k->pending = NULL;
            }
            if (s) {
                s->link = NULL;
                k->s = NULL;
                session_close(s, -ECONNRESET);
            }
        } else {
            peer_link_error(srv, k, -ECONNRESET, NULL);
        }
        return;
    }
    if (k->l.kind == L_CLIENT && !k->s)
        link_flush(srv, k);
}

/* A listener that cannot accept (the process is out of fds, or the system
 * of memory) leaves epoll for a rest: level-triggered, it would be ready
 * again at once for the same connection, and the loop would spin and log
 * at full speed (as libuv and nginx found). The connections wait in the
 * listen backlog. It is watched again when the rest is over (100 ms,
 * doubling to 1 s while accept keeps failing) or as soon as a link of
 * ours closes and frees an fd (settle()). */
static void listener_pause(baton_session_server *srv, struct slink *lk, int err)
{
    int64_t now = baton__s_now_ms();

    lk->rest_ms = lk->rest_ms ? lk->rest_ms * 2 : ACCEPT_REST_MIN_MS;
    if (lk->rest_ms > ACCEPT_REST_MAX_MS)
        lk->rest_ms = ACCEPT_REST_MAX_MS;
    lk->deadline = now + lk->rest_ms;
    if (!lk->paused && epoll_ctl(srv->epfd, EPOLL_CTL_DEL, lk->l.fd, NULL) == 0)
        lk->paused = true;
    refuse_log(srv, EP_ACCEPT,
               "%s listener: accept: %s: new connections wait in the backlog; accepting again "
               "in %d ms, or when a connection of ours closes",
               lk->l.kind == L_LISTEN ? "client" : "peer", strerror(-err), lk->rest_ms);
    arm_timer(srv);
}

static void listener_resume(baton_session_server *srv, struct slink *lk)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = lk};

    if (!lk->paused)
        return;
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, lk->l.fd, &e) < 0) {
        lk->deadline = baton__s_now_ms() + lk->rest_ms; /* try again later */
        return;
    }
    lk->paused = false;
    lk->deadline = 0;
}

/* accept(2): "Linux passes already-pending network errors on the new socket
 * as an error code from accept()"; those concern one connection only. */
static bool accept_error_is_one_connection(int e)
{
    switch (e) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return true;
    }
    return false;
}

static void do_accept(baton_session_server *srv, struct slink *lk, int kind)
{
    for (int i = 0; i < 64; i++) {
        int one = 1, fd = accept4(lk->l.fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        struct slink *k;
        if (fd < 0) {
            if (errno == EAGAIN) {
                lk->rest_ms = 0; /* the backlog is empty: all is well */
                return;
            }
            if (accept_error_is_one_connection(errno))
                continue;
            listener_pause(srv, lk, -errno);
            return;
        }
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        k = link_new(srv, fd, kind);
        if (!k) {
            close(fd);
            listener_pause(srv, lk, -ENOMEM);
            return;
        }
        k->l.connected = true;
        k->pstate = P_WAIT_HELLO;
        if (kind == L_PEER_IN && !srv->key) {
            link_refuse(srv, k, -EACCES, "this server has no peer key");
            continue;
        }
        if (baton__slink_watch(&k->l, srv->epfd, k) < 0)
            link_kill(srv, k);
    }
}

/* Deadlines of links: a connection past its handshake deadline, a session
 * whose client has been silent for the idle limit (a client that pings
 * is never silent that long). Returns true if a handshake is under way. */
static bool links_tick(baton_session_server *srv, int64_t now)
{
    bool busy = false;
    char what[96];

    for (struct slink *k = srv->links; k; k = k->next) {
        if (k->dead)
            continue;
        if (k->deadline) {
            busy = true;
            if (now < k->deadline)
                continue;
            if (k->l.kind != L_CLIENT) {
                peer_link_error(srv, k, -ETIMEDOUT, NULL);
                continue;
            }
            baton__s_fmt(what, sizeof(what), "no session within the handshake deadline (%d ms)",
                         srv->o.handshake_timeout_ms);
            client_error(srv, k, -ETIMEDOUT, EP_DEADLINE, what);
        } else if (k->l.kind == L_CLIENT && k->pings && k->s && k->s->state == S_ACTIVE &&
                   now - k->last_in_ms >= srv->o.idle_timeout_ms) {
            baton__s_fmt(what, sizeof(what), "nothing received for %lld ms (the idle limit)",
                         (long long)(now - k->last_in_ms));
            client_error(srv, k, -ETIMEDOUT, EP_IDLE, what);
        }
    }
    return busy;
}

static bool listeners_tick(baton_session_server *srv, int64_t now)
{
    struct slink *lk[] = {&srv->lsn, &srv->plsn};
    bool busy = false;

    for (int i = 0; i < 2; i++) {
        if (!lk[i]->paused)
            continue;
        if (now >= lk[i]->deadline)
            listener_resume(srv, lk[i]);
        busy |= lk[i]->paused;
    }
    return busy;
}

static void on_tick(baton_session_server *srv)
{
    int64_t now = baton__s_now_ms();
    bool busy, watch;
    uint64_t x;
    struct expect *e, *n;

    while (read(srv->timerfd, &x, sizeof(x)) > 0)
        ;
    busy = links_tick(srv, now);
    busy |= listeners_tick(srv, now);
    for (baton_session *s = srv->sessions; s; s = s->next) {
        struct peer *p = s->mpeer;
        if (s->state == S_MOVING && s->deadline) {
            busy = true;
            if (now >= s->deadline) {
                move_fail(s, -ETIMEDOUT);
                continue;
            }
        }
        if (p && s->offered && !s->straggler && p->stragglers < (unsigned)srv->o.move_window &&
            now - s->offered_ms >
                (STRAGGLER_MS > 8 * p->usual_ms ? STRAGGLER_MS : 8 * p->usual_ms)) {
            s->straggler = true;
            p->stragglers++;
            p->inflight--;
        }
    }
    for (e = srv->expects; e; e = n) {
        n = e->next;
        busy = true;
        if (now >= e->deadline && !e->client)
            expect_free(srv, e);
    }
    /* Sessions need the idle limit watched, and open episodes their end
     * logged: a slow tick will do. */
    watch = episodes_tick(srv, now) || srv->count > 0;
    timer_set(srv, busy ? TICK_MS : watch ? slow_tick_ms(srv) : 0);
}

/* Flush dirty sessions, then free what died during this dispatch. */
static void settle(baton_session_server *srv)
{
    struct slink *k, *kn;
    baton_session *s, *sn;
    bool freed = false;

    /* Moves that ended in this dispatch made room in their windows. */
    for (struct peer *p = srv->peers; p; p = p->next)
        if (p->waiting.head && p->inflight < (unsigned)srv->o.move_window)
            peer_offer(srv, p);
    while ((s = srv->dirty)) {
        srv->dirty = s->dnext;
        s->dirty = false;
        session_flush(s);
    }
    for (k = srv->links; k; k = kn) {
        kn = k->next;
        if (k->dead) {
            link_free(srv, k);
            freed = true;
        }
    }
    /* An fd came free: a listener that ran out of them may accept again. */
    if (freed) {
        listener_resume(srv, &srv->lsn);
        listener_resume(srv, &srv->plsn);
    }
    for (s = srv->sessions; s; s = sn) {
        sn = s->next;
        if (s->state == S_DEAD)
            session_free(srv, s);
    }
}

BATON_SESSION_EXPORT int baton_session_server_dispatch(baton_session_server *srv)
{
    struct epoll_event ev[128];
    int n;

    if (!srv)
        return -EINVAL;
    if (srv->in_dispatch)
        return -EBUSY;
    n = epoll_wait(srv->epfd, ev, 128, 0);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    srv->in_dispatch = true;
    for (int i = 0; i < n; i++) {
        struct slink *k = ev[i].data.ptr;
        if (k->dead)
            continue;
        if (k->l.kind == L_LISTEN)
            do_accept(srv, k, L_CLIENT);
        else if (k->l.kind == L_PEERLISTEN)
            do_accept(srv, k, L_PEER_IN);
        else if (k->l.kind == L_TIMER)
            on_tick(srv);
        else
            handle_link(srv, k, ev[i].events);
    }
    settle(srv);
    srv->in_dispatch = false;
    return 0;
}

/* ---- the public API ---- */

static int watch_fd(baton_session_server *srv, struct slink *k, int fd, int kind)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = k};

    baton__slink_init(&k->l, fd, kind, 0);
    if (kind != L_TIMER) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return -errno;
    }
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        return -errno;
    return 0;
}

/* Half the fd limit: each session holds an fd, and a flood of sessions
 * must leave fds for the application, the peer links and connections
 * still in their handshake. */
static int default_max_sessions(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur / 2 > INT_MAX)
        return INT_MAX;
    return rl.rlim_cur >= 2 ? (int)(rl.rlim_cur / 2) : 1;
}

BATON_SESSION_EXPORT int baton_session_server_new(const struct baton_session_server_options *opts,
                                                  int listen_fd, int peer_fd,
                                                  baton_session_server **ret)
{
    baton_session_server *srv;
    int r;

    if (!opts || !ret || !opts->on_message || listen_fd < 0 ||
        (opts->key_len && opts->key_len < BATON_SESSION_KEY_MIN) || (opts->key_len && !opts->key) ||
        (peer_fd >= 0 && !opts->key_len) || opts->move_timeout_ms < 0 || opts->move_window < 0 ||
        opts->max_sessions < 0 || opts->handshake_timeout_ms < 0 || opts->idle_timeout_ms < 0 ||
        !baton__resv_zero(opts->resv, sizeof(opts->resv)))
        return -EINVAL;
    srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->o = *opts;
    if (!srv->o.move_timeout_ms)
        srv->o.move_timeout_ms = 10000;
    if (!srv->o.move_window)
        srv->o.move_window = BATON_SESSION_MOVE_WINDOW;
    if (!srv->o.max_sessions)
        srv->o.max_sessions = default_max_sessions();
    if (!srv->o.handshake_timeout_ms)
        srv->o.handshake_timeout_ms = HANDSHAKE_MS;
    if (!srv->o.idle_timeout_ms)
        srv->o.idle_timeout_ms = IDLE_MS;
    srv->epfd = srv->timerfd = -1;
    srv->scratch = malloc(BATON_SESSION_STATE_MAX);
    if (opts->key_len) {
        srv->key = malloc(opts->key_len);
        if (srv->key)
            memcpy(srv->key, opts->key, opts->key_len);
    }
    r = -ENOMEM;
    if (!srv->scratch || (opts->key_len && !srv->key))
        goto fail;
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->epfd < 0) {
        r = -errno;
        goto fail;
    }
    srv->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (srv->timerfd < 0) {
        r = -errno;
        goto fail;
    }
    if ((r = watch_fd(srv, &srv->lsn, listen_fd, L_LISTEN)) < 0 ||
        (r = watch_fd(srv, &srv->tmr, srv->timerfd, L_TIMER)) < 0 ||
        (peer_fd >= 0 && (r = watch_fd(srv, &srv->plsn, peer_fd, L_PEERLISTEN)) < 0))
        goto fail;
    *ret = srv;
    return 0;
fail:
    if (srv->timerfd >= 0)
        close(srv->timerfd);
    if (srv->epfd >= 0)
        close(srv->epfd);
    free(srv->scratch);
    free(srv->key);
    free(srv);
    return r;
}

BATON_SESSION_EXPORT void baton_session_server_free(baton_session_server *srv)
{
    if (!srv)
        return;
    while (srv->sessions) {
        baton_session *s = srv->sessions;
        /* The application frees what it keeps with the session. */
        session_close(s, -ESHUTDOWN);
        session_free(srv, s);
    }
    while (srv->expects)
        expect_free(srv, srv->expects);
    while (srv->links)
        link_free(srv, srv->links);
    while (srv->peers) {
        struct peer *p = srv->peers;
        srv->peers = p->next;
        free(p);
    }
    close(srv->timerfd);
    close(srv->epfd);
    if (srv->key)
        memset(srv->key, 0, srv->o.key_len);
    free(srv->key);
    free(srv->scratch);
    free(srv);
}

BATON_SESSION_EXPORT int baton_session_server_fd(const baton_session_server *srv)
{
    return srv ? srv->epfd : -EINVAL;
}

BATON_SESSION_EXPORT int baton_session_server_add_peer(baton_session_server *srv, const char *name,
                                                       const char *peer_address,
                                                       const char *client_address)
{
    struct baton__saddr ca;
    struct peer *p;

    if (!srv || !name || !*name || strlen(name) > BATON_SESSION_NAME_MAX || !client_address)
        return -EINVAL;
    for (p = srv->peers; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return -EEXIST;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (baton__saddr_parse(peer_address, &p->addr) < 0 ||
        baton__saddr_parse(client_address, &ca) < 0) {
        set_err(srv, BATON_SESSION_LOG_ERR, "peer %s: malformed address", name);
        free(p);
        return -EINVAL;
    }
    strcpy(p->name, name);
    strcpy(p->client_addr, client_address);
    p->next = srv->peers;
    srv->peers = p;
    return 0;
}

static int peer_connect(baton_session_server *srv, struct peer *p)
{
    int fd = baton__s_connect(&p->addr);
    struct slink *k;

    if (fd < 0) {
        set_err(srv, BATON_SESSION_LOG_ERR, "peer %s: socket: %s", p->name, strerror(-fd));
        return fd;
    }
    k = link_new(srv, fd, L_PEER_OUT);
    if (!k) {
        close(fd);
        return -ENOMEM;
    }
    k->peer = p;
    k->pstate = P_CONNECTING;
    p->link = k;
    if (baton__slink_watch(&k->l, srv->epfd, k) < 0) {
        peer_down(srv, p, -ENOMEM);
        return -ENOMEM;
    }
    return 0;
}

/* The session waits for a place in p's window; its deadline starts when
 * it gets one (peer_offer), and the peer link's handshake has its own. */
static void move_queue(struct peer *p, baton_session *s)
{
    s->state = S_MOVING;
    s->mpeer = p;
    s->deadline = 0;
    list_add(&p->waiting, s);
}

BATON_SESSION_EXPORT int baton_session_move(baton_session_server *srv, const char *peer,
                                            baton_session *const *list, size_t n)
{
    struct peer *p;
    int count = 0;

    if (!srv || !peer || (!list && n))
        return -EINVAL;
    if (!srv->key) {
        set_err(srv, BATON_SESSION_LOG_ERR, "move: this server has no peer key");
        return -EINVAL;
    }
    for (p = srv->peers; p; p = p->next)
        if (strcmp(p->name, peer) == 0)
            break;
    if (!p) {
        set_err(srv, BATON_SESSION_LOG_ERR, "move: no peer named %s", peer);
        return -ENOENT;
    }
    if (list) {
        for (size_t i = 0; i < n; i++) {
            baton_session *s = list[i];
            if (!s || s->srv != srv || s->state != S_ACTIVE || !s->link)
                continue;
            move_queue(p, s);
            count++;
        }
    } else {
        for (baton_session *s = srv->sessions; s; s = s->next)
            if (s->state == S_ACTIVE && s->link) {
                move_queue(p, s);
                count++;
            }
    }
    if (count == 0)
        return 0;
    arm_timer(srv);
    if (!p->link) {
        int r = peer_connect(srv, p);
        if (r < 0) {
            peer_down(srv, p, r);
            return r;
        }
    } else {
        peer_offer(srv, p);
    }
    return count;
}

BATON_SESSION_EXPORT size_t baton_session_server_count(const baton_session_server *srv)
{
    return srv ? srv->count : 0;
}

BATON_SESSION_EXPORT const char *baton_session_server_last_error(const baton_session_server *srv)
{
    return srv ? srv->err : "";
}

BATON_SESSION_EXPORT int baton_session_send(baton_session *s, const void *data, size_t len)
{
    int r;

    if (!s || (!data && len))
        return -EINVAL;
    if (len > BATON_SESSION_MSG_MAX)
        return -EMSGSIZE;
    if (s->state == S_DEAD)
        return -ENOTCONN;
    if (s->state == S_FROZEN)
        return -EXDEV;
    if ((r = baton__squeue_room(&s->q, len)) < 0)
        return r;
    if ((r = baton__squeue_push(&s->q, data, (uint32_t)len)) < 0)
        return r;
    mark_dirty(s);
    if (!s->srv->in_dispatch)
        settle(s->srv);
    return 0;
}

BATON_SESSION_EXPORT int baton_session_close(baton_session *s)
{
    if (!s)
        return -EINVAL;
    if (s->state == S_DEAD)
        return -ENOTCONN;
    if (s->state == S_FROZEN)
        return -EXDEV;
    if (s->link) {
        session_flush(s);
        if (s->link)
            link_refuse(s->srv, s->link, 0, "closed by the server");
    }
    session_close(s, 0);
    if (!s->srv->in_dispatch)
        settle(s->srv);
    return 0;
}

BATON_SESSION_EXPORT const char *baton_session_id(const baton_session *s)
{
    return s ? s->hex : "";
}

BATON_SESSION_EXPORT void baton_session_set_data(baton_session *s, void *data)
{
    if (s)
        s->data = data;
}

BATON_SESSION_EXPORT void *baton_session_data(const baton_session *s)
{
    return s ? s->data : NULL;
}
