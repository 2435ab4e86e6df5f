/* SPDX-License-Identifier: MIT */
/*
 * baton-load - HTTP/1.1 load that counts every failed request, to check that
 * upgrades stay invisible to clients.
 *
 * N keep-alive connections each send "GET PATH HTTP/1.1" and wait for the
 * whole response before sending the next request; besides, R fresh
 * connections a second each send one request with "Connection: close". A
 * response that says the server closes the connection ("Connection: close",
 * or HTTP/1.0 without keep-alive) ends its connection normally: the client
 * reconnects at once. Every other close, reset, refused or failed connect,
 * timeout, short or malformed response and non-2xx status is an error,
 * counted by kind. Bodies that read "pid P generation G" (baton-httpd's) are
 * counted by generation and pid.
 *
 * Single-threaded, epoll, non-blocking. Memory is bounded: latencies go into
 * a log-linear histogram (about 0.2% resolution), not an array of samples.
 * The run stops by itself: no request starts after the duration and none
 * outlives its timeout, so it ends at most duration + timeout after it began.
 *
 * Exit status: 0 when no request failed, 1 when any did, 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_US  1000ull
#define NS_PER_MS  1000000ull
#define NS_PER_S   1000000000ull
#define HEAD_MAX   4096 /* status line and headers of one response */
#define BODY_KEEP  64   /* body bytes kept to read "pid P generation G" */
#define GEN_MAX    256  /* distinct (generation, pid) pairs counted */
#define EVENTS_MAX 256
/* A keep-alive connection whose request failed waits this long before it
 * reconnects, so that a refused window costs a bounded number of errors per
 * connection instead of measuring how fast we can retry. */
#define RETRY_NS (10 * NS_PER_MS)
/* A unix socket connect that finds the backlog full (EAGAIN) is retried this
 * often until the request's timeout; TCP waits in the kernel instead. */
#define AGAIN_NS (1 * NS_PER_MS)
/* Deadlines and retries are checked this often. */
#define SCAN_NS (5 * NS_PER_MS)
/* --verbose describes at most this many failed requests. */
#define REPORT_MAX 200

/* Latency histogram in microseconds: values below HIST_SUB exactly, larger
 * ones with HIST_SUB / 2 sub-buckets per power of two. */
#define HIST_SUB_BITS 10
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_HALF     (HIST_SUB / 2)
#define HIST_BUCKETS  (HIST_SUB + (64 - HIST_SUB_BITS) * HIST_HALF)

enum err_kind {
    ERR_CONNECT_REFUSED,
    ERR_CONNECT_OTHER,
    ERR_RESET,
    ERR_EOF,
    ERR_TIMEOUT,
    ERR_BAD,
    ERR_NON2XX,
    ERR_KINDS
};

static const char *const err_names[ERR_KINDS] = {
    "connect-refused", "connect-other", "reset",   "eof-before-response",
    "timeout",         "bad-response",  "non-2xx",
};

enum conn_state { ST_FREE, ST_WAIT, ST_CONNECTING, ST_SENDING, ST_READING };

enum body_mode { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_EOF };

enum chunk_state {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LINE,
    CH_FINAL_LF
};

struct response {
    size_t head_len; /* bytes in head[] until the blank line is seen */
    bool head_done;
    int status;
    bool close; /* the server closes the connection after this response */
    enum body_mode mode;
    uint64_t remaining; /* BODY_LENGTH: body bytes left; BODY_CHUNKED: chunk bytes left */
    enum chunk_state chunk;
    uint64_t received; /* response bytes received so far */
    size_t body_len;   /* bytes kept in body[] */
    char body[BODY_KEEP + 1];
    char head[HEAD_MAX + 1];
};

struct conn {
    int fd;
    uint32_t idx;    /* slot in load.conns */
    uint32_t seq;    /* bumped for every socket, so stale epoll events are ignored */
    uint32_t events; /* epoll interest of fd */
    enum conn_state state;
    bool keepalive;    /* one of the -c connections; else a fresh one */
    bool original;     /* --same-connections: still the slot's first socket */
    bool new_socket;   /* the request in flight began with a connect */
    bool again;        /* ST_WAIT: retry the connect of the same request */
    uint64_t t_start;  /* when the request in flight began (its connect, if any) */
    uint64_t deadline; /* t_start + timeout */
    uint64_t wake;     /* ST_WAIT: when to connect again */
    size_t sent;
    struct response r;
};

struct options {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char target[320]; /* for display: tcp://HOST:PORT or unix:PATH */
    char host[300];   /* Host header */
    char path[256];
    long conns;
    double rate;
    double duration;
    long timeout_ms;
    long interval_ms;
    bool same;
    bool json;
    bool verbose;
};

struct gen_count {
    long generation;
    long pid;
    uint64_t requests;
};

struct stats {
    uint64_t ok, ok_keepalive, ok_fresh;
    uint64_t errors[ERR_KINDS];
    uint64_t err_first[ERR_KINDS], err_last[ERR_KINDS]; /* ns since start */
    uint64_t connects;
    uint64_t server_closes; /* keep-alive connections the server ended normally */
    uint64_t same_closed;   /* originals ended by the server normally */
    uint64_t same_lost;     /* originals ended by an error */
    uint64_t unknown_body;  /* 2xx bodies without "pid P generation G" */
    struct gen_count gens[GEN_MAX];
    size_t ngens;
    uint64_t gens_dropped;
    uint64_t hist[HIST_BUCKETS];
    uint64_t max_us;
    uint64_t iv_ok, iv_err; /* this --interval-report period */
    long last_gen;
};

