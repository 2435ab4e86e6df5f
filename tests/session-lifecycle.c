/* SPDX-License-Identifier: MIT */
/*
 * Exactly one callback starts a session on a server (on_open, or
 * import_state for one that arrived) and exactly one ends it (on_close,
 * or on_moved(s, 0)); a failed move ends nothing. Two clients open at A
 * and move to B; a move back fails (the export callback refuses); one
 * client closes; B is freed. At each server, starts equal ends.
 */
#include <errno.h>

#include "session-util.h"

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static struct ts_client c[2];

static bool answered(void *arg)
{
    return c[0].got == 1 && c[1].got == 1;
}

static bool moved_to_b(void *arg)
{
    return c[0].moves == 1 && c[1].moves == 1 && a.moved == 2;
}

static bool move_back_failed(void *arg)
{
    return b.move_failed == 2 && c[0].move_failed == 1 && c[1].move_failed == 1;
}

static bool one_closed(void *arg)
{
    return b.closed == 1;
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_server_peer(&b, "a", &a);
    ts_client_start(&c[0], a.addr);
    ts_client_start(&c[1], a.addr);
    for (int i = 0; i < 2; i++)
        ts_client_send(&c[i]);
    T_ASSERT(ts_pump_until(srvs, c, 2, answered, NULL, T_TIMEOUT));
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 2);
    T_ASSERT(ts_pump_until(srvs, c, 2, moved_to_b, NULL, T_TIMEOUT));
    T_EQ(a.opened, 2);
    T_EQ(a.opened + a.imported, a.closed + a.moved);

    ts_export_err = -EPERM;
    T_EQ(baton_session_move(b.srv, "a", NULL, 0), 2);
    T_ASSERT(ts_pump_until(srvs, c, 2, move_back_failed, NULL, T_TIMEOUT));
    ts_export_err = 0;
    T_EQ(b.opened, 0); /* on_open is for new sessions only */
    T_EQ(b.imported, 2);
    T_EQ(b.closed + b.moved, 0); /* a failed move ends nothing */

    T_OK(baton_session_client_close(c[0].c));
    T_ASSERT(ts_pump_until(srvs, c, 2, one_closed, NULL, T_TIMEOUT));
    ts_server_stop(&b); /* on_close(-ESHUTDOWN) for the other */
    T_EQ(b.closed, 2);
    T_EQ(b.opened + b.imported, b.closed + b.moved);
    T_EQ(a.opened + a.imported, a.closed + a.moved);
    ts_client_stop(&c[0]);
    ts_client_stop(&c[1]);
    ts_server_stop(&a);
    return t_done();
}
