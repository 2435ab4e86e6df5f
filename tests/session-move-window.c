/* SPDX-License-Identifier: MIT */
/*
 * The move window: baton_session_move() of more sessions than the window
 * holds starts them a window at a time, and each session's move deadline
 * starts when it leaves the queue, not when the move was asked for.
 *
 * 1. Twelve raw sessions that never follow their MOVE, window 4, move
 *    timeout 200 ms: at no time do more than 4 hold a MOVE whose move is
 *    not yet called off, no session's move is called off before its MOVE
 *    was sent, and all twelve end up called off (-ETIMEDOUT) and still at A.
 * 2. The next server dies while sessions wait in the queue: every one of
 *    them stays at A (-ECONNRESET), none is told to move, and a later move
 *    to the restarted server starts a full window again (nothing leaked).
 * 3. Forty real clients under traffic, window 3, move A->B->A: every
 *    session moves, nothing lost, duplicated or reordered.
 * 4. The same with B killed once A has seen a few sessions taken, while
 *    others are moving and the rest wait: each client either lost its
 *    session with the explicit event (B had it) or goes on at A with
 *    nothing lost, duplicated or reordered; none is silently broken.
 * 5. Clients that are gone do not hold up the rest: with window 4 and a
 *    5 s move timeout, 4 raw sessions that never follow MOVE are first in
 *    line; the 20 live clients behind them all move before any of the 4
 *    times out (each of the 4 leaves the window as a straggler).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "session-util.h"

#define NRAW   12
#define WINDOW 4
#define N      40

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static uint8_t buf[70000];

static void start_servers(int window, int timeout_ms)
{
    ts_move_window = window;
    ts_move_timeout_ms = timeout_ms;
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_server_peer(&b, "a", &a);
}

/* Raw sessions at A that never act on their MOVE. */
struct raws {
    int n, fd[NRAW], moves;
    bool got[NRAW];
};

static void raws_open(struct raws *r, int n)
{
    uint32_t len;

    memset(r, 0, sizeof(*r));
    r->n = n;
    for (int i = 0; i < n; i++) {
        r->fd[i] = ts_raw_connect(a.addr);
        ts_raw_frame(r->fd[i], TS_HELLO, NULL, 0);
        T_EQ(ts_raw_next(srvs, r->fd[i], buf, sizeof(buf), &len), TS_WELCOME);
    }
}

static void raws_close(struct raws *r)
{
    for (int i = 0; i < r->n; i++)
        close(r->fd[i]);
}

/* Pump until MOVEs reached want_moves and A called off want_failed moves
 * in all, checking at every step that no more than window MOVEs are out at
 * once and, if timeouts, that a move is called off only after its MOVE
 * went out. failed0: A's count before this move. */
static void raws_pump(struct raws *r, int window, long long failed0, int want_moves,
                      long long want_failed, bool timeouts)
{
    uint32_t len;

    for (int spins = 0; (r->moves < want_moves || a.move_failed < want_failed) && spins < T_TIMEOUT;
         spins++) {
        ts_pump(srvs, NULL, 0, 1);
        for (int i = 0; i < r->n; i++) {
            struct pollfd p = {r->fd[i], POLLIN, 0};
            if (r->got[i] || poll(&p, 1, 0) <= 0)
                continue;
            T_EQ(ts_raw_read(r->fd[i], buf, sizeof(buf), &len, T_TIMEOUT), TS_MOVE);
            r->got[i] = true;
            r->moves++;
        }
        if (timeouts)
            T_ASSERT(a.move_failed - failed0 <= r->moves);
        T_ASSERT(r->moves - (a.move_failed - failed0) <= window);
    }
    T_EQ(r->moves, want_moves);
    T_EQ(a.move_failed, want_failed);
}

