/* SPDX-License-Identifier: MIT */
/*
 * The example servers' shared skeleton (see server.h). One thread serves
 * everything through epoll with non-blocking sockets; a SIGHUP upgrade too:
 * baton_upgrade_start() returns at once, and its outcome comes on the
 * upgrade fd with the other upgrade events.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* After our last output we half-close and read (and drop) whatever the
 * client still sends, for at most this long: closing with unread data makes
 * the kernel send a reset, which can destroy the output in flight. */
#define LINGER_MS    2000
#define TICK_MS      50
#define PAUSE_MS     100
#define ACCEPT_BATCH 64
#define MAX_EVENTS   64
/* A taken connection's state up to this size needs no allocation. */
#define STATE_BUF 8192

static const char *prog = "server";
static bool verbose;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * BATON_EXAMPLE_TRACE=FILE: append "PID MICROSECONDS EVENT" lines
 * (CLOCK_MONOTONIC, comparable between processes) at the steps of an
 * upgrade, for bench/pause.c: where a client's pause goes. Off, it costs a
 * branch. The first event of each kind after a handoff is all it records
 * on a connection, never one per request.
 */
static int trace_fd = -1;
static int64_t trace_last_read; /* us: the last read of any connection */
static bool trace_adopted, trace_accepted;
static bool trace_read, trace_reply = true; /* the next read, reply are traced */

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void trace_at(const char *event, int64_t us)
{
    char buf[96];
    int n;

    if (trace_fd < 0)
        return;
    n = snprintf(buf, sizeof buf, "%d %lld %s\n", (int)getpid(), (long long)us, event);
    if (write(trace_fd, buf, n) < 0) {
        /* A trace is best effort. */
    }
}

static void trace(const char *event)
{
    if (trace_fd >= 0)
        trace_at(event, now_us());
}

static void trace_open(void)
{
    const char *path = getenv("BATON_EXAMPLE_TRACE");

    if (path && *path)
        trace_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    trace("start");
}

/* One write(2) per line, so that lines from the library's thread, the
 * upgrade thread and a successor sharing our stderr do not interleave. */
void server_log(const char *fmt, ...)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s[%d]: ", prog, (int)getpid());
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    n = strlen(buf);
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, n) < 0) {
        /* Nowhere left to report it. */
    }
}

/* The library's log callback; it may run on the library's own thread. */
static void on_baton_log(void *ctx, int level, const char *msg)
{
    if (level >= BATON_LOG_DEBUG && !verbose)
        return;
    server_log("baton: %s%s",
               level <= BATON_LOG_ERR       ? "error: "
               : level == BATON_LOG_WARNING ? "warning: "
                                            : "",
               msg);
}

/* ------------------------------------------------------------------------ */
/* The command line */

static int parse_ms(const char *s, int *ret)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT_MAX)
        return -1;
    *ret = (int)v;
    return 0;
}

static int set_default_listen(struct config *cfg, const char *fmt)
{
    /* fmt is the program's own constant, with at most one "%s". */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    int n = snprintf(cfg->default_listen, sizeof cfg->default_listen, fmt, cfg->dir);
#pragma GCC diagnostic pop

    if (n < 0 || (size_t)n >= sizeof cfg->default_listen) {
        fprintf(stderr, "%s: --dir is too long for a socket path\n", prog);
        return -1;
    }
    cfg->listen[cfg->nlisten++] = cfg->default_listen;
    return 0;
}

