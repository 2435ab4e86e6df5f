/* SPDX-License-Identifier: MIT */
/*
 * Messages follow a moved session (issue #16 part 2): what the application
 * sends to a session while it leaves, after it left, and as it comes back,
 * reaches its client once and in order, wherever the session is.
 *
 *   frozen       messages sent while the session leaves (LEAVING)
 *                are held and follow it; messages to the remote handle are
 *                forwarded; the session comes back to the same handle
 *                while messages keep coming, and none is lost, repeated
 *                or reordered (FLUSH)
 *   calloff      messages held while leaving go back in the queue, in
 *                order, when the move is called off (the next server dies)
 *   chain        A (keep_moved) -> B (no keep_moved: a relay) -> C -> A:
 *                forwards follow the chain and come back in order
 *   gone         a remote handle ends once: on_close(0) when the client
 *                closes at the other server, -ECONNRESET when that
 *                server goes away; release ends it with no callback
 *   peer-message the servers' channel: in order, queued until the link
 *                is up, with clear errors
 *   unknown      an authenticated peer that forwards to a session we do
 *                not hold is answered GONE; nothing else happens
 *   release-return  a handle released while its forward is on its way,
 *                then the session comes back: the forward still comes
 *                first (the record is kept, and the return flushes)
 *   free-callback   baton_session_server_free() with remote handles whose
 *                on_close sends to, or releases, another handle
 *   gone-code    a client that drops at the other server ends the remote
 *                handle with -ECONNRESET, as it ended there
 *   hold-cap     a leaving session holds forwards up to a bound; past it
 *                the sender's handle ends (-ENOBUFS), nothing piles up
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "session-util.h"

int baton__s_hmac(const void *key, size_t key_len, const char *label, const uint8_t *a,
                  const uint8_t *b, uint8_t *mac);

struct app {
    struct ts_server t; /* first: ctx is &t */
    baton_session *opened, *imported, *closed;
    int opens, imports, closes, close_err, moved_ok, moved_err;
    int peer_msgs, peer_errors;
};

static struct app a, b, c;
static struct ts_server *srvs[] = {&a.t, &b.t, &c.t, NULL};
static struct ts_client cl[2];
static int keep_moved; /* of the servers started next */
static uint64_t sent;  /* what the test sent through A's handle */

static void a_open(void *ctx, baton_session *s)
{
    struct app *p = ctx;
    p->opened = s;
    p->opens++;
}

static void a_message(void *ctx, baton_session *s, const void *d, size_t len)
{
    (void)ctx, (void)s, (void)d, (void)len;
}

static void a_close(void *ctx, baton_session *s, int err)
{
    struct app *p = ctx;
    p->closed = s;
    p->closes++;
    p->close_err = err;
}

static int a_import(void *ctx, baton_session *s, const void *d, size_t len)
{
    struct app *p = ctx;
    (void)d, (void)len;
    p->imported = s;
    p->imports++;
    return 0;
}

static void a_moved(void *ctx, baton_session *s, int err)
{
    struct app *p = ctx;
    (void)s;
    if (err)
        p->moved_err++;
    else
        p->moved_ok++;
}

static void a_peer_message(void *ctx, const void *d, size_t len)
{
    struct app *p = ctx;
    char buf[32];
    int n;

    if (len >= sizeof(buf) || (memcpy(buf, d, len), buf[len] = 0, sscanf(buf, "p %d", &n) != 1) ||
        n != p->peer_msgs + 1)
        p->peer_errors++;
    p->peer_msgs++;
}

static void server_hook(struct baton_session_server_options *o)
{
    o->on_open = a_open;
    o->on_message = a_message;
    o->on_close = a_close;
    o->export_state = NULL;
    o->import_state = a_import;
    o->on_moved = a_moved;
    o->on_peer_message = a_peer_message;
    o->on_move_done = NULL;
    o->keep_moved = keep_moved;
}

