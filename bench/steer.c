/* SPDX-License-Identifier: MIT */
/*
 * baton-bench-steer: what UDP flow steering costs a datagram.
 *
 * A UDP echo service on loopback, in the same run:
 *   plain    generation 1 reads the socket and answers (the baseline);
 *   steered  generation 2 took over and reads the socket; each datagram is
 *            generation 1's, so generation 2 forwards it
 *            (baton_steer_route()) and generation 1 answers it
 *            (baton_steer_recv(), then sendto() on its copy of the socket);
 *   own      generation 2's own datagrams: the reader looks, and answers.
 * For each: the round trip of one datagram at a time (median and p99 over
 * --pings), and datagrams per second with --window in flight (median of
 * --runs runs of --count), with ratios to plain; and the reader's own time
 * in baton_steer_route() per forwarded datagram (median of its samples).
 * Every datagram must come back: a lost or misrouted one (answered by the
 * wrong generation) is counted and fails the run.
 *
 * Usage: baton-bench-steer [--pings N] [--count N] [--window N] [--runs N]
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"

#define UPGRADES 10

static int pings = 20000, count = 200000, window = 32, runs = 5;
static char dir[256] = "/tmp/baton-bench-steer-XXXXXX";

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "baton-bench-steer: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t pct(int64_t *v, size_t n, int p)
{
    qsort(v, n, sizeof(*v), cmp_i64);
    return n ? v[(n - 1) * (size_t)p / 100] : 0;
}

/* A server generation: it reads the socket until its successor serves
 * (then says so on chan, and answers only what is forwarded to it),
 * routes each datagram by its first byte (the generation whose flow it
 * is), and answers its own with its generation in the first byte. It stops
 * when the parent closes chan; generation 2 then writes its route
 * timings. */