static int parse_option(int opt, const char *arg, struct config *cfg)
{
    switch (opt) {
    case 'd':
        cfg->dir = arg;
        return 0;
    case 'l':
        if (cfg->nlisten == SERVER_MAX_LISTENERS) {
            fprintf(stderr, "%s: at most %d --listen\n", prog, SERVER_MAX_LISTENERS);
            return -1;
        }
        cfg->listen[cfg->nlisten++] = arg;
        return 0;
    case 'p':
        if (parse_ms(arg, &cfg->probation_ms) < 0 || cfg->probation_ms > BATON_PROBATION_MAX_MS) {
            fprintf(stderr, "%s: --probation: not a number of milliseconds from 0 to %d: %s\n",
                    prog, BATON_PROBATION_MAX_MS, arg);
            return -1;
        }
        return 0;
    case 'g':
        if (parse_ms(arg, &cfg->max_generations) < 0 || cfg->max_generations == 1 ||
            cfg->max_generations > BATON_MAX_GENERATIONS_MAX) {
            fprintf(stderr, "%s: --max-generations: not 0 or a number from 2 to %d: %s\n", prog,
                    BATON_MAX_GENERATIONS_MAX, arg);
            return -1;
        }
        return 0;
    case 'n':
        cfg->no_handoff = true;
        return 0;
    case 's':
        cfg->standby = true;
        return 0;
    case 't':
    case 'r':
        if (parse_ms(arg, opt == 't' ? &cfg->drain_timeout_ms : &cfg->ready_delay_ms) < 0) {
            fprintf(stderr, "%s: bad number of milliseconds: %s\n", prog, arg);
            return -1;
        }
        return 0;
    case 'v':
        cfg->verbose = true;
        return 0;
    default:
        return -1;
    }
}

/* Returns 0 to run, 1 when --help was printed, -1 on a usage error. */
static int parse_args(int argc, char **argv, const struct server_ops *ops, struct config *cfg)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"listen", required_argument, NULL, 'l'},
        {"drain-timeout", required_argument, NULL, 't'},
        {"ready-delay", required_argument, NULL, 'r'},
        {"probation", required_argument, NULL, 'p'},
        {"max-generations", required_argument, NULL, 'g'},
        {"no-handoff", no_argument, NULL, 'n'},
        {"standby", no_argument, NULL, 's'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    *cfg = (struct config){.drain_timeout_ms = 5000};
    while ((opt = getopt_long(argc, argv, "d:l:t:r:p:g:nsvh", opts, NULL)) != -1) {
        if (opt == 'h') {
            ops->usage(stdout);
            return 1;
        }
        if (parse_option(opt, optarg, cfg) < 0) {
            ops->usage(stderr);
            return -1;
        }
    }
    if (!cfg->dir || optind != argc) {
        ops->usage(stderr);
        return -1;
    }
    return cfg->nlisten == 0 ? set_default_listen(cfg, ops->default_listen) : 0;
}

/* ------------------------------------------------------------------------ */
/* The epoll set */

static int watch_ctl(struct server *s, int op, struct watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};

    if (epoll_ctl(s->epfd, op, w->fd, &ev) < 0) {
        server_log("epoll_ctl(%d, fd %d): %s", op, w->fd, strerror(errno));
        return -1;
    }
    return 0;
}

static void start_accepting(struct server *s)
{
    for (int i = 0; i < s->nlisteners; i++)
        watch_ctl(s, EPOLL_CTL_ADD, &s->listeners[i], EPOLLIN);
    s->accepting = true;
}

/* Only the epoll registration goes: the listener fds belong to the baton
 * handle, and a successor accepts from the very same sockets. */
static void stop_accepting(struct server *s)
{
    if (!s->accepting)
        return;
    for (int i = 0; i < s->nlisteners; i++)
        watch_ctl(s, EPOLL_CTL_DEL, &s->listeners[i], 0);
    s->accepting = false;
}

/* ------------------------------------------------------------------------ */
/* Connections */

size_t conn_out_pending(const struct conn *c)
{
    return c->out_len - c->out_off;
}

