/* SPDX-License-Identifier: MIT */
/*
 * The next server's side of a move: the sessions the current server
 * announced (OFFER, one struct expect each), a client's RESUME turned
 * into a TAKE, and the current server's answer: EXPORT, imported as a
 * session of ours, or REFUSE.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server-internal.h"

static struct expect *find_expect(baton_session_server *srv, const uint8_t *id)
{
    for (struct expect *e = srv->ehash[baton__srv_hkey(id)]; e; e = e->hnext)
        if (memcmp(e->id, id, BATON__S_ID_LEN) == 0)
            return e;
    return NULL;
}

void baton__srv_expect_free(baton_session_server *srv, struct expect *e)
{
    struct expect **pp = &srv->ehash[baton__srv_hkey(e->id)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    baton__list_del(&e->node);
    if (e->client)
        e->client->pending = NULL;
    free(e);
}

bool baton__srv_expects_tick(baton_session_server *srv, int64_t now)
{
    struct expect *e, *n;
    bool busy = false;

    baton__list_foreach_safe(e, n, &srv->expects, node)
    {
        busy = true;
        if (now >= e->deadline && !e->client)
            baton__srv_expect_free(srv, e);
    }
    return busy;
}

/* Sessions announced over k and not yet exported are lost for the clients
 * waiting here. */
void baton__srv_take_peer_down(baton_session_server *srv, struct slink *k)
{
    struct expect *e, *n;

    /* Sessions it gave us forget it; relays kept for it alone end. Only
     * an authenticated link can have given us any: anyone may open and
     * drop the others, and must not cost us a walk of every session. */
    if (k->pstate == P_READY)
        baton__srv_fwd_link_down(srv, k);
    baton__list_foreach_safe(e, n, &srv->expects, node)
    {
        if (e->peer_link != k)
            continue;
        if (e->client) {
            struct slink *c = e->client;
            e->client = NULL;
            c->pending = NULL;
            baton__srv_link_refuse(
                srv, c, -ECONNABORTED,
                "session lost: the current server went away before handing it over");
        }
        baton__srv_expect_free(srv, e);
    }
}

/* A RESUME refused before anything was asked of the current server:
 * anyone may send one, so it is logged once per episode. */
static int resume_refuse(baton_session_server *srv, struct slink *k, int err, const char *why)
{
    char who[64];

    baton__srv_refuse_log(srv, EP_CLIENT, "client %s: RESUME refused: %s",
                          baton__srv_link_who(k, who, sizeof(who)), why);
    baton__srv_link_refuse(srv, k, err, why);
    return 0;
}

/* A client presents a session id and token. We ask the server that
 * announced the session to hand it over (TAKE); it checks the token,
 * which only it knows. */
int baton__srv_on_resume(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    struct expect *e = find_expect(srv, f->u.resume.id);
    baton_session *held = baton__srv_session_find(srv, f->u.resume.id);
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
    if (!held && baton__srv_full(srv, k, "RESUME"))
        return 0;
    p = baton__slink_put(&e->peer_link->l, BATON__S_TAKE, 48);
    if (!p)
        return -ENOMEM;
    memcpy(p, f->u.resume.id, 16);
    memcpy(p + 16, f->u.resume.token, 32);
    baton__srv_link_flush(srv, e->peer_link);
    e->client = k;
    e->handled = f->u.resume.handled;
    e->takes++;
    k->pending = e;
    baton__slink_allow(&k->l, BATON__S_RX_CLIENT_RESUMING);
    return 0;
}

void baton__srv_on_offer(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
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
        e->hnext = srv->ehash[baton__srv_hkey(id)];
        srv->ehash[baton__srv_hkey(id)] = e;
        baton__list_add(&srv->expects, &e->node);
    }
    baton__srv_arm_timer(srv);
    p = baton__slink_put(&k->l, BATON__S_OFFERED, 8);
    if (p) {
        baton__s_put32(p, f->u.offer.batch);
        baton__s_put32(p + 4, f->u.offer.n);
    }
}

