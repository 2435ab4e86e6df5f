/* SPDX-License-Identifier: MIT */
/*
 * A message the client sent on its old link just as the next server asked
 * for its session (TAKE) is handled exactly once: the current server has
 * exported the session, so it must leave the message for the next server,
 * to which the client resends it. Handling it at both would run it twice.
 *
 * A raw client R is told MOVE; R resumes at B, B asks A (TAKE); once A has
 * something to read, R sends "c 1" on its old link to A; then A runs. The
 * usual order at A is TAKE, then the message (the case that matters); if
 * A's timer made it read first, the message is handled at A before the
 * export. Either way, after R sends "c 1" again at B, it must have been
 * handled once in all, with no error at either server.
 */
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "session-util.h"

static struct ts_server a, b;
static struct ts_server *srvs_a[] = {&a, NULL}, *srvs_b[] = {&b, NULL}, *srvs[] = {&a, &b, NULL};
static uint8_t buf[70000];

static void data(int fd, uint64_t seq, const char *text)
{
    uint8_t f[64];
    size_t n = strlen(text);

    memset(f, 0, 16);
    ts_put64(f, seq);
    memcpy(f + 16, text, n);
    ts_raw_frame(fd, TS_DATA, f, (uint32_t)(16 + n));
}

static bool readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};

    return poll(&p, 1, 0) > 0;
}

int main(int argc, char **argv)
{
    uint8_t id[16], res[56] = {0};
    uint32_t len;
    int old, nxt;

    t_init(argc, argv);
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);

    old = ts_raw_connect(a.addr);
    ts_raw_frame(old, TS_HELLO, NULL, 0);
    T_EQ(ts_raw_next(srvs, old, buf, sizeof(buf), &len), TS_WELCOME);
    memcpy(id, buf, 16);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 1);
    T_EQ(ts_raw_next(srvs, old, buf, sizeof(buf), &len), TS_MOVE);
    memcpy(res, id, 16);
    memcpy(res + 16, buf, 32); /* the token; handled 0 */

    /* Settle A (nothing left for it to read), then resume at B and let only
     * B run until A has something to read: B's TAKE. */
    for (int i = 0; i < 1000 && readable(baton_session_server_fd(a.srv)); i++)
        ts_pump(srvs_a, NULL, 0, 0);
    nxt = ts_raw_connect(b.addr);
    ts_raw_frame(nxt, TS_RESUME, res, 56);
    for (int i = 0; i < T_TIMEOUT && !readable(baton_session_server_fd(a.srv)); i++)
        ts_pump(srvs_b, NULL, 0, 1);
    T_ASSERT(readable(baton_session_server_fd(a.srv)));
    data(old, 1, "c 1");
    /* Now A: TAKE, then (usually) the message, in one dispatch. */
    T_EQ(ts_raw_next(srvs, nxt, buf, sizeof(buf), &len), TS_RESUMED);
    t_log("A %s", a.messages ? "handled c 1 (it came before the TAKE)" : "left c 1 for B");
    /* R resends what B's count says was not handled. */
    if (ts_get32(buf + 4) == 0)
        data(nxt, 1, "c 1");
    data(nxt, 2, "c 2");
    for (int i = 0; i < T_TIMEOUT && a.messages + b.messages < 2; i++)
        ts_pump(srvs, NULL, 0, 1);
    T_EQ(a.moved, 1);
    T_EQ(a.messages + b.messages, 2); /* "c 1" once, "c 2" once */
    T_EQ(a.errors, 0);
    T_EQ(b.errors, 0);
    close(old);
    close(nxt);
    ts_server_stop(&a);
    ts_server_stop(&b);
    return t_done();
}