static void raw_sessions_wait_their_turn(void)
{
    struct raws r;

    /* A timeout below the 250 ms after which a move is a straggler (and
     * leaves the window), so that the window holds exactly. */
    start_servers(WINDOW, 200);
    raws_open(&r, NRAW);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), NRAW);
    raws_pump(&r, WINDOW, 0, NRAW, NRAW, true);
    T_EQ(a.last_move_err, -ETIMEDOUT);
    T_EQ(a.moved, 0);
    T_EQ(baton_session_server_count(a.srv), NRAW);
    T_EQ(a.closed, 0);
    raws_close(&r);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

static int port_of(const char *addr)
{
    return atoi(strrchr(addr, ':') + 1);
}

static void next_server_dies_with_a_queue(void)
{
    struct raws r;
    int port, pport;

    start_servers(2, 1000);
    port = port_of(b.addr);
    pport = port_of(b.paddr);
    raws_open(&r, 6);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 6);
    raws_pump(&r, 2, 0, 2, 0, true);
    ts_server_stop(&b);
    raws_pump(&r, 2, 0, 2, 6, false);
    T_EQ(a.last_move_err, -ECONNRESET);
    T_EQ(baton_session_server_count(a.srv), 6);
    for (int i = 0; i < r.n; i++) {
        struct pollfd p = {r.fd[i], POLLIN, 0};
        uint32_t len;
        if (r.got[i]) /* told to move, then that the move is off */
            T_EQ(ts_raw_read(r.fd[i], buf, sizeof(buf), &len, T_TIMEOUT), TS_STAY);
        T_EQ(poll(&p, 1, 0), 0); /* and nothing more */
    }
    /* The same server again: a full window of 2, then the rest. */
    ts_server_start_at(&b, "B", TS_KEY, "127.0.0.1", port, pport);
    memset(r.got, 0, sizeof(r.got));
    r.moves = 0;
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 6);
    /* These wait out 1 s: after 250 ms each is a straggler and leaves the
     * window, up to a window's worth, so up to 2 x 2 are out at once. */
    raws_pump(&r, 4, 6, 6, 12, true);
    T_EQ(a.last_move_err, -ETIMEDOUT);
    T_EQ(baton_session_server_count(a.srv), 6);
    T_EQ(a.closed, 0);
    raws_close(&r);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

static struct ts_client cl[N];

static bool all_moved(void *arg)
{
    struct ts_server *from = arg;

    return from->moved + from->move_failed >= N;
}

static bool all_answered_20(void *arg)
{
    for (int i = 0; i < 20; i++)
        if (cl[i].got < cl[i].sent)
            return false;
    return true;
}

static bool all_answered(void *arg)
{
    for (int i = 0; i < N; i++)
        if (cl[i].got < cl[i].sent)
            return false;
    return true;
}

static void clients_move_a_window_at_a_time(void)
{
    start_servers(3, 0);
    for (int i = 0; i < N; i++)
        ts_client_start(&cl[i], a.addr);
    for (int r = 0; r < 2; r++) {
        struct ts_server *from = r ? &b : &a, *to = r ? &a : &b;
        for (int i = 0; i < N; i++)
            ts_client_send(&cl[i]);
        T_ASSERT(ts_pump_until(srvs, cl, N, all_answered, NULL, T_TIMEOUT));
        T_EQ(baton_session_move(from->srv, r ? "a" : "b", NULL, 0), N);
        for (int sent = 0; !all_moved(from) && sent < 2000; sent++) {
            for (int i = 0; i < N; i++)
                if (sent % 4 == 0)
                    ts_client_send(&cl[i]);
            ts_pump(srvs, cl, N, 2);
        }
        T_ASSERT(ts_pump_until(srvs, cl, N, all_moved, from, T_TIMEOUT));
        T_EQ(from->move_failed, 0);
        T_EQ(from->moved, N);
        T_ASSERT(ts_pump_until(srvs, cl, N, all_answered, NULL, T_TIMEOUT));
        T_EQ(baton_session_server_count(to->srv), N);
    }
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].errors, 0);
        T_EQ(cl[i].lost, 0);
        T_EQ(cl[i].moves, 2);
        T_EQ(cl[i].got, cl[i].sent);
        ts_client_stop(&cl[i]);
    }
    T_EQ(a.errors, 0);
    T_EQ(b.errors, 0);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

