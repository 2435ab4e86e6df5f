/* SPDX-License-Identifier: MIT */
/*
 * Messages that follow a moved session, and the servers' own channel
 * (docs/session-protocol.md, "Forwarding").
 *
 * While a session leaves (S_FROZEN: its EXPORT is out, TAKEN not
 * in), what the application sends it is held. TAKEN: the held messages go
 * to the next server as FORWARD frames on the link the EXPORT went on, so
 * they arrive behind the session's queue. Called off: they go back in the
 * queue here, in order.
 *
 * After TAKEN the handle may stay as a remote session (keep_moved, or a
 * relay when servers that gave us the session forward through us): its
 * sends become FORWARDs on that link. The next server delivers each to the
 * session if it holds it, holds it if the session is leaving there too, or
 * forwards it on. A session that ends is reported back along the chain
 * (GONE); a handle that no longer forwards says so ahead (RELEASE).
 *
 * A session that comes back to a server that still has a remote handle
 * for it (reunite) gets that handle again. Our forwards may still be on
 * their way through the servers it went through, and they would come back
 * behind anything we queue now; so we send FLUSH along the same path and
 * hold what the application sends until it comes back (or the link it
 * went on breaks, or move_timeout_ms passes), queueing what comes back
 * before it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server-internal.h"

/* The kinds of held entries (their first byte). */
enum { H_MSG = 0, H_FLUSH = 1 };

/* What the application may leave unwritten on one peer link. */
#define FWD_WBUF_MAX (16u << 20)

void baton__srv_link_later(baton_session_server *srv, struct slink *k)
{
    if (k && !k->dead && baton__list_empty(&k->fnode))
        baton__list_add_tail(&srv->pflush, &k->fnode);
}

static int put_id(baton_session_server *srv, struct slink *k, uint8_t type, const uint8_t *id,
                  const void *data, size_t len)
{
    uint8_t *p;

    if (!k || k->dead)
        return -ENOTCONN;
    p = baton__slink_put(&k->l, type, (uint32_t)(16 + len));
    if (!p)
        return -ENOMEM;
    memcpy(p, id, 16);
    if (len)
        memcpy(p + 16, data, len);
    baton__srv_link_later(srv, k);
    return 0;
}

int baton__srv_hold(baton_session *s, bool flush, const void *data, size_t len)
{
    uint8_t *e = malloc(len + 1);
    int r;

    if (!e)
        return -ENOMEM;
    e[0] = flush ? H_FLUSH : H_MSG;
    if (len)
        memcpy(e + 1, data, len);
    r = baton__squeue_push(&s->held, e, (uint32_t)(len + 1));
    free(e);
    return r;
}

/* Would len more bytes put k over what may wait unwritten on it? */
static bool link_full(const struct slink *k, size_t len)
{
    return k->l.wlen - k->l.woff + len > FWD_WBUF_MAX;
}

int baton__srv_forward(baton_session *s, const void *data, size_t len)
{
    struct slink *k = s->fwd;
    int r;

    if (!k || k->dead)
        return -ENOTCONN;
    if (link_full(k, len))
        return -ENOBUFS;
    r = put_id(s->srv, k, BATON__S_FORWARD, s->id, data, len);
    if (r == 0)
        s->sent_fwd = true;
    return r;
}

static void held_clear(baton_session *s)
{
    baton__squeue_free(&s->held);
    memset(&s->held, 0, sizeof(s->held));
}

bool baton__srv_fwd_taken(baton_session_server *srv, baton_session *s, struct slink *k)
{
    bool keep;

    if (s->held.count)
        s->sent_fwd = true;
    for (uint64_t i = s->held.base + 1; i <= s->held.base + s->held.count; i++) {
        const struct baton__smsg *m = baton__squeue_get(&s->held, i);
        if (m->data[0] == H_FLUSH)
            (void)put_id(srv, k, BATON__S_FLUSH, s->id, NULL, 0);
        else
            (void)put_id(srv, k, BATON__S_FORWARD, s->id, m->data + 1, m->len - 1);
    }
    held_clear(s);
    /* Kept if the application keeps the handle, if servers forward
     * through us, or if our own forwards are on their way (the session
     * may come back before they arrive: it must find the record, and
     * flush). Otherwise the next server need not keep us as an origin. */
    keep = k && !k->dead && ((srv->o.keep_moved && s->app) || s->norigins || s->sent_fwd);
    if (!keep)
        (void)put_id(srv, k, BATON__S_RELEASE, s->id, NULL, 0);
    return keep;
}

