/* SPDX-License-Identifier: MIT */
/*
 * The current server dies before it exported its sessions: every client
 * gets an explicit "session lost" (on_lost with -ECONNABORTED), never
 * silence. Twice: with no move under way, and after the clients were told
 * to MOVE (so they meet a next server that cannot get the session).
 */
#include <errno.h>
#include <string.h>

#include "session-util.h"

#define N 8

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static struct ts_client cl[N];

static bool all_lost(void *arg)
{
    for (int i = 0; i < N; i++)
        if (!cl[i].lost)
            return false;
    return true;
}

static bool answered(void *arg)
{
    for (int i = 0; i < N; i++)
        if (cl[i].got < cl[i].sent || cl[i].got == 0)
            return false;
    return true;
}

static void run(bool moving)
{
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    for (int i = 0; i < N; i++) {
        ts_client_start(&cl[i], a.addr);
        ts_client_send(&cl[i]);
    }
    T_ASSERT(ts_pump_until(srvs, cl, N, answered, NULL, T_TIMEOUT));
    if (moving) {
        /* Let the servers agree and send MOVE, but keep the clients from
         * reading it until A is gone. */
        T_EQ(baton_session_move(a.srv, "b", NULL, 0), N);
        for (int k = 0; k < 40; k++)
            ts_pump(srvs, NULL, 0, 5);
    }
    ts_server_stop(&a);
    for (int i = 0; i < N; i++)
        ts_client_send(&cl[i]);
    T_ASSERT(ts_pump_until(srvs, cl, N, all_lost, NULL, T_TIMEOUT));
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].lost_err, -ECONNABORTED);
        T_EQ(cl[i].errors, 0);
        T_EQ(baton_session_client_send(cl[i].c, "x", 1), -ENOTCONN);
        if (i == 0)
            t_log("client: %s", baton_session_client_last_error(cl[i].c));
        ts_client_stop(&cl[i]);
    }
    T_EQ(baton_session_server_count(b.srv), 0);
    ts_server_stop(&b);
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    run(false);
    run(true);
    return t_done();
}
