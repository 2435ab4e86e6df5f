/* SPDX-License-Identifier: MIT */
/*
 * Who may call a move off, and when.
 *
 * 1. Late RESUMED: the client's RESUME reached B, B asked A (TAKE) and A
 *    exported the session; then B is slow to answer, longer than the
 *    client's own timeout. The client must not give up and go back to A
 *    (which has let the session go): it waits for B, moves, and nothing
 *    is lost. (It used to go back at its timeout, and the session was
 *    lost when B finished.)
 * 2. STAY: the client's RESUME goes to an address where nobody answers;
 *    A's move timeout calls the move off and A tells the client (STAY), so
 *    the client goes on with A at once (-ECANCELED), not at its own
 *    timeout, and nothing is lost.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "session-util.h"

static struct ts_server a, b;
static struct ts_server *both[] = {&a, &b, NULL}, *only_a[] = {&a, NULL}, *only_b[] = {&b, NULL};
static struct ts_client cl[1];

static bool answered(void *arg)
{
    return cl[0].got == cl[0].sent;
}

static bool moved(void *arg)
{
    return cl[0].moves + cl[0].move_failed + cl[0].lost >= 1;
}

static void send_and_check(struct ts_server **srvs)
{
    for (int i = 0; i < 5; i++)
        ts_client_send(&cl[0]);
    T_ASSERT(ts_pump_until(srvs, cl, 1, answered, NULL, T_TIMEOUT));
}

static void late_resumed(void)
{
    const int timeout_ms = 300;

    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_client_timeout_ms = timeout_ms;
    ts_client_start(&cl[0], a.addr);
    ts_client_timeout_ms = 0;
    send_and_check(both);

    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 1);
    /* Let B run only until A has exported the session: then B has the
     * EXPORT waiting, unread. */
    for (int i = 0; i < T_TIMEOUT && a.exported == 0; i++) {
        ts_pump(only_a, cl, 1, 1);
        if (a.exported)
            break;
        ts_pump(only_b, NULL, 0, 0);
    }
    T_EQ(a.exported, 1);
    T_EQ(b.imported, 0);
    /* B stalls for three of the client's timeouts, by the clock: counted
     * in 1 ms pumps, a loaded machine stretched it past A's own move
     * timeout (3 s), which then rightly called the move off. */
    for (uint64_t end = baton__now_ms() + 3 * timeout_ms; baton__now_ms() < end;)
        ts_pump(only_a, cl, 1, 1);
    T_EQ(cl[0].move_failed, 0); /* still waiting for B */
    T_EQ(cl[0].lost, 0);
    T_ASSERT(ts_pump_until(both, cl, 1, moved, NULL, T_TIMEOUT));
    T_EQ(cl[0].moves, 1);
    T_EQ(cl[0].lost, 0);
    T_EQ(b.imported, 1);
    send_and_check(both);
    T_EQ(cl[0].errors, 0);
    T_EQ(a.errors + b.errors, 0);
    T_EQ(baton_session_server_count(b.srv), 1);
    ts_client_stop(&cl[0]);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

static void stay(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    char hole[64];
    int fd = T_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));

    /* Connections to it complete (the kernel queues them) and nobody
     * ever reads or answers. */
    T_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    T_SYS(listen(fd, 16));
    T_SYS(getsockname(fd, (struct sockaddr *)&sa, &sl));
    snprintf(hole, sizeof(hole), "tcp://127.0.0.1:%d", ntohs(sa.sin_port));

    ts_move_timeout_ms = 200;
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_move_timeout_ms = 0;
    T_OK(baton_session_server_add_peer(a.srv, "b", b.paddr, hole));
    ts_client_start(&cl[0], a.addr); /* timeout 3 s: far beyond A's */
    send_and_check(both);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 1);
    T_ASSERT(ts_pump_until(both, cl, 1, moved, NULL, T_TIMEOUT));
    T_EQ(a.move_failed, 1);
    T_EQ(a.last_move_err, -ETIMEDOUT);
    T_EQ(cl[0].move_failed, 1);
    T_EQ(cl[0].last_move_err, -ECANCELED); /* told by A, not its own timer */
    T_EQ(cl[0].lost, 0);
    send_and_check(both);
    T_EQ(cl[0].errors, 0);
    T_EQ(baton_session_server_count(a.srv), 1);
    ts_client_stop(&cl[0]);
    ts_server_stop(&a);
    ts_server_stop(&b);
    close(fd);
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    late_resumed();
    stay();
    return t_done();
}
