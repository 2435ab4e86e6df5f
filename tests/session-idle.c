/* SPDX-License-Identifier: MIT */
/*
 * Connections that hold a server without talking to it are closed, and a
 * quiet client of the library is not. With an idle limit of 1 s and a
 * handshake deadline of 1 s:
 *   - a raw client that opened a session, pinged once (so it is a client
 *     that keeps itself alive) and then says nothing is closed with
 *     CLOSE(TIMEOUT), and the application sees on_close(-ETIMEDOUT);
 *   - a raw client that opened a session and never pings (a client from
 *     before PING) keeps it: the idle limit is not applied to it, so that
 *     servers can be upgraded before their clients;
 *   - a raw connection that never sends HELLO is closed with CLOSE(TIMEOUT);
 *   - a library client that sends no message for 4 s keeps its session
 *     (its pings keep it), and its next message is answered.
 * (Negative limits are -EINVAL.)
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "session-util.h"

#define IDLE_MS 1000

static struct ts_server a;
static struct ts_server *srvs[] = {&a, NULL};
static struct ts_client quiet;

struct raw {
    int fd;
    int code; /* the CLOSE code, -1 until it came */
};

static bool answered(void *arg)
{
    return quiet.got == quiet.sent || quiet.lost;
}

/* Read what came on r (non-blocking): a CLOSE records its code. */
static void raw_poll(struct raw *r)
{
    struct pollfd p = {r->fd, POLLIN, 0};
    uint8_t buf[1024];
    uint32_t len;
    int type;

    while (r->code < 0 && poll(&p, 1, 0) > 0) {
        type = ts_raw_read(r->fd, buf, sizeof(buf), &len, T_TIMEOUT);
        T_GE(type, 0);
        if (type == TS_CLOSE) {
            r->code = (int)ts_get32(buf);
            t_log("closed with code %d: %.*s", r->code, (int)(len - 6), buf + 6);
        }
    }
}

static void no_message(void *ctx, baton_session *s, const void *d, size_t l)
{
}

int main(int argc, char **argv)
{
    struct baton_session_server_options o = {.on_message = no_message, .insecure = 1};
    baton_session_server *srv = NULL;
    struct raw idle = {-1, -1}, silent = {-1, -1}, old = {-1, -1};
    uint8_t buf[64];
    uint32_t len;

    t_init(argc, argv);
    ts_idle_timeout_ms = IDLE_MS;
    ts_handshake_timeout_ms = IDLE_MS;
    ts_server_start(&a, "A", NULL);
    o.idle_timeout_ms = -1;
    T_EQ(baton_session_server_new(&o, a.lfd, -1, &srv), -EINVAL);
    o.idle_timeout_ms = 0;
    o.handshake_timeout_ms = -1;
    T_EQ(baton_session_server_new(&o, a.lfd, -1, &srv), -EINVAL);
    T_ASSERT(srv == NULL);

    idle.fd = ts_raw_connect(a.addr);
    ts_raw_frame(idle.fd, TS_HELLO, NULL, 0);
    T_EQ(ts_raw_next(srvs, idle.fd, buf, sizeof(buf), &len), TS_WELCOME);
    ts_raw_frame(idle.fd, TS_PING, NULL, 0);
    T_EQ(ts_raw_next(srvs, idle.fd, buf, sizeof(buf), &len), TS_PONG);
    T_EQ(ts_get32(buf), IDLE_MS);
    old.fd = ts_raw_connect(a.addr);
    ts_raw_frame(old.fd, TS_HELLO, NULL, 0);
    T_EQ(ts_raw_next(srvs, old.fd, buf, sizeof(buf), &len), TS_WELCOME);
    silent.fd = ts_raw_connect(a.addr);
    ts_client_start(&quiet, a.addr);
    ts_client_send(&quiet);
    T_ASSERT(ts_pump_until(srvs, &quiet, 1, answered, NULL, T_TIMEOUT));

    /* Four idle limits of silence from the quiet client's application. */
    for (int waited = 0; waited < 4 * IDLE_MS; waited += 5) {
        ts_pump(srvs, &quiet, 1, 5);
        raw_poll(&idle);
        raw_poll(&silent);
        raw_poll(&old);
    }
    T_EQ(old.code, -1);
    T_EQ(idle.code, TS_C_TIMEOUT);
    T_EQ(silent.code, TS_C_TIMEOUT);
    T_EQ(a.closed, 1);
    T_EQ(a.last_close_err, -ETIMEDOUT);

    T_EQ(quiet.lost, 0);
    ts_client_send(&quiet);
    T_ASSERT(ts_pump_until(srvs, &quiet, 1, answered, NULL, T_TIMEOUT));
    T_EQ(quiet.lost, 0);
    T_EQ(quiet.errors, 0);
    T_EQ(quiet.got, 2);
    T_EQ(baton_session_server_count(a.srv), 2); /* the quiet one, the old one */

    close(old.fd);
    close(idle.fd);
    close(silent.fd);
    ts_client_stop(&quiet);
    ts_server_stop(&a);
    return t_done();
}
