/* SPDX-License-Identifier: MIT */
/*
 * The client side: one session, one link to the server that holds it and,
 * while a move is under way, a second link to the next server. Sends are
 * held while moving and resent from the count the next server reports.
 * A quiet live session is kept from the server's idle limit with PING
 * frames (docs/session-protocol.md, "Keepalive").
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "internal.h"

enum { C_OPENING, C_LIVE, C_MOVING, C_DEAD };
/* Once RESUME is out, how many timeouts to wait for the servers to end the
 * move before giving up on it ourselves. */
#define RESUMED_WAIT_FACTOR 6
enum { K_CUR = 1, K_NXT };

struct baton_session_client {
    struct baton_session_client_options o;
    int epfd, timerfd;
    struct baton__slink *cur, *nxt;
    int state;
    uint8_t id[BATON__S_ID_LEN];
    char hex[2 * BATON__S_ID_LEN + 1];
    char addr[BATON_SESSION_ADDR_MAX + 1], naddr[BATON_SESSION_ADDR_MAX + 1];
    uint64_t in_handled, in_acked_sent, out_sent;
    struct baton__squeue q;
    uint64_t move_start_us;
    /* One timer serves two deadlines (monotonic ms, 0 none): the open or
     * move timeout, and the next look at whether a PING is due. A second
     * timerfd would cost every client one more fd, and a process of a
     * thousand clients a thousand. */
    int64_t tmo_at, ping_at;
    /* A third of the server's idle limit (from its PONG; 0: no PING), and
     * when we last wrote to the current server. */
    int64_t ping_ms, last_out_ms;
    struct ssl_ctx_st *tls;          /* NULL: plain TCP (the insecure option) */
    struct ssl_session_st *tls_sess; /* the last server's ticket, offered to the next */
    bool resume_sent;                /* the whole RESUME is written: the move may be done */
    bool in_dispatch;
    char err[256];
};

