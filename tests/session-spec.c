/* SPDX-License-Identifier: MIT */
/*
 * Rules of docs/session-protocol.md that a second implementation needs,
 * each checked on the wire by a raw client (issue #16, part 3). ARGS names
 * the case:
 *
 * ack-limit         The server keeps at most BATON_SESSION_QUEUE_MAX
 *                   messages unacknowledged: a client that never acks gets
 *                   1,024 answers, the 1,025th send fails with -ENOBUFS
 *                   and the session stays; once the client acks, sends
 *                   work again. A library client that is sent 3,000
 *                   messages acks in time (no send fails).
 * old-link-data     A DATA the client sent on the old connection after
 *                   MOVE, before its RESUME, is handled by the current
 *                   server, and RESUMED counts it.
 * resume-bad-count  A RESUME whose count is below what the client
 *                   acknowledged is refused with CLOSE(BAD_ACK) and a text
 *                   that says so, and the session stays at the current
 *                   server (STAY on the old connection, which goes on).
 * export-fails      The current server's export callback fails: the next
 *                   server tells the client CLOSE(REFUSED) (not LOST), the
 *                   current server sends STAY and keeps the session; a
 *                   library client reports on_moved(-ECANCELED) and goes on.
 * handshake-timeout A peer link that does not authenticate within the
 *                   handshake deadline is closed with CLOSE(TIMEOUT), as a
 *                   client link is (session-idle).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "session-util.h"

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static uint8_t buf[70000];

struct raw {
    int fd;
    uint8_t id[16], token[32];
};

static void open_raw(struct raw *r, const char *addr)
{
    uint32_t len;

    r->fd = ts_raw_connect(addr);
    ts_raw_frame(r->fd, TS_HELLO, NULL, 0);
    T_EQ(ts_raw_next(srvs, r->fd, buf, sizeof(buf), &len), TS_WELCOME);
    memcpy(r->id, buf, 16);
}

/* DATA "c <seq>" with ack. */
static void send_data(int fd, uint64_t seq, uint64_t ack)
{
    uint8_t f[16 + 32];
    int n = snprintf((char *)f + 16, 32, "c %llu", (unsigned long long)seq);

    ts_put64(f, seq);
    ts_put64(f + 8, ack);
    ts_raw_frame(fd, TS_DATA, f, (uint32_t)(16 + n));
}

static void send_ack(int fd, uint64_t count)
{
    uint8_t f[8];

    ts_put64(f, count);
    ts_raw_frame(fd, TS_ACK, f, 8);
}

static uint64_t get64(const uint8_t *p)
{
    return ((uint64_t)ts_get32(p) << 32) | ts_get32(p + 4);
}

static void get_move(struct raw *r)
{
    uint32_t len;

    T_EQ(ts_raw_next(srvs, r->fd, buf, sizeof(buf), &len), TS_MOVE);
    memcpy(r->token, buf, 32);
}

/* RESUME(id, token, handled) at addr: the fd, the answer's type in *type. */
static int resume(const char *addr, const struct raw *r, uint64_t handled, int *type,
                  uint32_t *ret_len)
{
    uint8_t f[56];
    int fd = ts_raw_connect(addr);

    memcpy(f, r->id, 16);
    memcpy(f + 16, r->token, 32);
    ts_put64(f + 48, handled);
    ts_raw_frame(fd, TS_RESUME, f, 56);
    *type = ts_raw_next(srvs, fd, buf, sizeof(buf), ret_len);
    return fd;
}

static void two_servers(void)
{
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_server_peer(&b, "a", &a);
}

static long long want_messages;

static bool messages_reached(void *arg)
{
    return ((struct ts_server *)arg)->messages >= want_messages;
}

static bool move_ended(void *arg)
{
    struct ts_client *c = arg;

    return c->moves || c->move_failed || c->lost;
}

static bool answered(void *arg)
{
    struct ts_client *c = arg;

    return c->got == c->sent || c->lost;
}

static bool moved_away(void *arg)
{
    return ((struct ts_server *)arg)->moved == 1;
}

static void ack_limit(void)
{
    struct raw r;
    uint32_t len;

    ts_server_start(&a, "A", NULL);
    open_raw(&r, a.addr);
    for (uint64_t i = 1; i <= BATON_SESSION_QUEUE_MAX + 1; i++)
        send_data(r.fd, i, 0);
    want_messages = BATON_SESSION_QUEUE_MAX + 1;
    T_ASSERT(ts_pump_until(srvs, NULL, 0, messages_reached, &a, T_TIMEOUT));
    T_EQ(a.errors, 1); /* the 1,025th answer: -ENOBUFS */
    T_EQ(baton_session_server_count(a.srv), 1);
    for (int i = 1; i <= BATON_SESSION_QUEUE_MAX; i++) {
        T_EQ(ts_raw_next(srvs, r.fd, buf, sizeof(buf), &len), TS_DATA);
        T_EQ(get64(buf), (uint64_t)i);
    }
    send_ack(r.fd, BATON_SESSION_QUEUE_MAX);
    send_data(r.fd, BATON_SESSION_QUEUE_MAX + 2, BATON_SESSION_QUEUE_MAX);
    T_EQ(ts_raw_next(srvs, r.fd, buf, sizeof(buf), &len), TS_DATA);
    T_EQ(get64(buf), BATON_SESSION_QUEUE_MAX + 1);
    T_EQ(a.errors, 1);
    close(r.fd);

    /* The library client: 3,000 answers, no send refused. */
    struct ts_client c;
    ts_client_start(&c, a.addr);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000; i++)
            ts_client_send(&c);
        T_ASSERT(ts_pump_until(srvs, &c, 1, answered, &c, T_TIMEOUT));
    }
    T_EQ(c.got, 3000);
    T_EQ(a.errors, 1);
    T_EQ(c.errors, 0);
    ts_client_stop(&c);
    ts_server_stop(&a);
}