/* The client checks that the test's messages "m N" come once, in order. */
static void cli_message(void *ctx, baton_session_client *bc, const void *d, size_t len)
{
    struct ts_client *tc = ctx;
    char buf[32];
    unsigned long long n;
    (void)bc;

    if (len >= sizeof(buf)) {
        tc->errors++;
        return;
    }
    memcpy(buf, d, len);
    buf[len] = 0;
    if (sscanf(buf, "m %llu", &n) != 1 || n != tc->got + 1) {
        t_log("client: got \"%s\" after m %llu", buf, (unsigned long long)tc->got);
        tc->errors++;
    }
    tc->got = n;
}

static void client_hook(struct baton_session_client_options *o)
{
    o->on_message = cli_message;
}

static void start(struct app *p, const char *name, int keep)
{
    keep_moved = keep;
    ts_server_start(&p->t, name, TS_KEY);
    memset((char *)p + sizeof(p->t), 0, sizeof(*p) - sizeof(p->t));
}

static void send_m(baton_session *s)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "m %llu", (unsigned long long)sent + 1);

    T_OK(baton_session_send(s, buf, (size_t)n));
    sent++;
}

/* Dispatch one party at a time, and stop as soon as cond holds. */
static bool step_until(bool (*cond)(void), int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited++) {
        struct pollfd p[5];
        int np = 0;
        for (int i = 0; srvs[i]; i++)
            if (srvs[i]->srv)
                p[np++] = (struct pollfd){baton_session_server_fd(srvs[i]->srv), POLLIN, 0};
        for (int i = 0; i < 2; i++)
            if (cl[i].c)
                p[np++] = (struct pollfd){baton_session_client_fd(cl[i].c), POLLIN, 0};
        (void)poll(p, (nfds_t)np, 1);
        for (int i = 0; srvs[i]; i++) {
            if (cond())
                return true;
            if (srvs[i]->srv)
                T_OK(baton_session_server_dispatch(srvs[i]->srv));
        }
        for (int i = 0; i < 2; i++) {
            if (cond())
                return true;
            if (cl[i].c)
                T_OK(baton_session_client_dispatch(cl[i].c));
        }
    }
    return cond();
}

static baton_session *watched;
static bool never(void)
{
    return false;
}
static bool is_leaving(void)
{
    return baton_session_state(watched) == BATON_SESSION_LEAVING;
}
static bool is_remote(void)
{
    return baton_session_state(watched) == BATON_SESSION_REMOTE;
}
static bool is_here(void)
{
    return baton_session_state(watched) == BATON_SESSION_HERE;
}
static bool all_got(void)
{
    return cl[0].got == sent;
}
static bool a_opened(void)
{
    return a.opens == 1;
}
static bool b_has_it(void)
{
    return b.imported != NULL && baton_session_state(b.imported) == BATON_SESSION_HERE &&
           cl[0].moves >= 1;
}

/* A client at A, its handle watched, five messages through. */
static void open_at_a(void)
{
    ts_client_start(&cl[0], a.t.addr);
    T_ASSERT(step_until(a_opened, 3000));
    watched = a.opened;
    T_EQ(baton_session_state(watched), BATON_SESSION_HERE);
    for (int i = 0; i < 5; i++)
        send_m(watched);
    T_ASSERT(step_until(all_got, 3000));
}

static void frozen(void)
{
    baton_session *s;

    start(&a, "A", 1);
    start(&b, "B", 1);
    ts_server_peer(&a.t, "B", &b.t);
    ts_server_peer(&b.t, "A", &a.t);
    open_at_a();
    T_EQ(baton_session_move(a.t.srv, "B", &watched, 1), 1);
    T_EQ(baton_session_state(watched), BATON_SESSION_MOVING);
    T_ASSERT(step_until(is_leaving, 5000));
    /* Held while it leaves (this used to be -EXDEV, and lost). */
    for (int i = 0; i < 5; i++)
        send_m(watched);
    T_ASSERT(step_until(is_remote, 5000));
    T_EQ(a.moved_ok, 1);
    T_EQ(baton_session_server_count(a.t.srv), 0);
    T_EQ(baton_session_close(watched), -EXDEV);
    /* Forwarded to B. */
    for (int i = 0; i < 5; i++)
        send_m(watched);
    T_ASSERT(step_until(all_got, 5000));
    T_EQ(cl[0].got, 15);
    T_ASSERT(step_until(b_has_it, 5000));
    /* B sends it back while A keeps sending, one message per step: some
     * go to B and come back behind the FLUSH, some are held at A. */
    s = b.imported;
    T_EQ(baton_session_move(b.t.srv, "A", &s, 1), 1);
    for (int i = 0; i < 4000 && (cl[0].moves < 2 || !is_here() || a.imports == 0); i++) {
        if (sent - cl[0].got < 200)
            send_m(watched);
        step_until(never, 1);
    }
    T_ASSERT(is_here());
    for (int i = 0; i < 5; i++)
        send_m(watched);
    T_ASSERT(step_until(all_got, 5000));
    /* Back to the same handle: import_state on it, no on_open. */
    T_ASSERT(a.imported == watched);
    T_EQ(a.opens, 1);
    T_EQ(a.closes, 0);
    T_EQ(cl[0].errors, 0);
    T_EQ(cl[0].lost, 0);
    T_EQ(baton_session_server_count(a.t.srv), 1);
    T_EQ(baton_session_server_count(b.t.srv), 0);
    t_log("frozen: %llu messages, every one once and in order, across 2 moves",
          (unsigned long long)sent);
}

