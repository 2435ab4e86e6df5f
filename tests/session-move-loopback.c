/* SPDX-License-Identifier: MIT */
/*
 * Sessions move A->B->A... ten times under continuous traffic in both
 * directions (every client message is answered, and clients keep sending
 * while their session moves): no message lost, none duplicated, order kept,
 * the application state travels, and every client is where it should be.
 */
#include <string.h>

#include "session-util.h"

#define N      50
#define ROUNDS 10

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static struct ts_client cl[N];

struct want {
    struct ts_server *from;
    long long moved;
};

static bool all_moved(void *arg)
{
    struct want *w = arg;

    return w->from->moved + w->from->move_failed >= w->moved;
}

static bool all_answered(void *arg)
{
    for (int i = 0; i < N; i++)
        if (cl[i].got < cl[i].sent)
            return false;
    return true;
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_server_peer(&b, "a", &a);
    for (int i = 0; i < N; i++)
        ts_client_start(&cl[i], a.addr);

    for (int r = 0; r < ROUNDS; r++) {
        struct ts_server *from = r % 2 ? &b : &a;
        struct want w = {from, from->moved + N};
        int sent = 0;

        for (int k = 0; k < 5; k++) {
            for (int i = 0; i < N; i++)
                ts_client_send(&cl[i]);
            ts_pump(srvs, cl, N, 5);
        }
        T_EQ(baton_session_move(from->srv, r % 2 ? "a" : "b", NULL, 0), N);
        /* Keep sending while the move runs. */
        while (!all_moved(&w) && sent++ < 2000) {
            for (int i = 0; i < N; i++)
                if (sent % 3 == 0)
                    ts_client_send(&cl[i]);
            ts_pump(srvs, cl, N, 2);
        }
        T_ASSERT(ts_pump_until(srvs, cl, N, all_moved, &w, T_TIMEOUT));
        T_EQ(from->move_failed, 0);
        T_EQ(baton_session_server_count(from->srv), 0);
        T_ASSERT(ts_pump_until(srvs, cl, N, all_answered, NULL, T_TIMEOUT));
        T_EQ(baton_session_server_count((r % 2 ? &a : &b)->srv), N);
    }
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].errors, 0);
        T_EQ(cl[i].lost, 0);
        T_EQ(cl[i].moves, ROUNDS);
        T_EQ(cl[i].got, cl[i].sent);
        T_STREQ(baton_session_client_address(cl[i].c), a.addr);
    }
    T_EQ(a.errors, 0);
    T_EQ(b.errors, 0);
    T_EQ(a.opened, N);
    T_EQ(a.imported + b.imported, (long long)N * ROUNDS);
    for (int i = 0; i < N; i++)
        ts_client_stop(&cl[i]);
    ts_server_stop(&a);
    ts_server_stop(&b);
    return t_done();
}