void conn_out_append(struct conn *c, const char *data, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        char *p;

        while (cap < c->out_len + len)
            cap *= 2;
        p = realloc(c->out, cap);
        if (!p) {
            c->failed = true;
            return;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

/* Takes fd (closed on failure). NULL when out of resources. The input
 * buffer follows the program's connection in the same allocation. */
static struct conn *conn_new(struct server *s, int fd)
{
    struct conn *c = calloc(1, s->ops->conn_size + s->ops->in_cap);
    int one = 1;

    if (!c) {
        server_log("out of memory: dropping a connection");
        close(fd);
        return NULL;
    }
    *c = (struct conn){.w = {W_CONN, fd}, .state = C_OPEN, .events = EPOLLIN};
    c->in = (char *)c + s->ops->conn_size;
    /* A pipelined burst of answers should not wait for Nagle; fails
     * harmlessly on unix sockets. */
    if (s->ops->nodelay)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (watch_ctl(s, EPOLL_CTL_ADD, &c->w, c->events) < 0) {
        close(fd);
        free(c);
        return NULL;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    return c;
}

static void conn_close(struct server *s, struct conn *c)
{
    if (c->state == C_LINGER)
        s->nlinger--;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    /* Explicitly: closing the fd alone does not leave the epoll set while a
     * copy of it is open elsewhere, as during a handoff that failed, or
     * after one that succeeded. Not registered any more is fine too. */
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->w.fd, NULL);
    close(c->w.fd);
    free(c->out);
    free(c);
}

/* Level-triggered epoll: watch for input only while we can take some, and
 * for output only while some waits. */
static void conn_update(struct server *s, struct conn *c)
{
    bool room = c->state != C_OPEN ||
                (conn_out_pending(c) < s->ops->out_high && c->in_len < s->ops->in_cap);
    uint32_t want = 0;

    if (!c->peer_eof && room)
        want |= EPOLLIN;
    if (conn_out_pending(c))
        want |= EPOLLOUT;
    if (want != c->events && watch_ctl(s, EPOLL_CTL_MOD, &c->w, want) == 0)
        c->events = want;
}

/*
 * Closing cleanly: everything we owe has been written. We send our FIN,
 * then drop whatever the client still sends until it closes too: the
 * client sees a clean end of stream, never a reset.
 */
static void conn_linger(struct server *s, struct conn *c)
{
    shutdown(c->w.fd, SHUT_WR);
    c->state = C_LINGER;
    c->linger_until = now_ms() + LINGER_MS;
    s->nlinger++;
}

/* Writes what it can. -1: the connection is dead. */
static int conn_flush(struct server *s, struct conn *c)
{
    while (conn_out_pending(c)) {
        ssize_t n = send(c->w.fd, c->out + c->out_off, conn_out_pending(c), MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->out_off += n;
        if (trace_reply)
            trace("first-reply");
        trace_reply = false;
    }
    c->out_off = c->out_len = 0;
    if (c->state == C_CLOSING && !c->peer_eof)
        conn_linger(s, c);
    return 0;
}

/* Reads what is there. -1: the connection is dead or its lingering is over.
 * Once the last output is queued, input is read only to be dropped. */
static int conn_read(struct server *s, struct conn *c)
{
    char scratch[4096];
    bool drop = c->state != C_OPEN;
    char *buf = drop ? scratch : c->in + c->in_len;
    size_t cap = drop ? sizeof scratch : s->ops->in_cap - c->in_len;
    ssize_t n;

    if (cap == 0)
        return 0;
    n = recv(c->w.fd, buf, cap, 0);
    if (n > 0) {
        if (!drop)
            c->in_len += n;
        if (trace_fd >= 0) {
            trace_last_read = now_us();
            if (trace_read)
                trace_at("first-read", trace_last_read);
            trace_read = false;
        }
        return 0;
    }
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (c->state == C_LINGER)
        return -1;
    c->peer_eof = true;
    return 0;
}

/* Why a handoff failed. Not baton_last_error(): the library sets it only
 * for some of the failures, so it may be stale. */
static const char *handoff_error(int err)
{
    switch (err) {
    case -EOPNOTSUPP:
        return "the successor takes no connections";
    case -ETIMEDOUT:
        return "the successor did not confirm in time";
    case -ENOMEM:
        return "out of memory";
    default:
        return baton_strerror(err);
    }
}

/* Hands one connection to the successor, for those that became movable
 * after the burst of hand_off(). We stop reading it first. When the
 * successor does not take it, it stays ours, and so do all later ones: we
 * drain them instead. */
static void conn_pass(struct server *s, struct conn *c)
{
    size_t len = s->ops->state(c, NULL);
    char *state = malloc(len + 1);
    int r = -ENOMEM;

    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->w.fd, NULL);
    if (state)
        r = baton_handoff(s->b, c->w.fd, state, s->ops->state(c, state));
    free(state);
    if (r == 0) {
        conn_close(s, c); /* never shutdown(): it is the successor's now */
        return;
    }
    server_log("handoff: %s; draining the %zu connection(s) left", handoff_error(r), s->nconns);
    s->handing = false;
    if (watch_ctl(s, EPOLL_CTL_ADD, &c->w, c->events) < 0)
        conn_close(s, c);
}

/* After input or a state arrived: write what we can, close what is over,
 * and once superseded pass on what can move. */
static void conn_settle(struct server *s, struct conn *c)
{
    if (c->failed || conn_flush(s, c) < 0 || (c->peer_eof && !conn_out_pending(c))) {
        conn_close(s, c);
        return;
    }
    conn_update(s, c);
    if (s->handing && s->ops->movable(c))
        conn_pass(s, c);
}

static void conn_event(struct server *s, struct conn *c, uint32_t events)
{
    /* A hang-up here means both directions are gone (or a reset): nobody
     * is left to read an answer. */
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_close(s, c);
        return;
    }
    if ((events & EPOLLIN) && conn_read(s, c) < 0) {
        conn_close(s, c);
        return;
    }
    if (c->state == C_OPEN)
        s->ops->process(s, c);
    conn_settle(s, c);
}

/* EMFILE and friends leave the connection in the queue, so the listener
 * stays readable: pause instead of spinning, and let other fds close. */
static void accept_pause(struct server *s, int err)
{
    server_log("accept: %s; pausing for %d ms", strerror(err), PAUSE_MS);
    stop_accepting(s);
    s->accept_resume = now_ms() + PAUSE_MS;
}

static void accept_all(struct server *s, struct watch *w)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd >= 0) {
            if (trace_fd >= 0 && !trace_accepted)
                trace("first-accept");
            trace_accepted = true;
            conn_new(s, fd);
            continue;
        }
        /* EAGAIN is normal: the successor may have taken the connection. */
        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            return;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            accept_pause(s, errno);
        else
            server_log("accept: %s", strerror(errno));
        return;
    }
}