static void set_err(baton_session_client *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(baton_session_client *c, int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    if (c->o.log)
        c->o.log(c->o.ctx, level, c->err);
}

/* Set the timer to the earlier of the two deadlines, or off. */
static void rearm(baton_session_client *c)
{
    int64_t at = c->tmo_at;
    struct itimerspec it = {{0, 0}, {0, 0}};

    if (c->ping_at && (!at || c->ping_at < at))
        at = c->ping_at;
    if (at) {
        it.it_value.tv_sec = at / 1000;
        it.it_value.tv_nsec = (at % 1000) * 1000000L;
    }
    timerfd_settime(c->timerfd, TFD_TIMER_ABSTIME, &it, NULL);
}

/* The open or move timeout: in ms from now, or 0 for none. */
static void arm(baton_session_client *c, int ms)
{
    c->tmo_at = ms ? baton__s_now_ms() + ms : 0;
    rearm(c);
}

/* Put a PING on the current link (written at the end of the dispatch). */
static void ping(baton_session_client *c)
{
    int64_t now = baton__s_now_ms();

    if (c->cur && baton__slink_put(c->cur, BATON__S_PING, 0))
        c->last_out_ms = now;
    if (c->ping_ms) {
        c->ping_at = now + c->ping_ms;
        rearm(c);
    }
}

/* The ping timer fired: PING if we have written nothing to the server for
 * a third of its idle limit. Only a live session pings: a moving one's
 * servers keep it without (the move has its own deadlines). */
static void ping_due(baton_session_client *c, int64_t now)
{
    if (!c->ping_ms) {
        c->ping_at = 0;
        return;
    }
    if (c->state == C_LIVE && c->cur && now - c->last_out_ms >= c->ping_ms) {
        ping(c);
        return;
    }
    c->ping_at = (c->state == C_LIVE && c->cur ? c->last_out_ms : now) + c->ping_ms;
}

static void link_close(baton_session_client *c, struct baton__slink **lp)
{
    struct baton__slink *l = *lp;

    if (!l)
        return;
    if (l->events)
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    baton__slink_release(l);
    free(l);
    *lp = NULL;
}

static int link_open(baton_session_client *c, const char *address, int kind,
                     struct baton__slink **ret)
{
    struct baton__saddr a;
    struct baton__slink *l;
    int fd, r;

    if ((r = baton__saddr_parse(address, &a)) < 0)
        return r;
    fd = baton__s_connect(&a);
    if (fd < 0)
        return fd;
    l = malloc(sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    baton__slink_init(l, fd, kind, BATON__S_RX_SERVER);
    if (c->tls) {
        /* The server must prove the deployment's name, or the address we
         * were sent to: a MOVE cannot send us to a server of someone
         * else's. */
        char host[64];
        const char *name = c->o.tls_server_name;
        if (!name || !*name) {
            baton__saddr_host(&a, host, sizeof(host));
            name = host;
        }
        if ((r = baton__slink_tls(l, c->tls, false, name, &c->tls_sess)) < 0) {
            baton__slink_release(l);
            free(l);
            return r;
        }
    }
    if ((r = baton__slink_watch(l, c->epfd, l)) < 0) {
        baton__slink_release(l);
        free(l);
        return r;
    }
    *ret = l;
    return 0;
}

static void lose(baton_session_client *c, int err, const char *why)
{
    if (c->state == C_DEAD)
        return;
    set_err(c, err ? BATON_SESSION_LOG_WARNING : BATON_SESSION_LOG_INFO, "session %s: %s: %s",
            c->hex[0] ? c->hex : "(new)", why, baton_session_strerror(err));
    c->state = C_DEAD;
    link_close(c, &c->cur);
    link_close(c, &c->nxt);
    c->ping_at = 0;
    arm(c, 0);
    if (c->o.on_lost)
        c->o.on_lost(c->o.ctx, c, err);
}

/* Write what the session owes the server on the current link. */
static void flush(baton_session_client *c)
{
    struct baton__slink *l = c->cur;
    uint64_t before = c->out_sent;
    int r;

    if (c->nxt && c->nxt->connected) {
        r = baton__slink_flush(c->nxt);
        if (r < 0) {
            c->nxt->eof = true;
            c->nxt->err = r;
        } else {
            (void)baton__slink_watch(c->nxt, c->epfd, c->nxt);
            if (!c->resume_sent && c->nxt->woff == c->nxt->wlen) {
                /* From now on the next server may have the session: only
                 * it (RESUMED, CLOSE, its link breaking) or the current
                 * server (STAY) may end the move. Our own timer becomes a
                 * last resort against two servers that both hang. */
                c->resume_sent = true;
                arm(c, c->o.timeout_ms > INT_MAX / RESUMED_WAIT_FACTOR
                           ? INT_MAX
                           : c->o.timeout_ms * RESUMED_WAIT_FACTOR);
            }
        }
    }
    if (!l || !l->connected)
        return;
    if (c->state == C_LIVE) {
        if (baton__s_encode_data(l, &c->q, &c->out_sent, c->in_handled) < 0)
            return;
        if (c->out_sent != before)
            c->in_acked_sent = c->in_handled;
        if (c->in_handled > c->in_acked_sent) {
            uint8_t *p = baton__slink_put(l, BATON__S_ACK, 8);
            if (p) {
                baton__s_put64(p, c->in_handled);
                c->in_acked_sent = c->in_handled;
            }
        }
    }
    if (l->woff < l->wlen)
        c->last_out_ms = baton__s_now_ms();
    r = baton__slink_flush(l);
    if (r < 0) {
        l->eof = true;
        l->err = r;
    } else {
        (void)baton__slink_watch(l, c->epfd, l);
    }
}

/* The move is off: stay with the current server if it is still there. */
static void move_failed(baton_session_client *c, int err, const char *why)
{
    uint64_t pause = baton__s_now_us() - c->move_start_us;

    link_close(c, &c->nxt);
    if (!c->cur) {
        /* Neither server holds the session for us any more: it is lost,
         * whatever the next server said (the message keeps that). */
        lose(c, -ECONNABORTED, why);
        return;
    }
    set_err(c, BATON_SESSION_LOG_WARNING, "session %s: move to %s called off: %s: %s", c->hex,
            c->naddr, why, baton_session_strerror(err));
    c->state = C_LIVE;
    arm(c, 0);
    if (c->o.on_moved)
        c->o.on_moved(c->o.ctx, c, c->naddr, err, pause);
}

static int start_move(baton_session_client *c, const struct baton__sframe *f)
{
    uint8_t *p;
    int r;

    if (c->nxt)
        link_close(c, &c->nxt);
    memcpy(c->naddr, f->u.move.addr, f->u.move.addr_len);
    c->naddr[f->u.move.addr_len] = 0;
    if (c->state != C_MOVING)
        c->move_start_us = baton__s_now_us();
    c->state = C_MOVING;
    c->resume_sent = false;
    if ((r = link_open(c, c->naddr, K_NXT, &c->nxt)) < 0) {
        move_failed(c, r, "connect to the next server");
        return 0;
    }
    p = baton__slink_put(c->nxt, BATON__S_RESUME, 56);
    if (!p)
        return -ENOMEM;
    memcpy(p, c->id, 16);
    memcpy(p + 16, f->u.move.token, 32);
    baton__s_put64(p + 48, c->in_handled);
    arm(c, c->o.timeout_ms);
    return 0;
}

static int on_data(baton_session_client *c, const struct baton__sframe *f)
{
    uint64_t ack = f->u.data.ack;

    if (ack > c->q.base + c->q.count)
        return -EBADMSG;
    if (ack > c->q.base) {
        baton__squeue_ack(&c->q, ack);
        if (c->out_sent < ack)
            c->out_sent = ack;
    }
    if (f->type == BATON__S_ACK)
        return 0;
    if (f->u.data.seq <= c->in_handled)
        return 0; /* already handled (resent after a move) */
    if (f->u.data.seq != c->in_handled + 1)
        return -EPROTO;
    c->o.on_message(c->o.ctx, c, f->u.data.data, f->u.data.len);
    c->in_handled++;
    return 0;
}

/* A CLOSE from the server ends the session: keep its text in the message. */
static void close_why(baton_session_client *c, const struct baton__sframe *f, const char *what)
{
    char why[BATON__S_TEXT_MAX + 64];

    baton__s_fmt(why, sizeof(why), "%s (%.*s)", what, (int)f->u.close.text_len, f->u.close.text);
    lose(c, baton__s_code_err(f->u.close.code), why);
}

static int on_cur_frame(baton_session_client *c, const struct baton__sframe *f)
{
    struct baton__sframe a;

    switch (f->type) {
    case BATON__S_WELCOME:
        if (c->state != C_OPENING)
            return -EPROTO;
        memcpy(c->id, f->u.welcome.id, BATON__S_ID_LEN);
        baton__s_hex(c->id, c->hex);
        c->state = C_LIVE;
        arm(c, 0);
        ping(c); /* learn the server's idle limit from its PONG */
        if (c->o.on_open)
            c->o.on_open(c->o.ctx, c);
        return 0;
    case BATON__S_DATA:
        return c->state == C_OPENING ? -EPROTO : on_data(c, f);
    case BATON__S_ACK:
        if (c->state == C_OPENING)
            return -EPROTO;
        a = *f;
        a.u.data.ack = f->u.ack.count;
        return on_data(c, &a);
    case BATON__S_MOVE:
        return c->state == C_OPENING ? -EPROTO : start_move(c, f);
    case BATON__S_PONG:
        if (c->state == C_OPENING)
            return -EPROTO;
        /* A third of the limit leaves two thirds of it for the PING to
         * arrive, and lets one timer tick be late. */
        c->ping_ms = f->u.pong.idle_ms / 3;
        if (f->u.pong.idle_ms && !c->ping_ms)
            c->ping_ms = 1;
        c->ping_at = c->ping_ms ? c->last_out_ms + c->ping_ms : 0;
        rearm(c);
        return 0;
    case BATON__S_STAY:
        if (c->state == C_OPENING)
            return -EPROTO;
        if (c->state == C_MOVING)
            move_failed(c, -ECANCELED, "the server called the move off");
        return 0; /* a late one, after the move ended otherwise */
    case BATON__S_CLOSE:
        if (c->state == C_MOVING) {
            link_close(c, &c->cur);
            return 0;
        }
        close_why(c, f, "closed by the server");
        return 0;
    }
    return -EPROTO;
}

static int on_nxt_frame(baton_session_client *c, const struct baton__sframe *f)
{
    uint64_t h;

    if (f->type == BATON__S_CLOSE) {
        char why[BATON__S_TEXT_MAX + 40];
        baton__s_fmt(why, sizeof(why), "next server: %.*s", (int)f->u.close.text_len,
                     f->u.close.text);
        move_failed(c, baton__s_code_err(f->u.close.code) ?: -ECONNABORTED, why);
        return 0;
    }
    if (f->type != BATON__S_RESUMED)
        return -EPROTO;
    h = f->u.ack.count;
    if (h < c->q.base || h > c->q.base + c->q.count) {
        baton__slink_put_close(c->nxt, BATON__SC_BAD_ACK, "RESUMED count out of range");
        (void)baton__slink_flush(c->nxt);
        lose(c, -EBADMSG, "RESUMED acknowledges more than was sent");
        return 0;
    }
    baton__squeue_ack(&c->q, h);
    c->out_sent = h;
    c->in_acked_sent = 0; /* tell the new server our count at once */
    link_close(c, &c->cur);
    c->cur = c->nxt;
    c->cur->kind = K_CUR;
    c->nxt = NULL;
    strcpy(c->addr, c->naddr);
    if (c->cur->tls_resumed)
        set_err(c, BATON_SESSION_LOG_DEBUG, "session %s: moved to %s (TLS session resumed)", c->hex,
                c->addr);
    c->state = C_LIVE;
    arm(c, 0);
    /* The next server may keep another idle limit: learn it afresh. */
    c->ping_ms = c->ping_at = 0;
    ping(c);
    if (c->o.on_moved)
        c->o.on_moved(c->o.ctx, c, c->addr, 0, baton__s_now_us() - c->move_start_us);
    return 0;
}

static void link_ended(baton_session_client *c, struct baton__slink *l);

static void handle(baton_session_client *c, struct baton__slink *l, uint32_t ev)
{
    struct baton__sframe f;
    int kind = l->kind, r;

    if (!l->connected && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int e = 0;
        socklen_t el = sizeof(e);
        getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e) {
            if (kind == K_NXT)
                move_failed(c, -e, "connect to the next server");
            else
                lose(c, -e, "connect");
            return;
        }
        l->connected = true;
    }
    if (baton__slink_readable(l, ev))
        (void)baton__slink_read(l);
    while (c->state != C_DEAD && (kind == K_CUR ? c->cur == l : c->nxt == l) &&
           (r = baton__slink_next(l, &f)) != 0) {
        if (r >= 0)
            r = kind == K_CUR ? on_cur_frame(c, &f) : on_nxt_frame(c, &f);
        if (r < 0) {
            baton__slink_put_close(l, baton__s_err_code(r), baton_session_strerror(r));
            (void)baton__slink_flush(l);
            if (kind == K_NXT) {
                move_failed(c, r, "bad frame from the next server");
            } else if (c->state == C_MOVING) {
                link_close(c, &c->cur);
            } else {
                lose(c, r, "bad frame from the server");
            }
            return;
        }
        /* A RESUMED on the next link makes it the current one. */
        if (kind == K_NXT && c->cur == l)
            kind = K_CUR;
    }
    if (c->state == C_DEAD || (c->cur != l && c->nxt != l) || !l->eof)
        return;
    link_ended(c, l);
}

/* A link reached its end (l->eof): what that means for the session. A TLS
 * failure keeps its own error (-EACCES: the server's certificate or ours
 * refused) and says why. */
static void link_ended(baton_session_client *c, struct baton__slink *l)
{
    char why[160];
    int err = l->err && l->err != -ECONNRESET ? l->err : -ECONNRESET;

    if (l->tls_why)
        baton__s_fmt(why, sizeof(why), "%s: TLS: %s",
                     l == c->nxt ? "the next server" : "the server", l->tls_why);
    if (l == c->nxt)
        move_failed(c, err, l->tls_why ? why : "the next server closed the connection");
    else if (c->state == C_MOVING)
        link_close(c, &c->cur); /* the old server let go; wait for RESUMED */
    else if (c->state == C_OPENING || (l->tls_why && !l->tls_done))
        lose(c, err, l->tls_why ? why : "the server closed the connection");
    else
        lose(c, -ECONNABORTED,
             l->tls_why ? why : "the server went away without handing the session on");
}

static void on_timer(baton_session_client *c)
{
    int64_t now = baton__s_now_ms();
    uint64_t x;

    if (read(c->timerfd, &x, sizeof(x)) <= 0)
        return;
    if (c->ping_at && now >= c->ping_at)
        ping_due(c, now);
    if (c->tmo_at && now >= c->tmo_at) {
        c->tmo_at = 0;
        if (c->state == C_OPENING)
            lose(c, -ETIMEDOUT, "no answer from the server");
        else if (c->state == C_MOVING)
            move_failed(c, -ETIMEDOUT, "no answer from the next server");
    }
    rearm(c);
}

BATON_SESSION_EXPORT int baton_session_client_dispatch(baton_session_client *c)
{
    struct epoll_event ev[8];
    int n;

    if (!c)
        return -EINVAL;
    if (c->in_dispatch)
        return -EBUSY;
    n = epoll_wait(c->epfd, ev, 8, 0);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    c->in_dispatch = true;
    for (int i = 0; i < n && c->state != C_DEAD; i++) {
        struct baton__slink *l = ev[i].data.ptr;
        if (!l) {
            on_timer(c);
            continue;
        }
        if (l != c->cur && l != c->nxt)
            continue; /* closed earlier in this round */
        handle(c, l, ev[i].events);
    }
    if (c->state != C_DEAD)
        flush(c);
    if (c->state != C_DEAD && c->nxt && c->nxt->eof)
        link_ended(c, c->nxt);
    if (c->state == C_LIVE && c->cur && c->cur->eof)
        lose(c, -ECONNABORTED, c->cur->tls_why ? c->cur->tls_why : "the connection broke");
    c->in_dispatch = false;
    return 0;
}

BATON_SESSION_EXPORT int baton_session_client_connect(const struct baton_session_client_options *o,
                                                      const char *address,
                                                      baton_session_client **ret)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    baton_session_client *c;
    struct baton__saddr a;
    int r;

    if (!o || !ret || !o->on_message || o->timeout_ms < 0 ||
        !baton__resv_zero(o->resv, sizeof(o->resv)) || baton__saddr_parse(address, &a) < 0 ||
        (o->insecure && (o->tls_ca_file || o->tls_server_name)))
        return -EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->o = *o;
    if (!o->insecure) {
        struct baton__tls_conf tc = {
            .server = false, .verify = true, .ca = o->tls_ca_file, .resume = true};
        if ((r = baton__tls_ctx_new(&tc, &c->tls, c->err, sizeof(c->err))) < 0) {
            if (o->log)
                o->log(o->ctx, BATON_SESSION_LOG_ERR, c->err);
            free(c);
            return r;
        }
    }
    if (!c->o.timeout_ms)
        c->o.timeout_ms = 5000;
    c->timerfd = -1;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (c->epfd < 0) {
        r = -errno;
        goto fail;
    }
    c->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (c->timerfd < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->timerfd, &e) < 0) {
        r = -errno;
        goto fail;
    }
    if ((r = link_open(c, address, K_CUR, &c->cur)) < 0)
        goto fail;
    if (!baton__slink_put(c->cur, BATON__S_HELLO, 0)) {
        r = -ENOMEM;
        goto fail;
    }
    strcpy(c->addr, address);
    c->state = C_OPENING;
    arm(c, c->o.timeout_ms);
    *ret = c;
    return 0;
