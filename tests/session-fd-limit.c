/* SPDX-License-Identifier: MIT */
/*
 * A session server out of file descriptors neither spins nor floods its
 * log, and serves a new connection once fds come free. The server runs in
 * a child process under RLIMIT_NOFILE 64 and 80 connections arrive, so
 * that accept() fails with EMFILE while connections wait in the backlog:
 *   client  on the client listener, each sending HELLO (max_sessions is
 *           raised past the fd limit, so that fds run out before the cap)
 *   peer    on the peer listener, each sending nothing (they hold their
 *           fds until their handshake deadline)
 * Over a second at the limit the server may use a quarter of a second of
 * CPU (a listener left level-triggered uses all of it) and log its accept
 * failure once. Then the 80 connections close, and a new one is served: a
 * session opened by the client library, or a peer handshake answered.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "session-util.h"

#define NCONN  80
#define NOFILE 64

static struct ts_proc sp;

static bool answered(void *arg)
{
    struct ts_client *c = arg;

    return c->got == c->sent || c->lost;
}

/* The server logged an accept failure, and settled: every connection it
 * accepted has been answered (client mode) or is merely held. */
static void wait_for_emfile(void)
{
    struct ts_proc_stats st;

    for (int waited = 0; waited < T_TIMEOUT; waited += 10) {
        ts_proc_stats(&sp, &st);
        if (st.log_matched > 0) {
            t_log("at the fd limit with %lld sessions open", st.opened);
            return;
        }
        poll(NULL, 0, 10);
    }
    t_fail(__FILE__, __LINE__, "the server never ran out of fds");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "client";
    bool peer = strcmp(mode, "peer") == 0;
    struct ts_proc_stats before, after;
    int fds[NCONN];

    t_init(argc, argv);
    if (!peer && strcmp(mode, "client") != 0)
        t_skip("unknown mode %s", mode);
    ts_max_sessions = 10 * NCONN;
    ts_log_match = strerror(EMFILE); /* "Too many open files" */
    ts_proc_start(&sp, peer ? TS_KEY : NULL, NOFILE);

    for (int i = 0; i < NCONN; i++) {
        fds[i] = ts_raw_connect(peer ? sp.paddr : sp.addr);
        if (!peer)
            ts_raw_frame(fds[i], TS_HELLO, NULL, 0);
    }
    wait_for_emfile();

    /* A window of wall time to measure the server's CPU time over: it is
     * not waiting for an event (there is none to wait for). */
    ts_proc_stats(&sp, &before);
    poll(NULL, 0, 1000);
    ts_proc_stats(&sp, &after);
    t_log("over 1 s at the fd limit: %lld ms of CPU, %lld log lines (%lld on EMFILE in all)",
          (after.cpu_us - before.cpu_us) / 1000, after.log_lines - before.log_lines,
          after.log_matched);
    T_LT(after.cpu_us - before.cpu_us, 250000);
    T_LE(after.log_matched, 2);
    T_LE(after.log_lines - before.log_lines, 2);

    /* Fds come free: a new connection is served. */
    for (int i = 0; i < NCONN; i++)
        close(fds[i]);
    if (peer) {
        uint8_t nonce[32] = {0}, buf[128];
        uint32_t len;
        int fd = ts_raw_connect(sp.paddr);
        ts_raw_frame(fd, TS_PHELLO, nonce, sizeof(nonce));
        T_EQ(ts_raw_read(fd, buf, sizeof(buf), &len, T_TIMEOUT), TS_PCHAL);
        close(fd);
    } else {
        struct ts_client c;
        ts_client_start(&c, sp.addr);
        ts_client_send(&c);
        T_ASSERT(ts_pump_until(NULL, &c, 1, answered, &c, T_TIMEOUT));
        T_EQ(c.lost, 0);
        T_EQ(c.errors, 0);
        ts_client_stop(&c);
    }
    ts_proc_stats(&sp, &after);
    T_LE(after.log_matched, 3);
    ts_proc_stop(&sp);
    return t_done();
}
