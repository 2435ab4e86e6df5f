/* SPDX-License-Identifier: MIT */
/*
 * A connection cannot make a session server hold more than the largest
 * frame its link may carry in its state, nor hold it past the handshake
 * deadline. One mode per listener, with no authentication:
 *   client  connections to the client port, before HELLO
 *   peer    connections to the peer port, before the key handshake
 * On each, a frame type the link may not carry (EXPORT, a peer-link frame
 * of up to 1.1 MB) is refused at its header with CLOSE(PROTO) and a text
 * that names it; in client mode also after HELLO, where a session may
 * carry DATA but not EXPORT. Then 100 connections announce an EXPORT of
 * 1,118,256 bytes and send all of it but the last byte, and 100 more send
 * half a header and stop: the server (in a child process) grows by less
 * than 10 MB at its peak, and every one of the 200 is closed within the
 * handshake deadline (2 s here) and a second of slack.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "session-util.h"

#define N           100
#define EXPORT_LEN  1118256u
#define DEADLINE_MS 2000

static struct ts_proc sp;
static uint8_t payload[65536];

static long long now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void hdr(uint8_t *p, uint8_t type, uint32_t len)
{
    p[0] = 1;
    p[1] = type;
    p[2] = p[3] = 0;
    p[4] = (uint8_t)(len >> 24);
    p[5] = (uint8_t)(len >> 16);
    p[6] = (uint8_t)(len >> 8);
    p[7] = (uint8_t)len;
}

/* An EXPORT header alone (after HELLO if hello) is refused before its
 * payload: CLOSE(PROTO) naming the frame. */
static void refused_at_header(const char *addr, bool hello)
{
    uint8_t h[8], buf[1024];
    uint32_t len;
    int fd = ts_raw_connect(addr);

    if (hello) {
        ts_raw_frame(fd, TS_HELLO, NULL, 0);
        T_EQ(ts_raw_read(fd, buf, sizeof(buf), &len, T_TIMEOUT), TS_WELCOME);
    }
    hdr(h, TS_EXPORT, EXPORT_LEN);
    T_OK(t_write_all(fd, h, sizeof(h)));
    T_EQ(ts_raw_read(fd, buf, sizeof(buf), &len, DEADLINE_MS / 2), TS_CLOSE);
    t_log("EXPORT header%s: closed with code %u: %.*s", hello ? " after HELLO" : "", ts_get32(buf),
          (int)(len - 6), buf + 6);
    T_EQ(ts_get32(buf), TS_C_PROTO);
    buf[len] = 0;
    T_ASSERT(strstr((char *)buf + 6, "EXPORT") && strstr((char *)buf + 6, "not allowed"));
    close(fd);
}

struct conn {
    int fd;
    size_t sent, want; /* bytes written, and to write */
    bool closed;       /* the server closed it (EOF or reset) */
};

/* Write what the socket takes now: false once there is nothing more to
 * write (all of it, or the server closed the connection). */
static bool push(struct conn *c)
{
    uint8_t h[8];

    hdr(h, TS_EXPORT, EXPORT_LEN);
    while (c->sent < c->want) {
        size_t n = c->want - c->sent;
        ssize_t w;
        if (c->sent < 8)
            w = send(c->fd, h + c->sent, (c->want < 8 ? c->want : 8) - c->sent,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
        else
            w = send(c->fd, payload, n < sizeof(payload) ? n : sizeof(payload),
                     MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EAGAIN)
            return true;
        if (w < 0) {
            T_ASSERT(errno == EPIPE || errno == ECONNRESET);
            c->want = c->sent;
            return false;
        }
        c->sent += (size_t)w;
    }
    return false;
}

/* Has the server closed it? Reads (and drops) what it sent. */
static bool gone(struct conn *c)
{
    uint8_t buf[4096];
    ssize_t n;

    while (!c->closed && (n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) != 0) {
        if (n < 0 && errno == EAGAIN)
            return false;
        if (n < 0)
            T_ASSERT(errno == ECONNRESET);
        if (n < 0)
            break;
    }
    c->closed = true;
    return true;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "client";
    bool peer = strcmp(mode, "peer") == 0;
    static struct conn c[2 * N];
    long base_kb, kb, peak_kb, start, last = 0;
    const char *addr;
    int left;

    t_init(argc, argv);
    if (!peer && strcmp(mode, "client") != 0)
        t_skip("unknown mode %s", mode);
    ts_handshake_timeout_ms = DEADLINE_MS;
    ts_proc_start(&sp, TS_KEY, 0);
    addr = peer ? sp.paddr : sp.addr;

    refused_at_header(addr, false);
    if (!peer)
        refused_at_header(addr, true);

    base_kb = ts_proc_status_kb(&sp, "VmRSS");
    ts_proc_reset_peak(&sp);
    start = now_ms();
    for (int i = 0; i < 2 * N; i++) {
        c[i].fd = ts_raw_connect(addr);
        c[i].want = i < N ? 8 + EXPORT_LEN - 1 : 4;
    }
    /* Write all that the server will read. */
    do {
        struct pollfd p[2 * N];
        int np = 0;
        for (int i = 0; i < 2 * N; i++)
            if (push(&c[i]))
                p[np++] = (struct pollfd){c[i].fd, POLLOUT, 0};
        left = np;
        if (np)
            T_SYS(poll(p, (nfds_t)np, T_TIMEOUT));
    } while (left && now_ms() - start < T_TIMEOUT);
    T_EQ(left, 0);
    kb = ts_proc_status_kb(&sp, "VmRSS");

    /* Every one is closed by the deadline (and what the server would
     * buffer, it has read by then: the peak below counts it). */
    do {
        struct pollfd p[2 * N];
        int np = 0;
        for (int i = 0; i < 2 * N; i++)
            if (!c[i].closed && !gone(&c[i]))
                p[np++] = (struct pollfd){c[i].fd, POLLIN, 0};
        left = np;
        if (np)
            T_SYS(poll(p, (nfds_t)np, 100));
        last = now_ms() - start;
    } while (left && last < DEADLINE_MS + 1000);
    peak_kb = ts_proc_status_kb(&sp, "VmHWM");
    t_log("server RSS %ld kB before, %ld kB once written to (%+ld kB), peak %+ld kB", base_kb, kb,
          kb - base_kb, peak_kb - base_kb);
    t_log("%d of %d connections still open after %ld ms", left, 2 * N, last);
    T_LT(kb - base_kb, 10 * 1024);
    T_LT(peak_kb - base_kb, 10 * 1024);
    T_EQ(left, 0);
    for (int i = 0; i < 2 * N; i++)
        close(c[i].fd);
    ts_proc_stop(&sp);
    return t_done();
}