static void calloff(void)
{
    start(&a, "A", 1);
    start(&b, "B", 1);
    ts_server_peer(&a.t, "B", &b.t);
    open_at_a();
    T_EQ(baton_session_move(a.t.srv, "B", &watched, 1), 1);
    T_ASSERT(step_until(is_leaving, 5000));
    for (int i = 0; i < 5; i++)
        send_m(watched);
    /* The next server dies before it took the session: the move is off,
     * the held messages are the session's again, in order. */
    ts_server_stop(&b.t);
    T_ASSERT(step_until(is_here, 5000));
    T_EQ(a.moved_err, 1);
    for (int i = 0; i < 5; i++)
        send_m(watched);
    T_ASSERT(step_until(all_got, 5000));
    T_EQ(cl[0].got, 15);
    T_EQ(cl[0].errors, 0);
    T_EQ(cl[0].lost, 0);
}

static bool c_has_it(void)
{
    return c.imported != NULL && baton_session_state(c.imported) == BATON_SESSION_HERE &&
           cl[0].moves >= 2;
}

static void chain(void)
{
    baton_session *s;

    start(&a, "A", 1);
    start(&b, "B", 0); /* B keeps no handles: its relay is the library's own */
    start(&c, "C", 1);
    ts_server_peer(&a.t, "B", &b.t);
    ts_server_peer(&b.t, "C", &c.t);
    ts_server_peer(&c.t, "A", &a.t);
    open_at_a();
    T_EQ(baton_session_move(a.t.srv, "B", &watched, 1), 1);
    T_ASSERT(step_until(b_has_it, 5000));
    send_m(watched);
    s = b.imported;
    T_EQ(baton_session_move(b.t.srv, "C", &s, 1), 1);
    for (int i = 0; i < 4000 && !c_has_it(); i++) {
        if (sent - cl[0].got < 200)
            send_m(watched);
        step_until(never, 1);
    }
    T_ASSERT(c_has_it());
    T_ASSERT(step_until(all_got, 5000));
    T_EQ(baton_session_state(watched), BATON_SESSION_REMOTE);
    /* Home again, through the chain's other side: the FLUSH goes A -> B
     * -> C -> A. */
    s = c.imported;
    T_EQ(baton_session_move(c.t.srv, "A", &s, 1), 1);
    for (int i = 0; i < 4000 && (cl[0].moves < 3 || !is_here() || a.imports == 0); i++) {
        if (sent - cl[0].got < 200)
            send_m(watched);
        step_until(never, 1);
    }
    T_ASSERT(is_here());
    T_ASSERT(step_until(all_got, 5000));
    T_EQ(cl[0].errors, 0);
    T_EQ(cl[0].lost, 0);
    T_ASSERT(a.imported == watched);
    t_log("chain: %llu messages once and in order across A -> B -> C -> A",
          (unsigned long long)sent);
}

static bool two_at_b(void)
{
    return b.imports == 2 && cl[0].moves == 1 && cl[1].moves == 1;
}
static bool a_closed(void)
{
    return a.closes > 0;
}
static bool a_closed2(void)
{
    return a.closes >= 2;
}
static bool a_opened2(void)
{
    return a.opens == 2;
}

