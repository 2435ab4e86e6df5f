/* SPDX-License-Identifier: MIT */
/*
 * baton-httpd - a small HTTP/1.1 keep-alive server that can be replaced by a
 * new copy of itself without refusing, resetting or losing a request.
 *
 *   baton-httpd --dir /run/httpd --listen tcp://127.0.0.1:8080
 *
 * Start the same command again (or send SIGHUP, or run `baton upgrade DIR`)
 * and the new process takes over the listening sockets; this one stops
 * accepting, hands its keep-alive connections to the new process, each as
 * soon as it is between requests (see http_movable()),
 * and exits. A keep-alive client notices nothing: its next request is
 * answered by the new process on the same connection. Every answer is
 * "pid PPPPPPP generation GGGGGGGGGG" (see BODY_LEN), so a client can see
 * who served it.
 *
 * When the successor takes no connections (an older version) or fails to,
 * the connections are drained instead: each next answer says "Connection:
 * close", and idle ones are closed after the drain timeout.
 *
 * The loop, the connections' buffers, the upgrade, the handoff and the
 * drain are the examples' shared skeleton (server.c); the request parser
 * is http-parse.c. This file answers requests.
 */
#include "http-parse.h"
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The request line and headers must fit here; the body is skipped. */
#define REQ_MAX 8192
/* A client that pipelines without reading its answers is not read from
 * while this much output waits for it. */
#define OUT_HIGH (64 * 1024)

_Static_assert(REQ_MAX <= BATON_CONN_STATE_MAX, "a connection's state must fit in a handoff");

struct http_conn {
    struct conn c;      /* first: the skeleton's part */
    uint64_t body_left; /* request body bytes still to skip */
};

/* The answer's body, "pid %07d generation %010d\n": zero-padded so that its
 * length never changes (a kernel pid has at most 7 digits, an int 10). A
 * client that compares lengths across answers, as ab does, then sees every
 * generation's answer alike. The man page and the README name this length. */
#define BODY_LEN 34

static char body[BODY_LEN + 1]; /* set once we serve */
static char date[40];           /* "Date: ...\r\n", refreshed once a second */
static time_t date_time;

static void usage(FILE *f)
{
    fprintf(f, "usage: baton-httpd --dir DIR [--listen ADDR]... [--drain-timeout MS]\n"
               "                   [--probation MS] [--max-generations N] [--no-handoff]\n"
               "                   [--standby] [--ready-delay MS] [--verbose]\n"
               "\n"
               "  --dir DIR           coordination directory shared by every copy (required)\n"
               "  --listen ADDR       tcp://HOST:PORT or unix:PATH, repeatable; the fds are\n"
               "                      named http0, http1, ... by position\n"
               "                      (default tcp://127.0.0.1:8080)\n"
               "  --drain-timeout MS  after being replaced, close idle keep-alive\n"
               "                      connections the successor did not take after MS,\n"
               "                      and stop waiting for busy ones to go idle (default 5000)\n"
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
               "SIGHUP starts a new copy of this program that takes over; SIGTERM and\n"
               "SIGINT stop accepting, finish the open connections and exit.\n");
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    default:
        return "Error";
    }
}

static const char *date_header(void)
{
    time_t t = time(NULL);
    struct tm tm;

    if (t != date_time) {
        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        date_time = t;
    }
    return date;
}

/* Queues a response. Without keep_alive, it is the connection's last. */
static void respond(struct conn *c, int status, bool keep_alive, bool head_only)
{
    char head[512], errbody[64];
    const char *b = body;
    size_t blen = BODY_LEN;
    int n;

    if (status != 200) {
        blen = snprintf(errbody, sizeof errbody, "%s\n", reason(status));
        b = errbody;
    }
    n = snprintf(head, sizeof head,
                 "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                 "%sConnection: %s\r\n\r\n",
                 status, reason(status), date_header(), blen,
                 status == 405 ? "Allow: GET, HEAD\r\n" : "", keep_alive ? "keep-alive" : "close");
    conn_out_append(c, head, n);
    if (!head_only)
        conn_out_append(c, b, blen);
    if (!keep_alive)
        c->state = C_CLOSING;
}

/* Once we are being replaced and cannot hand the connection over, every
 * answer is the connection's last: the client then knows to go elsewhere,
 * and never loses a request to us closing under it. */
static void answer(struct server *s, struct conn *c, const struct http_request *req)
{
    bool keep_alive = http_keep_alive(req);

    if (req->status) {
        respond(c, req->status, false, false);
        return;
    }
    if (s->draining && !s->handing)
        keep_alive = false;
    respond(c, req->method_ok ? 200 : 405, keep_alive, req->head_only);
}

/* Answers every complete request in the input buffer (pipelining), until
 * the connection is closing or too much output waits. */
static void http_process(struct server *s, struct conn *c)
{
    struct http_conn *h = (struct http_conn *)c;
    size_t off = 0;
    struct http_request req;

    while (c->state == C_OPEN && conn_out_pending(c) < OUT_HIGH && !c->failed) {
        if (h->body_left > 0) {
            size_t skip = c->in_len - off < h->body_left ? c->in_len - off : h->body_left;

            off += skip;
            h->body_left -= skip;
            if (h->body_left > 0)
                break;
            continue;
        }
        if (off == c->in_len)
            break;
        if (http_parse_request(c->in + off, c->in_len - off, &req) == 0) {
            if (off == 0 && c->in_len == REQ_MAX)
                respond(c, 431, false, false);
            break;
        }
        answer(s, c, &req);
        off += req.head_len;
        h->body_left = req.body_len;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

/*
 * Between requests: no answer waits to be written and no body to be
 * skipped, so the successor can take the connection up at the next
 * request. Bytes of that request already read travel as the state (the
 * successor parses them as the start of its input). An end of stream
 * cannot travel, and a closing connection is better finished here.
 */
static bool http_movable(const struct conn *c)
{
    return c->state == C_OPEN && !c->peer_eof && !c->failed && !conn_out_pending(c) &&
           ((const struct http_conn *)c)->body_left == 0;
}

static size_t http_state(const struct conn *c, char *dst)
{
    if (dst)
        memcpy(dst, c->in, c->in_len);
    return c->in_len;
}

/* A connection taken from our predecessor: its state is the start of its
 * next request. */
static void http_feed(struct server *s, struct conn *c, const char *state, size_t len)
{
    if (len <= REQ_MAX) {
        memcpy(c->in, state, len);
        c->in_len = len;
        http_process(s, c);
    } else {
        /* Not from a copy of this program: no request head is that long. */
        respond(c, 431, false, false);
    }
}

static void http_ready(struct server *s)
{
    int n = snprintf(body, sizeof body, "pid %07d generation %010d\n", (int)getpid(),
                     baton_generation(s->b));

    if (n != BODY_LEN) {
        server_log("the answer's body is %d bytes, not %d", n, BODY_LEN);
        abort();
    }
}

int main(int argc, char **argv)
{
    static const struct server_ops ops = {
        .prog = "baton-httpd",
        .fd_name = "http",
        .default_listen = "tcp://127.0.0.1:8080",
        .usage = usage,
        .conn_size = sizeof(struct http_conn),
        .in_cap = REQ_MAX,
        .out_high = OUT_HIGH,
        .nodelay = true,
        .process = http_process,
        .movable = http_movable,
        .state = http_state,
        .feed = http_feed,
        .hand_later = true,
    };

    return server_main(argc, argv, &ops, http_ready);
}