/* ------------------------------------------------------------------------ */
/* Handing connections to a successor, and taking them from a predecessor */

/* One burst of connections handed off together. */
struct handoff_burst {
    struct baton_conn *v;
    struct conn **who;
    char *states;
    size_t n;
};

static void burst_free(struct handoff_burst *h)
{
    free(h->v);
    free(h->who);
    free(h->states);
}

/* Snapshots the state of every movable connection and takes it out of the
 * epoll set: from now on we must not read from it. Writes what it can
 * first, so that more connections are movable and states are small. On
 * failure (out of memory) nothing is taken out and h->n is 0. */
static int burst_collect(struct server *s, struct handoff_burst *h)
{
    size_t total = 0, off = 0, i = 0;
    struct conn *c, *next;

    for (c = s->conns; c; c = next) {
        next = c->next;
        if (c->state == C_OPEN && conn_flush(s, c) < 0)
            conn_close(s, c);
        else if (s->ops->movable(c))
            total += s->ops->state(c, NULL), h->n++;
    }
    h->v = calloc(h->n + 1, sizeof *h->v);
    h->who = calloc(h->n + 1, sizeof *h->who);
    h->states = malloc(total + 1);
    if (!h->v || !h->who || !h->states) {
        h->n = 0;
        return -1;
    }
    for (c = s->conns; c; c = c->next) {
        if (!s->ops->movable(c))
            continue;
        h->v[i] = (struct baton_conn){.fd = c->w.fd, .state = h->states + off, .result = -1};
        h->v[i].len = s->ops->state(c, h->states + off);
        off += h->v[i].len;
        h->who[i++] = c;
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->w.fd, NULL);
    }
    return 0;
}

/* Closes what the successor took (never shutdown(): the connection is its
 * own now) and serves on what it did not. Returns how many it took. */
