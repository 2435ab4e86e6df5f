/* SPDX-License-Identifier: MIT */
/*
 * Rules of docs/session-protocol.md that a second implementation needs,
 * each checked on the wire: a server's by a raw client (issue #16, part
 * 3), the client's (client-*) by raw servers that drive the library's
 * client. ARGS names the case:
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
 * client-move-twice A second MOVE while the first move is under way
 *                   replaces it: the client drops its connection to the
 *                   first next server (after RESUME with the first token,
 *                   nothing more on it), resumes at the second address
 *                   with the second token, reports one move whose pause
 *                   counts from the first MOVE, sends nothing on the old
 *                   connection meanwhile, then closes it and resends there.
 * client-close-moving
 *                   A client closed during a move sends CLOSE(OK) on the
 *                   old connection, nothing else after MOVE, and closes
 *                   the connection to the next server without a word (it
 *                   ends after the RESUME). With library servers: closed
 *                   before the current server exported the session, it
 *                   ends there as closed (0) and the next server imports
 *                   nothing; closed after the export, it ends once, as
 *                   closed at the current server, or as a broken
 *                   connection (-ECONNRESET) at the next server if that
 *                   took it before it saw the connection end.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
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

/* ---- raw servers for the library's client ---- */

/* A listening socket on 127.0.0.1, any port: the fd, its address in addr. */
static int raw_listen(char *addr)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = T_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));

    T_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    T_SYS(listen(fd, 4));
    T_SYS(getsockname(fd, (struct sockaddr *)&sa, &sl));
    sprintf(addr, "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
    return fd;
}

/* Dispatch the client until fd is readable (at most T_TIMEOUT): true if
 * it became so. */
static bool pump_client_until_readable(struct ts_client *c, int fd)
{
    for (int waited = 0; waited < T_TIMEOUT; waited += 5) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 0) > 0)
            return true;
        ts_pump(NULL, c, 1, 5);
    }
    return false;
}

