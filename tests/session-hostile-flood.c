/* SPDX-License-Identifier: MIT */
/*
 * A client that sends and never reads cannot make a session server hold
 * what it would answer. An outside review grew a server to 1.6 GB with one
 * unauthenticated connection: HELLO, then PING frames for 10 s, each
 * answered with a PONG queued behind the unread ones.
 *
 * Two clients, each with a tiny receive buffer and never reading:
 *   ping  HELLO, then 64 MB of PING frames
 *   data  HELLO, then 64 MB of DATA (each acknowledged by the server)
 * The server (a child process) must grow by less than 10 MB at its peak,
 * and a third client, a well-behaved one, must still open a session and
 * be answered while they flood.
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

#define FLOOD (64u << 20)

static struct ts_proc sp;

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

struct flood {
    int fd;
    uint8_t *chunk;
    size_t chunk_len, sent;
    bool closed;
};

/* HELLO, then the chunk again and again: PINGs, or DATA frames with
 * consecutive numbers (the server handles and acknowledges each). */
static void flood_open(struct flood *f, const char *addr, bool data)
{
    uint8_t buf[1024];
    uint32_t len;
    int small = 4096;

    memset(f, 0, sizeof(*f));
    f->fd = ts_raw_connect(addr);
    T_SYS(setsockopt(f->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)));
    ts_raw_frame(f->fd, TS_HELLO, NULL, 0);
    T_EQ(ts_raw_read(f->fd, buf, sizeof(buf), &len, T_TIMEOUT), TS_WELCOME);
    f->chunk_len = 64 * 1024;
    f->chunk = calloc(1, f->chunk_len);
    T_ASSERT(f->chunk != NULL);
    if (!data) {
        for (size_t off = 0; off + 8 <= f->chunk_len; off += 8)
            hdr(f->chunk + off, TS_PING, 0);
    }
}

/* DATA frames numbered from *seq, filling the chunk: 8-byte header, 8-byte
 * sequence number, 48 bytes of message. */
static void data_fill(struct flood *f, uint64_t *seq)
{
    for (size_t off = 0; off + 64 <= f->chunk_len; off += 64) {
        uint8_t *p = f->chunk + off;
        hdr(p, TS_DATA, 56);
        ts_put64(p + 8, ++*seq);
    }
}

/* Write what the socket takes: false once done or closed by the server. */
static bool flood_push(struct flood *f, bool data, uint64_t *seq)
{
    while (!f->closed && f->sent < FLOOD) {
        size_t off = f->sent % f->chunk_len;
        ssize_t w;
        if (data && off == 0)
            data_fill(f, seq);
        w = send(f->fd, f->chunk + off, f->chunk_len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EAGAIN)
            return true;
        if (w < 0) {
            T_ASSERT(errno == EPIPE || errno == ECONNRESET);
            f->closed = true;
            break;
        }
        f->sent += (size_t)w;
    }
    return false;
}

int main(int argc, char **argv)
{
    struct flood fl[2];
    uint64_t seq = 0, unused = 0;
    long base_kb, peak_kb;
    long long start, last_progress;
    uint8_t buf[1024];
    uint32_t len;
    int left, good;

    t_init(argc, argv);
    ts_proc_start(&sp, TS_KEY, 0);
    base_kb = ts_proc_status_kb(&sp, "VmRSS");
    ts_proc_reset_peak(&sp);
    flood_open(&fl[0], sp.addr, false);
    flood_open(&fl[1], sp.addr, true);

    /* Until both are sent or closed, or neither gets a byte further in a
     * second (the server stopped reading them: TCP holds them back). */
    start = last_progress = now_ms();
    do {
        struct pollfd p[2];
        size_t before = fl[0].sent + fl[1].sent;
        int np = 0;
        if (flood_push(&fl[0], false, &unused))
            p[np++] = (struct pollfd){fl[0].fd, POLLOUT, 0};
        if (flood_push(&fl[1], true, &seq))
            p[np++] = (struct pollfd){fl[1].fd, POLLOUT, 0};
        left = np;
        if (fl[0].sent + fl[1].sent != before)
            last_progress = now_ms();
        if (np)
            poll(p, (nfds_t)np, 100);
    } while (left && now_ms() - last_progress < 1000 && now_ms() - start < 20000);
    t_log("ping flood: %zu MB sent%s; data flood: %zu MB sent%s", fl[0].sent >> 20,
          fl[0].closed ? ", then closed by the server" : "", fl[1].sent >> 20,
          fl[1].closed ? ", then closed by the server" : "");

    /* A well-behaved client is served meanwhile. */
    good = ts_raw_connect(sp.addr);
    ts_raw_frame(good, TS_HELLO, NULL, 0);
    T_EQ(ts_raw_read(good, buf, sizeof(buf), &len, T_TIMEOUT), TS_WELCOME);
    close(good);

    peak_kb = ts_proc_status_kb(&sp, "VmHWM");
    t_log("server RSS %ld kB before, peak %+ld kB", base_kb, peak_kb - base_kb);
    T_LT(peak_kb - base_kb, 10 * 1024);
    for (int i = 0; i < 2; i++) {
        close(fl[i].fd);
        free(fl[i].chunk);
    }
    ts_proc_stop(&sp);
    return t_done();
}
