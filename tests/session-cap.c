/* SPDX-License-Identifier: MIT */
/*
 * A server holds at most max_sessions sessions. The one over it is closed
 * with CLOSE(FULL), which the client library reports as -EUSERS ("server
 * full"), and the sessions it holds carry on. One mode per way in:
 *   explicit  max_sessions 3: a fourth client, by the library and raw, is
 *             refused; once a session ends a new client is served (and
 *             a negative max_sessions is -EINVAL)
 *   move      a move to a full server is called off: the client stays
 *             with its current server, told -EUSERS, and loses nothing
 *   default   no max_sessions under RLIMIT_NOFILE 64: the cap is 32 (half
 *             the fd limit), so sessions cannot use up the server's fds
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "session-util.h"

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static uint8_t buf[1024];

struct want {
    struct ts_client *cl;
    int n;
};

/* Every client answered or lost. */
static bool settled(void *arg)
{
    struct want *w = arg;

    for (int i = 0; i < w->n; i++)
        if (!w->cl[i].lost && w->cl[i].got < w->cl[i].sent)
            return false;
    return true;
}

static bool lost(void *arg)
{
    return ((struct ts_client *)arg)->lost;
}

static bool move_over(void *arg)
{
    struct ts_client *c = arg;

    return c->moves + c->move_failed > 0;
}

static void send_all(struct ts_client *cl, int n)
{
    for (int i = 0; i < n; i++)
        if (!cl[i].lost)
            ts_client_send(&cl[i]);
}

/* A raw HELLO over the cap is answered CLOSE(FULL), with a text. */
static void raw_refused(const char *addr, struct ts_server **pump)
{
    int fd = ts_raw_connect(addr);
    uint32_t len;

    ts_raw_frame(fd, TS_HELLO, NULL, 0);
    if (pump)
        T_EQ(ts_raw_next(pump, fd, buf, sizeof(buf), &len), TS_CLOSE);
    else
        T_EQ(ts_raw_read(fd, buf, sizeof(buf), &len, T_TIMEOUT), TS_CLOSE);
    T_EQ(ts_get32(buf), TS_C_FULL);
    t_log("refused: %.*s", (int)(len - 6), buf + 6);
    close(fd);
}

static void no_message(void *ctx, baton_session *s, const void *d, size_t l)
{
}

static void explicit_cap(void)
{
    struct baton_session_server_options o = {
        .on_message = no_message, .max_sessions = -1, .insecure = 1};
    baton_session_server *srv = NULL;
    struct ts_client cl[5];
    struct want w3 = {cl, 3}, w5 = {cl, 5};

    ts_max_sessions = 3;
    ts_server_start(&a, "A", NULL);
    T_EQ(baton_session_server_new(&o, a.lfd, -1, &srv), -EINVAL);
    T_ASSERT(srv == NULL);
    for (int i = 0; i < 3; i++)
        ts_client_start(&cl[i], a.addr);
    send_all(cl, 3);
    T_ASSERT(ts_pump_until(srvs, cl, 3, settled, &w3, T_TIMEOUT));
    T_EQ(baton_session_server_count(a.srv), 3);

    ts_client_start(&cl[3], a.addr);
    T_ASSERT(ts_pump_until(srvs, &cl[3], 1, lost, &cl[3], T_TIMEOUT));
    T_EQ(cl[3].lost_err, -EUSERS);
    t_log("client over the cap: %s", baton_session_client_last_error(cl[3].c));
    T_ASSERT(strstr(baton_session_client_last_error(cl[3].c), "server full"));
    raw_refused(a.addr, srvs);

    /* The three carry on. */
    send_all(cl, 3);
    T_ASSERT(ts_pump_until(srvs, cl, 3, settled, &w3, T_TIMEOUT));
    for (int i = 0; i < 3; i++)
        T_EQ(cl[i].lost, 0);

    /* One ends: a new client is served. */
    T_OK(baton_session_client_close(cl[0].c));
    for (int i = 0; i < 100 && a.closed == 0; i++)
        ts_pump(srvs, NULL, 0, 10);
    T_EQ(baton_session_server_count(a.srv), 2);
    ts_client_start(&cl[4], a.addr);
    cl[0].lost = cl[3].lost = 1; /* closed and refused: send_all() skips them */
    send_all(cl, 5);
    T_ASSERT(ts_pump_until(srvs, cl, 5, settled, &w5, T_TIMEOUT));
    T_EQ(cl[4].lost, 0);
    T_EQ(cl[4].got, 1);
    T_EQ(baton_session_server_count(a.srv), 3);
    for (int i = 0; i < 5; i++) {
        T_EQ(cl[i].errors, 0);
        ts_client_stop(&cl[i]);
    }
    T_EQ(a.errors, 0);
    ts_server_stop(&a);
}