static void gone(void)
{
    baton_session *h[3];

    start(&a, "A", 1);
    start(&b, "B", 1);
    ts_server_peer(&a.t, "B", &b.t);
    ts_client_start(&cl[0], a.t.addr);
    T_ASSERT(step_until(a_opened, 3000));
    h[0] = a.opened;
    ts_client_start(&cl[1], a.t.addr);
    T_ASSERT(step_until(a_opened2, 3000));
    h[1] = a.opened;
    T_EQ(baton_session_release(h[0]), -EBUSY); /* not remote */
    T_EQ(baton_session_release(NULL), -EINVAL);
    T_EQ(baton_session_state(NULL), BATON_SESSION_ENDED);
    T_EQ(baton_session_move(a.t.srv, "B", h, 2), 2);
    T_ASSERT(step_until(two_at_b, 5000));
    /* The client closes at B: A's handle ends once, with 0. */
    T_OK(baton_session_client_close(cl[0].c));
    T_ASSERT(step_until(a_closed, 5000));
    T_EQ(a.closes, 1);
    T_ASSERT(a.closed == h[0]);
    T_EQ(a.close_err, 0);
    /* B goes away: the other remote handle ends with -ECONNRESET. */
    ts_server_stop(&b.t);
    T_ASSERT(step_until(a_closed2, 5000));
    T_ASSERT(a.closed == h[1]);
    T_EQ(a.closes, 2);
    T_EQ(a.close_err, -ECONNRESET);
    ts_client_stop(&cl[0]);
    ts_client_stop(&cl[1]);

    /* Released: no callback, ever. */
    start(&b, "B", 1);
    ts_server_stop(&a.t);
    start(&a, "A", 1);
    ts_server_peer(&a.t, "B", &b.t);
    ts_client_start(&cl[0], a.t.addr);
    T_ASSERT(step_until(a_opened, 3000));
    h[2] = watched = a.opened;
    T_EQ(baton_session_move(a.t.srv, "B", &h[2], 1), 1);
    T_ASSERT(step_until(is_remote, 5000));
    T_OK(baton_session_release(h[2]));
    T_OK(baton_session_client_close(cl[0].c));
    for (int i = 0; i < 50; i++)
        step_until(never, 2);
    T_EQ(a.closes, 0);
    T_EQ(b.closes, 1);
}

static bool peer_100(void)
{
    return b.peer_msgs == 100 && a.peer_msgs == 100;
}

static void peer_message(void)
{
    char buf[32];

    start(&a, "A", 0);
    start(&b, "B", 0);
    ts_server_peer(&a.t, "B", &b.t);
    ts_server_peer(&b.t, "A", &a.t);
    T_EQ(baton_session_server_send_peer(a.t.srv, "nobody", "x", 1), -ENOENT);
    T_EQ(baton_session_server_send_peer(a.t.srv, "B", buf, BATON_SESSION_MSG_MAX + 1), -EMSGSIZE);
    T_EQ(baton_session_server_send_peer(NULL, "B", "x", 1), -EINVAL);
    /* Queued before the link is up, then in order. */
    for (int i = 1; i <= 100; i++) {
        int n = snprintf(buf, sizeof(buf), "p %d", i);
        T_OK(baton_session_server_send_peer(a.t.srv, "B", buf, (size_t)n));
        T_OK(baton_session_server_send_peer(b.t.srv, "A", buf, (size_t)n));
    }
    T_ASSERT(step_until(peer_100, 5000));
    T_EQ(a.peer_errors, 0);
    T_EQ(b.peer_errors, 0);
}