static void old_link_data(void)
{
    struct raw r;
    uint32_t len;
    int type, fd;

    two_servers();
    open_raw(&r, a.addr);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 1);
    get_move(&r);
    send_data(r.fd, 1, 0);
    want_messages = 1;
    T_ASSERT(ts_pump_until(srvs, NULL, 0, messages_reached, &a, T_TIMEOUT));
    fd = resume(b.addr, &r, 0, &type, &len);
    T_EQ(type, TS_RESUMED);
    T_EQ(get64(buf), 1); /* A handled the DATA sent after MOVE */
    /* B resends A's answer, which we had not handled. */
    T_EQ(ts_raw_next(srvs, fd, buf, sizeof(buf), &len), TS_DATA);
    T_EQ(get64(buf), 1);
    T_ASSERT(memcmp(buf + 16, "s 1", 3) == 0);
    T_ASSERT(ts_pump_until(srvs, NULL, 0, moved_away, &a, T_TIMEOUT));
    T_EQ(b.imported, 1);
    close(fd);
    close(r.fd);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

static void resume_bad_count(void)
{
    struct raw r;
    uint32_t len;
    int type, fd;

    two_servers();
    open_raw(&r, a.addr);
    send_data(r.fd, 1, 0);
    T_EQ(ts_raw_next(srvs, r.fd, buf, sizeof(buf), &len), TS_DATA);
    send_ack(r.fd, 1);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 1);
    get_move(&r);
    fd = resume(b.addr, &r, 0, &type, &len); /* we acknowledged 1 */
    T_EQ(type, TS_CLOSE);
    T_EQ(ts_get32(buf), TS_C_BAD_ACK);
    t_log("refused: %.*s", (int)(len - 6), buf + 6);
    T_ASSERT(memmem(buf + 6, len - 6, "below", 5) != NULL);
    close(fd);
    /* The session stays at A, which calls the move off. */
    T_EQ(ts_raw_next(srvs, r.fd, buf, sizeof(buf), &len), TS_STAY);
    T_EQ(baton_session_server_count(a.srv), 1);
    T_EQ(baton_session_server_count(b.srv), 0);
    T_EQ(b.imported, 0);
    T_EQ(b.closed, 0);
    T_EQ(a.move_failed, 1);
    send_data(r.fd, 2, 1);
    T_EQ(ts_raw_next(srvs, r.fd, buf, sizeof(buf), &len), TS_DATA);
    T_EQ(get64(buf), 2);
    T_EQ(a.errors, 0);
    close(r.fd);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

static void export_fails(void)
{
    struct ts_client c;
    struct raw r;
    uint32_t len;
    int type, fd;

    ts_export_err = -EPERM;
    two_servers();
    open_raw(&r, a.addr);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 1);
    get_move(&r);
    fd = resume(b.addr, &r, 0, &type, &len);
    T_EQ(type, TS_CLOSE);
    t_log("next server: code %u: %.*s", ts_get32(buf), (int)(len - 6), buf + 6);
    T_EQ(ts_get32(buf), TS_C_REFUSED); /* go back: A keeps it */
    close(fd);
    T_EQ(ts_raw_next(srvs, r.fd, buf, sizeof(buf), &len), TS_STAY);
    T_EQ(a.move_failed, 1);
    T_EQ(a.last_move_err, -EPERM);
    T_EQ(baton_session_server_count(a.srv), 1);
    close(r.fd);

    /* A library client goes on at A. */
    ts_client_start(&c, a.addr);
    ts_client_send(&c);
    T_ASSERT(ts_pump_until(srvs, &c, 1, answered, &c, T_TIMEOUT));
    T_GE(baton_session_move(a.srv, "b", NULL, 0), 1);
    T_ASSERT(ts_pump_until(srvs, &c, 1, move_ended, &c, T_TIMEOUT));
    T_EQ(c.lost, 0);
    T_EQ(c.move_failed, 1);
    T_EQ(c.last_move_err, -ECANCELED);
    ts_client_send(&c);
    T_ASSERT(ts_pump_until(srvs, &c, 1, answered, &c, T_TIMEOUT));
    T_EQ(c.lost, 0);
    T_EQ(c.got, 2);
    T_EQ(c.errors, 0);
    ts_client_stop(&c);
    ts_server_stop(&a);
    ts_server_stop(&b);
}

static void handshake_timeout(void)
{
    uint32_t len;
    int fd;

    ts_handshake_timeout_ms = 300;
    ts_server_start(&b, "B", TS_KEY);
    fd = ts_raw_connect(b.paddr); /* and never PHELLO */
    T_EQ(ts_raw_next(srvs, fd, buf, sizeof(buf), &len), TS_CLOSE);
    t_log("closed: %.*s", (int)(len - 6), buf + 6);
    T_EQ(ts_get32(buf), TS_C_TIMEOUT);
    close(fd);
    ts_server_stop(&b);
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    T_ASSERT(argc > 1);
    if (!strcmp(argv[1], "ack-limit"))
        ack_limit();
    else if (!strcmp(argv[1], "old-link-data"))
        old_link_data();
    else if (!strcmp(argv[1], "resume-bad-count"))
        resume_bad_count();
    else if (!strcmp(argv[1], "export-fails"))
        export_fails();
    else if (!strcmp(argv[1], "handshake-timeout"))
        handshake_timeout();
    else
        t_fail(__FILE__, __LINE__, "unknown case %s", argv[1]);
    return t_done();
}