void baton__srv_on_refuse(baton_session_server *srv, const struct baton__sframe *f)
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
    baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING, "resume refused by the current server: %s",
                       baton_session_strerror(err));
    baton__srv_link_refuse(srv, c, err,
                           err == -EACCES ? "resume token refused: forged, replayed or stale"
                                          : "the current server refused to hand the session over: "
                                            "go on there");
    /* A forged token must not spoil the real client's move. */
    if (err != -EACCES)
        baton__srv_expect_free(srv, e);
}

static int import_session(baton_session_server *srv, struct slink *k, struct slink *c, uint64_t h,
                          const struct baton__sframe *f)
{
    baton_session *s, *old = baton__srv_session_find(srv, f->u.exp.id);
    const uint8_t *m = f->u.exp.msgs;
    uint8_t *p;
    int r = 0;

    /* We held this session before and have not heard the confirmation of
     * its last move yet: the session came back, so it was taken. */
    if (old && old->state == S_FROZEN)
        baton__srv_move_done(srv, old);
    else if (old)
        return -EEXIST;
    /* A handle of ours is still remote (keep_moved, or a relay): the
     * session comes back to it. */
    old = baton__srv_session_lookup(srv, f->u.exp.id);
    if (old) {
        s = old;
        baton__srv_reunite(srv, s, k);
    } else {
        s = baton__srv_session_new(srv, f->u.exp.id);
        if (!s)
            return -ENOMEM;
    }
    /* The server that gave it to us may forward to it. */
    baton__srv_origin_add(s, k);
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
        baton__srv_session_end(s);
        baton__srv_fwd_ended(s, -ECONNABORTED);
        baton__srv_link_refuse(srv, c, -ECONNABORTED,
                               "session lost: the next server could not import it");
        return 0;
    }
    /* baton__srv_on_export() checked h against the EXPORT's counters. */
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
    baton__srv_mark_dirty(s);
    return 0;
}

static void decline(struct slink *k, const uint8_t *id)
{
    uint8_t *p = baton__slink_put(&k->l, BATON__S_DECLINE, 16);

    if (p)
        memcpy(p, id, 16);
}

void baton__srv_on_export(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
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
        baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING,
                           "EXPORT of a session whose client went away: declined");
        decline(k, f->u.exp.id);
        if (e && !e->takes && (!e->client || e->client->dead))
            baton__srv_expect_free(srv, e);
        return;
    }
    /* Sessions opened since the RESUME may have filled the server: decline,
     * and the current server keeps the session for its client. */
    held = baton__srv_session_find(srv, f->u.exp.id);
    if (!(held && held->state == S_FROZEN) && baton__srv_full(srv, e->client, "RESUME")) {
        decline(k, f->u.exp.id);
        baton__srv_expect_free(srv, e);
        return;
    }
    /* The client's count must lie between what it acknowledged and what
     * was sent. Checked before TAKEN, so that a bad count costs only the
     * move: DECLINE, and the current server keeps the session. */
    c = e->client;
    h = e->handled;
    if (h < f->u.exp.out_acked || h > f->u.exp.out_seq) {
        decline(k, f->u.exp.id);
        baton__srv_expect_free(srv, e);
        baton__srv_link_refuse(srv, c, -EBADMSG,
                               h < f->u.exp.out_acked
                                   ? "RESUME count is below what the client acknowledged"
                                   : "RESUME count acknowledges more than was sent");
        return;
    }
    p = baton__slink_put(&k->l, BATON__S_TAKEN, 16);
    if (p)
        memcpy(p, f->u.exp.id, 16);
    e->client = NULL;
    c->pending = NULL;
    baton__srv_expect_free(srv, e);
    if (import_session(srv, k, c, h, f) < 0)
        baton__srv_link_refuse(srv, c, -ECONNABORTED, "session lost: import failed");
}
