/* SPDX-License-Identifier: MIT */
/*
 * Connection handoff: the superseded owner passes live connections, each
 * with an opaque state, to its successor over the link that the takeover
 * left open.
 *
 * A connection is confirmed (ACK) only when the successor's application
 * takes it in baton_conn_accept(), and confirmed before it gets the fd.
 * Until then the old owner keeps its fd and the connection is its to serve.
 * When the old owner gives up waiting, it shuts its receiving side first:
 * an ACK sent after that fails with EPIPE, so the successor knows the
 * connection is not its own and closes its copy. A connection is thus
 * never served by both processes, and never by neither while one lives.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* ---- successor side ---------------------------------------------------- */

static void conn_signal(baton *b)
{
    uint64_t one = 1;
    if (write(b->connfd, &one, sizeof(one)) < 0) {
        /* Cannot overflow: the counter is drained when the queue empties. */
    }
}

static void conn_unsignal(baton *b)
{
    uint64_t junk;
    if (read(b->connfd, &junk, sizeof(junk)) < 0) {
        /* Not signalled: nothing to drain. */
    }
}

/* The unconfirmed connections: ours if the predecessor is gone (nobody
 * else will serve them), else its own (it gave up on us), so we close
 * our copies. Deciding waits up to 200 ms for the predecessor to die,
 * with b->mu held: the application's baton_conn_accept() waits too. So
 * only when there is something to decide: after every handed connection
 * was confirmed, the link ends as a predecessor exits, and waiting for its
 * teardown (a few ms, up to the 200) stalled the connections the
 * successor had just taken. */
static void resolve_unconfirmed(baton *b)
{
    bool keep;

    if (b->cq_acked == b->cq_n)
        return;
    keep = baton__pid_gone(b->pred_pid, 200);
    for (size_t i = b->cq_acked; i < b->cq_n && !keep; i++) {
        close(b->cq[i].fd);
        free(b->cq[i].state);
    }
    if (keep)
        b->cq_acked = b->cq_n;
    else
        b->cq_n = b->cq_acked;
}

static void pred_end(baton *b, const char *why)
{
    if (why)
        baton__log(b, BATON_LOG_WARNING, "link to predecessor pid %d: %s", (int)b->pred_pid, why);
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->pred_fd, NULL);
    epoll_ctl(b->connep, EPOLL_CTL_DEL, b->pred_fd, NULL);
    close(b->pred_fd);
    b->pred_fd = -1;
    b->pred_done = true;
    resolve_unconfirmed(b);
    conn_signal(b);
}

static int cq_push(baton *b, int fd, uint32_t id, const uint8_t *state, uint32_t len)
{
    struct baton__qconn *q;

    if (b->cq_n == b->cq_cap) {
        size_t cap = b->cq_cap ? b->cq_cap * 2 : 256;
        void *v = realloc(b->cq, cap * sizeof(*b->cq));
        if (!v)
            return -ENOMEM;
        b->cq = v;
        b->cq_cap = cap;
    }
    q = &b->cq[b->cq_n];
    q->state = NULL;
    if (len) {
        if (!(q->state = malloc(len)))
            return -ENOMEM;
        memcpy(q->state, state, len);
    }
    q->fd = fd;
    q->id = id;
    q->len = len;
    b->cq_n++;
    return 0;
}

/* Take one CONN message into the queue. On failure no fd stays open and
 * the batch is not confirmed, so the predecessor keeps those connections. */
static int take_conns(baton *b, const struct baton__msg *m, int *fds, size_t nfds)
{
    size_t start = b->cq_n;
    int r = 0;

    if (nfds != m->u.conn.count)
        r = -EPROTO;
    for (uint32_t i = 0; i < m->u.conn.count && r == 0; i++) {
        const struct baton__wire_conn *c = &m->u.conn.conns[i];
        r = cq_push(b, fds[i], c->id, c->state, c->len);
    }
    if (r < 0) {
        for (size_t i = start; i < b->cq_n; i++)
            free(b->cq[i].state);
        b->cq_n = start;
        baton__close_fds(fds, nfds);
        return r;
    }
    conn_signal(b);
    return 0;
}

/* The link to our predecessor is readable: connections, DONE, or its end.
 * Called by the dispatcher with b->mu held. */