static size_t burst_settle(struct server *s, struct handoff_burst *h)
{
    size_t taken = 0;

    for (size_t i = 0; i < h->n; i++) {
        struct conn *c = h->who[i];

        if (h->v[i].result == 0) {
            conn_close(s, c);
            taken++;
        } else if (watch_ctl(s, EPOLL_CTL_ADD, &c->w, c->events) < 0) {
            conn_close(s, c);
        } else {
            conn_update(s, c);
        }
    }
    return taken;
}

/* Superseded: every movable connection goes to the successor in one burst.
 * If the successor does not take them all (it takes no connections, died,
 * or did not confirm in time), we drain what is left instead of handing
 * more. */
static void hand_off(struct server *s)
{
    struct handoff_burst h = {0};
    int64_t start = now_ms();
    size_t taken;
    int r = -ENOMEM;

    trace_at("last-read", trace_last_read);
    trace("handoff-start");
    if (burst_collect(s, &h) == 0)
        r = baton_handoff_batch(s->b, h.v, h.n);
    trace("handoff-confirmed");
    taken = burst_settle(s, &h);
    s->handing = r >= 0 && taken == h.n;
    if (r < 0)
        server_log("handoff: %s; draining %zu connection(s)", handoff_error(r), s->nconns);
    else if (s->ops->hand_later)
        server_log("handed %zu of %zu idle connection(s) to the successor in %d ms; %zu busy",
                   taken, h.n, (int)(now_ms() - start), s->nconns);
    else
        server_log("handed %zu of %zu connection(s) to the successor in %d ms", taken, h.n,
                   (int)(now_ms() - start));
    burst_free(&h);
}

/* Tell our successor that no connection will come from us any more: once
 * superseded, none comes from our predecessor either, and we hand no more
 * (all gone, or the successor failed to take one). Checked on every turn
 * of the loop. */
static void end_handoff(struct server *s)
{
    int r;

    if (!s->superseded || s->inbound_open || s->handoff_ended || (s->handing && s->nconns > 0))
        return;
    s->handoff_ended = true;
    r = baton_handoff_done(s->b);
    if (r < 0 && r != -ENOTCONN)
        server_log("baton_handoff_done: %s (%s)", baton_strerror(r), baton_last_error(s->b));
}

static void inbound_close(struct server *s)
{
    if (!s->inbound_open)
        return;
    watch_ctl(s, EPOLL_CTL_DEL, &s->inbound, 0);
    s->inbound_open = false;
}

/* A connection our predecessor handed us; fd is ours. While we are being
 * replaced ourselves it goes straight on, with the same state. */
static void conn_adopt(struct server *s, int fd, const char *state, size_t len)
{
    int fl = fcntl(fd, F_GETFL);
    struct conn *c;

    if (s->handing) {
        int r = baton_handoff(s->b, fd, state, len);

        if (r == 0) {
            close(fd);
            return;
        }
        server_log("handing on a connection: %s; serving it", handoff_error(r));
        s->handing = false;
    }
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    c = conn_new(s, fd);
    if (!c)
        return;
    if (trace_fd >= 0 && !trace_adopted) {
        trace("adopted");
        trace_adopted = trace_read = trace_reply = true;
    }
    s->ops->feed(s, c, state, len);
    conn_settle(s, c);
}

/* Takes one handed connection into *ret_state: buf, or for a state larger
 * than buf a fresh allocation the caller frees. Returns its fd or -errno. */
static int inbound_take(struct server *s, char *buf, size_t cap, char **ret_state, size_t *ret_len)
{
    int fd = baton_conn_accept(s->b, buf, cap, ret_len);
    char *big;

    *ret_state = buf;
    if (fd != -EMSGSIZE)
        return fd;
    big = malloc(*ret_len);
    if (!big)
        return -ENOMEM;
    fd = baton_conn_accept(s->b, big, *ret_len, ret_len);
    if (fd < 0)
        free(big);
    else
        *ret_state = big;
    return fd;
}

/* Connections from our predecessor wait: take every one now (one
 * confirmation covers all those queued). -ENOTCONN: no more will come. */