struct load {
    struct options o;
    int ep;
    struct conn **conns;
    uint32_t nconns, cap;
    uint32_t *free_idx;
    uint32_t nfree;
    uint32_t active; /* conns not ST_FREE */
    uint64_t now, start, end, stopped_at;
    uint64_t fresh_started;
    uint64_t next_scan, next_interval;
    bool stopping;
    unsigned reported; /* failed requests described by --verbose */
    char req_ka[640], req_close[640];
    size_t req_ka_len, req_close_len;
    char buf[65536];
    struct stats s;
};

static volatile sig_atomic_t interrupted;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- latency histogram ---- */

static size_t hist_index(uint64_t us)
{
    if (us < HIST_SUB)
        return (size_t)us;
    int shift = 63 - __builtin_clzll(us) - (HIST_SUB_BITS - 1);
    return HIST_SUB + (size_t)(shift - 1) * HIST_HALF + (size_t)((us >> shift) - HIST_HALF);
}

/* The middle of the values that fall into bucket i. */
static double hist_value(size_t i)
{
    if (i < HIST_SUB)
        return (double)i;
    size_t shift = (i - HIST_SUB) / HIST_HALF + 1;
    uint64_t low = ((uint64_t)((i - HIST_SUB) % HIST_HALF) + HIST_HALF) << shift;
    return (double)low + (double)((1ull << shift) - 1) / 2.0;
}

static void hist_add(struct stats *s, uint64_t us)
{
    s->hist[hist_index(us)]++;
    if (us > s->max_us)
        s->max_us = us;
}

/* The latency in ms below which a fraction p of the successful requests fall. */
static double hist_percentile(const struct stats *s, double p)
{
    uint64_t total = s->ok;
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(p * (double)total);
    if ((double)rank < p * (double)total || rank == 0)
        rank++;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += s->hist[i];
        if (seen >= rank) {
            double v = hist_value(i);
            return (v > (double)s->max_us ? (double)s->max_us : v) / 1000.0;
        }
    }
    return (double)s->max_us / 1000.0;
}

/* ---- statistics ---- */

static void stats_error(struct load *L, enum err_kind kind)
{
    struct stats *s = &L->s;
    uint64_t t = L->now - L->start;

    if (s->errors[kind] == 0)
        s->err_first[kind] = t;
    s->err_last[kind] = t;
    s->errors[kind]++;
    s->iv_err++;
}

/* Counts the response by the "pid P generation G" its body carries. */
static void stats_generation(struct stats *s, const struct response *r)
{
    long pid, gen;

    if (sscanf(r->body, "pid %ld generation %ld", &pid, &gen) != 2) {
        s->unknown_body++;
        return;
    }
    s->last_gen = gen;
    for (size_t i = 0; i < s->ngens; i++) {
        if (s->gens[i].generation == gen && s->gens[i].pid == pid) {
            s->gens[i].requests++;
            return;
        }
    }
    if (s->ngens == GEN_MAX) {
        s->gens_dropped++;
        return;
    }
    s->gens[s->ngens++] = (struct gen_count){.generation = gen, .pid = pid, .requests = 1};
}

static int gen_cmp(const void *a, const void *b)
{
    const struct gen_count *x = a, *y = b;

    if (x->generation != y->generation)
        return x->generation < y->generation ? -1 : 1;
    return x->pid < y->pid ? -1 : x->pid > y->pid;
}

/* ---- response parser ---- */

static void response_reset(struct response *r)
{
    r->head_len = 0;
    r->head_done = false;
    r->status = 0;
    r->close = false;
    r->mode = BODY_NONE;
    r->remaining = 0;
    r->chunk = CH_SIZE;
    r->received = 0;
    r->body_len = 0;
    r->body[0] = '\0';
}

/* Whether the comma-separated header value v contains token tok. */
static bool has_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);

    while (*v) {
        v += strspn(v, " \t,");
        size_t len = strcspn(v, ",");
        size_t end = len;
        while (end > 0 && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end == n && strncasecmp(v, tok, n) == 0)
            return true;
        v += len;
    }
    return false;
}

static int parse_length(const char *v, uint64_t *ret)
{
    uint64_t n = 0;

    v += strspn(v, " \t");
    if (*v < '0' || *v > '9')
        return -1;
    for (; *v >= '0' && *v <= '9'; v++) {
        if (n > (1ull << 40))
            return -1;
        n = n * 10 + (uint64_t)(*v - '0');
    }
    v += strspn(v, " \t");
    if (*v)
        return -1;
    *ret = n;
    return 0;
}

/* Applies one "Name: value" line (NUL-terminated, without its CRLF). */
static int parse_header(struct response *r, char *line, bool *keep_alive, bool *has_length)
{
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return -1;
    *colon = '\0';
    char *v = colon + 1;

    if (strcasecmp(line, "content-length") == 0) {
        uint64_t n;
        if (parse_length(v, &n) < 0 || (*has_length && n != r->remaining))
            return -1;
        r->remaining = n;
        *has_length = true;
    } else if (strcasecmp(line, "transfer-encoding") == 0) {
        if (!has_token(v, "chunked"))
            return -1; /* no other coding is ever sent to us */
        r->mode = BODY_CHUNKED;
    } else if (strcasecmp(line, "connection") == 0) {
        if (has_token(v, "close"))
            r->close = true;
        if (has_token(v, "keep-alive"))
            *keep_alive = true;
    }
    return 0;
}