void baton__pred_event(baton *b)
{
    struct baton__msg m;
    size_t len, nfds;
    int fds[BATON__BATCH_MAX], r;

    while (b->pred_fd >= 0) {
        r = baton__recv(b->pred_fd, b->txbuf, BATON__MSG_MAX, fds, BATON__BATCH_MAX, &len, &nfds);
        if (r == -EAGAIN)
            return;
        if (r < 0) {
            pred_end(b, r == -ECONNRESET ? NULL : strerror(-r));
            return;
        }
        if (baton__msg_decode(b->txbuf, len, &m) < 0) {
            baton__close_fds(fds, nfds);
            pred_end(b, "malformed message");
            return;
        }
        /* Connections after DONE would wait for an application that has
         * stopped looking: refuse them, and the predecessor keeps them. */
        if (m.type == BATON__MSG_CONN && (b->opts.flags & BATON_TAKE_CONNS) && !b->pred_done) {
            r = take_conns(b, &m, fds, nfds);
            if (r < 0) {
                pred_end(b, r == -EPROTO ? "connections without their fds" : strerror(-r));
                return;
            }
        } else if (m.type == BATON__MSG_DONE && nfds == 0) {
            b->pred_done = true;
            conn_signal(b);
        } else {
            baton__close_fds(fds, nfds);
            pred_end(b, "unexpected message");
            return;
        }
    }
}

/* Confirm every queued, unconfirmed connection in ACKs of up to
 * BATON__ACK_MAX ids. Called with b->mu held. */
static int confirm(baton *b)
{
    uint32_t ids[256];
    char buf[BATON__HDR_LEN + 4 + sizeof(ids)];
    uint64_t deadline = baton__now_ms() + 1000;

    while (b->cq_acked < b->cq_n) {
        uint32_t k = 0;
        int r;

        while (k < 256 && b->cq_acked + k < b->cq_n) {
            ids[k] = b->cq[b->cq_acked + k].id;
            k++;
        }
        r = baton__send(b->pred_fd, buf, baton__enc_ack(buf, ids, k), NULL, 0);
        if (r == -EAGAIN && baton__wait_fd(b->pred_fd, POLLOUT, deadline) == 0)
            continue;
        if (r < 0)
            return r;
        b->cq_acked += k;
    }
    return 0;
}

BATON_EXPORT int baton_conn_fd(const baton *b)
{
    return b ? b->connep : -EINVAL;
}

BATON_EXPORT int baton_conn_accept(baton *b, void *state_buf, size_t buf_len, size_t *ret_len)
{
    struct baton__qconn *q;
    int fd;

    BATON__ARG(b && ret_len && (state_buf || !buf_len));
    pthread_mutex_lock(&b->mu);
    /* Read the link ourselves rather than wait for the dispatcher to wake:
     * in a burst of thousands that saves a thread switch per batch. */
    if (b->cq_head == b->cq_n && b->pred_fd >= 0)
        baton__pred_event(b);
    if (b->cq_head == b->cq_acked && b->cq_acked < b->cq_n && confirm(b) < 0)
        pred_end(b, "confirming connections failed");
    if (b->cq_head == b->cq_acked) {
        bool done = b->pred_done;
        if (!done)
            conn_unsignal(b);
        pthread_mutex_unlock(&b->mu);
        return done ? -ENOTCONN : -EAGAIN;
    }
    q = &b->cq[b->cq_head];
    if (q->len > buf_len) {
        *ret_len = q->len;
        pthread_mutex_unlock(&b->mu);
        return baton__fail(b, EMSGSIZE, "baton_conn_accept: the state is %u bytes, the buffer %zu",
                           q->len, buf_len);
    }
    if (q->len)
        memcpy(state_buf, q->state, q->len);
    *ret_len = q->len;
    fd = q->fd;
    free(q->state);
    baton__fault("s-mid-conns");
    if (++b->cq_head == b->cq_n) {
        b->cq_head = b->cq_acked = b->cq_n = 0;
        if (!b->pred_done)
            conn_unsignal(b);
    }
    pthread_mutex_unlock(&b->mu);
    return fd;
}

void baton__conn_free(baton *b)
{
    for (size_t i = b->cq_head; i < b->cq_n; i++) {
        close(b->cq[i].fd);
        free(b->cq[i].state);
    }
    free(b->cq);
    b->cq = NULL;
    b->cq_head = b->cq_acked = b->cq_n = 0;
}

/* ---- old owner's side -------------------------------------------------- */