/* The session cannot take what it is sent: its client does not keep up.
 * It ends, and says so (CLOSE(OVERLOAD), on_close, GONE). */
static void overload(baton_session *s)
{
    baton_session_server *srv = s->srv;
    struct slink *k = s->link;

    baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING,
                       "session %s: its queue is full with forwarded messages: closed", s->hex);
    if (k) {
        baton__srv_link_refuse(srv, k, -ENOBUFS, "queue full: the client does not keep up");
        k->s = NULL;
        s->link = NULL;
    }
    baton__srv_session_close(s, -ENOBUFS);
}

/* Put what s held in its queue, behind what is there; false if s ended. */
static bool held_to_queue(baton_session *s)
{
    bool ok = true;

    for (uint64_t i = s->held.base + 1; ok && i <= s->held.base + s->held.count; i++) {
        const struct baton__smsg *m = baton__squeue_get(&s->held, i);
        if (m->data[0] != H_MSG)
            continue;
        ok = baton__squeue_room(&s->q, m->len - 1) == 0 &&
             baton__squeue_push(&s->q, m->data + 1, m->len - 1) == 0;
    }
    held_clear(s);
    if (!ok) {
        overload(s);
        return false;
    }
    baton__srv_mark_dirty(s);
    return true;
}

void baton__srv_fwd_requeue(baton_session *s)
{
    /* A FLUSH held here was on its way to the server we were handing the
     * session to; the move is off, so it has no one to go back to. */
    if (s->held.count)
        (void)held_to_queue(s);
}

static void reunite_end(baton_session *s, bool timed_out)
{
    if (timed_out)
        baton__srv_set_err(s->srv, BATON_SESSION_LOG_WARNING,
                           "session %s came back, and our FLUSH did not: sends released", s->hex);
    s->reuniting = false;
    s->flush_link = NULL;
    s->deadline = 0;
    (void)held_to_queue(s);
}

/* A forward we cannot take (a leaving session's hold is full, or the link
 * we would forward it on is): its sender is told its route is gone
 * (GONE(OVERLOAD): its handle ends with -ENOBUFS) and forwards no more
 * through us, rather than lose messages silently or grow without bound. */
static void refuse_forward(baton_session_server *srv, baton_session *s, struct slink *k)
{
    uint8_t c[4];

    baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING,
                       "session %s: a forward that cannot be held: its sender's route ends",
                       s->hex);
    baton__s_put32(c, BATON__SC_OVERLOAD);
    (void)put_id(srv, k, BATON__S_GONE, s->id, c, 4);
}

static bool held_full(const baton_session *s, size_t len)
{
    return s->held.count >= 2 * BATON_SESSION_QUEUE_MAX ||
           s->held.bytes + len > 2 * BATON_SESSION_QUEUE_BYTES;
}

bool baton__srv_reunite_tick(baton_session *s, int64_t now)
{
    if (!s->reuniting || s->state == S_DEAD)
        return false;
    if (now >= s->deadline) {
        reunite_end(s, true);
        return false;
    }
    return true;
}

void baton__srv_reunite(baton_session_server *srv, baton_session *s, struct slink *k)
{
    struct slink *old = s->fwd;

    s->fwd = NULL;
    s->state = S_ACTIVE;
    s->app = true;
    s->mpeer = NULL;
    s->move_sent = s->token_ok = s->sent_fwd = false;
    s->back = k;
    srv->count++;
    baton__squeue_free(&s->q);
    memset(&s->q, 0, sizeof(s->q));
    held_clear(s);
    if (old && !old->dead && put_id(srv, old, BATON__S_FLUSH, s->id, NULL, 0) == 0) {
        (void)put_id(srv, old, BATON__S_RELEASE, s->id, NULL, 0);
        s->reuniting = true;
        s->flush_link = old;
        s->deadline = baton__s_now_ms() + srv->o.move_timeout_ms;
        baton__srv_arm_timer(srv);
    }
}

void baton__srv_origin_add(baton_session *s, struct slink *k)
{
    struct slink **n;

    for (unsigned i = 0; i < s->norigins; i++)
        if (s->origins[i] == k)
            return;
    n = realloc(s->origins, (s->norigins + 1) * sizeof(*n));
    if (!n)
        return; /* it cannot be told GONE: its handle ends with its link */
    n[s->norigins++] = k;
    s->origins = n;
}

/* A relay nobody forwards through any more, and whose own forwards cannot
 * come back to it: it ends, and tells the server ahead. */
static void relay_check(baton_session *s)
{
    if (s->state != S_REMOTE || s->app || s->norigins || s->sent_fwd)
        return;
    (void)put_id(s->srv, s->fwd, BATON__S_RELEASE, s->id, NULL, 0);
    s->state = S_DEAD;
}

