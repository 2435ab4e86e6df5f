/* SPDX-License-Identifier: MIT */
/*
 * Bad input closes the one connection it came on, with a clear error (a
 * CLOSE frame with its code), and the server and its other sessions carry
 * on. One mode per kind of bad input:
 *   version      a frame of another protocol version (checked first)
 *   oversized    a DATA frame longer than BATON_SESSION_MSG_MAX allows
 *   unknown-type a frame type nobody defined
 *   ack-overrun  a counter that acknowledges more than was sent
 *   seq-gap      a message number that skips one
 *   peer-garbage a peer link with a wrong MAC, and an oversized OFFER
 *   client-side  a fake server acknowledging more than the client sent:
 *                the client reports -EBADMSG
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session-util.h"

static struct ts_server a;
static struct ts_server *srvs[] = {&a, NULL};
static struct ts_client good;
static uint8_t buf[70000];

static bool answered(void *arg)
{
    return good.got == good.sent && good.sent > 0;
}

/* Send the raw bytes on a new connection (after HELLO if hello) and expect
 * CLOSE with code. */
static void expect_close(const char *addr, bool hello, const void *bytes, size_t n, uint32_t code)
{
    int fd = ts_raw_connect(addr);
    uint32_t len;
    int type;

    if (hello) {
        ts_raw_frame(fd, TS_HELLO, NULL, 0);
        T_EQ(ts_raw_next(srvs, fd, buf, sizeof(buf), &len), TS_WELCOME);
    }
    T_OK(t_write_all(fd, bytes, n));
    type = ts_raw_next(srvs, fd, buf, sizeof(buf), &len);
    T_EQ(type, TS_CLOSE);
    T_EQ(ts_get32(buf), code);
    t_log("closed with code %u: %.*s", code, (int)(len - 6), buf + 6);
    close(fd);
}

static void hdr(uint8_t *p, uint8_t version, uint8_t type, uint32_t len)
{
    p[0] = version;
    p[1] = type;
    p[2] = p[3] = 0;
    p[4] = (uint8_t)(len >> 24);
    p[5] = (uint8_t)(len >> 16);
    p[6] = (uint8_t)(len >> 8);
    p[7] = (uint8_t)len;
}

static void client_side(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int lfd = T_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)), fd;
    char addr[64];
    uint8_t f[32];
    uint32_t len;
    struct ts_client c;

    T_SYS(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)));
    T_SYS(listen(lfd, 4));
    T_SYS(getsockname(lfd, (struct sockaddr *)&sa, &sl));
    sprintf(addr, "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
    ts_client_start(&c, addr);
    T_OK(baton_session_client_dispatch(c.c));
    fd = T_SYS(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
    T_EQ(ts_raw_read(fd, buf, sizeof(buf), &len, T_TIMEOUT), TS_HELLO);
    memset(f, 9, 16);
    ts_raw_frame(fd, TS_WELCOME, f, 16);
    ts_put64(f, 1);
    ts_put64(f + 8, 7); /* acknowledges 7 of our 0 messages */
    ts_raw_frame(fd, TS_DATA, f, 16);
    for (int i = 0; i < 1000 && !c.lost; i++) {
        ts_pump(NULL, &c, 1, 5);
    }
    T_EQ(c.lost, 1);
    T_EQ(c.lost_err, -EBADMSG);
    t_log("client: %s", baton_session_client_last_error(c.c));
    ts_client_stop(&c);
    close(fd);
    close(lfd);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "version";
    uint8_t f[128];

    t_init(argc, argv);
    if (strcmp(mode, "client-side") == 0) {
        client_side();
        return t_done();
    }
    ts_server_start(&a, "A", TS_KEY);
    ts_client_start(&good, a.addr);
    ts_client_send(&good);
    T_ASSERT(ts_pump_until(srvs, &good, 1, answered, NULL, T_TIMEOUT));

    memset(f, 0, sizeof(f));
    if (strcmp(mode, "version") == 0) {
        hdr(f, 2, TS_HELLO, 0);
        expect_close(a.addr, false, f, 8, TS_C_VERSION);
    } else if (strcmp(mode, "oversized") == 0) {
        hdr(f, 1, TS_DATA, 16 + BATON_SESSION_MSG_MAX + 1);
        expect_close(a.addr, true, f, 8, TS_C_TOO_BIG);
        hdr(f, 1, TS_HELLO, 1u << 31);
        expect_close(a.addr, false, f, 8, TS_C_TOO_BIG);
    } else if (strcmp(mode, "unknown-type") == 0) {
        hdr(f, 1, 99, 0);
        expect_close(a.addr, false, f, 8, TS_C_PROTO);
        hdr(f, 1, TS_PHELLO, 32); /* a peer frame on a client link */
        expect_close(a.addr, false, f, 40, TS_C_PROTO);
    } else if (strcmp(mode, "ack-overrun") == 0) {
        hdr(f, 1, TS_DATA, 19);
        ts_put64(f + 8, 1);
        ts_put64(f + 16, 5);
        memcpy(f + 24, "c 1", 3);
        expect_close(a.addr, true, f, 27, TS_C_BAD_ACK);
        T_EQ(a.last_close_err, -EBADMSG);
    } else if (strcmp(mode, "seq-gap") == 0) {
        hdr(f, 1, TS_DATA, 19);
        ts_put64(f + 8, 3);
        memcpy(f + 24, "c 1", 3);
        expect_close(a.addr, true, f, 27, TS_C_PROTO);
    } else if (strcmp(mode, "peer-garbage") == 0) {
        hdr(f, 1, TS_PHELLO, 32);
        hdr(f + 40, 1, TS_PAUTH, 32);
        int fd = ts_raw_connect(a.paddr);
        uint32_t len;
        T_OK(t_write_all(fd, f, 40));
        T_EQ(ts_raw_next(srvs, fd, buf, sizeof(buf), &len), TS_PCHAL);
        T_OK(t_write_all(fd, f + 40, 40)); /* a MAC of zeros */
        T_EQ(ts_raw_next(srvs, fd, buf, sizeof(buf), &len), TS_CLOSE);
        T_EQ(ts_get32(buf), TS_C_AUTH);
        close(fd);
        hdr(f, 1, TS_OFFER, 8 + 16 * 4097);
        expect_close(a.paddr, false, f, 8, TS_C_TOO_BIG);
    } else {
        t_skip("unknown mode %s", mode);
    }
    /* The good session carries on. */
    for (int i = 0; i < 10; i++)
        ts_client_send(&good);
    T_ASSERT(ts_pump_until(srvs, &good, 1, answered, NULL, T_TIMEOUT));
    T_EQ(good.errors, 0);
    T_EQ(good.lost, 0);
    T_EQ(a.errors, 0);
    ts_client_stop(&good);
    ts_server_stop(&a);
    return t_done();
}
