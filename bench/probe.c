/* probe: a low-rate HTTP client that timestamps every request it makes.
 *
 * It runs beside the real load (wrk or ab) and writes one line per request:
 *
 *   start_us  slot  mode  latency_us  result  id
 *
 * start_us is CLOCK_REALTIME in microseconds (so the harness can line it up
 * with the upgrade trigger times it takes from bash's $EPOCHREALTIME); mode is
 * "f" for a fresh connection per request or "k" for a keep-alive connection;
 * result is the HTTP status or one of connect/read/write/timeout; id is the
 * serving process as the response names it (an "X-Pid" header, else "pid N"
 * in the body), or "-".
 *
 * The fresh-connection slots tell when a new process starts answering new
 * connections; the keep-alive slots see what a keep-alive client sees when
 * the process holding its connection goes away.
 *
 *   probe --port P --out FILE [--seconds S] [--fresh N] [--keepalive N]
 *         [--gap-ms G] [--ka-gap-ms G] [--timeout-ms T]
 *   probe --port P --wait-ready SECONDS     exit 0 once a request gets 200
 *   probe --port P --get                    print one response's id, exit 0 on 200
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOTS 64
#define BUF_SIZE  8192

enum phase { P_IDLE, P_CONNECTING, P_WRITING, P_READING };

struct slot {
    int fd;
    int keepalive;
    enum phase phase;
    int64_t t_start;   /* realtime us, when this request started */
    int64_t t_mono;    /* monotonic us, same moment */
    int64_t next_mono; /* monotonic us, when the next request may start */
    int fresh_conn;    /* this request opened the connection */
    size_t woff;
    size_t rlen;
    char buf[BUF_SIZE];
};

static volatile sig_atomic_t stop_flag;
static struct sockaddr_in target;
static const char request_ka[] =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: baton-bench-probe\r\n\r\n";
static const char request_close[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: "
                                    "baton-bench-probe\r\nConnection: close\r\n\r\n";

static void on_signal(int sig)
{
    stop_flag = 1;
}

static int64_t now_us(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int open_conn(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Parses a complete response in s->buf. Returns 1 when complete (fills
 * status, id, close), 0 when more bytes are needed, -1 when malformed. */
static int parse_response(struct slot *s, int eof, int *status, char *id, size_t idsz,
                          int *conn_close)
{
    s->buf[s->rlen] = 0;
    char *hend = strstr(s->buf, "\r\n\r\n");
    if (!hend)
        return eof ? -1 : 0;
    if (sscanf(s->buf, "HTTP/1.%*d %d", status) != 1)
        return -1;
    long clen = -1;
    *conn_close = strncmp(s->buf, "HTTP/1.0", 8) == 0;
    snprintf(id, idsz, "-");
    for (char *line = strstr(s->buf, "\r\n") + 2; line < hend; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            clen = strtol(line + 15, NULL, 10);
        else if (strncasecmp(line, "Connection:", 11) == 0) {
            const char *v = line + 11;
            while (*v == ' ')
                v++;
            if (strncasecmp(v, "close", 5) == 0)
                *conn_close = 1;
            else if (strncasecmp(v, "keep-alive", 10) == 0)
                *conn_close = 0;
        } else if (strncasecmp(line, "X-Pid:", 6) == 0) {
            const char *v = line + 6;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r\n ");
            if (n >= idsz)
                n = idsz - 1;
            memcpy(id, v, n);
            id[n] = 0;
        }
    }
    char *body = hend + 4;
    size_t have = s->rlen - (size_t)(body - s->buf);
    if (clen >= 0) {
        if ((long)have < clen)
            return eof ? -1 : 0;
    } else if (!eof) {
        return 0; /* body runs to EOF */
    } else {
        *conn_close = 1;
    }
    if (strcmp(id, "-") == 0) {
        char *p = strstr(body, "pid ");
        if (!p)
            p = strstr(body, "pid=");
        if (p) {
            long pid = strtol(p + 4, NULL, 10);
            char *g = strstr(body, "generation");
            long gen = g ? strtol(g + 10 + strspn(g + 10, " =:"), NULL, 10) : -1;
            if (gen >= 0)
                snprintf(id, idsz, "%ld/g%ld", pid, gen);
            else
                snprintf(id, idsz, "%ld", pid);
        }
    }
    return 1;
}

static FILE *out;
static int epfd;
static char last_result[16];
static char last_id[64];

static void finish(struct slot *s, int slotno, const char *result, const char *id, int keep_conn,
                   int gap_us)
{
    int64_t m = now_us(CLOCK_MONOTONIC);
    snprintf(last_result, sizeof last_result, "%s", result);
    snprintf(last_id, sizeof last_id, "%s", id ? id : "-");
    if (out)
        fprintf(out, "%lld\t%d\t%c\t%lld\t%s\t%s\n", (long long)s->t_start, slotno,
                s->keepalive ? 'k' : 'f', (long long)(m - s->t_mono), result, id ? id : "-");
    if (!keep_conn && s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    s->phase = P_IDLE;
    s->next_mono = m + gap_us;
}

static void arm(struct slot *s, int slotno, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)slotno};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &e) < 0)
        epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &e);
}