/* A raw, authenticated peer of B that forwards to a session B never had. */
static void unknown(void)
{
    uint8_t nc[32] = {9, 8, 7}, mac[32], f[32], buf[256];
    uint32_t len;
    int fd;

    start(&b, "B", 1);
    fd = ts_raw_connect(b.t.paddr);
    ts_raw_frame(fd, TS_PHELLO, nc, 32);
    T_EQ(ts_raw_next(srvs + 1, fd, buf, sizeof(buf), &len), TS_PCHAL);
    T_OK(baton__s_hmac(TS_KEY, strlen(TS_KEY), "baton-s-connect", nc, buf, mac));
    ts_raw_frame(fd, TS_PAUTH, mac, 32);
    memset(f, 0x42, 16);
    memcpy(f + 16, "hello", 5);
    ts_raw_frame(fd, 26 /* FORWARD */, f, 21);
    T_EQ(ts_raw_next(srvs + 1, fd, buf, sizeof(buf), &len), 29 /* GONE */);
    T_EQ(len, 20);
    T_ASSERT(memcmp(buf, f, 16) == 0);
    T_EQ(ts_get32(buf + 16), TS_C_UNKNOWN);
    /* FLUSH and RELEASE of nothing: FLUSH is answered GONE too, RELEASE
     * needs no answer; the link stays up. */
    ts_raw_frame(fd, 28 /* RELEASE */, f, 16);
    ts_raw_frame(fd, 27 /* FLUSH */, f, 16);
    T_EQ(ts_raw_next(srvs + 1, fd, buf, sizeof(buf), &len), 29);
    /* GONE is the next server's to send: from a current server it is
     * out of place, and the link is closed. */
    memset(f + 16, 0, 4);
    ts_raw_frame(fd, 29, f, 20);
    T_EQ(ts_raw_next(srvs + 1, fd, buf, sizeof(buf), &len), TS_CLOSE);
    T_EQ(ts_get32(buf), TS_C_PROTO);
    close(fd);
    T_EQ(baton_session_server_count(b.t.srv), 0);
}

static bool b_leaving(void)
{
    return b.imported && baton_session_state(b.imported) == BATON_SESSION_LEAVING;
}
static bool a_imported(void)
{
    return a.imports == 1;
}

static void release_return(void)
{
    baton_session *s;

    start(&a, "A", 1);
    start(&b, "B", 1);
    ts_server_peer(&a.t, "B", &b.t);
    ts_server_peer(&b.t, "A", &a.t);
    open_at_a();
    T_EQ(baton_session_move(a.t.srv, "B", &watched, 1), 1);
    T_ASSERT(step_until(b_has_it, 5000));
    T_ASSERT(step_until(is_remote, 5000));
    s = b.imported;
    T_EQ(baton_session_move(b.t.srv, "A", &s, 1), 1);
    T_ASSERT(step_until(b_leaving, 5000));
    send_m(watched); /* m6, forwarded to B, which is sending the session back */
    T_OK(baton_session_release(watched));
    T_ASSERT(step_until(a_imported, 5000));
    /* Back: the application sees it as new (it released the old handle). */
    T_EQ(baton_session_state(a.imported), BATON_SESSION_HERE);
    T_ASSERT(baton_session_data(a.imported) == NULL);
    send_m(a.imported); /* m7: after m6 */
    T_ASSERT(step_until(all_got, 5000));
    T_EQ(cl[0].errors, 0);
    T_EQ(cl[0].got, 7);
}

static baton_session *fc[2];
static int fc_mode, fc_calls;
static void fc_close(void *ctx, baton_session *s, int err)
{
    a_close(ctx, s, err);
    for (int i = 0; i < 2; i++)
        if (fc[i] && fc[i] != s && baton_session_state(fc[i]) == BATON_SESSION_REMOTE) {
            if (fc_mode)
                T_OK(baton_session_release(fc[i]));
            else
                T_OK(baton_session_send(fc[i], "m 1", 3));
            fc_calls++;
            if (fc_mode)
                fc[i] = NULL;
        }
    for (int i = 0; i < 2; i++)
        if (fc[i] == s)
            fc[i] = NULL;
}
static void fc_hook(struct baton_session_server_options *o)
{
    server_hook(o);
    o->on_close = fc_close;
}

static bool both_remote(void)
{
    return baton_session_state(fc[0]) == BATON_SESSION_REMOTE &&
           baton_session_state(fc[1]) == BATON_SESSION_REMOTE;
}

