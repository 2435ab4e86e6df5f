/* SPDX-License-Identifier: MIT */
/*
 * baton-echo - a line echo server that can be replaced by a new copy of
 * itself while clients stay connected.
 *
 *   baton-echo --dir /run/echo            (listens on unix:/run/echo/echo.sock)
 *
 * Start the same command again (or send SIGHUP) and the new process takes
 * over the listening sockets. This one stops accepting and hands every open
 * connection to the new process (see echo_movable()): the client notices
 * nothing but a short pause. The state that travels with a connection is
 * every byte the client sent that it has not had back yet, so echoes that
 * a slow reader has not taken need not be written first: see echo_state().
 *
 * A successor that does not take connections (an older version) or fails
 * to confirm them leaves them with us: then we keep echoing on them until
 * each client leaves or the drain timeout passes, close them cleanly (a
 * half-close, then input dropped until the client closes) and exit. Such
 * a client reconnects and lands on the new process; baton-echo-client
 * checks that no line is lost, doubled or reordered on the way.
 *
 * The loop, the connections' buffers, the upgrade, the handoff and the
 * drain are the examples' shared skeleton (server.c). This file echoes.
 */
#include "server.h"

#include <string.h>

/* A line longer than this is echoed in pieces. */
#define LINE_MAX_LEN 4096
/* A client that does not read its echoes is not read from while this much
 * output waits for it. Small enough that what a connection holds (output,
 * at most one read past this mark, a partial line) always fits in the state
 * of a connection handoff. */
#define OUT_HIGH (16 * 1024)

_Static_assert(OUT_HIGH + 2 * LINE_MAX_LEN <= BATON_CONN_STATE_MAX,
               "a connection's state must fit in a handoff");

static void usage(FILE *f)
{
    fprintf(f, "usage: baton-echo --dir DIR [--listen ADDR]... [--drain-timeout MS]\n"
               "                  [--probation MS] [--max-generations N] [--no-handoff]\n"
               "                  [--standby] [--ready-delay MS] [--verbose]\n"
               "\n"
               "  --dir DIR           coordination directory shared by every copy (required)\n"
               "  --listen ADDR       unix:PATH or tcp://HOST:PORT, repeatable; the fds are\n"
               "                      named echo0, echo1, ... by position\n"
               "                      (default unix:DIR/echo.sock)\n"
               "  --drain-timeout MS  after being replaced, keep echoing on connections the\n"
               "                      successor did not take for MS, then close (default 5000)\n"
               "  --probation MS      after being replaced, keep the right to serve for MS:\n"
               "                      if the successor dies by then, serve again (default 0)\n"
               "  --max-generations N  at most N copies alive at once (draining ones too);\n"
               "                      an upgrade beyond it ends the oldest (default 8)\n"
               "  --no-handoff        after being replaced, drain every connection here\n"
               "  --standby           keep the next copy started ahead, parked before\n"
               "                      main(): SIGHUP and `baton upgrade` wake it\n"
               "  --ready-delay MS    wait MS before declaring ready (for tests)\n"
               "  --verbose           also print the library's debug messages\n"
               "\n"
               "SIGHUP starts a new copy of this program that takes over, with every open\n"
               "connection; SIGTERM and SIGINT stop accepting, finish the open connections\n"
               "and exit.\n");
}

/* Echoes every complete line read so far; a partial line waits for its end
 * unless it fills the buffer. */
static void conn_echo(struct conn *c)
{
    const char *nl = memrchr(c->in, '\n', c->in_len);
    size_t n = nl ? (size_t)(nl - c->in) + 1 : 0;

    if (!nl && c->in_len == LINE_MAX_LEN)
        n = c->in_len;
    if (n == 0)
        return;
    conn_out_append(c, c->in, n);
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* Input arrived: echo the complete lines. Once the client is done
 * sending, its last line needs no newline. */
static void echo_process(struct server *s, struct conn *c)
{
    conn_echo(c);
    if (c->peer_eof && c->in_len > 0) {
        conn_out_append(c, c->in, c->in_len);
        c->in_len = 0;
    }
}

/* An end of stream cannot travel in a handoff's state, and a connection
 * that is closing (drain timeout) or broken is better finished here. */
static bool echo_movable(const struct conn *c)
{
    return c->state == C_OPEN && !c->peer_eof && !c->failed;
}

/*
 * A connection's state for the successor: every byte the client sent and
 * has not had back yet, oldest first: the echoes still queued, then the
 * partial line. The successor takes it as input just read (echo_feed()),
 * so the client receives exactly the bytes we would have written, and a
 * client slow to read its echoes does not hold the handoff up. Always fits
 * in BATON_CONN_STATE_MAX (see OUT_HIGH). Copies it to dst unless NULL;
 * returns its length.
 */
static size_t echo_state(const struct conn *c, char *dst)
{
    /* A connection that never wrote has no output buffer (c->out NULL):
     * memcpy() from NULL is undefined even for 0 bytes. */
    if (dst && conn_out_pending(c))
        memcpy(dst, c->out + c->out_off, conn_out_pending(c));
    if (dst && c->in_len)
        memcpy(dst + conn_out_pending(c), c->in, c->in_len);
    return conn_out_pending(c) + c->in_len;
}

/* Input that did not come from recv(): a handed connection's state. It may
 * be larger than the line buffer, so it goes in piece by piece, each echoed
 * as a read would be (conn_echo() always makes room in a full buffer). */
static void echo_feed(struct server *s, struct conn *c, const char *data, size_t len)
{
    while (len > 0) {
        size_t n = LINE_MAX_LEN - c->in_len;

        n = n < len ? n : len;
        memcpy(c->in + c->in_len, data, n);
        c->in_len += n;
        data += n;
        len -= n;
        conn_echo(c);
    }
}

int main(int argc, char **argv)
{
    static const struct server_ops ops = {
        .prog = "baton-echo",
        .fd_name = "echo",
        .default_listen = "unix:%s/echo.sock",
        .usage = usage,
        .conn_size = sizeof(struct conn),
        .in_cap = LINE_MAX_LEN,
        .out_high = OUT_HIGH,
        .process = echo_process,
        .movable = echo_movable,
        .state = echo_state,
        .feed = echo_feed,
    };

    return server_main(argc, argv, &ops, NULL);
}