/* Parses the complete head in r->head (its blank line replaced by NULs) and
 * chooses how the body ends. */
static int parse_head(struct response *r)
{
    char *p = r->head, *eol;
    bool keep_alive = false, has_length = false;

    if (strncmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -1;
    if (p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return -1;
    if (p[12] != ' ' && p[12] != '\r' && p[12] != '\n')
        return -1;
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    bool http10 = p[7] == '0';
    for (p = strchr(p, '\n'); p && p[1]; p = eol) {
        p++;
        eol = strchr(p, '\n');
        if (!eol)
            return -1;
        *eol = '\0';
        if (eol > p && eol[-1] == '\r')
            eol[-1] = '\0';
        if (parse_header(r, p, &keep_alive, &has_length) < 0)
            return -1;
    }
    if (http10 && !keep_alive)
        r->close = true;
    if (r->status < 200)
        return -1; /* we never ask for an interim response */
    if (r->status == 204 || r->status == 304)
        r->mode = BODY_NONE;
    else if (r->mode != BODY_CHUNKED)
        r->mode = has_length ? BODY_LENGTH : BODY_EOF;
    if (r->mode == BODY_EOF)
        r->close = true;
    return 0;
}

static void body_keep(struct response *r, const char *data, size_t len)
{
    size_t n = BODY_KEEP - r->body_len;

    if (n > len)
        n = len;
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* One byte of chunk framing (everything but chunk data). */
static int chunk_byte(struct response *r, char ch)
{
    switch (r->chunk) {
    case CH_SIZE:
        if (hex_digit(ch) >= 0 && r->remaining < (1ull << 40)) {
            r->remaining = r->remaining * 16 + (uint64_t)hex_digit(ch);
            return 0;
        }
        if (ch == ';' || ch == ' ' || ch == '\t')
            r->chunk = CH_EXT;
        else if (ch == '\r')
            r->chunk = CH_SIZE_LF;
        else
            return -1;
        return 0;
    case CH_EXT:
        if (ch == '\r')
            r->chunk = CH_SIZE_LF;
        return 0;
    case CH_SIZE_LF:
        if (ch != '\n')
            return -1;
        r->chunk = r->remaining ? CH_DATA : CH_TRAILER;
        return 0;
    case CH_DATA_CR:
        r->chunk = CH_DATA_LF;
        return ch == '\r' ? 0 : -1;
    case CH_DATA_LF:
        r->chunk = CH_SIZE;
        return ch == '\n' ? 0 : -1;
    case CH_TRAILER:
        r->chunk = ch == '\r' ? CH_FINAL_LF : CH_TRAILER_LINE;
        return 0;
    case CH_TRAILER_LINE:
        if (ch == '\n')
            r->chunk = CH_TRAILER;
        return 0;
    case CH_FINAL_LF:
        return ch == '\n' ? 1 : -1;
    default:
        return -1;
    }
}

/* Feeds chunked body bytes: 1 complete (with nothing left over), 0 more to
 * come, -1 malformed. */
static int body_chunked(struct response *r, const char *data, size_t len)
{
    for (size_t i = 0; i < len;) {
        if (r->chunk == CH_DATA) {
            size_t n = len - i < r->remaining ? len - i : (size_t)r->remaining;
            body_keep(r, data + i, n);
            r->remaining -= n;
            i += n;
            if (r->remaining == 0)
                r->chunk = CH_DATA_CR;
            continue;
        }
        int rc = chunk_byte(r, data[i++]);
        if (rc != 0)
            return rc < 0 || i < len ? -1 : 1;
    }
    return 0;
}

/* Feeds body bytes: 1 complete (with nothing left over), 0 more to come, -1
 * malformed or more than the response holds (we never pipeline). */
static int body_feed(struct response *r, const char *data, size_t len)
{
    switch (r->mode) {
    case BODY_NONE:
        return len ? -1 : 1;
    case BODY_LENGTH:
        if (len > r->remaining)
            return -1;
        body_keep(r, data, len);
        r->remaining -= len;
        return r->remaining == 0;
    case BODY_CHUNKED:
        return body_chunked(r, data, len);
    case BODY_EOF:
        body_keep(r, data, len);
        return 0;
    }
    return -1;
}

/* Feeds received bytes to the parser: 1 the response is complete, 0 more
 * to come, -1 malformed. */
static int response_feed(struct response *r, const char *data, size_t len)
{
    if (r->head_done)
        return body_feed(r, data, len);
    size_t old = r->head_len;
    size_t n = HEAD_MAX - old < len ? HEAD_MAX - old : len;
    memcpy(r->head + old, data, n);
    r->head_len += n;
    r->head[r->head_len] = '\0';
    size_t from = old > 3 ? old - 3 : 0;
    char *end = memmem(r->head + from, r->head_len - from, "\r\n\r\n", 4);
    if (!end)
        return r->head_len == HEAD_MAX ? -1 : 0;
    size_t head = (size_t)(end - r->head) + 4;
    end[2] = '\0';
    r->head_done = true;
    if (parse_head(r) < 0)
        return -1;
    /* Body bytes that came with the head: those of data past the head. */
    size_t used = head - old;
    return body_feed(r, data + used, len - used);
}

/* ---- connections ---- */

static void conn_watch(struct load *L, struct conn *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)c->idx << 32 | c->seq};
    if (epoll_ctl(L->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        perror("baton-load: epoll_ctl");
        exit(1);
    }
    c->events = events;
}

static struct conn *conn_new(struct load *L, bool keepalive)
{
    struct conn *c;

    if (L->nfree) {
        c = L->conns[L->free_idx[--L->nfree]];
    } else {
        if (L->nconns == L->cap) {
            uint32_t cap = L->cap ? L->cap * 2 : 256;
            L->conns = realloc(L->conns, cap * sizeof *L->conns);
            L->free_idx = realloc(L->free_idx, cap * sizeof *L->free_idx);
            if (!L->conns || !L->free_idx) {
                fputs("baton-load: out of memory\n", stderr);
                exit(1);
            }
            L->cap = cap;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
            fputs("baton-load: out of memory\n", stderr);
            exit(1);
        }
        c->idx = L->nconns;
        L->conns[L->nconns++] = c;
    }
    c->fd = -1;
    c->keepalive = keepalive;
    c->original = keepalive;
    c->state = ST_WAIT;
    L->active++;
    return c;
}

static void conn_close_socket(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->events = 0;
}

static void conn_release(struct load *L, struct conn *c)
{
    conn_close_socket(c);
    c->state = ST_FREE;
    L->free_idx[L->nfree++] = c->idx;
    L->active--;
}

/* With --verbose, one line on stderr for each of the first REPORT_MAX
 * failed requests: enough to tell which connections fail and how. */
static void conn_report(struct load *L, const struct conn *c, enum err_kind kind, int err)
{
    static const char *const states[] = {"free", "waiting", "connecting", "sending", "reading"};

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    unsigned port = 0;

    if (!L->o.verbose || L->reported >= REPORT_MAX)
        return;
    L->reported++;
    /* Our port tells the connection apart in a packet capture or strace. */
    if (c->fd >= 0 && getsockname(c->fd, (struct sockaddr *)&ss, &len) == 0 &&
        ss.ss_family != AF_UNIX)
        port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                             : ((struct sockaddr_in6 *)&ss)->sin6_port);
    fprintf(stderr,
            "baton-load: %.6f s: %s%s%s on a %s connection (port %u), %s on a %s socket, "
            "after %.3f ms and %" PRIu64 " response bytes%s\n",
            (double)(L->now - L->start) / 1e9, err_names[kind], err ? ": " : "",
            err ? strerror(err) : "", c->keepalive ? "keep-alive" : "fresh", port, states[c->state],
            c->new_socket ? "new" : "reused", (double)(L->now - c->t_start) / 1e6, c->r.received,
            L->reported == REPORT_MAX ? " (no more reported)" : "");
}

/* The request in flight failed: count it, and let a keep-alive connection
 * try again after a pause. err is the errno, if one goes with the kind. */
static void conn_fail(struct load *L, struct conn *c, enum err_kind kind, int err)
{
    L->now = now_ns();
    stats_error(L, kind);
    conn_report(L, c, kind, err);
    conn_close_socket(c);
    if (c->keepalive && c->original) {
        c->original = false;
        L->s.same_lost++;
    }
    if (!c->keepalive || L->stopping) {
        conn_release(L, c);
        return;
    }
    c->state = ST_WAIT;
    c->again = false;
    c->wake = L->now + RETRY_NS;
}

static void conn_send(struct load *L, struct conn *c)
{
    const char *req = c->keepalive ? L->req_ka : L->req_close;
    size_t len = c->keepalive ? L->req_ka_len : L->req_close_len;

    while (c->sent < len) {
        ssize_t n = send(c->fd, req + c->sent, len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            conn_watch(L, c, EPOLLOUT);
            return;
        }
        if (n < 0) {
            conn_fail(L, c, ERR_RESET, errno);
            return;
        }
        c->sent += (size_t)n;
    }
    c->state = ST_READING;
    conn_watch(L, c, EPOLLIN);
}

/* Sends the next request; on a socket just connected, its time runs since
 * the connect began. */
static void conn_request(struct load *L, struct conn *c)
{
    if (!c->new_socket) {
        c->t_start = now_ns();
        c->deadline = c->t_start + (uint64_t)L->o.timeout_ms * NS_PER_MS;
    }
    response_reset(&c->r);
    c->sent = 0;
    c->state = ST_SENDING;
    conn_send(L, c);
}

static void conn_connect_error(struct load *L, struct conn *c, int err)
{
    if (err == EAGAIN && L->o.addr.ss_family == AF_UNIX) {
        /* The listener's backlog is full; the request has not failed yet. */
        conn_close_socket(c);
        c->state = ST_WAIT;
        c->again = true;
        c->wake = now_ns() + AGAIN_NS;
        return;
    }
    conn_fail(L, c, err == ECONNREFUSED ? ERR_CONNECT_REFUSED : ERR_CONNECT_OTHER, err);
}

/* Opens a socket and connects it for the request that began at c->t_start. */
static void conn_connect(struct load *L, struct conn *c)
{
    int one = 1;

    c->fd = socket(L->o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_fail(L, c, ERR_CONNECT_OTHER, errno);
        return;
    }
    c->seq++;
    c->new_socket = true;
    if (L->o.addr.ss_family != AF_UNIX)
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    L->s.connects++;
    int rc = connect(c->fd, (const struct sockaddr *)&L->o.addr, L->o.addrlen);
    int err = rc < 0 ? errno : 0;
    if (rc < 0 && err != EINPROGRESS) {
        conn_connect_error(L, c, err);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)c->idx << 32 | c->seq};
    if (epoll_ctl(L->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        perror("baton-load: epoll_ctl");
        exit(1);
    }
    c->events = EPOLLOUT;
    c->state = ST_CONNECTING;
    if (rc == 0)
        conn_request(L, c);
}

/* Begins a request on a new connection. */
static void conn_open(struct load *L, struct conn *c)
{
    c->t_start = now_ns();
    c->deadline = c->t_start + (uint64_t)L->o.timeout_ms * NS_PER_MS;
    response_reset(&c->r);
    conn_connect(L, c);
}

static void conn_connected(struct load *L, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err)
        conn_connect_error(L, c, err);
    else
        conn_request(L, c);
}