static void origin_remove(baton_session *s, struct slink *k)
{
    for (unsigned i = 0; i < s->norigins; i++) {
        if (s->origins[i] != k)
            continue;
        s->origins[i] = s->origins[--s->norigins];
        relay_check(s);
        return;
    }
}

void baton__srv_fwd_ended(baton_session *s, int err)
{
    uint32_t code = baton__s_err_code(err);
    uint8_t c[4];

    baton__s_put32(c, code);
    for (unsigned i = 0; i < s->norigins; i++)
        (void)put_id(s->srv, s->origins[i], BATON__S_GONE, s->id, c, 4);
    free(s->origins);
    s->origins = NULL;
    s->norigins = 0;
}

void baton__srv_remote_end(baton_session *s, int err)
{
    baton_session_server *srv = s->srv;

    if (s->state != S_REMOTE)
        return;
    baton__srv_fwd_ended(s, err);
    (void)put_id(srv, s->fwd, BATON__S_RELEASE, s->id, NULL, 0);
    s->state = S_DEAD;
    if (s->app && srv->o.on_close)
        srv->o.on_close(srv->o.ctx, s, err);
}

void baton__srv_fwd_link_down(baton_session_server *srv, struct slink *k)
{
    baton_session *s;

    if (!k)
        return;
    baton__list_foreach(s, &srv->sessions, node)
    {
        if (s->state == S_DEAD)
            continue;
        if (s->state == S_REMOTE && s->fwd == k) {
            s->fwd = NULL;
            baton__srv_remote_end(s, -ECONNRESET);
            continue;
        }
        if (s->reuniting && (s->flush_link == k || s->back == k))
            reunite_end(s, false);
        if (s->state != S_DEAD)
            origin_remove(s, k);
    }
}

/* A FORWARD (data) or FLUSH (flush) for session s arrived on k. */
static void deliver(baton_session_server *srv, struct slink *k, baton_session *s, bool flush,
                    const uint8_t *data, uint32_t len)
{
    switch (s->state) {
    case S_ACTIVE:
    case S_MOVING:
        if (flush) {
            /* Ours, back along the path: what we held may go now. */
            if (s->reuniting && k == s->back)
                reunite_end(s, false);
            return;
        }
        /* While it comes back, what comes on its way back (ours, and what
         * passed through us earlier) goes first; what comes another way
         * (a server forwarding to us directly now) may have been sent
         * after something still on its way back: it waits its turn. */
        if (s->reuniting && k != s->back) {
            if (held_full(s, len) || baton__srv_hold(s, false, data, len) < 0)
                refuse_forward(srv, s, k);
            return;
        }
        if (baton__squeue_room(&s->q, len) < 0 || baton__squeue_push(&s->q, data, len) < 0) {
            overload(s);
            return;
        }
        baton__srv_mark_dirty(s);
        return;
    case S_FROZEN:
        if (held_full(s, len) || baton__srv_hold(s, flush, data, len) < 0)
            refuse_forward(srv, s, k);
        return;
    case S_REMOTE:
        if (!s->fwd || s->fwd->dead || link_full(s->fwd, len)) {
            refuse_forward(srv, s, k);
            return;
        }
        (void)put_id(srv, s->fwd, flush ? BATON__S_FLUSH : BATON__S_FORWARD, s->id, data, len);
        return;
    }
}

void baton__srv_on_fwd_frame(baton_session_server *srv, struct slink *k,
                             const struct baton__sframe *f)
{
    baton_session *s;
    uint8_t c[4];

    if (f->type == BATON__S_PMSG) {
        if (srv->o.on_peer_message)
            srv->o.on_peer_message(srv->o.ctx, f->u.fwd.data, f->u.fwd.len);
        else
            baton__srv_refuse_log(srv, EP_PEER,
                                  "a message from a peer server dropped: no on_peer_message");
        return;
    }
    if (f->type == BATON__S_GONE) {
        s = baton__srv_session_lookup(srv, f->u.refuse.id);
        /* Only the server we forward to speaks for the session's end; a
         * session back here ignores what its old path says. */
        if (s && s->state == S_REMOTE && s->fwd == k)
            baton__srv_remote_end(s, baton__s_code_err(f->u.refuse.code));
        /* Our FLUSH met a server that no longer knew the session: it will
         * not come back, and neither will anything behind it. */
        else if (s && s->reuniting && s->flush_link == k)
            reunite_end(s, true);
        return;
    }
    s = baton__srv_session_lookup(srv, f->u.fwd.id);
    if (f->type == BATON__S_RELEASE) {
        if (s)
            origin_remove(s, k);
        return;
    }
    if (!s) {
        /* Ended here (the GONE crossed this) or never here: the sender's
         * handle ends with it, and says so to its application. */
        baton__srv_refuse_log(srv, EP_PEER, "%s for a session not here: answered GONE",
                              baton__sframe_name(f->type));
        baton__s_put32(c, BATON__SC_UNKNOWN);
        (void)put_id(srv, k, BATON__S_GONE, f->u.fwd.id, c, 4);
        return;
    }
    deliver(srv, k, s, f->type == BATON__S_FLUSH, f->u.fwd.data, f->u.fwd.len);
}