fail:
    link_close(c, &c->cur);
    if (c->timerfd >= 0)
        close(c->timerfd);
    if (c->epfd >= 0)
        close(c->epfd);
    baton__tls_ctx_free(c->tls);
    free(c);
    return r;
}

BATON_SESSION_EXPORT void baton_session_client_free(baton_session_client *c)
{
    if (!c)
        return;
    link_close(c, &c->cur);
    link_close(c, &c->nxt);
    baton__squeue_free(&c->q);
    close(c->timerfd);
    close(c->epfd);
    SSL_SESSION_free(c->tls_sess);
    baton__tls_ctx_free(c->tls);
    free(c);
}

BATON_SESSION_EXPORT int baton_session_client_fd(const baton_session_client *c)
{
    return c ? c->epfd : -EINVAL;
}

BATON_SESSION_EXPORT int baton_session_client_send(baton_session_client *c, const void *data,
                                                   size_t len)
{
    int r;

    if (!c || (!data && len))
        return -EINVAL;
    if (len > BATON_SESSION_MSG_MAX)
        return -EMSGSIZE;
    if (c->state == C_DEAD)
        return -ENOTCONN;
    if ((r = baton__squeue_room(&c->q, len)) < 0)
        return r;
    if ((r = baton__squeue_push(&c->q, data, (uint32_t)len)) < 0)
        return r;
    if (!c->in_dispatch)
        flush(c);
    return 0;
}