/* A whole response arrived. */
static void conn_done(struct load *L, struct conn *c)
{
    struct stats *s = &L->s;

    L->now = now_ns();
    if (c->r.status >= 300) {
        stats_error(L, ERR_NON2XX);
    } else {
        s->ok++;
        s->iv_ok++;
        if (c->keepalive)
            s->ok_keepalive++;
        else
            s->ok_fresh++;
        hist_add(s, (L->now - c->t_start) / NS_PER_US);
        stats_generation(s, &c->r);
    }
    c->new_socket = false;
    if (!c->keepalive || (L->stopping && !c->r.close)) {
        conn_release(L, c);
        return;
    }
    if (!c->r.close) {
        conn_request(L, c);
        return;
    }
    s->server_closes++;
    if (c->original) {
        c->original = false;
        s->same_closed++;
    }
    conn_close_socket(c);
    if (L->stopping)
        conn_release(L, c);
    else
        conn_open(L, c);
}

/* The server closed the connection: normal only where the body runs to EOF. */
static void conn_eof(struct load *L, struct conn *c)
{
    if (c->r.head_done && c->r.mode == BODY_EOF)
        conn_done(L, c);
    else
        conn_fail(L, c, c->r.received ? ERR_BAD : ERR_EOF, 0);
}

static void conn_read(struct load *L, struct conn *c)
{
    ssize_t n = recv(c->fd, L->buf, sizeof L->buf, 0);

    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            conn_fail(L, c, ERR_RESET, errno);
        return;
    }
    if (n == 0) {
        conn_eof(L, c);
        return;
    }
    c->r.received += (uint64_t)n;
    int rc = response_feed(&c->r, L->buf, (size_t)n);
    if (rc < 0)
        conn_fail(L, c, ERR_BAD, 0);
    else if (rc > 0)
        conn_done(L, c);
}