void baton__srv_pmsgs_send(baton_session_server *srv, struct peer *p)
{
    struct slink *k = p->link;

    if (!k || k->dead || k->pstate != P_READY)
        return;
    for (uint64_t i = p->pmsgs.base + 1; i <= p->pmsgs.base + p->pmsgs.count; i++) {
        const struct baton__smsg *m = baton__squeue_get(&p->pmsgs, i);
        uint8_t *d = baton__slink_put(&k->l, BATON__S_PMSG, m->len);
        if (!d)
            break;
        memcpy(d, m->data, m->len);
    }
    baton__squeue_free(&p->pmsgs);
    memset(&p->pmsgs, 0, sizeof(p->pmsgs));
    baton__srv_link_later(srv, k);
}

void baton__srv_pmsgs_drop(baton_session_server *srv, struct peer *p)
{
    if (!p->pmsgs.count)
        return;
    baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING,
                       "peer %s: %zu application message(s) dropped: the link could not be opened",
                       p->name, p->pmsgs.count);
    baton__squeue_free(&p->pmsgs);
    memset(&p->pmsgs, 0, sizeof(p->pmsgs));
}

/* ---- public calls ---- */

BATON_SESSION_EXPORT int baton_session_state(const baton_session *s)
{
    if (!s)
        return BATON_SESSION_ENDED;
    switch (s->state) {
    case S_ACTIVE:
        return BATON_SESSION_HERE;
    case S_MOVING:
        return BATON_SESSION_MOVING;
    case S_FROZEN:
        return BATON_SESSION_LEAVING;
    case S_REMOTE:
        return BATON_SESSION_REMOTE;
    }
    return BATON_SESSION_ENDED;
}

BATON_SESSION_EXPORT int baton_session_release(baton_session *s)
{
    if (!s)
        return -EINVAL;
    if (s->state != S_REMOTE || !s->app)
        return -EBUSY;
    s->app = false;
    s->data = NULL;
    relay_check(s);
    if (!s->srv->in_dispatch)
        baton__srv_settle(s->srv);
    return 0;
}

BATON_SESSION_EXPORT int baton_session_server_send_peer(baton_session_server *srv, const char *peer,
                                                        const void *data, size_t len)
{
    struct peer *p;
    struct slink *k;
    uint8_t *d;
    int r;

    if (!srv || !peer || (!data && len))
        return -EINVAL;
    if (len > BATON_SESSION_MSG_MAX)
        return -EMSGSIZE;
    if (!srv->key) {
        baton__srv_set_err(srv, BATON_SESSION_LOG_ERR, "send_peer: this server has no peer key");
        return -EINVAL;
    }
    p = baton__srv_peer_find(srv, peer);
    if (!p) {
        baton__srv_set_err(srv, BATON_SESSION_LOG_ERR, "send_peer: no peer named %s", peer);
        return -ENOENT;
    }
    k = p->link;
    if (k && !k->dead && k->pstate == P_READY && !p->pmsgs.count) {
        if (link_full(k, len))
            return -ENOBUFS;
        d = baton__slink_put(&k->l, BATON__S_PMSG, (uint32_t)len);
        if (!d)
            return -ENOMEM;
        if (len)
            memcpy(d, data, len);
        baton__srv_link_later(srv, k);
    } else {
        if (p->pmsgs.count >= BATON_SESSION_QUEUE_MAX || p->pmsgs.bytes + len > FWD_WBUF_MAX)
            return -ENOBUFS;
        if ((r = baton__squeue_push(&p->pmsgs, data, (uint32_t)len)) < 0)
            return r;
        if (!p->link && (r = baton__srv_peer_connect(srv, p)) < 0) {
            baton__srv_peer_down(srv, p, r);
            return r;
        }
    }
    if (!srv->in_dispatch)
        baton__srv_settle(srv);
    return 0;
}