static struct baton__peer *successor_link(baton *b)
{
    for (int i = 0; i < BATON__MAX_PEERS; i++)
        if (b->peers[i].fd >= 0 && b->peers[i].phase == BATON__PEER_SUCCESSOR)
            return &b->peers[i];
    return NULL;
}

/* Borrow the link from the dispatcher for a handoff. */
static int link_take(baton *b, struct baton__peer **ret)
{
    struct baton__peer *p;
    int r = 0;

    pthread_mutex_lock(&b->mu);
    p = successor_link(b);
    if (!p)
        r = baton__fail(b, ENOTCONN, "baton_handoff: no successor link");
    else if (!p->takes_conns)
        r = baton__fail(b, EOPNOTSUPP, "baton_handoff: the successor takes no connections");
    else if (b->handoff_busy)
        r = baton__fail(b, EBUSY, "baton_handoff: a handoff is in progress");
    else if (b->handoff_ended)
        r = baton__fail(b, EPIPE, "baton_handoff: baton_handoff_done() was called");
    if (r == 0) {
        b->handoff_busy = p->app_busy = true;
        epoll_ctl(b->epfd, EPOLL_CTL_DEL, p->fd, NULL);
        *ret = p;
    }
    pthread_mutex_unlock(&b->mu);
    return r;
}

static void link_give_back(baton *b, struct baton__peer *p, bool broken)
{
    pthread_mutex_lock(&b->mu);
    p->app_busy = false;
    b->handoff_busy = false;
    /* A successor that died meanwhile on probation: its link is of no use. */
    if (broken || b->prob.await_app) {
        baton__drop_peer(b, p, 0, NULL);
    } else {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = baton__peer_tag(b, p)};
        epoll_ctl(b->epfd, EPOLL_CTL_ADD, p->fd, &ev);
    }
    baton__prob_app_done(b);
    pthread_mutex_unlock(&b->mu);
}

struct handoff {
    struct baton_conn *v;
    size_t n, next, waiting, taken;
    uint32_t seq;
    int link;
    char *buf;
};

/* Send as many CONN batches as the link takes; -EAGAIN when it is full. */
static int send_batches(struct handoff *h)
{
    while (h->next < h->n) {
        int fds[BATON__BATCH_MAX];
        size_t len = baton__conn_begin(), k = 0, end = h->next;
        int r;

        for (; end < h->n && k < BATON__BATCH_MAX; end++) {
            struct baton_conn *c = &h->v[end];
            if (c->result != -EINPROGRESS)
                continue;
            if (baton__conn_add(h->buf, &len, h->seq + end, c->state, c->len) < 0)
                break;
            fds[k++] = c->fd;
        }
        if (k == 0) {
            h->next = end;
            continue;
        }
        baton__conn_end(h->buf, len, k);
        r = baton__send(h->link, h->buf, BATON__HDR_LEN + len, fds, k);
        if (r < 0)
            return r;
        if (h->next == 0)
            baton__fault("o-mid-conns");
        h->next = end;
    }
    return 0;
}

/* Read ACKs; 0, -EAGAIN when none waits, or -errno when the link ended. */
static int read_acks(baton *b, struct handoff *h)
{
    struct baton__msg m;
    size_t len, nfds;
    int fds[BATON__BATCH_MAX], r;

    for (;;) {
        r = baton__recv(h->link, h->buf, BATON__MSG_MAX, fds, BATON__BATCH_MAX, &len, &nfds);
        if (r < 0)
            return r;
        if (nfds) {
            baton__close_fds(fds, nfds);
            return -EPROTO;
        }
        if (baton__msg_decode(h->buf, len, &m) < 0 || m.type != BATON__MSG_ACK)
            return -EPROTO;
        size_t was = h->taken;
        for (uint32_t i = 0; i < m.u.ack.count; i++) {
            uint32_t idx = baton__get32(m.u.ack.ids + 4 * i) - h->seq;
            if (idx < h->n && h->v[idx].result == -EINPROGRESS) {
                h->v[idx].result = 0;
                h->taken++;
                h->waiting--;
            }
        }
        /* Counted as they are confirmed: lost if it dies on probation. */
        pthread_mutex_lock(&b->mu);
        b->handed += (unsigned)(h->taken - was);
        pthread_mutex_unlock(&b->mu);
    }
}

/* Pipeline: keep the link full of CONN batches while reading ACKs, until
 * every connection is confirmed, the link ends, or the deadline passes. */