static void conn_event(struct load *L, uint64_t data)
{
    uint32_t idx = (uint32_t)(data >> 32);

    if (idx >= L->nconns)
        return;
    struct conn *c = L->conns[idx];
    if (c->seq != (uint32_t)data || c->fd < 0)
        return; /* an event for a socket closed earlier in this batch */
    switch (c->state) {
    case ST_CONNECTING:
        conn_connected(L, c);
        break;
    case ST_SENDING:
        conn_send(L, c);
        break;
    case ST_READING:
        conn_read(L, c);
        break;
    default:
        break;
    }
}

/* ---- the run ---- */

/* No request starts from now on; those in flight finish or time out. */
static void load_stop(struct load *L)
{
    L->stopping = true;
    L->stopped_at = L->now;
    for (uint32_t i = 0; i < L->nconns; i++) {
        struct conn *c = L->conns[i];
        /* A connect in progress carries no request yet. */
        if (c->state == ST_WAIT || c->state == ST_CONNECTING)
            conn_release(L, c);
    }
}

static void load_scan(struct load *L)
{
    for (uint32_t i = 0; i < L->nconns; i++) {
        struct conn *c = L->conns[i];
        if (c->state == ST_WAIT && L->now >= c->wake && L->now < c->deadline && c->again)
            conn_connect(L, c);
        else if (c->state == ST_WAIT && L->now >= c->wake && !c->again)
            conn_open(L, c);
        else if (c->state != ST_FREE && (c->state != ST_WAIT || c->again) && L->now >= c->deadline)
            conn_fail(L, c, ERR_TIMEOUT, 0);
    }
    L->next_scan = L->now + SCAN_NS;
}

static void load_fresh(struct load *L)
{
    if (L->o.rate <= 0)
        return;
    double t = (double)(L->now - L->start) / (double)NS_PER_S;
    uint64_t due = (uint64_t)(t * L->o.rate);
    while (L->fresh_started < due) {
        L->fresh_started++;
        conn_open(L, conn_new(L, false));
    }
}

static void interval_print(struct load *L, uint64_t t)
{
    struct stats *s = &L->s;
    double sec = (double)t / (double)NS_PER_S;

    if (L->o.json)
        printf("{\"interval\":{\"t\":%.3f,\"ok\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"generation\":%ld}}\n",
               sec, s->iv_ok, s->iv_err, s->last_gen);
    else
        printf("interval      t=%.3f ok=%" PRIu64 " errors=%" PRIu64 " generation=%ld\n", sec,
               s->iv_ok, s->iv_err, s->last_gen);
    fflush(stdout);
    s->iv_ok = s->iv_err = 0;
}

