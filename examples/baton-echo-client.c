/* SPDX-License-Identifier: MIT */
/*
 * baton-echo-client - talks to baton-echo at a steady pace and checks that
 * an upgrade of the server costs it nothing.
 *
 *   baton-echo-client --connect unix:/run/echo/echo.sock --duration 10
 *
 * It sends the numbered lines "1\n", "2\n", ... every --interval ms on one
 * connection and checks that the replies come back in order, each within
 * --timeout ms. When the server closes the connection (a replaced server
 * that could not hand it to its successor does, once drained) it reconnects
 * at once and goes on; the new server answers on the same listening socket.
 * With --one-connection a close is an error instead and the run stops: a
 * server that hands its connections over must never close one. At the end
 * it prints one summary line, with the largest gap between two consecutive
 * replies (the pause an upgrade costs), and exits 0 only if there was no
 * error of any kind:
 *
 *   refused    a connect was refused (no one was listening)
 *   reset      a connect or the connection was reset, or writing failed
 *   wrong      a reply that is not a line we sent, or a partial line at EOF
 *   missing    a reply came while an earlier line was still unanswered
 *   duplicate  a line was answered twice
 *   timeout    a reply or a connect took longer than --timeout
 *   closed     with --one-connection: the server closed the connection
 *   other      any other socket error
 *
 * What counts as losing a line: see conn_lost().
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PROG "baton-echo-client"
/* Lines in flight at most; sending pauses while this many wait. */
#define WINDOW 1024
/* Room for every line of a full window: "18446744073709551615\n". */
#define OUT_MAX (WINDOW * 21)
/* client.last while the duration runs: the last line is not known yet. */
#define UNKNOWN UINT64_MAX

struct config {
    const char *connect;
    int interval_ms;
    uint64_t count; /* 0: run for duration_s */
    int duration_s;
    int timeout_ms;
    bool one_connection; /* a close is an error, not a cue to reconnect */
    bool verbose;
};

enum err_kind {
    E_REFUSED,
    E_RESET,
    E_WRONG,
    E_MISSING,
    E_DUPLICATE,
    E_TIMEOUT,
    E_CLOSED,
    E_OTHER,
    E_KINDS
};

static const char *const err_names[E_KINDS] = {
    "refused", "reset", "wrong", "missing", "duplicate", "timeout", "closed", "other",
};

struct client {
    const struct config *cfg;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int fd;
    uint64_t next;           /* the line to send next */
    uint64_t acked;          /* every line up to this one is answered */
    uint64_t high;           /* the highest line ever sent; lower ones are resends */
    uint64_t last;           /* the last line to send, or UNKNOWN */
    bool gave_up;            /* a timeout, or a close with --one-connection */
    int64_t sent_at[WINDOW]; /* us, by line number % WINDOW */
    int64_t next_send;       /* when the next new line is due (us) */
    int64_t end;             /* duration mode: stop sending then (us) */
    int64_t last_reply;      /* us, 0 before the first */
    int64_t max_gap;         /* us between two consecutive answers */
    int64_t max_wait;        /* us from sending a line to its answer */
    uint64_t sent, resent, ok, connects;
    uint64_t errors[E_KINDS];
    size_t in_len, out_len;
    char in[64];
    char out[OUT_MAX];
};

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void note(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void report(struct client *c, enum err_kind kind, const char *fmt, ...)
{
    va_list ap;

    c->errors[kind]++;
    fprintf(stderr, PROG ": error (%s): ", err_names[kind]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " --connect ADDR [--interval MS] [--count N | --duration S]\n"
               "                         [--timeout MS] [--one-connection] [--verbose]\n"
               "\n"
               "  --connect ADDR    unix:PATH or tcp://HOST:PORT (required)\n"
               "  --interval MS     one line every MS (default 10)\n"
               "  --count N         send N lines, then stop (instead of --duration)\n"
               "  --duration S      send for S seconds, then stop (default 10)\n"
               "  --timeout MS      longest wait for a reply or a connect (default 2000)\n"
               "  --one-connection  keep one connection for the whole run: the server\n"
               "                    closing it is an error (default: reconnect and go on)\n"
               "  --verbose         report every reconnect, and each gap over 3 intervals\n"
               "\n"
               "Prints sent, ok, reconnects, max_gap_ms (the longest wait between two\n"
               "consecutive replies), max_wait_ms (the longest wait for the reply to one\n"
               "line: the server's pause, whatever the pace) and the errors by kind. Exits 0\n"
               "only if every line was answered once, in order, with no error.\n");
}

static int parse_num(const char *s, uint64_t max, uint64_t *ret)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v > max) {
        fprintf(stderr, PROG ": bad number: %s\n", s);
        return -1;
    }
    *ret = v;
    return 0;
}