/* The client's next connection to lfd. */
static int raw_accept(struct ts_client *c, int lfd)
{
    int one = 1, fd;

    T_ASSERT(pump_client_until_readable(c, lfd));
    fd = T_SYS(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
    T_SYS(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
    return fd;
}

/* The client's next frame on fd, dispatching it meanwhile: its type, or
 * -EPIPE when the client closed the connection. */
static int client_next(struct ts_client *c, int fd, uint32_t *ret_len)
{
    T_ASSERT(pump_client_until_readable(c, fd));
    return ts_raw_read(fd, buf, sizeof(buf), ret_len, T_TIMEOUT);
}

/* Nothing from the client on fd while it is dispatched for ms. */
static void client_quiet(struct ts_client *c, int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};

    for (int waited = 0; waited < ms; waited += 5)
        ts_pump(NULL, c, 1, 5);
    T_EQ(poll(&p, 1, 0), 0);
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* A client of the raw server on la, welcomed (id all 7s), its first PING
 * read; it has sent "c 1", unacknowledged. The connection's fd. */
static int raw_open(struct ts_client *c, int la, const char *addr)
{
    uint8_t id[16];
    uint32_t len;
    int fd;

    ts_client_start(c, addr);
    fd = raw_accept(c, la);
    T_EQ(client_next(c, fd, &len), TS_HELLO);
    memset(id, 7, 16);
    ts_raw_frame(fd, TS_WELCOME, id, 16);
    T_EQ(client_next(c, fd, &len), TS_PING);
    ts_client_send(c);
    T_EQ(client_next(c, fd, &len), TS_DATA);
    T_EQ(get64(buf), 1);
    return fd;
}

/* MOVE(token filled with t, addr) on fd. */
static void raw_move(int fd, uint8_t t, const char *addr)
{
    uint8_t f[34 + 64];
    size_t n = strlen(addr);

    memset(f, t, 32);
    f[32] = (uint8_t)(n >> 8);
    f[33] = (uint8_t)n;
    memcpy(f + 34, addr, n);
    ts_raw_frame(fd, TS_MOVE, f, (uint32_t)(34 + n));
}

/* The client's RESUME on fd: our id, the token of raw_move(t), handled 0. */
static void expect_resume(struct ts_client *c, int fd, uint8_t t)
{
    uint8_t want[56];
    uint32_t len;

    memset(want, 7, 16);
    memset(want + 16, t, 32);
    memset(want + 48, 0, 8);
    T_EQ(client_next(c, fd, &len), TS_RESUME);
    T_EQ(len, 56);
    T_EQ(memcmp(buf, want, 56), 0);
}

static void client_move_twice(void)
{
    char aa[64], ab1[64], ab2[64];
    int la = raw_listen(aa), lb1 = raw_listen(ab1), lb2 = raw_listen(ab2);
    int fa, fb1, fb2, ndata = 0;
    uint64_t t1, t2;
    struct ts_client c;
    uint8_t f[8];
    uint32_t len;

    fa = raw_open(&c, la, aa);
    raw_move(fa, 1, ab1);
    fb1 = raw_accept(&c, lb1);
    expect_resume(&c, fb1, 1);
    t1 = now_us();      /* the client handled the first MOVE before this */
    ts_client_send(&c); /* "c 2": held while moving */
    client_quiet(&c, fa, 200);

    raw_move(fa, 2, ab2);
    fb2 = raw_accept(&c, lb2);
    expect_resume(&c, fb2, 2);
    /* The first next server got its RESUME and then nothing but the end. */
    T_EQ(client_next(&c, fb1, &len), -EPIPE);
    T_EQ(c.moves + c.move_failed, 0); /* the replaced move is not reported */

    ts_put64(f, 0);
    ts_raw_frame(fb2, TS_RESUMED, f, 8);
    t2 = now_us();
    T_ASSERT(ts_pump_until(NULL, &c, 1, move_ended, &c, T_TIMEOUT));
    T_EQ(c.moves, 1);
    T_EQ(c.move_failed, 0);
    T_EQ(c.lost, 0);
    T_STREQ(baton_session_client_address(c.c), ab2);
    t_log("pause %llu us; %llu us from the first RESUME to RESUMED",
          (unsigned long long)c.pauses[0], (unsigned long long)(t2 - t1));
    T_GE(c.pauses[0], t2 - t1);

    /* Both messages, resent to the second next server, in order. */
    while (ndata < 2) {
        int type = client_next(&c, fb2, &len);
        if (type == TS_PING || type == TS_ACK)
            continue;
        T_EQ(type, TS_DATA);
        T_EQ(get64(buf), (uint64_t)++ndata);
    }
    /* The old connection: nothing since MOVE, and closed once RESUMED came. */
    T_EQ(client_next(&c, fa, &len), -EPIPE);
    T_EQ(c.errors, 0);
    ts_client_stop(&c);
    close(fa);
    close(fb1);
    close(fb2);
    close(la);
    close(lb1);
    close(lb2);
}

static bool session_ended(void *arg)
{
    (void)arg;
    return a.closed + b.closed == 1 && baton_session_server_count(a.srv) == 0 &&
           baton_session_server_count(b.srv) == 0;
}

/* A library client closing during a move between library servers, once
 * its RESUME is written: before the next server has read it, or (exported)
 * after the current server answered its TAKE with EXPORT. The session
 * ends once: closed by its client at the current server, or, when the
 * next server took it before it saw the connection end, broken there. */
static void close_moving_servers(bool exported)
{
    struct ts_server *only_a[] = {&a, NULL}, *only_b[] = {&b, NULL};
    struct ts_client c;
    struct pollfd p;

    two_servers();
    ts_client_start(&c, a.addr);
    ts_client_send(&c);
    T_ASSERT(ts_pump_until(srvs, &c, 1, answered, &c, T_TIMEOUT));
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 1);
    /* The servers run until the client has MOVE: it connects to the next
     * server, whose backlog then holds the connection. */
    for (int waited = 0; waited < T_TIMEOUT; waited += 5) {
        struct pollfd q[2] = {{baton_session_client_fd(c.c), POLLIN, 0}, {b.lfd, POLLIN, 0}};
        if (poll(q, 2, 0) > 0 && q[1].revents)
            break;
        if (q[0].revents)
            T_OK(baton_session_client_dispatch(c.c));
        else
            ts_pump(srvs, NULL, 0, 5);
    }
    p = (struct pollfd){b.lfd, POLLIN, 0};
    T_EQ(poll(&p, 1, 0), 1);
    /* Then only the client, long enough to write its RESUME. */
    for (int waited = 0; waited < 50; waited += 5)
        ts_pump(NULL, &c, 1, 5);
    if (exported) {
        /* The next server sends TAKE; the current one exports. */
        for (int waited = 0; waited < 50; waited += 5)
            ts_pump(only_b, NULL, 0, 5);
        for (int waited = 0; waited < T_TIMEOUT && !a.exported; waited += 5)
            ts_pump(only_a, NULL, 0, 5);
        T_EQ(a.exported, 1);
    }
    T_EQ(c.moves + c.move_failed + c.lost, 0);
    T_OK(baton_session_client_close(c.c));
    T_ASSERT(ts_pump_until(srvs, NULL, 0, session_ended, NULL, T_TIMEOUT));
    t_log("%s: current server: closed %lld (%d), moved %lld; next: imported %lld, closed %lld (%d)",
          exported ? "exported" : "not exported", a.closed, a.last_close_err, a.moved, b.imported,
          b.closed, b.last_close_err);
    if (!exported)
        T_EQ(a.closed, 1);
    if (a.closed) {
        T_EQ(a.last_close_err, 0);
        T_EQ(a.moved, 0);
        T_EQ(b.imported, 0);
    } else {
        T_EQ(exported, true);
        T_EQ(a.moved, 1);
        T_EQ(b.imported, 1);
        T_EQ(b.last_close_err, -ECONNRESET);
    }
    T_EQ(a.errors + b.errors, 0);
    ts_client_stop(&c);
    ts_server_stop(&a);
    ts_server_stop(&b);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
}

static void client_close_moving(void)
{
    char aa[64], ab[64];
    int la = raw_listen(aa), lb = raw_listen(ab), fa, fb;
    struct ts_client c;
    struct pollfd p;
    uint32_t len;

    fa = raw_open(&c, la, aa);
    raw_move(fa, 1, ab);
    fb = raw_accept(&c, lb);
    expect_resume(&c, fb, 1);
    ts_client_send(&c); /* held while moving: never sent */
    T_OK(baton_session_client_close(c.c));
    T_EQ(baton_session_client_alive(c.c), 0);
    T_EQ(c.lost, 0);
    /* Without waiting for an answer: both connections are closed now. */
    T_EQ(ts_raw_read(fa, buf, sizeof(buf), &len, T_TIMEOUT), TS_CLOSE);
    t_log("CLOSE on the old connection: code %u: %.*s", ts_get32(buf), (int)(len - 6), buf + 6);
    T_EQ(ts_get32(buf), TS_C_OK);
    T_EQ(ts_raw_read(fa, buf, sizeof(buf), &len, 0), -EPIPE);
    p = (struct pollfd){fb, POLLIN, 0};
    T_EQ(poll(&p, 1, 0), 1);
    T_EQ(ts_raw_read(fb, buf, sizeof(buf), &len, 0), -EPIPE);
    ts_client_stop(&c);
    close(fa);
    close(fb);
    close(la);
    close(lb);

    close_moving_servers(false);
    close_moving_servers(true);
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
    else if (!strcmp(argv[1], "client-move-twice"))
        client_move_twice();
    else if (!strcmp(argv[1], "client-close-moving"))
        client_close_moving();
    else
        t_fail(__FILE__, __LINE__, "unknown case %s", argv[1]);
    return t_done();
}