static void load_interval(struct load *L)
{
    uint64_t step = (uint64_t)L->o.interval_ms * NS_PER_MS;

    while (L->o.interval_ms > 0 && L->now >= L->next_interval) {
        interval_print(L, L->next_interval - L->start);
        L->next_interval += step;
    }
}

/* How long epoll_wait may sleep, in ms (rounded up so we wake after, not
 * before, the next thing due). */
static int load_timeout(const struct load *L)
{
    uint64_t next = L->next_scan;

    if (!L->stopping && L->end < next)
        next = L->end;
    if (!L->stopping && L->o.rate > 0) {
        uint64_t t = L->start + (uint64_t)((double)(L->fresh_started + 1) / L->o.rate * 1e9);
        if (t < next)
            next = t;
    }
    if (L->o.interval_ms > 0 && L->next_interval < next)
        next = L->next_interval;
    if (next <= L->now)
        return 0;
    return (int)((next - L->now + NS_PER_MS - 1) / NS_PER_MS);
}

static void load_run(struct load *L)
{
    struct epoll_event ev[EVENTS_MAX];

    L->now = L->start = now_ns();
    L->end = L->start + (uint64_t)(L->o.duration * 1e9);
    L->next_scan = L->now + SCAN_NS;
    L->next_interval = L->start + (uint64_t)L->o.interval_ms * NS_PER_MS;
    for (long i = 0; i < L->o.conns; i++)
        conn_open(L, conn_new(L, true));
    for (;;) {
        L->now = now_ns();
        if (!L->stopping && (L->now >= L->end || interrupted))
            load_stop(L);
        if (!L->stopping)
            load_fresh(L);
        if (L->now >= L->next_scan)
            load_scan(L);
        if (!L->stopping)
            load_interval(L);
        if (L->stopping && L->active == 0)
            break;
        int n = epoll_wait(L->ep, ev, EVENTS_MAX, load_timeout(L));
        if (n < 0 && errno != EINTR) {
            perror("baton-load: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++)
            conn_event(L, ev[i].data.u64);
    }
    L->now = now_ns();
}

/* ---- output ---- */

static uint64_t errors_total(const struct stats *s)
{
    uint64_t n = 0;

    for (int k = 0; k < ERR_KINDS; k++)
        n += s->errors[k];
    return n;
}

static void print_text(struct load *L)
{
    struct stats *s = &L->s;
    const struct options *o = &L->o;
    double dur = (double)(L->stopped_at - L->start) / (double)NS_PER_S;

    printf("target        %s (GET %s)\n", o->target, o->path);
    printf("load          %ld keep-alive connections%s, %g fresh connections/s, timeout %ld ms\n",
           o->conns, o->same ? " (same-connections)" : "", o->rate, o->timeout_ms);
    printf("duration      %.3f s (%.3f s with the last responses)\n", dur,
           (double)(L->now - L->start) / (double)NS_PER_S);
    printf("requests ok   %" PRIu64 " (%.1f req/s; keep-alive %" PRIu64 ", fresh %" PRIu64 ")\n",
           s->ok, dur > 0 ? (double)s->ok / dur : 0.0, s->ok_keepalive, s->ok_fresh);
    printf("connections   %" PRIu64 " opened, %" PRIu64
           " keep-alive ones ended by the server with Connection: close\n",
           s->connects, s->server_closes);
    if (o->same)
        printf("same-conns    %ld held, %" PRIu64
               " closed by the server (Connection: close), %" PRIu64 " lost to errors, %" PRIu64
               " open to the end\n",
               o->conns, s->same_closed, s->same_lost,
               (uint64_t)o->conns - s->same_closed - s->same_lost);
    printf("errors        %" PRIu64 "\n", errors_total(s));
    for (int k = 0; k < ERR_KINDS; k++) {
        printf("  %-20s %" PRIu64, err_names[k], s->errors[k]);
        if (s->errors[k])
            printf(" (first at %.3f s, last at %.3f s)", (double)s->err_first[k] / 1e9,
                   (double)s->err_last[k] / 1e9);
        putchar('\n');
    }
    printf("latency ms    p50 %.3f  p99 %.3f  max %.3f\n", hist_percentile(s, 0.50),
           hist_percentile(s, 0.99), (double)s->max_us / 1000.0);
    qsort(s->gens, s->ngens, sizeof s->gens[0], gen_cmp);
    for (size_t i = 0; i < s->ngens; i++)
        printf("%-14sgeneration %ld pid %ld: %" PRIu64 " requests\n", i ? "" : "generations",
               s->gens[i].generation, s->gens[i].pid, s->gens[i].requests);
    if (s->unknown_body || s->gens_dropped)
        printf("%-14s%" PRIu64 " requests without \"pid P generation G\", %" PRIu64
               " beyond %d generations\n",
               s->ngens ? "" : "generations", s->unknown_body, s->gens_dropped, GEN_MAX);
    printf("result        ok=%" PRIu64 " errors=%" PRIu64 " generations=%zu\n", s->ok,
           errors_total(s), s->ngens);
}

/* Writes s as a JSON string; targets and paths are checked to be printable. */
static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        putchar(*s);
    }
    putchar('"');
}