static int parse_option(int opt, const char *arg, struct config *cfg)
{
    uint64_t v;

    switch (opt) {
    case 'c':
        cfg->connect = arg;
        return 0;
    case 'n':
        return parse_num(arg, UINT64_MAX / 2, &cfg->count);
    case 'i':
    case 'd':
    case 't':
        if (parse_num(arg, INT_MAX / 1000, &v) < 0)
            return -1;
        *(opt == 'i'   ? &cfg->interval_ms
          : opt == 'd' ? &cfg->duration_s
                       : &cfg->timeout_ms) = (int)v;
        return 0;
    case 'o':
        cfg->one_connection = true;
        return 0;
    case 'v':
        cfg->verbose = true;
        return 0;
    default:
        return -1;
    }
}

/* Returns 0 to run, 1 when --help was printed, -1 on a usage error. */
static int parse_args(int argc, char **argv, struct config *cfg)
{
    static const struct option opts[] = {
        {"connect", required_argument, NULL, 'c'},
        {"interval", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"timeout", required_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},
        {"one-connection", no_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    *cfg = (struct config){.interval_ms = 10, .duration_s = 10, .timeout_ms = 2000};
    while ((opt = getopt_long(argc, argv, "c:i:n:d:t:ovh", opts, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            return 1;
        }
        if (parse_option(opt, optarg, cfg) < 0) {
            usage(stderr);
            return -1;
        }
    }
    if (!cfg->connect || optind != argc || cfg->timeout_ms == 0) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* "unix:PATH" or "tcp://HOST:PORT", HOST a name, an IPv4 address or [v6]. */
static int resolve(struct client *c, const char *address)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    char host[256];
    const char *colon, *port;
    int r;

    if (strncmp(address, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&c->addr;
        size_t len = strlen(address + 5);

        if (len == 0 || len >= sizeof un->sun_path)
            return -1;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, address + 5, len + 1);
        c->addr_len = offsetof(struct sockaddr_un, sun_path) + len + 1;
        return 0;
    }
    if (strncmp(address, "tcp://", 6) != 0 || !(colon = strrchr(address + 6, ':')))
        return -1;
    port = colon + 1;
    address += 6;
    if (*address == '[' && colon > address && colon[-1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(colon - address - 2), address + 1);
    else
        snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    r = getaddrinfo(host, port, &hints, &ai);
    if (r != 0) {
        fprintf(stderr, PROG ": %s: %s\n", host, gai_strerror(r));
        return -1;
    }
    memcpy(&c->addr, ai->ai_addr, ai->ai_addrlen);
    c->addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static enum err_kind classify(int err)
{
    switch (err) {
    case ECONNREFUSED:
    case ENOENT: /* a unix socket path that is gone refuses just the same */
        return E_REFUSED;
    case ECONNRESET:
    case EPIPE:
        return E_RESET;
    case ETIMEDOUT:
    case EINPROGRESS: /* connect() ran out of SO_SNDTIMEO */
    case EAGAIN:      /* a unix listener's queue stayed full */
        return E_TIMEOUT;
    default:
        return E_OTHER;
    }
}

/* A blocking connect bounded by SO_SNDTIMEO (which both TCP and unix
 * sockets honour for connect), then non-blocking I/O. */
static int try_connect(struct client *c)
{
    struct timeval tv = {c->cfg->timeout_ms / 1000, (c->cfg->timeout_ms % 1000) * 1000};
    int fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int err;

    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
        connect(fd, (struct sockaddr *)&c->addr, c->addr_len) < 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/* Connects, retrying every interval while it fails (each failure is an
 * error) for at most the timeout. -1: given up. */
static int client_connect(struct client *c)
{
    int64_t give_up = now_us() + (int64_t)c->cfg->timeout_ms * 1000;
    struct timespec pause = {0, (long)(c->cfg->interval_ms ? c->cfg->interval_ms : 1) * 1000000};

    for (;;) {
        int fd = try_connect(c);

        if (fd >= 0) {
            c->fd = fd;
            if (c->connects++ > 0 && c->cfg->verbose)
                note("reconnected; resending from line %" PRIu64, c->next);
            return 0;
        }
        report(c, classify(-fd), "connect(%s): %s", c->cfg->connect, strerror(-fd));
        if (now_us() >= give_up) {
            note("giving up: cannot connect for %d ms", c->cfg->timeout_ms);
            return -1;
        }
        nanosleep(&pause, NULL);
    }
}

/*
 * The connection ended; kind is E_KINDS for a clean end of stream.
 *
 * Lines in flight are sent again on the next connection. Whether their loss
 * is an error depends on how the server left:
 *  - A clean end of stream (EOF) is not an error. baton-echo answers every
 *    line as soon as it has read it, and closes only when everything it
 *    read is answered and written (see its conn_linger()): it half-closes
 *    first and drops what arrives afterwards. So an unanswered line was
 *    never taken on by the server, and sending it again elsewhere
 *    duplicates nothing. (We cannot tell this apart from a server that read
 *    a line and silently dropped it; a server that did would show up as
 *    resends growing with every upgrade, not as an error here.)
 *  - A reset is an error (kind E_RESET): the kernel resets a connection
 *    closed with unread data, i.e. the server dropped lines it had been
 *    sent. They are still sent again so that checking can go on.
 *  - A partial reply line at the end of the stream is an error (E_WRONG).
 *  - With --one-connection any end is an error (a clean one is E_CLOSED),
 *    and the run stops.
 */
static void conn_lost(struct client *c, enum err_kind kind, const char *why)
{
    uint64_t in_flight = c->next - 1 - c->acked;

    if (kind == E_KINDS && c->cfg->one_connection)
        kind = E_CLOSED;
    if (kind != E_KINDS)
        report(c, kind, "connection lost: %s (%" PRIu64 " line(s) unanswered)", why, in_flight);
    else if (c->cfg->verbose)
        note("server closed the connection (%" PRIu64 " line(s) unanswered)", in_flight);
    if (c->in_len > 0)
        report(c, E_WRONG, "partial reply \"%.*s\" at end of stream", (int)c->in_len, c->in);
    close(c->fd);
    c->fd = -1;
    c->in_len = c->out_len = 0;
    c->next = c->acked + 1;
    if (c->cfg->one_connection)
        c->gave_up = true;
}

static void on_reply(struct client *c, const char *line, size_t len)
{
    uint64_t r = 0;
    int64_t now = now_us();

    for (size_t i = 0; i < len; i++) {
        if (line[i] < '0' || line[i] > '9' || len > 20) {
            report(c, E_WRONG, "reply \"%.*s\" is not a line we sent", (int)len, line);
            return;
        }
        r = r * 10 + (line[i] - '0');
    }
    if (len == 0 || r >= c->next) {
        report(c, E_WRONG, "reply %" PRIu64 " was never sent (next is %" PRIu64 ")", r, c->next);
        return;
    }
    if (r <= c->acked) {
        report(c, E_DUPLICATE, "reply %" PRIu64 " came again", r);
        return;
    }
    if (r > c->acked + 1) {
        report(c, E_MISSING, "reply %" PRIu64 " while %" PRIu64 "..%" PRIu64 " are unanswered", r,
               c->acked + 1, r - 1);
        c->errors[E_MISSING] += r - c->acked - 2; /* one error per line skipped */
    }
    if (now - c->sent_at[r % WINDOW] > c->max_wait)
        c->max_wait = now - c->sent_at[r % WINDOW];
    c->acked = r;
    c->ok++;
    if (c->last_reply && now - c->last_reply > c->max_gap)
        c->max_gap = now - c->last_reply;
    if (c->cfg->verbose && c->last_reply && now - c->last_reply > 3000 * c->cfg->interval_ms)
        note("%.1f ms without a reply before line %" PRIu64, (now - c->last_reply) / 1000.0, r);
    c->last_reply = now;
}

/* Reads every reply available. */
static void read_replies(struct client *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        char *nl;

        if (n == 0) {
            conn_lost(c, E_KINDS, "end of stream");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                conn_lost(c, classify(errno), strerror(errno));
            return;
        }
        c->in_len += n;
        while ((nl = memchr(c->in, '\n', c->in_len))) {
            size_t len = nl - c->in + 1;

            on_reply(c, c->in, len - 1);
            memmove(c->in, c->in + len, c->in_len - len);
            c->in_len -= len;
        }
        if (c->in_len == sizeof c->in) {
            report(c, E_WRONG, "reply line too long");
            c->in_len = 0;
        }
    }
}

static void flush_out(struct client *c)
{
    size_t off = 0;

    while (off < c->out_len) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            /* The replies to earlier lines may still wait to be read; and
             * if the server has closed cleanly, this is its EOF. */
            int err = errno;

            read_replies(c);
            if (c->fd >= 0)
                conn_lost(c, classify(err), strerror(err));
            return;
        }
        off += n;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
}

/* Queues the lines due now: resends at once, new lines at the pace. */
static void queue_lines(struct client *c, int64_t now)
{
    int64_t interval = (int64_t)c->cfg->interval_ms * 1000;

    while (c->next - c->acked < WINDOW && c->next <= c->last) {
        bool resend = c->next <= c->high;

        if (!resend && now < c->next_send)
            break;
        c->out_len += sprintf(c->out + c->out_len, "%" PRIu64 "\n", c->next);
        c->sent_at[c->next % WINDOW] = now;
        c->sent++;
        if (resend) {
            c->resent++;
        } else {
            c->high = c->next;
            /* Keep the pace, but after a stall do not send a burst. */
            c->next_send = c->next_send + interval < now ? now : c->next_send + interval;
        }
        c->next++;
    }
}

/* The oldest unanswered line waited too long: the server is not answering,
 * and we stop (every wait is bounded). */
static void check_timeout(struct client *c, int64_t now)
{
    if (c->next - 1 == c->acked)
        return;
    if (now - c->sent_at[(c->acked + 1) % WINDOW] < (int64_t)c->cfg->timeout_ms * 1000)
        return;
    report(c, E_TIMEOUT, "no reply to line %" PRIu64 " within %d ms", c->acked + 1,
           c->cfg->timeout_ms);
    c->gave_up = true;
}

/* The poll timeout in ms: until a new line is due, the oldest reply is
 * overdue or the duration ends. */
static int wait_ms(const struct client *c, int64_t now)
{
    int64_t wake = now + 1000000;

    if (c->next <= c->last && c->next - c->acked < WINDOW && c->next_send < wake)
        wake = c->next_send;
    if (c->next - 1 > c->acked) {
        int64_t due = c->sent_at[(c->acked + 1) % WINDOW] + (int64_t)c->cfg->timeout_ms * 1000;

        wake = due < wake ? due : wake;
    }
    if (c->last == UNKNOWN && c->end < wake)
        wake = c->end;
    return wake <= now ? 0 : (int)((wake - now + 999) / 1000);
}

static void step(struct client *c)
{
    int64_t now = now_us();
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

    if (c->last == UNKNOWN && now >= c->end)
        c->last = c->high; /* time is up: wait for what is in flight */
    check_timeout(c, now);
    if (c->gave_up)
        return;
    queue_lines(c, now);
    flush_out(c);
    if (c->fd < 0)
        return;
    if (c->out_len)
        pfd.events |= POLLOUT;
    if (poll(&pfd, 1, wait_ms(c, now)) > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR)))
        read_replies(c);
}

static bool finished(const struct client *c)
{
    return c->gave_up || c->acked == c->last;
}

static int summary(const struct client *c)
{
    uint64_t total = 0;
    uint64_t unanswered = (c->last == UNKNOWN ? c->high : c->last) - c->acked;

    for (int k = 0; k < E_KINDS; k++)
        total += c->errors[k];
    printf("sent=%" PRIu64 " resent=%" PRIu64 " ok=%" PRIu64 " unanswered=%" PRIu64
           " connections=%" PRIu64 " reconnects=%" PRIu64 " max_gap_ms=%.1f max_wait_ms=%.1f"
           " errors=%" PRIu64,
           c->sent, c->resent, c->ok, unanswered, c->connects, c->connects ? c->connects - 1 : 0,
           c->max_gap / 1000.0, c->max_wait / 1000.0, total);
    for (int k = 0; k < E_KINDS; k++)
        printf(" %s=%" PRIu64, err_names[k], c->errors[k]);
    printf("\n");
    fflush(stdout);
    return total == 0 && unanswered == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct client c; /* large buffers: not on the stack */
    struct config cfg;
    int r = parse_args(argc, argv, &cfg);

    if (r != 0)
        return r > 0 ? 0 : 2;
    c = (struct client){.cfg = &cfg, .fd = -1, .next = 1, .last = cfg.count ? cfg.count : UNKNOWN};
    if (resolve(&c, cfg.connect) < 0) {
        fprintf(stderr, PROG ": bad address: %s\n", cfg.connect);
        return 2;
    }
    c.next_send = now_us();
    c.end = c.next_send + (int64_t)cfg.duration_s * 1000000;
    while (!finished(&c)) {
        if (c.fd < 0 && client_connect(&c) < 0)
            break;
        step(&c);
    }
    if (c.fd >= 0)
        close(c.fd);
    return summary(&c);
}