BATON_SESSION_EXPORT int baton_session_client_close(baton_session_client *c)
{
    if (!c)
        return -EINVAL;
    if (c->state == C_DEAD)
        return -ENOTCONN;
    if (c->cur && c->cur->connected) {
        flush(c);
        baton__slink_put_close(c->cur, BATON__SC_OK, "closed by the client");
        (void)baton__slink_flush(c->cur);
    }
    c->state = C_DEAD;
    link_close(c, &c->cur);
    link_close(c, &c->nxt);
    c->ping_at = 0;
    arm(c, 0);
    return 0;
}

BATON_SESSION_EXPORT int baton_session_client_alive(const baton_session_client *c)
{
    return c && c->state != C_DEAD;
}

BATON_SESSION_EXPORT const char *baton_session_client_id(const baton_session_client *c)
{
    return c ? c->hex : "";
}

BATON_SESSION_EXPORT const char *baton_session_client_address(const baton_session_client *c)
{
    return c ? c->addr : "";
}

BATON_SESSION_EXPORT const char *baton_session_client_last_error(const baton_session_client *c)
{
    return c ? c->err : "";
}

BATON_SESSION_EXPORT const char *baton_session_strerror(int err)
{
    switch (err) {
    case 0:
        return "closed normally";
    case -ECONNABORTED:
        return "session lost (its server went away before handing it on)";
    case -EACCES:
        return "refused: authentication failed (a resume token, a peer key or a TLS "
               "certificate)";
    case -ENOENT:
        return "unknown session";
    case -EPROTO:
        return "protocol error (malformed or unexpected frame)";
    case -EPROTONOSUPPORT:
        return "unsupported protocol version";
    case -EMSGSIZE:
        return "frame or message too large";
    case -EBADMSG:
        return "a counter acknowledges more than was sent";
    case -ETIMEDOUT:
        return "timed out (a deadline or the idle limit passed)";
    case -ECONNRESET:
        return "connection reset";
    case -ECONNREFUSED:
        return "connection refused";
    case -ENOBUFS:
        return "too many unacknowledged messages";
    case -EXDEV:
        return "session handed to another server";
    case -ENOTCONN:
        return "session ended";
    case -ESHUTDOWN:
        return "server shutting down";
    case -ECANCELED:
        return "move called off by the server";
    case -EUSERS:
        return "server full: it holds as many sessions as it may";
    case -EINVAL:
        return "invalid argument";
    }
    return err < 0 ? strerror(-err) : "unknown";
}