static void start_request(struct slot *s, int slotno, int gap_us)
{
    s->t_start = now_us(CLOCK_REALTIME);
    s->t_mono = now_us(CLOCK_MONOTONIC);
    s->woff = 0;
    s->rlen = 0;
    s->fresh_conn = 0;
    if (s->fd < 0) {
        s->fd = open_conn();
        if (s->fd < 0) {
            finish(s, slotno, "connect", NULL, 0, gap_us);
            return;
        }
        s->fresh_conn = 1;
        s->phase = P_CONNECTING;
        arm(s, slotno, EPOLLOUT);
        return;
    }
    s->phase = P_WRITING;
    arm(s, slotno, EPOLLOUT);
}

static void on_event(struct slot *s, int slotno, uint32_t ev, int gap_us)
{
    const char *req = s->keepalive ? request_ka : request_close;
    size_t reqlen = strlen(req);
    if (s->phase == P_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            finish(s, slotno, "connect", NULL, 0, gap_us);
            return;
        }
        s->phase = P_WRITING;
    }
    if (s->phase == P_WRITING) {
        ssize_t n = send(s->fd, req + s->woff, reqlen - s->woff, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            finish(s, slotno, "write", NULL, 0, gap_us);
            return;
        }
        s->woff += (size_t)n;
        if (s->woff < reqlen)
            return;
        s->phase = P_READING;
        arm(s, slotno, EPOLLIN);
        return;
    }
    if (s->phase == P_READING) {
        int eof = 0;
        for (;;) {
            if (s->rlen >= BUF_SIZE - 1) {
                finish(s, slotno, "read", NULL, 0, gap_us);
                return;
            }
            ssize_t n = recv(s->fd, s->buf + s->rlen, BUF_SIZE - 1 - s->rlen, 0);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            if (n < 0) {
                finish(s, slotno, "read", NULL, 0, gap_us);
                return;
            }
            if (n == 0) {
                eof = 1;
                break;
            }
            s->rlen += (size_t)n;
        }
        int status = 0, conn_close = 0;
        char id[64];
        int r = parse_response(s, eof, &status, id, sizeof id, &conn_close);
        if (r == 0)
            return;
        if (r < 0) {
            finish(s, slotno, "read", NULL, 0, gap_us);
            return;
        }
        char res[16];
        snprintf(res, sizeof res, "%d", status);
        finish(s, slotno, res, id, s->keepalive && !conn_close && !eof, gap_us);
    }
}

static int get_once(int timeout_ms, char *id, size_t idsz)
{
    struct slot s = {.fd = -1, .keepalive = 0};
    epfd = epoll_create1(EPOLL_CLOEXEC);
    snprintf(last_result, sizeof last_result, "timeout");
    snprintf(last_id, sizeof last_id, "-");
    start_request(&s, 0, 0);
    int64_t deadline = now_us(CLOCK_MONOTONIC) + (int64_t)timeout_ms * 1000;
    while (s.phase != P_IDLE) {
        int64_t left = deadline - now_us(CLOCK_MONOTONIC);
        if (left <= 0) {
            snprintf(last_result, sizeof last_result, "timeout");
            break;
        }
        struct epoll_event ev;
        if (epoll_wait(epfd, &ev, 1, (int)(left / 1000) + 1) == 1)
            on_event(&s, 0, ev.events, 0);
    }
    if (s.fd >= 0)
        close(s.fd);
    close(epfd);
    snprintf(id, idsz, "%s", last_id);
    int st = atoi(last_result);
    return st > 0 ? st : -1;
}