static void move_to_full(void)
{
    struct ts_client ca, cb;
    struct want w = {&ca, 1};

    ts_move_timeout_ms = 1000;
    ts_server_start(&a, "A", TS_KEY);
    ts_max_sessions = 1;
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_client_start(&cb, b.addr);
    ts_client_start(&ca, a.addr);
    ts_client_send(&ca);
    ts_client_send(&cb);
    T_ASSERT(ts_pump_until(srvs, &ca, 1, settled, &w, T_TIMEOUT));
    for (int i = 0; i < 100 && baton_session_server_count(b.srv) == 0; i++)
        ts_pump(srvs, &cb, 1, 10);
    T_EQ(baton_session_server_count(b.srv), 1);

    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 1);
    T_ASSERT(ts_pump_until(srvs, &ca, 1, move_over, &ca, T_TIMEOUT));
    T_EQ(ca.move_failed, 1);
    T_EQ(ca.last_move_err, -EUSERS);
    T_EQ(ca.lost, 0);
    /* Still served by A, nothing lost. */
    for (int i = 0; i < 5; i++)
        ts_client_send(&ca);
    T_ASSERT(ts_pump_until(srvs, &ca, 1, settled, &w, T_TIMEOUT));
    T_EQ(ca.got, ca.sent);
    T_EQ(ca.errors, 0);
    T_EQ(ca.lost, 0);
    T_STREQ(baton_session_client_address(ca.c), a.addr);
    T_EQ(baton_session_server_count(a.srv), 1);
    T_EQ(baton_session_server_count(b.srv), 1);
    T_EQ(b.imported, 0);
    ts_client_stop(&ca);
    ts_client_stop(&cb);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

static void default_cap(void)
{
    struct ts_proc sp;
    struct ts_proc_stats st;
    int fds[40], welcomed = 0, full = 0;
    uint32_t len;

    ts_proc_start(&sp, NULL, 64);
    for (int i = 0; i < 40; i++) {
        fds[i] = ts_raw_connect(sp.addr);
        ts_raw_frame(fds[i], TS_HELLO, NULL, 0);
        int type = ts_raw_read(fds[i], buf, sizeof(buf), &len, T_TIMEOUT);
        if (type == TS_WELCOME)
            welcomed++;
        else if (type == TS_CLOSE && ts_get32(buf) == TS_C_FULL)
            full++;
    }
    t_log("%d sessions opened, %d refused as over the cap", welcomed, full);
    T_EQ(welcomed, 32);
    T_EQ(full, 8);
    ts_proc_stats(&sp, &st);
    T_EQ(st.count, 32);
    for (int i = 0; i < 40; i++)
        close(fds[i]);
    ts_proc_stop(&sp);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "explicit";

    t_init(argc, argv);
    if (strcmp(mode, "explicit") == 0)
        explicit_cap();
    else if (strcmp(mode, "move") == 0)
        move_to_full();
    else if (strcmp(mode, "default") == 0)
        default_cap();
    else
        t_skip("unknown mode %s", mode);
    return t_done();
}
