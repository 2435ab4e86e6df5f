/* SPDX-License-Identifier: MIT */
/*
 * baton-game-client: bot players for baton-game-server. Each bot moves on
 * the grid every interval and checks every acknowledgement: the request it
 * answers (none lost, none twice, in order), the position (the state
 * moved with the session) and the world version (only grows).
 *
 *   baton-game-client --connect tcp://IP:PORT [--bots N] [--duration S]
 *                     [--interval MS] [--window W]
 *                     ([--tls-ca FILE] [--tls-server-name NAME] | --insecure)
 *
 * TLS: every server the sessions reach must present a certificate signed
 * by --tls-ca (default: the system's authorities) and valid for
 * --tls-server-name, or else for the IP address connected to.
 *
 * Prints one line per bot with a problem, then a summary:
 *   bots N sent S acked A lost L dup D reorder R badstate B sessions_lost X
 *   moves M pause_ms p50 P p99 P max P rtt_ms p50 P p99 P max P
 * and exits 0 only if lost, dup, reorder, badstate and sessions_lost are 0.
 */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

#include <baton-session.h>

#define GRID   1000
#define WINDOW 64

struct bot {
    baton_session_client *c;
    int x, y;
    uint64_t next_req, next_ack, last_version;
    uint64_t lost, dup, reorder, badstate;
    int lost_session;
    int sx[WINDOW], sy[WINDOW]; /* expected positions of outstanding requests */
    uint64_t sent_us[WINDOW];
};

static uint64_t *pauses, *rtts;
static size_t npauses, nrtts, cap_pauses, cap_rtts;

static uint64_t now_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000;
}

static void push(uint64_t **a, size_t *n, size_t *cap, uint64_t v)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *a = realloc(*a, *cap * sizeof(**a));
        if (!*a)
            abort();
    }
    (*a)[(*n)++] = v;
}

static void on_message(void *ctx, baton_session_client *c, const void *data, size_t len)
{
    struct bot *b = ctx;
    char buf[160];
    unsigned long long req, moves, ver;
    int x, y;

    if (len >= sizeof(buf))
        return;
    memcpy(buf, data, len);
    buf[len] = 0;
    if (sscanf(buf, "A %llu %d %d %llu %llu", &req, &x, &y, &moves, &ver) != 5) {
        b->badstate++;
        return;
    }
    if (req < b->next_ack) {
        b->dup++;
        return;
    }
    if (req > b->next_ack) {
        b->reorder++;
        b->next_ack = req; /* resynchronise; counted once */
    }
    if (x != b->sx[req % WINDOW] || y != b->sy[req % WINDOW] || moves != req ||
        ver <= b->last_version)
        b->badstate++;
    b->last_version = ver;
    push(&rtts, &nrtts, &cap_rtts, now_us() - b->sent_us[req % WINDOW]);
    b->next_ack = req + 1;
}

static void on_moved(void *ctx, baton_session_client *c, const char *addr, int err,
                     uint64_t pause_us)
{
    if (err == 0)
        push(&pauses, &npauses, &cap_pauses, pause_us);
}

/* Warnings and errors only: one line per failed move or lost session. */
static void on_log(void *ctx, int level, const char *msg)
{
    if (level <= BATON_SESSION_LOG_WARNING)
        fprintf(stderr, "baton-game-client: %s\n", msg);
}

static void on_lost(void *ctx, baton_session_client *c, int err)
{
    struct bot *b = ctx;

    b->lost_session = err ? err : -1;
    fprintf(stderr, "bot %s: session ended: %s\n", baton_session_client_id(c),
            baton_session_strerror(err));
}