static void inbound_event(struct server *s)
{
    char buf[STATE_BUF];
    char *state;
    size_t len;
    int fd;

    trace("inbound");
    while ((fd = inbound_take(s, buf, sizeof buf, &state, &len)) >= 0) {
        conn_adopt(s, fd, state, len);
        if (state != buf)
            free(state);
    }
    trace("inbound-done");
    if (fd == -EAGAIN)
        return;
    if (fd != -ENOTCONN)
        server_log("baton_conn_accept: %s (%s)", baton_strerror(fd), baton_last_error(s->b));
    inbound_close(s);
}

/* ------------------------------------------------------------------------ */
/* Upgrades and stopping */

/* Stop accepting and let the connections finish (or hand them over).
 * Called when a successor took over, or on SIGTERM/SIGINT. Once draining,
 * only a further signal changes anything (it cuts the drain short). */
static void begin_drain(struct server *s, const char *why, bool by_signal)
{
    if (s->draining && !by_signal)
        return;
    if (s->draining) {
        server_log("%s: closing the remaining %zu connection(s) now", why, s->nconns);
        s->drain_deadline = now_ms();
        return;
    }
    server_log("%s: no longer accepting; %zu connection(s) open", why, s->nconns);
    s->draining = true;
    s->stopping |= by_signal;
    s->drain_deadline = now_ms() + s->cfg->drain_timeout_ms;
    stop_accepting(s);
    s->accept_resume = 0;
}

/* The successor died on probation: we own the service again. Our
 * listeners never closed, so what queued meanwhile is accepted now. */
static void resume(struct server *s, const struct baton_event *ev)
{
    server_log("the successor (pid %d, generation %d) died on probation: serving again; %u "
               "connection(s) handed to it were lost",
               (int)ev->pid, ev->generation, ev->lost);
    if (s->stopping)
        return; /* a signal told us to stop: we do */
    s->draining = s->superseded = s->handing = s->handoff_ended = false;
    s->released = false;
    if (!s->accepting)
        start_accepting(s);
}

/* Upgrade events: hand our connections over when a successor serves (unless
 * a signal told us to stop already); exit once it is final; take the
 * service back if it died on probation. */
static void on_upgrade_events(struct server *s)
{
    struct baton_event ev;

    while (baton_upgrade_event(s->b, &ev) > 0) {
        switch (ev.type) {
        case BATON_EVENT_STEP_DOWN:
            if (s->up_running)
                server_log("upgrade: the successor is ready");
            s->up_running = false;
            if (s->draining)
                break;
            begin_drain(s, "a successor took over", false);
            s->superseded = true;
            if (!s->cfg->no_handoff)
                hand_off(s);
            break;
        case BATON_EVENT_RELEASED:
            s->released = true;
            if (s->cfg->probation_ms > 0)
                server_log("the successor (pid %d) is final", (int)ev.pid);
            break;
        case BATON_EVENT_RESUME:
            resume(s, &ev);
            break;
        case BATON_EVENT_FAILED:
            s->up_running = false;
            server_log("upgrade failed: %s%s", baton_strerror(ev.error),
                       s->draining ? "" : "; still serving");
            break;
        }
    }
}

static void start_upgrade(struct server *s)
{
    if (s->up_running || s->draining) {
        server_log("SIGHUP: %s; ignored",
                   s->up_running ? "an upgrade is already running" : "already draining");
        return;
    }
    server_log("SIGHUP: starting a successor");
    if (baton_upgrade_start(s->b, NULL) < 0) {
        server_log("upgrade failed: %s; still serving", baton_last_error(s->b));
        return;
    }
    s->up_running = true;
}