static void print_json_errors(const struct stats *s)
{
    printf("\"errors\":{\"total\":%" PRIu64, errors_total(s));
    for (int k = 0; k < ERR_KINDS; k++)
        printf(",\"%s\":%" PRIu64, err_names[k], s->errors[k]);
    printf("},\"first_error_s\":{");
    bool first = true;
    for (int k = 0; k < ERR_KINDS; k++) {
        if (!s->errors[k])
            continue;
        printf("%s\"%s\":%.3f", first ? "" : ",", err_names[k], (double)s->err_first[k] / 1e9);
        first = false;
    }
    printf("}");
}

static void print_json(struct load *L)
{
    struct stats *s = &L->s;
    const struct options *o = &L->o;
    double dur = (double)(L->stopped_at - L->start) / (double)NS_PER_S;

    printf("{\"target\":");
    json_string(o->target);
    printf(",\"path\":");
    json_string(o->path);
    printf(",\"connections\":%ld,\"rate\":%g,\"timeout_ms\":%ld,\"same_connections\":%s,", o->conns,
           o->rate, o->timeout_ms, o->same ? "true" : "false");
    printf("\"duration_s\":%.3f,\"elapsed_s\":%.3f,", dur,
           (double)(L->now - L->start) / (double)NS_PER_S);
    printf("\"requests_ok\":%" PRIu64 ",\"requests_keepalive\":%" PRIu64
           ",\"requests_fresh\":%" PRIu64 ",\"req_per_s\":%.1f,",
           s->ok, s->ok_keepalive, s->ok_fresh, dur > 0 ? (double)s->ok / dur : 0.0);
    printf("\"connects\":%" PRIu64 ",\"server_closes\":%" PRIu64 ",", s->connects,
           s->server_closes);
    if (o->same)
        printf("\"same\":{\"held\":%ld,\"closed\":%" PRIu64 ",\"lost\":%" PRIu64 "},", o->conns,
               s->same_closed, s->same_lost);
    print_json_errors(s);
    printf(",\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},", hist_percentile(s, 0.50),
           hist_percentile(s, 0.99), (double)s->max_us / 1000.0);
    qsort(s->gens, s->ngens, sizeof s->gens[0], gen_cmp);
    printf("\"generations\":[");
    for (size_t i = 0; i < s->ngens; i++)
        printf("%s{\"generation\":%ld,\"pid\":%ld,\"requests\":%" PRIu64 "}", i ? "," : "",
               s->gens[i].generation, s->gens[i].pid, s->gens[i].requests);
    printf("],\"unknown_body\":%" PRIu64 "}\n", s->unknown_body);
}

/* ---- options ---- */

static void usage(FILE *f)
{
    fputs("usage: baton-load (--url URL | --connect ADDR) [options]\n"
          "  --url tcp://HOST:PORT | http://HOST:PORT[/PATH] | unix:PATH\n"
          "  --connect HOST:PORT | [V6]:PORT | unix:PATH\n"
          "                        HOST is an IPv4 or IPv6 literal or localhost\n"
          "  -c, --connections N   keep-alive connections (default 50)\n"
          "  -r, --rate R          fresh connections per second, one request each\n"
          "                        with Connection: close (default 0)\n"
          "  -d, --duration S      seconds of load (default 10)\n"
          "  -t, --timeout MS      per request, connect included (default 2000)\n"
          "  --path PATH           request target (default /)\n"
          "  --same-connections    report keep-alive connections the server closed\n"
          "  --interval-report MS  a line of counts every MS milliseconds\n"
          "  --json                machine-readable output\n"
          "  -v, --verbose         describe each failed request on stderr (the first 200)\n"
          "exit status: 0 no request failed, 1 some failed, 2 usage error\n",
          f);
}

static int parse_num(const char *s, double min, double max, double *ret)
{
    char *end;

    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= min && v <= max))
        return -1;
    if (*end == 's' && end[1] == '\0')
        end++;
    if (*end)
        return -1;
    *ret = v;
    return 0;
}

static int parse_unix(const char *path, struct options *o)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&o->addr;
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof un->sun_path)
        return -1;
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, len + 1);
    o->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    snprintf(o->target, sizeof o->target, "unix:%s", path);
    snprintf(o->host, sizeof o->host, "localhost");
    return 0;
}

static int parse_ip(const char *host, unsigned port, struct options *o)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&o->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&o->addr;

    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        o->addrlen = sizeof *in;
        snprintf(o->target, sizeof o->target, "tcp://%s:%u", host, port);
        snprintf(o->host, sizeof o->host, "%s:%u", host, port);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        o->addrlen = sizeof *in6;
        snprintf(o->target, sizeof o->target, "tcp://[%s]:%u", host, port);
        snprintf(o->host, sizeof o->host, "[%s]:%u", host, port);
        return 0;
    }
    return -1;
}

/* HOST:PORT or [V6]:PORT, followed by /PATH when with_path. */
static int parse_hostport(const char *s, bool with_path, struct options *o)
{
    char host[256];
    const char *host_end = s[0] == '[' ? strchr(s, ']') : s;

    if (!host_end)
        return -1;
    const char *slash = with_path ? strchr(host_end, '/') : NULL;
    size_t len = slash ? (size_t)(slash - s) : strlen(s);
    const char *colon = memrchr(s, ':', len);
    if (!colon || colon < host_end || colon == s || (size_t)(colon - s) >= sizeof host)
        return -1;
    size_t hlen = (size_t)(colon - s);
    bool bracket = s[0] == '[';
    if (bracket && (hlen < 3 || s[hlen - 1] != ']'))
        return -1;
    memcpy(host, s + bracket, hlen - 2 * bracket);
    host[hlen - 2 * bracket] = '\0';
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || end != s + len || port == 0 || port > 65535)
        return -1;
    if (slash && *o->path == '\0')
        snprintf(o->path, sizeof o->path, "%s", slash);
    return parse_ip(host, (unsigned)port, o);
}