static void step(struct bot *b)
{
    char msg[64];
    int dx = (int)(b->next_req % 3) - 1, dy = (int)((b->next_req / 3) % 3) - 1, n;

    b->x = (b->x + dx + GRID) % GRID;
    b->y = (b->y + dy + GRID) % GRID;
    b->sx[b->next_req % WINDOW] = b->x;
    b->sy[b->next_req % WINDOW] = b->y;
    b->sent_us[b->next_req % WINDOW] = now_us();
    n = snprintf(msg, sizeof(msg), "M %" PRIu64 " %d %d", b->next_req, dx, dy);
    if (baton_session_client_send(b->c, msg, (size_t)n) == 0)
        b->next_req++;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static double pct(uint64_t *a, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(a, n, sizeof(*a), cmp);
    return (double)a[(size_t)(p * (double)(n - 1))] / 1000.0;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *ca = NULL, *server_name = NULL;
    int insecure = 0, nbots = 10, duration = 10, interval = 100, window = 1, ep;
    uint64_t end, next_tick, sent = 0, acked = 0, lost = 0, dup = 0, reorder = 0, bad = 0, dead = 0;
    struct rlimit rl;
    struct bot *bots;
    bool stopping = false;

    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--insecure")) {
            insecure = 1;
            continue;
        }
        if (!v)
            goto usage;
        if (!strcmp(argv[i], "--connect"))
            addr = v;
        else if (!strcmp(argv[i], "--bots"))
            nbots = atoi(v);
        else if (!strcmp(argv[i], "--duration"))
            duration = atoi(v);
        else if (!strcmp(argv[i], "--interval"))
            interval = atoi(v);
        else if (!strcmp(argv[i], "--window"))
            window = atoi(v);
        else if (!strcmp(argv[i], "--tls-ca"))
            ca = v;
        else if (!strcmp(argv[i], "--tls-server-name"))
            server_name = v;
        else
            goto usage;
        i++;
    }
    if (!addr || nbots < 1 || interval < 1 || window < 1 || window >= WINDOW ||
        (insecure && (ca || server_name))) {
    usage:
        fprintf(stderr,
                "usage: %s --connect tcp://IP:PORT [--bots N] [--duration S] "
                "[--interval MS] [--window W]\n"
                "       ([--tls-ca FILE] [--tls-server-name NAME] | --insecure)\n",
                argv[0]);
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    bots = calloc((size_t)nbots, sizeof(*bots));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!bots || ep < 0)
        return 1;
    for (int i = 0; i < nbots; i++) {
        struct baton_session_client_options o = {.ctx = &bots[i],
                                                 .on_message = on_message,
                                                 .on_moved = on_moved,
                                                 .on_lost = on_lost,
                                                 .log = on_log,
                                                 .tls_ca_file = ca,
                                                 .tls_server_name = server_name,
                                                 .insecure = insecure};
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &bots[i]};
        int r = baton_session_client_connect(&o, addr, &bots[i].c);
        if (r < 0) {
            fprintf(stderr, "baton-game-client: connect: %s\n", baton_session_strerror(r));
            return 1;
        }
        bots[i].x = bots[i].y = GRID / 2;
        bots[i].next_req = bots[i].next_ack = 1;
        epoll_ctl(ep, EPOLL_CTL_ADD, baton_session_client_fd(bots[i].c), &e);
    }
    end = now_us() + (uint64_t)duration * 1000000u;
    next_tick = now_us();
    for (;;) {
        struct epoll_event ev[256];
        uint64_t now = now_us();
        int n, timeout = next_tick > now ? (int)((next_tick - now) / 1000) : 0;
        bool pending = false;

        n = epoll_wait(ep, ev, 256, timeout);
        for (int i = 0; i < n; i++)
            baton_session_client_dispatch(((struct bot *)ev[i].data.ptr)->c);
        now = now_us();
        if (now >= end)
            stopping = true;
        for (int i = 0; i < nbots; i++)
            if (!bots[i].lost_session && bots[i].next_ack < bots[i].next_req)
                pending = true;
        if (stopping && (!pending || now >= end + 10000000u))
            break;
        if (now < next_tick || stopping)
            continue;
        next_tick += (uint64_t)interval * 1000u;
        for (int i = 0; i < nbots; i++)
            if (!bots[i].lost_session && bots[i].next_req - bots[i].next_ack < (uint64_t)window)
                step(&bots[i]);
    }
    for (int i = 0; i < nbots; i++) {
        struct bot *b = &bots[i];
        uint64_t l = b->next_req - b->next_ack;
        sent += b->next_req - 1;
        acked += b->next_ack - 1;
        lost += l;
        dup += b->dup;
        reorder += b->reorder;
        bad += b->badstate;
        dead += b->lost_session != 0;
        if (l || b->dup || b->reorder || b->badstate || b->lost_session)
            printf("bot %d %s: lost %" PRIu64 " dup %" PRIu64 " reorder %" PRIu64
                   " badstate %" PRIu64 " session %s\n",
                   i, baton_session_client_id(b->c), l, b->dup, b->reorder, b->badstate,
                   b->lost_session ? "lost" : "ok");
        baton_session_client_close(b->c);
        baton_session_client_free(b->c);
    }
    printf("bots %d sent %" PRIu64 " acked %" PRIu64 " lost %" PRIu64 " dup %" PRIu64
           " reorder %" PRIu64 " badstate %" PRIu64 " sessions_lost %" PRIu64 " moves %zu",
           nbots, sent, acked, lost, dup, reorder, bad, dead, npauses);
    printf(" pause_ms p50 %.2f", pct(pauses, npauses, 0.5));
    printf(" p99 %.2f", pct(pauses, npauses, 0.99));
    printf(" max %.2f", pct(pauses, npauses, 1.0));
    printf(" rtt_ms p50 %.2f", pct(rtts, nrtts, 0.5));
    printf(" p99 %.2f", pct(rtts, nrtts, 0.99));
    printf(" max %.2f\n", pct(rtts, nrtts, 1.0));
    free(pauses);
    free(rtts);
    free(bots);
    return lost || dup || reorder || bad || dead ? 1 : 0;
}