static void on_signal(struct server *s)
{
    struct signalfd_siginfo si;

    while (read(s->sig.fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP)
            start_upgrade(s);
        else
            begin_drain(s, si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM", true);
    }
}

/* Timers, checked every tick while any is pending: resuming accept after
 * EMFILE, the end of lingering, the end of the drain (which also ends our
 * wait for connections from a predecessor that does not finish). */
static void sweep(struct server *s)
{
    int64_t now = now_ms();
    bool expired = s->draining && now >= s->drain_deadline;
    bool hard = s->draining && now >= s->drain_deadline + LINGER_MS;
    struct conn *c, *next;

    if (s->accept_resume && now >= s->accept_resume) {
        s->accept_resume = 0;
        start_accepting(s);
    }
    if (hard)
        inbound_close(s);
    if (!expired && s->nlinger == 0)
        return;
    for (c = s->conns; c; c = next) {
        next = c->next;
        if (hard || (c->state == C_LINGER && now >= c->linger_until)) {
            conn_close(s, c);
        } else if (expired && c->state == C_OPEN) {
            /* Idle past the drain timeout (or a request never completed):
             * what it sent since is dropped unanswered, and the client
             * sends it again after our clean close. */
            c->state = C_CLOSING;
            if (conn_flush(s, c) < 0 || (c->peer_eof && !conn_out_pending(c)))
                conn_close(s, c);
            else
                conn_update(s, c);
        }
    }
}

static bool timers_pending(const struct server *s)
{
    return s->draining || s->nlinger > 0 || s->accept_resume;
}

static void dispatch(struct server *s, struct watch *w, uint32_t events)
{
    switch (w->kind) {
    case W_LISTENER:
        if (s->accepting)
            accept_all(s, w);
        break;
    case W_CONN:
        conn_event(s, (struct conn *)w, events);
        break;
    case W_SIGNAL:
        on_signal(s);
        break;
    case W_UPGRADE:
        s->upgrade_fired = true;
        break;
    case W_INBOUND:
        s->inbound_ready = true;
        break;
    }
}

static void server_run(struct server *s)
{
    struct epoll_event evs[MAX_EVENTS];

    trace("serving");
    /* Our predecessor may still hand us connections while we drain; a
     * successor on probation may still die and give the service back. */
    while (!(s->draining && s->nconns == 0 && !s->inbound_open && (s->released || s->stopping))) {
        int n = epoll_wait(s->epfd, evs, MAX_EVENTS, timers_pending(s) ? TICK_MS : -1);

        if (n < 0 && errno != EINTR) {
            server_log("epoll_wait: %s", strerror(errno));
            return;
        }
        /* Within the batch, a connection is only ever closed by its own
         * event, so no later event points to a freed one. Handing off
         * closes many: it waits until the batch is done. */
        for (int i = 0; i < n; i++)
            dispatch(s, evs[i].data.ptr, evs[i].events);
        if (s->upgrade_fired)
            on_upgrade_events(s);
        if (s->inbound_ready)
            inbound_event(s);
        s->upgrade_fired = s->inbound_ready = false;
        end_handoff(s);
        if (timers_pending(s))
            sweep(s);
        if (s->superseded)
            baton_set_conns(s->b, (int)s->nconns); /* for `baton status` */
    }
}

/* ------------------------------------------------------------------------ */
/* Start and stop */

/* Signals are blocked before any thread exists (baton_open() may start
 * one), so that all of them arrive through the signalfd. */
static int setup_signals(struct server *s)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    s->sig = (struct watch){W_SIGNAL, signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)};
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->sig.fd < 0 || s->epfd < 0) {
        server_log("setting up the event loop: %s", strerror(errno));
        return -1;
    }
    if (watch_ctl(s, EPOLL_CTL_ADD, &s->sig, EPOLLIN) < 0)
        return -1;
    return 0;
}

static int open_listeners(struct server *s)
{
    const struct config *cfg = s->cfg;

    for (int i = 0; i < cfg->nlisten; i++) {
        char name[32];
        int fd, fl;

        snprintf(name, sizeof name, "%s%d", s->ops->fd_name, i);
        fd = baton_listen(s->b, name, cfg->listen[i], 0);
        if (fd < 0) {
            server_log("listen on %s: %s (%s)", cfg->listen[i], baton_strerror(fd),
                       baton_last_error(s->b));
            return -1;
        }
        /* The file status flags are shared with our predecessor and our
         * successor, which all use non-blocking accept too. */
        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            server_log("fcntl(%s): %s", name, strerror(errno));
            return -1;
        }
        s->listeners[s->nlisteners++] = (struct watch){W_LISTENER, fd};
    }
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Our drain, the lingering after it, and a margin: then the owner of the
 * day ends us if we are still there (0: no drain timeout, no bound). */
