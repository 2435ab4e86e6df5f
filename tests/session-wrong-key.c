/* SPDX-License-Identifier: MIT */
/*
 * A peer link with a wrong key is refused by both servers, with a clear
 * error; every session stays with the current server and works on, and
 * its client never notices.
 */
#include <errno.h>
#include <string.h>

#include "session-util.h"

#define N 10

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static struct ts_client cl[N];

static bool failed(void *arg)
{
    return a.move_failed == N;
}

static bool answered(void *arg)
{
    for (int i = 0; i < N; i++)
        if (cl[i].got < cl[i].sent || cl[i].got == 0)
            return false;
    return true;
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY2);
    ts_server_peer(&a, "b", &b);
    for (int i = 0; i < N; i++) {
        ts_client_start(&cl[i], a.addr);
        ts_client_send(&cl[i]);
    }
    T_ASSERT(ts_pump_until(srvs, cl, N, answered, NULL, T_TIMEOUT));
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), N);
    T_ASSERT(ts_pump_until(srvs, cl, N, failed, NULL, T_TIMEOUT));
    T_EQ(a.last_move_err, -EACCES);
    T_EQ(a.moved, 0);
    T_ASSERT(strstr(baton_session_server_last_error(a.srv), "wrong key"));
    T_ASSERT(strstr(baton_session_server_last_error(b.srv), "wrong key"));
    T_EQ(baton_session_server_count(a.srv), N);
    T_EQ(baton_session_server_count(b.srv), 0);
    for (int k = 0; k < 10; k++)
        for (int i = 0; i < N; i++)
            ts_client_send(&cl[i]);
    T_ASSERT(ts_pump_until(srvs, cl, N, answered, NULL, T_TIMEOUT));
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].errors, 0);
        T_EQ(cl[i].lost, 0);
        T_EQ(cl[i].moves + cl[i].move_failed, 0);
        ts_client_stop(&cl[i]);
    }
    T_EQ(a.errors, 0);
    ts_server_stop(&a);
    ts_server_stop(&b);
    return t_done();
}