static void serve(int chan, int gen)
{
    /* Every generation stays alive here: room for all of them. */
    struct baton_options o = {.dir = dir, .ready_timeout_ms = 5000, .max_generations = 32};
    static int64_t route_ns[1 << 20];
    size_t nroute = 0;
    bool reading = true;
    baton *b;
    int ufd, sfd, r;

    if ((r = baton_open(&o, &b)) < 0)
        die(baton_last_error(NULL), r);
    ufd = baton_listen(b, "echo", "udp://127.0.0.1:0", 0);
    sfd = baton_steer_open(b);
    if (ufd < 0 || sfd < 0)
        die(baton_last_error(b), ufd < 0 ? ufd : sfd);
    if ((r = baton_ready(b)) < 0)
        die(baton_last_error(b), r);
    {
        struct sockaddr_in sa;
        socklen_t sl = sizeof(sa);
        int port;
        getsockname(ufd, (struct sockaddr *)&sa, &sl);
        port = ntohs(sa.sin_port);
        if (write(chan, &port, sizeof(port)) != sizeof(port))
            exit(1);
    }
    for (;;) {
        struct pollfd p[4] = {{chan, POLLIN, 0},
                              {reading ? ufd : -1, POLLIN, 0},
                              {sfd, POLLIN, 0},
                              {reading ? baton_upgrade_fd(b) : -1, POLLIN, 0}};
        struct sockaddr_storage from;
        socklen_t fl;
        char buf[2048];
        ssize_t n;

        if (poll(p, 4, -1) < 0 && errno != EINTR)
            die("poll", errno);
        if (p[0].revents)
            break;
        if (p[3].revents & POLLIN) {
            reading = false; /* our successor serves: it reads from now on */
            if (write(chan, "S", 1) != 1)
                exit(1);
        }
        while (reading) {
            fl = sizeof(from);
            n = recvfrom(ufd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
            if (n <= 0)
                break;
            if (buf[0] != gen) {
                int64_t t = now_ns();
                r = baton_steer_route(b, buf[0], buf, (size_t)n, (struct sockaddr *)&from, fl);
                if (nroute < sizeof(route_ns) / sizeof(route_ns[0]))
                    route_ns[nroute++] = now_ns() - t;
                if (r == 1)
                    continue;
            }
            buf[0] = (char)gen;
            (void)sendto(ufd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
        }
        for (;;) {
            fl = sizeof(from);
            n = baton_steer_recv(b, buf, sizeof(buf), (struct sockaddr *)&from, &fl);
            if (n < 0)
                break;
            buf[0] = (char)gen;
            (void)sendto(ufd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
        }
    }
    if (gen == 2) {
        int64_t med = pct(route_ns, nroute, 50);
        if (write(chan, &med, sizeof(med)) != sizeof(med))
            exit(1);
    }
    baton_free(b);
    exit(0);
}

/* The parent's ends of the generations' channels: a child closes them,
 * so that each generation sees its own channel close. */
static int parent_ends[64], nparent_ends;

static pid_t start(int gen, int *chan, int *port)
{
    int sv[2];
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair", errno);
    pid = fork();
    if (pid < 0)
        die("fork", errno);
    if (pid == 0) {
        close(sv[0]);
        for (int i = 0; i < nparent_ends; i++)
            close(parent_ends[i]);
        serve(sv[1], gen);
    }
    close(sv[1]);
    *chan = sv[0];
    parent_ends[nparent_ends++] = sv[0];
    if (read(*chan, port, sizeof(*port)) != sizeof(*port))
        die("server did not start", EIO);
    return pid;
}

static long long lost, misrouted;

/* Wait for one answer; check who answered. */
static bool recv_one(int cfd, char want)
{
    char buf[2048];
    struct pollfd p = {cfd, POLLIN, 0};

    if (poll(&p, 1, 1000) <= 0) {
        lost++;
        return false;
    }
    if (recv(cfd, buf, sizeof(buf), 0) <= 0) {
        lost++;
        return false;
    }
    if (buf[0] != want)
        misrouted++;
    return true;
}

/* Round trips, one at a time: median and p99 in ns. The datagram's first
 * byte says whose flow it is; the answer's, who answered. */
static void rtt(int cfd, char gen, int64_t *ret_med, int64_t *ret_p99)
{
    static int64_t v[1 << 20];
    char msg[64] = {gen};
    int n = pings < (1 << 20) ? pings : (1 << 20);

    for (int i = 0; i < n; i++) {
        int64_t t = now_ns();
        if (send(cfd, msg, sizeof(msg), 0) < 0)
            die("send", errno);
        recv_one(cfd, gen);
        v[i] = now_ns() - t;
    }
    *ret_p99 = pct(v, (size_t)n, 99);
    *ret_med = pct(v, (size_t)n, 50);
}

/* Datagrams per second with window in flight: median of runs. */
static double rate(int cfd, char gen)
{
    static int64_t r[64];
    char msg[64] = {gen};

    for (int k = 0; k < runs && k < 64; k++) {
        int64_t t = now_ns();
        int sent = 0, got = 0;
        while (got < count) {
            while (sent < count && sent - got < window) {
                if (send(cfd, msg, sizeof(msg), 0) < 0)
                    die("send", errno);
                sent++;
            }
            if (!recv_one(cfd, gen)) {
                /* Lost on the way (counted): stop waiting for it. */
                sent--;
                continue;
            }
            got++;
        }
        r[k] = now_ns() - t;
    }
    return (double)count * 1e9 / (double)pct(r, (size_t)(runs < 64 ? runs : 64), 50);
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int64_t med[3], p99[3], route_med = 0;
    double dps[3];
    int c1, c2, port, port2, cfd;
    pid_t p1, p2;

    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--pings") == 0)
            pings = v;
        else if (strcmp(argv[i], "--count") == 0)
            count = v;
        else if (strcmp(argv[i], "--window") == 0)
            window = v;
        else if (strcmp(argv[i], "--runs") == 0)
            runs = v;
        else
            die(argv[i], EINVAL);
    }
    if (pings < 1 || count < 1 || window < 1 || runs < 1)
        die("arguments", EINVAL);
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir))
        die("mkdtemp", errno);
    strcat(dir, "/svc");

    p1 = start(1, &c1, &port);
    cfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sa.sin_port = htons((uint16_t)port);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("client socket", errno);
    rtt(cfd, 1, &med[0], &p99[0]);
    dps[0] = rate(cfd, 1);

    p2 = start(2, &c2, &port2);
    if (port2 != port)
        die("the successor did not inherit the socket", EPROTO);
    /* Generation 1 stops reading once it learns its successor serves, and
     * says so. */
    {
        char c;
        if (read(c1, &c, 1) != 1 || c != 'S')
            die("generation 1 did not step down", EPROTO);
    }
    rtt(cfd, 1, &med[1], &p99[1]);
    dps[1] = rate(cfd, 1);
    rtt(cfd, 2, &med[2], &p99[2]);
    dps[2] = rate(cfd, 2);

    /* Ten more upgrades, every generation staying: after each, datagrams
     * of every live generation's flows, each must come back from its own. */
    long long before = misrouted + lost, checked = 0;
    int chans[UPGRADES + 3] = {0, c1, c2}, prev = c2;
    pid_t pids[UPGRADES + 3] = {0, p1, p2};
    for (int g = 3; g < UPGRADES + 3; g++) {
        int pg;
        char c;
        pids[g] = start(g, &chans[g], &pg);
        if (read(prev, &c, 1) != 1 || c != 'S')
            die("a generation did not step down", EPROTO);
        prev = chans[g];
        for (int h = 1; h <= g; h++)
            for (int i = 0; i < 50; i++) {
                char msg[64] = {(char)h};
                if (send(cfd, msg, sizeof(msg), 0) < 0)
                    die("send", errno);
                recv_one(cfd, (char)h);
                checked++;
            }
    }
    shutdown(c2, SHUT_WR);
    if (read(c2, &route_med, sizeof(route_med)) != sizeof(route_med))
        route_med = -1;
    for (int g = 1; g < UPGRADES + 3; g++) {
        close(chans[g]);
        waitpid(pids[g], NULL, 0);
    }
    *strrchr(dir, '/') = 0;
    {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        (void)!system(cmd);
    }

    printf("steer: UDP echo on loopback, 64-byte datagrams; round trips one at a time (%d), "
           "rate with %d in flight (median of %d runs of %d)\n",
           pings, window, runs, count);
    printf("  %-44s %10s %10s %12s %8s\n", "", "rtt p50 us", "rtt p99 us", "datagrams/s",
           "vs plain");
    const char *names[3] = {"plain (generation 1 reads the socket)",
                            "steered (2 reads, forwards to 1)", "own (2 reads, its own flow)"};
    for (int i = 0; i < 3; i++)
        printf("  %-44s %10.1f %10.1f %12.0f %8.2f\n", names[i], (double)med[i] / 1000.0,
               (double)p99[i] / 1000.0, dps[i], dps[i] / dps[0]);
    printf("  added round trip, steered - plain: %.1f us (median)\n",
           (double)(med[1] - med[0]) / 1000.0);
    printf("  reader's time in baton_steer_route() per forwarded datagram: %.1f us (median)\n",
           (double)route_med / 1000.0);
    printf("  %d more upgrades, every generation alive, 50 datagrams per live generation after "
           "each: %lld datagrams, %lld lost or misrouted\n",
           UPGRADES, checked, misrouted + lost - before);
    printf("  lost: %lld, misrouted: %lld (all phases)\n", lost, misrouted);
    return lost || misrouted ? 1 : 0;
}
