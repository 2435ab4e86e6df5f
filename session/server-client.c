/* SPDX-License-Identifier: MIT */
/*
 * Sessions and their client links: a session's life (new, end, close,
 * free), HELLO, the frames of a session (DATA, ACK, PING, CLOSE), its
 * flush, and the public calls on a session. A RESUME is the next
 * server's side of a move (server-take.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server-internal.h"

baton_session *baton__srv_session_new(baton_session_server *srv, const uint8_t *id)
{
    baton_session *s = calloc(1, sizeof(*s));
    unsigned h;

    if (!s)
        return NULL;
    s->srv = srv;
    s->app = true;
    memcpy(s->id, id, BATON__S_ID_LEN);
    baton__s_hex(id, s->hex);
    h = baton__srv_hkey(id);
    s->hnext = srv->hash[h];
    srv->hash[h] = s;
    baton__list_init(&s->mnode);
    baton__list_init(&s->dnode);
    baton__list_add(&srv->sessions, &s->node);
    srv->count++;
    return s;
}

baton_session *baton__srv_session_lookup(baton_session_server *srv, const uint8_t *id)
{
    for (baton_session *s = srv->hash[baton__srv_hkey(id)]; s; s = s->hnext)
        if (s->state != S_DEAD && memcmp(s->id, id, BATON__S_ID_LEN) == 0)
            return s;
    return NULL;
}

baton_session *baton__srv_session_find(baton_session_server *srv, const uint8_t *id)
{
    baton_session *s = baton__srv_session_lookup(srv, id);

    return s && s->state != S_REMOTE ? s : NULL;
}

void baton__srv_session_end(baton_session *s)
{
    baton_session_server *srv = s->srv;

    if (s->state == S_DEAD)
        return;
    if (s->state == S_REMOTE) {
        s->state = S_DEAD;
        return;
    }
    if (s->mcall) {
        /* Ended with no callback of its own (a move done or a close clear
         * this first): the call still gets its outcome. */
        struct move_call *mc = s->mcall;
        s->mcall = NULL;
        baton__srv_move_call_outcome(srv, mc, false);
    }
    baton__srv_move_detach(s);
    s->state = S_DEAD;
    srv->count--;
    if (s->link) {
        s->link->s = NULL;
        baton__srv_link_kill(srv, s->link);
        s->link = NULL;
    }
}

void baton__srv_session_close(baton_session *s, int err)
{
    baton_session_server *srv = s->srv;
    struct move_call *mc = s->mcall;

    if (s->state == S_DEAD)
        return;
    if (s->state == S_REMOTE) {
        baton__srv_remote_end(s, err);
        return;
    }
    s->mcall = NULL;
    baton__srv_session_end(s);
    /* Servers that forward to it learn that it ended, and how. */
    baton__srv_fwd_ended(s, err);
    if (srv->o.on_close)
        srv->o.on_close(srv->o.ctx, s, err);
    /* A moving session that ended: its call's outcome is "not moved". */
    baton__srv_move_call_outcome(srv, mc, false);
}

void baton__srv_session_free(baton_session_server *srv, baton_session *s)
{
    baton_session **pp = &srv->hash[baton__srv_hkey(s->id)];

    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    baton__list_del(&s->node);
    baton__list_del(&s->mnode);
    baton__list_del(&s->dnode);
    baton__squeue_free(&s->q);
    baton__squeue_free(&s->held);
    free(s->origins);
    free(s);
}

void baton__srv_mark_dirty(baton_session *s)
{
    if (baton__list_empty(&s->dnode))
        baton__list_add(&s->srv->dirty, &s->dnode);
}

/* The session loses its client link k, which is killed, and ends. */
static void session_drop(baton_session_server *srv, baton_session *s, struct slink *k, int err)
{
    s->link = NULL;
    k->s = NULL;
    baton__srv_link_kill(srv, k);
    baton__srv_session_close(s, err);
}

void baton__srv_client_error(baton_session_server *srv, struct slink *k, int err, int ep,
                             const char *what)
{
    char text[200], who[64];

    baton__s_fmt(text, sizeof(text), "%s: %s", what, baton_session_strerror(err));
    baton__srv_refuse_log(srv, ep, "client %s, session %s: %s; connection closed",
                          baton__srv_link_who(k, who, sizeof(who)), k->s ? k->s->hex : "(none yet)",
                          text);
    baton__srv_link_refuse(srv, k, err, text);
    if (k->pending) {
        k->pending->client = NULL;
        k->pending = NULL;
    }
    if (k->s)
        session_drop(srv, k->s, k, err);
}

void baton__srv_client_eof(baton_session_server *srv, struct slink *k)
{
    baton__srv_link_kill(srv, k);
    if (k->pending) {
        k->pending->client = NULL;
        k->pending = NULL;
    }
    if (k->s)
        session_drop(srv, k->s, k, -ECONNRESET);
}

void baton__srv_session_flush(baton_session *s)
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
    baton__srv_link_flush(srv, k);
    if (k->l.eof)
        session_drop(srv, s, k, k->l.err ? k->l.err : -ECONNRESET);
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

/* The answer tells the client how often to ping. One PONG waits unsent
 * at most: a client that pings and never reads must not make us queue an
 * answer to each. */