static bool answered_or_lost(void *arg)
{
    for (int i = 0; i < N; i++)
        if (!cl[i].lost && cl[i].got < cl[i].sent)
            return false;
    return a.moved + a.move_failed >= N;
}

static void next_server_dies_mid_window(void)
{
    int lost = 0, stayed = 0;

    start_servers(3, 0);
    for (int i = 0; i < N; i++)
        ts_client_start(&cl[i], a.addr);
    for (int i = 0; i < N; i++)
        ts_client_send(&cl[i]);
    T_ASSERT(ts_pump_until(srvs, cl, N, all_answered, NULL, T_TIMEOUT));
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), N);
    for (int k = 0; a.moved < 4 && k < T_TIMEOUT; k++) {
        for (int i = 0; i < N; i++)
            if (k % 4 == 0 && !cl[i].lost)
                ts_client_send(&cl[i]);
        ts_pump(srvs, cl, N, 1);
    }
    T_ASSERT(a.moved >= 4);
    ts_server_stop(&b);
    /* Go on sending (clients hold messages while they move). */
    for (int k = 0; k < 50; k++) {
        for (int i = 0; i < N; i++)
            if (k % 5 == 0 && !cl[i].lost)
                ts_client_send(&cl[i]);
        ts_pump(srvs, cl, N, 1);
    }
    T_ASSERT(ts_pump_until(srvs, cl, N, answered_or_lost, NULL, T_TIMEOUT));
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].errors, 0);
        if (cl[i].lost) {
            T_EQ(cl[i].lost_err, -ECONNABORTED);
            lost++;
        } else {
            T_EQ(cl[i].got, cl[i].sent);
            T_EQ(cl[i].moves, 0);
            stayed++;
        }
        ts_client_stop(&cl[i]);
    }
    t_log("B died with %lld taken: %d sessions lost with it (told), %d stayed at A", a.moved, lost,
          stayed);
    T_ASSERT(lost >= 4);   /* B held at least those A saw taken */
    T_ASSERT(stayed >= 1); /* and the queue had not run dry */
    T_EQ((long long)baton_session_server_count(a.srv), stayed);
    T_EQ(a.errors, 0);
    ts_server_stop(&a);
}

static bool live_moved(void *arg)
{
    return a.moved >= 20;
}

static void gone_clients_do_not_block(void)
{
    struct raws r;

    start_servers(WINDOW, 5000);
    for (int i = 0; i < 20; i++)
        ts_client_start(&cl[i], a.addr);
    for (int i = 0; i < 20; i++)
        ts_client_send(&cl[i]);
    T_ASSERT(ts_pump_until(srvs, cl, 20, all_answered_20, NULL, T_TIMEOUT));
    /* Newest first: the raw sessions are at the head of the line. */
    raws_open(&r, WINDOW);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 20 + WINDOW);
    T_ASSERT(ts_pump_until(srvs, cl, 20, live_moved, NULL, T_TIMEOUT));
    T_EQ(a.move_failed, 0); /* the gone ones are still waiting out their time */
    for (int i = 0; i < WINDOW; i++) {
        struct pollfd p = {r.fd[i], POLLIN, 0};
        T_EQ(poll(&p, 1, 0), 1); /* they were told first */
    }
    for (int i = 0; i < 20; i++) {
        T_EQ(cl[i].moves, 1);
        T_EQ(cl[i].lost, 0);
        ts_client_stop(&cl[i]);
    }
    raws_close(&r);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    raw_sessions_wait_their_turn();
    next_server_dies_with_a_queue();
    clients_move_a_window_at_a_time();
    next_server_dies_mid_window();
    gone_clients_do_not_block();
    return t_done();
}