static void free_callback(void)
{
    for (fc_mode = 0; fc_mode < 2; fc_mode++) {
        ts_server_opts_hook = fc_hook;
        start(&a, "A", 1);
        start(&b, "B", 1);
        ts_server_opts_hook = server_hook;
        ts_server_peer(&a.t, "B", &b.t);
        for (int i = 0; i < 2; i++) {
            ts_client_start(&cl[i], a.t.addr);
            T_ASSERT(step_until(i ? a_opened2 : a_opened, 3000));
            fc[i] = a.opened;
        }
        T_EQ(baton_session_move(a.t.srv, "B", fc, 2), 2);
        T_ASSERT(step_until(two_at_b, 5000));
        T_ASSERT(step_until(both_remote, 5000));
        fc_calls = 0;
        ts_server_stop(&a.t); /* under ASan: no use after free */
        T_EQ(fc_calls, 1);
        T_EQ(a.closes, fc_mode ? 1 : 2);
        for (int i = 0; i < 2; i++)
            ts_client_stop(&cl[i]);
        ts_server_stop(&b.t);
    }
}

static bool b_closed(void)
{
    return b.closes > 0;
}

static void gone_code(void)
{
    start(&a, "A", 1);
    start(&b, "B", 1);
    ts_server_peer(&a.t, "B", &b.t);
    open_at_a();
    T_EQ(baton_session_move(a.t.srv, "B", &watched, 1), 1);
    T_ASSERT(step_until(b_has_it, 5000));
    T_ASSERT(step_until(is_remote, 5000));
    ts_client_stop(&cl[0]); /* the client goes away without a word */
    T_ASSERT(step_until(b_closed, 5000));
    T_ASSERT(step_until(a_closed, 5000));
    T_EQ(b.close_err, -ECONNRESET);
    T_EQ(a.close_err, -ECONNRESET);
    T_EQ(a.closes, 1);
}

static void hold_cap(void)
{
    static char big[60000];
    baton_session *s;
    int sent_ok = 0;

    start(&a, "A", 1);
    start(&b, "B", 1);
    start(&c, "C", 1);
    ts_server_peer(&a.t, "B", &b.t);
    ts_server_peer(&b.t, "C", &c.t);
    open_at_a();
    T_EQ(baton_session_move(a.t.srv, "B", &watched, 1), 1);
    T_ASSERT(step_until(b_has_it, 5000));
    T_ASSERT(step_until(is_remote, 5000));
    s = b.imported;
    T_EQ(baton_session_move(b.t.srv, "C", &s, 1), 1);
    T_ASSERT(step_until(b_leaving, 5000));
    /* C stalls: it never confirms (TAKEN), so B holds what comes. */
    srvs[2] = NULL;
    memset(big, 'x', sizeof(big));
    for (int i = 0; i < 5000 && a.closes == 0; i++) {
        int r = baton_session_send(watched, big, sizeof(big));
        if (r == 0)
            sent_ok++;
        else
            T_EQ(r, -ENOBUFS); /* A's own link buffer: wait */
        step_until(never, 1);
    }
    T_EQ(a.closes, 1);
    T_EQ(a.close_err, -ENOBUFS);
    T_ASSERT(a.closed == watched);
    /* Held at most 2 MiB (twice a queue's bytes), not all A sent. */
    T_LE(sent_ok, 2 * (int)(BATON_SESSION_QUEUE_BYTES / sizeof(big)) + 2);
    srvs[2] = &c.t;
}

static const struct {
    const char *name;
    void (*run)(void);
} modes[] = {
    {"frozen", frozen},
    {"calloff", calloff},
    {"chain", chain},
    {"gone", gone},
    {"peer-message", peer_message},
    {"unknown", unknown},
    {"release-return", release_return},
    {"free-callback", free_callback},
    {"gone-code", gone_code},
    {"hold-cap", hold_cap},
};

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "frozen";

    ts_server_opts_hook = server_hook;
    ts_client_opts_hook = client_hook;
    for (size_t i = 0;; i++) {
        T_ASSERT(i < sizeof(modes) / sizeof(modes[0])); /* else an unknown mode */
        if (strcmp(mode, modes[i].name) == 0) {
            modes[i].run();
            break;
        }
    }
    for (int i = 0; i < 2; i++)
        ts_client_stop(&cl[i]);
    for (int i = 0; srvs[i]; i++)
        if (srvs[i]->srv)
            ts_server_stop(srvs[i]);
    return 0;
}