int main(int argc, char **argv)
{
    int port = 0, seconds = 3600, nfresh = 1, nka = 4, gap_ms = 2, ka_gap_ms = 10,
        timeout_ms = 5000;
    double wait_ready = -1;
    int get = 0;
    const char *outpath = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--get")) {
            get = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "probe: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--out"))
            outpath = v;
        else if (!strcmp(a, "--seconds"))
            seconds = atoi(v);
        else if (!strcmp(a, "--fresh"))
            nfresh = atoi(v);
        else if (!strcmp(a, "--keepalive"))
            nka = atoi(v);
        else if (!strcmp(a, "--gap-ms"))
            gap_ms = atoi(v);
        else if (!strcmp(a, "--ka-gap-ms"))
            ka_gap_ms = atoi(v);
        else if (!strcmp(a, "--timeout-ms"))
            timeout_ms = atoi(v);
        else if (!strcmp(a, "--wait-ready"))
            wait_ready = atof(v);
        else {
            fprintf(stderr, "probe: unknown option %s\n", a);
            return 2;
        }
    }
    if (port <= 0 || port > 65535 || nfresh < 0 || nka < 0 || nfresh + nka > MAX_SLOTS ||
        nfresh + nka == 0) {
        fprintf(stderr, "probe: bad arguments\n");
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (get) {
        char id[64] = "-";
        int st = get_once(timeout_ms, id, sizeof id);
        printf("%d %s\n", st, id);
        return st >= 200 && st < 300 ? 0 : 1;
    }
    if (wait_ready >= 0) {
        int64_t deadline = now_us(CLOCK_MONOTONIC) + (int64_t)(wait_ready * 1e6);
        do {
            char id[64];
            int st = get_once(1000, id, sizeof id);
            if (st >= 200 && st < 300)
                return 0;
            usleep(20000);
        } while (now_us(CLOCK_MONOTONIC) < deadline);
        return 1;
    }
    if (!outpath) {
        fprintf(stderr, "probe: --out is required\n");
        return 2;
    }
    out = fopen(outpath, "w");
    if (!out) {
        perror(outpath);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    int nslots = nfresh + nka;
    static struct slot slots[MAX_SLOTS];
    for (int i = 0; i < nslots; i++) {
        slots[i].fd = -1;
        slots[i].keepalive = i >= nfresh;
        slots[i].phase = P_IDLE;
        slots[i].next_mono = 0;
    }
    int64_t end = now_us(CLOCK_MONOTONIC) + (int64_t)seconds * 1000000;
    while (!stop_flag) {
        int64_t now = now_us(CLOCK_MONOTONIC);
        if (now >= end)
            break;
        int64_t wake = end;
        for (int i = 0; i < nslots; i++) {
            struct slot *s = &slots[i];
            int gap = (s->keepalive ? ka_gap_ms : gap_ms) * 1000;
            if (s->phase == P_IDLE && s->next_mono <= now)
                start_request(s, i, gap);
            if (s->phase == P_IDLE) {
                if (s->next_mono < wake)
                    wake = s->next_mono;
            } else {
                int64_t dl = s->t_mono + (int64_t)timeout_ms * 1000;
                if (dl <= now) {
                    finish(s, i, "timeout", NULL, 0, gap);
                    s->next_mono = now; /* retry at once, like wrk */
                    wake = now;
                } else if (dl < wake) {
                    wake = dl;
                }
            }
        }
        int64_t wait = (wake - now_us(CLOCK_MONOTONIC) + 999) / 1000;
        if (wait < 0)
            wait = 0;
        struct epoll_event evs[MAX_SLOTS];
        int n = epoll_wait(epfd, evs, MAX_SLOTS, (int)wait);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct slot *s = &slots[i];
            if (s->phase == P_IDLE || s->fd < 0)
                continue;
            on_event(s, i, evs[k].events, (s->keepalive ? ka_gap_ms : gap_ms) * 1000);
        }
    }
    for (int i = 0; i < nslots; i++)
        if (slots[i].fd >= 0)
            close(slots[i].fd);
    fclose(out);
    return 0;
}
