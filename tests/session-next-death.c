/* SPDX-License-Identifier: MIT */
/*
 * The next server dies in the middle of a move of N sessions, after N/2
 * were taken: those N/2 are lost with an explicit event (their server
 * died), and the N/2 not yet taken stay with the current server, which
 * reports the failed move; their clients carry on there with nothing
 * lost, duplicated or reordered.
 */
#include <errno.h>
#include <string.h>

#include "session-util.h"

#define N 10

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static struct ts_client cl[N];

static bool half_moved(void *arg)
{
    return a.moved == N / 2;
}

static bool settled(void *arg)
{
    for (int i = 0; i < N / 2; i++)
        if (!cl[i].lost)
            return false;
    for (int i = N / 2; i < N; i++)
        if (cl[i].move_failed == 0 || cl[i].got < cl[i].sent)
            return false;
    return a.move_failed == N / 2;
}

static bool answered(void *arg)
{
    for (int i = N / 2; i < N; i++)
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
    for (int i = 0; i < N; i++) {
        ts_client_start(&cl[i], a.addr);
        ts_client_send(&cl[i]);
    }
    T_ASSERT(ts_pump_until(srvs, cl, N, answered, NULL, T_TIMEOUT));
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), N);
    for (int k = 0; k < 40; k++)
        ts_pump(srvs, NULL, 0, 5);
    /* Only the first half of the clients act on their MOVE. */
    T_ASSERT(ts_pump_until(srvs, cl, N / 2, half_moved, NULL, T_TIMEOUT));
    T_EQ(b.imported, N / 2);
    for (int i = N / 2; i < N; i++)
        ts_client_send(&cl[i]);
    ts_server_stop(&b);
    T_ASSERT(ts_pump_until(srvs, cl, N, settled, NULL, T_TIMEOUT));
    T_EQ(a.last_move_err, -ECONNRESET);
    T_EQ(baton_session_server_count(a.srv), N / 2);
    for (int i = 0; i < N / 2; i++)
        T_EQ(cl[i].lost_err, -ECONNABORTED);
    for (int k = 0; k < 20; k++) {
        for (int i = N / 2; i < N; i++)
            ts_client_send(&cl[i]);
        ts_pump(srvs, cl, N, 1);
    }
    T_ASSERT(ts_pump_until(srvs, cl, N, answered, NULL, T_TIMEOUT));
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].errors, 0);
        if (i >= N / 2) {
            T_EQ(cl[i].lost, 0);
            T_EQ(cl[i].got, cl[i].sent);
        }
        ts_client_stop(&cl[i]);
    }
    T_EQ(a.errors, 0);
    ts_server_stop(&a);
    return t_done();
}