static int on_ping(baton_session_server *srv, struct slink *k)
{
    uint8_t *p;

    k->pings = true;
    if (k->l.pong)
        return 0;
    p = baton__slink_put(&k->l, BATON__S_PONG, 4);
    if (!p)
        return k->l.eof ? 0 : -ENOMEM;
    baton__s_put32(p, (uint32_t)srv->o.idle_timeout_ms);
    k->l.pong = true;
    baton__srv_mark_dirty(k->s);
    return 0;
}

static int on_session_frame(baton_session_server *srv, struct slink *k,
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
        baton__srv_mark_dirty(s);
        return 0;
    case BATON__S_ACK:
        return session_ack(s, f->u.ack.count);
    case BATON__S_PING:
        return on_ping(srv, k);
    case BATON__S_CLOSE:
        session_drop(srv, s, k, baton__s_code_err(f->u.close.code));
        return 0;
    }
    return -EPROTO;
}

/* At the session cap a new session is refused with CLOSE(FULL), which the
 * client library reports as -EUSERS; the sessions held are untouched. */
bool baton__srv_full(baton_session_server *srv, struct slink *k, const char *what)
{
    char who[64];

    if (srv->count < (size_t)srv->o.max_sessions)
        return false;
    baton__srv_refuse_log(srv, EP_FULL,
                          "client %s: %s refused: the server holds %zu sessions, its maximum "
                          "(max_sessions)",
                          baton__srv_link_who(k, who, sizeof(who)), what, srv->count);
    baton__srv_link_refuse(srv, k, -EUSERS, "server full: it holds as many sessions as it may");
    return true;
}

static int on_hello(baton_session_server *srv, struct slink *k)
{
    uint8_t id[BATON__S_ID_LEN], *p;
    baton_session *s;
    int r;

    if (baton__srv_full(srv, k, "HELLO"))
        return 0;
    if ((r = baton__s_random(id, sizeof(id))) < 0)
        return r;
    s = baton__srv_session_new(srv, id);
    if (!s)
        return -ENOMEM;
    p = baton__slink_put(&k->l, BATON__S_WELCOME, BATON__S_ID_LEN);
    if (!p) {
        baton__srv_session_end(s);
        return -ENOMEM;
    }
    memcpy(p, id, BATON__S_ID_LEN);
    s->link = k;
    k->s = s;
    k->deadline = 0;
    baton__slink_allow(&k->l, BATON__S_RX_CLIENT);
    if (srv->o.on_open)
        srv->o.on_open(srv->o.ctx, s);
    baton__srv_mark_dirty(s);
    return 0;
}

void baton__srv_on_client_frame(baton_session_server *srv, struct slink *k,
                                const struct baton__sframe *f)
{
    int r = -EPROTO;

    if (k->s)
        r = on_session_frame(srv, k, f);
    else if (k->pending)
        r = -EPROTO; /* nothing may come before RESUMED */
    else if (f->type == BATON__S_HELLO)
        r = on_hello(srv, k);
    else if (f->type == BATON__S_RESUME)
        r = baton__srv_on_resume(srv, k, f);
    else if (f->type == BATON__S_CLOSE) {
        baton__srv_link_kill(srv, k);
        r = 0;
    }
    if (r < 0) {
        char what[64];
        baton__s_fmt(what, sizeof(what), "%s frame", baton__sframe_name(f->type));
        baton__srv_client_error(srv, k, r, EP_CLIENT, what);
    }
}

/* ---- the public calls on a session ---- */

BATON_SESSION_EXPORT int baton_session_send(baton_session *s, const void *data, size_t len)
{
    int r;

    if (!s || (!data && len))
        return -EINVAL;
    if (len > BATON_SESSION_MSG_MAX)
        return -EMSGSIZE;
    if (s->state == S_DEAD)
        return -ENOTCONN;
    if (s->state == S_REMOTE) {
        r = baton__srv_forward(s, data, len);
    } else if (s->state == S_FROZEN || s->reuniting) {
        /* Held: it follows the session, or comes back to its queue, and
         * then it must fit there behind what is queued now. */
        if (s->q.count + s->held.count >= BATON_SESSION_QUEUE_MAX ||
            s->q.bytes + s->held.bytes + len > BATON_SESSION_QUEUE_BYTES)
            return -ENOBUFS;
        r = baton__srv_hold(s, false, data, len);
    } else {
        if ((r = baton__squeue_room(&s->q, len)) < 0)
            return r;
        if ((r = baton__squeue_push(&s->q, data, (uint32_t)len)) == 0)
            baton__srv_mark_dirty(s);
    }
    if (r < 0)
        return r;
    if (!s->srv->in_dispatch)
        baton__srv_settle(s->srv);
    return 0;
}

BATON_SESSION_EXPORT int baton_session_close(baton_session *s)
{
    if (!s)
        return -EINVAL;
    if (s->state == S_DEAD)
        return -ENOTCONN;
    if (s->state == S_FROZEN || s->state == S_REMOTE)
        return -EXDEV;
    if (s->link) {
        baton__srv_session_flush(s);
        if (s->link)
            baton__srv_link_refuse(s->srv, s->link, 0, "closed by the server");
    }
    baton__srv_session_close(s, 0);
    if (!s->srv->in_dispatch)
        baton__srv_settle(s->srv);
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
