/* SPDX-License-Identifier: MIT */
/*
 * The current server's side of a move: sessions wait in a queue per peer
 * for a place in its window, are announced to the next server (OFFER),
 * their clients are told where to go (MOVE), and the next server's TAKE
 * is answered with the session (EXPORT) once the client's token is
 * checked. TAKEN ends the session here; DECLINE, a deadline or the peer
 * link going down call the move off.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "server-internal.h"

/* A move is a straggler after this long, or 8 times the usual, if more. */
#define STRAGGLER_MS 250

/* It leaves its peer's lists and frees its place in the window. */
void baton__srv_move_detach(baton_session *s)
{
    baton__list_del(&s->mnode);
    if (s->mpeer && s->offered) {
        if (s->straggler)
            s->mpeer->stragglers--;
        else
            s->mpeer->inflight--;
    }
    s->offered = s->straggler = false;
}

void baton__srv_move_call_outcome(baton_session_server *srv, struct move_call *mc, bool moved)
{
    if (!mc)
        return;
    if (moved)
        mc->moved++;
    else
        mc->failed++;
    if (--mc->left)
        return;
    if (srv->o.on_move_done)
        srv->o.on_move_done(srv->o.ctx, mc->peer, mc->moved, mc->failed);
    free(mc);
}

static void move_fail(baton_session *s, int err)
{
    baton_session_server *srv = s->srv;
    struct move_call *mc = s->mcall;

    s->mcall = NULL;
    baton__srv_move_detach(s);
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
            baton__srv_session_close(s, -ECONNABORTED);
            baton__srv_move_call_outcome(srv, mc, false);
            return;
        }
        /* What was sent while it was leaving is its again, in order. */
        baton__srv_fwd_requeue(s);
        if (s->state == S_DEAD) {
            baton__srv_move_call_outcome(srv, mc, false);
            return;
        }
    }
    if (s->state == S_MOVING)
        s->state = S_ACTIVE;
    /* A moving client does not ping: its idle time starts afresh. */
    if (s->link)
        s->link->last_in_ms = baton__s_now_ms();
    baton__srv_mark_dirty(s);
    if (srv->o.on_moved)
        srv->o.on_moved(srv->o.ctx, s, err);
    baton__srv_move_call_outcome(srv, mc, false);
}

void baton__srv_moves_fail(baton_session_server *srv, struct peer *p, int err)
{
    baton_session *s;

    baton__list_foreach(s, &srv->sessions,
                        node) if (s->mpeer == p && (s->state == S_MOVING || s->state == S_FROZEN))
        move_fail(s, err);
}

void baton__srv_move_done(baton_session_server *srv, baton_session *s)
{
    struct peer *p = s->mpeer;
    struct move_call *mc = s->mcall;
    struct slink *k = p ? p->link : NULL;
    bool keep;

    if (p && s->offered && !s->straggler) {
        int64_t took = baton__s_now_ms() - s->offered_ms;
        p->usual_ms = p->usual_ms ? (7 * p->usual_ms + took) / 8 : took;
    }
    s->mcall = NULL;
    /* What was sent while it left follows it, on the link its EXPORT
     * went on; the handle stays if anyone will forward through it. */
    keep = baton__srv_fwd_taken(srv, s, k);
    baton__srv_session_end(s);
    if (keep) {
        s->state = S_REMOTE;
        s->fwd = k;
        s->app = srv->o.keep_moved && s->app;
        s->deadline = 0;
        baton__squeue_free(&s->q);
        memset(&s->q, 0, sizeof(s->q));
        baton__list_del(&s->dnode);
    }
    if (srv->o.on_moved)
        srv->o.on_moved(srv->o.ctx, s, 0);
    /* A relay is ours alone: the application let go in on_moved(). */
    if (s->state == S_REMOTE && !s->app)
        s->data = NULL;
    baton__srv_move_call_outcome(srv, mc, true);
}