static int parse_target(const char *s, struct options *o)
{
    if (strncmp(s, "unix:", 5) == 0)
        return parse_unix(s + 5, o);
    if (strncmp(s, "tcp://", 6) == 0)
        return parse_hostport(s + 6, false, o);
    if (strncmp(s, "http://", 7) == 0)
        return parse_hostport(s + 7, true, o);
    return parse_hostport(s, false, o);
}

static bool path_ok(const char *p)
{
    if (p[0] != '/' || strlen(p) > 200)
        return false;
    for (; *p; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '"' || *p == '\\')
            return false;
    return true;
}

static int parse_option(int opt, const char *arg, struct options *o, bool *have_target)
{
    double v;

    switch (opt) {
    case 'u':
        *have_target = true;
        return parse_target(arg, o);
    case 'c':
        if (parse_num(arg, 0, 100000, &v) < 0 || v != (long)v)
            return -1;
        o->conns = (long)v;
        return 0;
    case 'r':
        return parse_num(arg, 0, 1000000, &o->rate);
    case 'd':
        return parse_num(arg, 0.001, 86400, &o->duration);
    case 't':
        if (parse_num(arg, 1, 600000, &v) < 0)
            return -1;
        o->timeout_ms = (long)v;
        return 0;
    case 'i':
        if (parse_num(arg, 10, 3600000, &v) < 0)
            return -1;
        o->interval_ms = (long)v;
        return 0;
    case 'p':
        if (strlen(arg) >= sizeof o->path)
            return -1;
        strcpy(o->path, arg);
        return 0;
    case 's':
        o->same = true;
        return 0;
    case 'j':
        o->json = true;
        return 0;
    case 'v':
        o->verbose = true;
        return 0;
    }
    return -1;
}

static const char *option_name(const struct option *longopts, int opt)
{
    for (; longopts->name; longopts++)
        if (longopts->val == opt)
            return longopts->name;
    return "?";
}

/* Returns 0, 1 when --help was asked for, or -1 on a usage error. */
static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"connect", required_argument, NULL, 'u'},
        {"connections", required_argument, NULL, 'c'},
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"timeout", required_argument, NULL, 't'},
        {"interval-report", required_argument, NULL, 'i'},
        {"path", required_argument, NULL, 'p'},
        {"same-connections", no_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool have_target = false;
    int opt;

    while ((opt = getopt_long(argc, argv, "c:r:d:t:vh", longopts, NULL)) != -1) {
        if (opt == 'h')
            return 1;
        if (opt == '?' || parse_option(opt, optarg, o, &have_target) < 0) {
            if (opt != '?')
                fprintf(stderr, "baton-load: bad value for %s: %s\n", option_name(longopts, opt),
                        optarg);
            return -1;
        }
    }
    if (optind < argc || !have_target) {
        fputs(optind < argc ? "baton-load: unexpected argument\n"
                            : "baton-load: --url or --connect is required\n",
              stderr);
        return -1;
    }
    if (o->path[0] == '\0')
        strcpy(o->path, "/");
    if (!path_ok(o->path) || (o->conns == 0 && o->rate <= 0)) {
        fputs(o->conns == 0 ? "baton-load: no load (-c 0 and no --rate)\n"
                            : "baton-load: bad --path\n",
              stderr);
        return -1;
    }
    return 0;
}

/* ---- main ---- */

/* More connections than the soft limit of 1024 fds are common under load. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void on_signal(int sig)
{
    interrupted = 1;
}

static void setup_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};

    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void build_requests(struct load *L)
{
    const char *fmt = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: baton-load\r\n%s\r\n";

    L->req_ka_len = (size_t)snprintf(L->req_ka, sizeof L->req_ka, fmt, L->o.path, L->o.host, "");
    L->req_close_len = (size_t)snprintf(L->req_close, sizeof L->req_close, fmt, L->o.path,
                                        L->o.host, "Connection: close\r\n");
}

int main(int argc, char **argv)
{
    static struct load load; /* large (the histogram): not on the stack */
    struct load *L = &load;

    L->o.conns = 50;
    L->o.duration = 10;
    L->o.timeout_ms = 2000;
    int rc = parse_args(argc, argv, &L->o);
    if (rc != 0) {
        usage(rc > 0 ? stdout : stderr);
        return rc > 0 ? 0 : 2;
    }
    raise_nofile();
    setup_signals();
    build_requests(L);
    L->s.last_gen = -1;
    L->ep = epoll_create1(EPOLL_CLOEXEC);
    if (L->ep < 0) {
        perror("baton-load: epoll_create1");
        return 1;
    }
    load_run(L);
    if (L->o.interval_ms > 0 && (L->s.iv_ok || L->s.iv_err))
        interval_print(L, L->now - L->start);
    if (L->o.json)
        print_json(L);
    else
        print_text(L);
    fflush(stdout);
    return errors_total(&L->s) ? 1 : 0;
}