static int drain_bound(const struct config *cfg)
{
    long ms = (long)cfg->drain_timeout_ms + LINGER_MS + 2000;

    if (cfg->drain_timeout_ms <= 0)
        return 0;
    return ms > BATON_PROBATION_MAX_MS ? BATON_PROBATION_MAX_MS : (int)ms;
}

static int server_start(struct server *s, void (*ready)(struct server *s))
{
    struct baton_options opts = {.dir = s->cfg->dir,
                                 .allowed_uid = (uid_t)-1,
                                 .flags = BATON_TAKE_CONNS | (s->cfg->standby ? BATON_STANDBY : 0),
                                 .log = on_baton_log,
                                 .probation_ms = s->cfg->probation_ms,
                                 .max_generations = s->cfg->max_generations,
                                 /* The library's bound backs ours up: a copy
                                  * wedged past its own drain is ended. */
                                 .drain_timeout_ms = drain_bound(s->cfg)};
    int r;

    if (setup_signals(s) < 0)
        return -1;
    r = baton_open(&opts, &s->b);
    if (r < 0) {
        server_log("baton_open(%s): %s", s->cfg->dir, baton_strerror(r));
        return -1;
    }
    trace("opened");
    /* Our predecessor hands us its connections once we are ready. */
    if (baton_inherited(s->b)) {
        s->inbound = (struct watch){W_INBOUND, baton_conn_fd(s->b)};
        s->inbound_open = watch_ctl(s, EPOLL_CTL_ADD, &s->inbound, EPOLLIN) == 0;
    }
    if (open_listeners(s) < 0)
        return -1;
    start_accepting(s);
    if (s->cfg->ready_delay_ms > 0)
        sleep_ms(s->cfg->ready_delay_ms);
    r = baton_ready(s->b);
    if (r < 0) {
        server_log("baton_ready: %s (%s)", baton_strerror(r), baton_last_error(s->b));
        return -1;
    }
    trace("ready");
    s->upgrade = (struct watch){W_UPGRADE, baton_upgrade_fd(s->b)};
    if (watch_ctl(s, EPOLL_CTL_ADD, &s->upgrade, EPOLLIN) < 0)
        return -1;
    if (ready)
        ready(s);
    printf("ready pid=%d generation=%d\n", (int)getpid(), baton_generation(s->b));
    fflush(stdout);
    return 0;
}

/* Safe after a partial server_start(). */
static void server_stop(struct server *s)
{
    if (s->up_running) {
        /* Its outcome is near: the library gives up on it at its deadline. */
        server_log("waiting for the running upgrade to finish");
        while (s->up_running) {
            struct pollfd p = {.fd = baton_upgrade_fd(s->b), .events = POLLIN};
            if (poll(&p, 1, -1) < 0 && errno != EINTR)
                break;
            on_upgrade_events(s);
        }
    }
    while (s->conns)
        conn_close(s, s->conns);
    /* Closes the listeners; a unix socket's path stays for the successor. */
    baton_free(s->b);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->sig.fd >= 0)
        close(s->sig.fd);
}

int server_main(int argc, char **argv, const struct server_ops *ops,
                void (*ready)(struct server *s))
{
    struct config cfg;
    struct server s = {.ops = ops, .cfg = &cfg, .epfd = -1, .sig.fd = -1};
    int r;

    trace_open();
    prog = ops->prog;
    r = parse_args(argc, argv, ops, &cfg);
    if (r != 0)
        return r > 0 ? 0 : 2;
    verbose = cfg.verbose;
    if (server_start(&s, ready) < 0) {
        server_stop(&s);
        return 1;
    }
    server_run(&s);
    trace("loop-end");
    server_stop(&s);
    trace("exit");
    server_log("exiting");
    return 0;
}