static int run_handoff(baton *b, struct handoff *h)
{
    uint64_t deadline = baton__now_ms() + b->opts.ready_timeout_ms;
    int r;

    while (h->waiting) {
        struct pollfd p = {.fd = h->link, .events = POLLIN};
        uint64_t now = baton__now_ms();

        r = send_batches(h);
        if (r == -EAGAIN) {
            p.events |= POLLOUT;
        } else if (r < 0) {
            /* The successor is gone (EPIPE, ECONNRESET), but what it
             * confirmed before it went is still in our receive queue:
             * those connections are its, and must not be taken back. */
            read_acks(b, h);
            return r;
        }
        r = read_acks(b, h);
        if (r != -EAGAIN)
            return r < 0 ? r : -EPROTO;
        if (!h->waiting)
            break;
        if (now >= deadline) {
            /* Close the door first, then take what was confirmed before
             * it closed: later ACKs fail with EPIPE at the successor. */
            shutdown(h->link, SHUT_RD);
            read_acks(b, h);
            return -ETIMEDOUT;
        }
        if (poll(&p, 1, (int)(deadline - now)) < 0 && errno != EINTR)
            return -errno;
    }
    return 0;
}

static int check_conn(struct baton_conn *c)
{
    int type;
    socklen_t l = sizeof(type);

    if (c->len > BATON_CONN_STATE_MAX)
        return -EMSGSIZE;
    if (!c->state && c->len)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(c->resv) / sizeof(c->resv[0]); i++)
        if (c->resv[i])
            return -EINVAL;
    if (getsockopt(c->fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
        return errno == ENOTSOCK ? -ENOTSOCK : -EBADF;
    return -EINPROGRESS;
}

BATON_EXPORT int baton_handoff_batch(baton *b, struct baton_conn *conns, size_t n)
{
    struct handoff h = {.v = conns, .n = n};
    struct baton__peer *p;
    int r;

    BATON__ARG(b && (conns || !n) && n <= UINT32_MAX / 2);
    for (size_t i = 0; i < n; i++)
        if ((conns[i].result = check_conn(&conns[i])) == -EINPROGRESS)
            h.waiting++;
    if (!h.waiting)
        return 0;
    r = link_take(b, &p);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            if (conns[i].result == -EINPROGRESS)
                conns[i].result = r;
        return r;
    }
    h.link = p->fd;
    h.seq = b->conn_seq;
    b->conn_seq += n;
    h.buf = malloc(BATON__MSG_MAX);
    r = h.buf ? run_handoff(b, &h) : -ENOMEM;
    free(h.buf);
    for (size_t i = 0; i < n; i++)
        if (conns[i].result == -EINPROGRESS)
            conns[i].result = r == -ETIMEDOUT ? -ETIMEDOUT : -ECONNRESET;
    if (r < 0)
        baton__fail(b, r, "handoff: %zu of %zu connections stay ours (%s)", h.waiting,
                    h.waiting + h.taken,
                    r == -ETIMEDOUT ? "the successor did not confirm in time"
                                    : "the link to the successor failed");
    link_give_back(b, p, r < 0 && r != -ENOMEM);
    return (int)h.taken;
}

BATON_EXPORT int baton_handoff(baton *b, int fd, const void *state, size_t len)
{
    struct baton_conn c = {.fd = fd, .state = state, .len = len};
    int r = baton_handoff_batch(b, &c, 1);

    return r < 0 ? r : c.result;
}

BATON_EXPORT int baton_handoff_done(baton *b)
{
    char buf[BATON__HDR_LEN];
    struct baton__peer *p;
    int r;

    BATON__ARG(b);
    r = link_take(b, &p);
    if (r == -EOPNOTSUPP)
        return 0; /* nothing was ever handed: nothing to end */
    if (r < 0)
        return r;
    r = baton__send(p->fd, buf, baton__enc_empty(buf, BATON__MSG_DONE), NULL, 0);
    if (r == -EAGAIN &&
        baton__wait_fd(p->fd, POLLOUT, baton__now_ms() + b->opts.ready_timeout_ms) == 0)
        r = baton__send(p->fd, buf, baton__enc_empty(buf, BATON__MSG_DONE), NULL, 0);
    if (r == 0)
        b->handoff_ended = true;
    link_give_back(b, p, r < 0);
    return r < 0 ? baton__fail(b, r, "baton_handoff_done") : 0;
}