bool baton__srv_moves_tick(baton_session_server *srv, int64_t now)
{
    baton_session *s;
    bool busy = false;

    baton__list_foreach(s, &srv->sessions, node)
    {
        struct peer *p = s->mpeer;
        if (s->reuniting && baton__srv_reunite_tick(s, now))
            busy = true;
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
    return busy;
}

/* How many sessions wait for p, counting no further than max. */
static uint32_t waiting_upto(struct peer *p, uint32_t max)
{
    baton_session *s;
    uint32_t n = 0;

    baton__list_foreach(s, &p->waiting, mnode) if (++n == max) break;
    return n;
}

/* Announce to p as many waiting sessions as the window has room for, in
 * frames of at most BATON__S_OFFER_MAX. A session's move deadline starts
 * here: the next server keeps an announced session about as long. */
void baton__srv_peer_offer(baton_session_server *srv, struct peer *p)
{
    int64_t deadline = baton__s_now_ms() + srv->o.move_timeout_ms;
    unsigned window = (unsigned)srv->o.move_window;

    if (!p->link || p->link->pstate != P_READY)
        return;
    while (!baton__list_empty(&p->waiting) && p->inflight < window) {
        uint32_t n = window - p->inflight;
        uint8_t *f;
        if (n > BATON__S_OFFER_MAX)
            n = BATON__S_OFFER_MAX;
        n = waiting_upto(p, n);
        f = baton__slink_put(&p->link->l, BATON__S_OFFER, 8 + 16 * n);
        if (!f)
            break;
        p->batch++;
        baton__s_put32(f, p->batch);
        baton__s_put32(f + 4, n);
        for (uint32_t i = 0; i < n; i++) {
            baton_session *s = baton__list_first(&p->waiting, baton_session, mnode);
            memcpy(f + 8 + 16 * i, s->id, 16);
            baton__list_del(&s->mnode);
            baton__list_add_tail(&p->offered, &s->mnode);
            s->offered = true;
            s->batch = p->batch;
            s->offered_ms = deadline - srv->o.move_timeout_ms;
            s->deadline = deadline;
            p->inflight++;
        }
        baton__srv_arm_timer(srv);
    }
    baton__srv_link_flush(srv, p->link);
}

void baton__srv_moves_offer(baton_session_server *srv)
{
    struct peer *p;

    baton__list_foreach(p, &srv->peers, node) if (!baton__list_empty(&p->waiting) &&
                                                  p->inflight < (unsigned)srv->o.move_window)
        baton__srv_peer_offer(srv, p);
}

/* The session waits for a place in p's window; its deadline starts when
 * it gets one (baton__srv_peer_offer), and the peer link's handshake has
 * its own. */
static void move_queue(struct peer *p, struct move_call *mc, baton_session *s)
{
    s->state = S_MOVING;
    s->mpeer = p;
    s->mcall = mc;
    mc->left++;
    s->deadline = 0;
    baton__list_add_tail(&p->waiting, &s->mnode);
}

/* The next server knows the sessions of batch: send their clients MOVE.
 * The batch leaves the offered list for one of its own first: a failed
 * MOVE calls on_moved, which may end or move other sessions, and a
 * session that leaves this list is then simply not visited. */
void baton__srv_on_offered(struct peer *p, uint32_t batch)
{
    size_t al = strlen(p->client_addr);
    struct baton__list told;
    baton_session *s, *n;

    baton__list_init(&told);
    baton__list_foreach_safe(s, n, &p->offered, mnode)
    {
        if (s->batch != batch)
            continue;
        baton__list_del(&s->mnode);
        baton__list_add_tail(&told, &s->mnode);
    }
    while (!baton__list_empty(&told)) {
        uint8_t *f;
        s = baton__list_first(&told, baton_session, mnode);
        baton__list_del(&s->mnode);
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
        baton__srv_mark_dirty(s);
    }
}

static void refuse_take(struct slink *k, const uint8_t *id, uint32_t code)
{
    uint8_t *p = baton__slink_put(&k->l, BATON__S_REFUSE, 20);

    if (p) {
        memcpy(p, id, 16);
        baton__s_put32(p + 16, code);
    }
}

/* TAKE: the next server has our client, which showed the token. Check it
 * (one use only), freeze the session and export it. */
void baton__srv_on_take(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    baton_session *s = baton__srv_session_find(srv, f->u.take.id);
    size_t slen = 0, need;
    uint8_t *p;
    int r = 0;

    if (!s || s->state != S_MOVING || !s->mpeer || s->mpeer->link != k || !s->token_ok ||
        !baton__s_equal(s->token, f->u.take.token, BATON__S_TOK_LEN)) {
        baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING,
                           "TAKE with a forged, replayed or stale token refused");
        refuse_take(k, f->u.take.id, s ? BATON__SC_TOKEN : BATON__SC_UNKNOWN);
        return;
    }
    s->token_ok = false;
    if (srv->o.export_state)
        r = srv->o.export_state(srv->o.ctx, s, srv->scratch, BATON_SESSION_STATE_MAX, &slen);
    if (r < 0 || slen > BATON_SESSION_STATE_MAX) {
        refuse_take(k, s->id, BATON__SC_REFUSED);
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

void baton__srv_on_taken(baton_session_server *srv, struct slink *k, const uint8_t *id)
{
    baton_session *s = baton__srv_session_find(srv, id);

    if (s && s->state == S_FROZEN && s->mpeer && s->mpeer->link == k)
        baton__srv_move_done(srv, s);
}

/* DECLINE: the next server did not take the session after all (its
 * client had gone): the move is off and the session is ours again. */
void baton__srv_on_declined(baton_session_server *srv, struct slink *k, const uint8_t *id)
{
    baton_session *s = baton__srv_session_find(srv, id);

    if (s && s->state == S_FROZEN && s->mpeer && s->mpeer->link == k)
        move_fail(s, -ECONNABORTED);
}

BATON_SESSION_EXPORT int baton_session_move(baton_session_server *srv, const char *peer,
                                            baton_session *const *list, size_t n)
{
    struct move_call *mc;
    struct peer *p;
    int count = 0;

    if (!srv || !peer || (!list && n))
        return -EINVAL;
    if (!srv->key) {
        baton__srv_set_err(srv, BATON_SESSION_LOG_ERR, "move: this server has no peer key");
        return -EINVAL;
    }
    p = baton__srv_peer_find(srv, peer);
    if (!p) {
        baton__srv_set_err(srv, BATON_SESSION_LOG_ERR, "move: no peer named %s", peer);
        return -ENOENT;
    }
    mc = calloc(1, sizeof(*mc));
    if (!mc)
        return -ENOMEM;
    snprintf(mc->peer, sizeof(mc->peer), "%s", p->name);
    if (list) {
        for (size_t i = 0; i < n; i++) {
            baton_session *s = list[i];
            /* A session that just came back waits for its FLUSH first. */
            if (!s || s->srv != srv || s->state != S_ACTIVE || !s->link || s->reuniting)
                continue;
            move_queue(p, mc, s);
            count++;
        }
    } else {
        baton_session *s;
        baton__list_foreach(s, &srv->sessions,
                            node) if (s->state == S_ACTIVE && s->link && !s->reuniting)
        {
            move_queue(p, mc, s);
            count++;
        }
    }
    if (count == 0) {
        free(mc);
        return 0;
    }
    baton__srv_arm_timer(srv);
    if (!p->link) {
        int r = baton__srv_peer_connect(srv, p);
        if (r < 0) {
            /* The call fails: its sessions' moves are called off
             * (on_moved), and no on_move_done follows. */
            baton_session *s;
            baton__list_foreach(s, &srv->sessions, node) if (s->mcall == mc) s->mcall = NULL;
            free(mc);
            baton__srv_peer_down(srv, p, r);
            return r;
        }
    } else {
        baton__srv_peer_offer(srv, p);
    }
    return count;
}
