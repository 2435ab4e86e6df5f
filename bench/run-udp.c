/* SPDX-License-Identifier: MIT */
/*
 * baton-bench-run-udp: what `baton run`'s UDP steering costs a datagram of
 * an unmodified server.
 *
 * The server is this program in --serve mode: a UDP echo built as servers
 * like ngtcp2's are (non-blocking socket, epoll, recvmsg() with
 * IP_PKTINFO, sendmsg() from the address it was reached at), that knows
 * nothing of baton and answers each datagram with its pid in front. In the
 * same run:
 *   plain    the server alone (the baseline);
 *   shim     under `baton run`: the copy reads its own flows through the
 *            shim (a look in the flow table per datagram);
 *   steered  after `baton upgrade`: the client keeps its socket, so its
 *            flow stays the first copy's; the second copy reads the socket
 *            and hands each datagram to the first, which answers;
 *   new      a new client socket after the upgrade: the second copy's own.
 * For each: the round trip of one datagram at a time (median and p99 over
 * --pings), and datagrams per second with --window in flight (median of
 * --runs runs of --count), with ratios to plain. Every answer must come
 * from the copy that owns the flow: one from another (misrouted) or none
 * (lost) is counted, and fails the run.
 *
 * Usage: baton-bench-run-udp [--pings N] [--count N] [--window N] [--runs N]
 * (it finds `baton` beside itself).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int pings = 10000, count = 100000, window = 32, runs = 5;
static char dir[64] = "/tmp/baton-bench-run-udp-XXXXXX";
static char baton_bin[PATH_MAX], self[PATH_MAX];

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "baton-bench-run-udp: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- the server: knows nothing of baton ---- */

_Noreturn static void serve(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct epoll_event ev = {.events = EPOLLIN};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), one = 1, ep = epoll_create1(0);
    uint32_t pid = (uint32_t)getpid();

    if (fd < 0 || ep < 0 || setsockopt(fd, SOL_IP, IP_PKTINFO, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("serve: socket");
    for (;;) {
        struct epoll_event got;
        if (epoll_wait(ep, &got, 1, -1) < 0 && errno != EINTR)
            die("serve: epoll_wait");
        for (;;) {
            uint8_t buf[2048], ctl[256];
            struct sockaddr_in from;
            struct iovec iov[2] = {{&pid, 4}, {buf + 4, sizeof(buf) - 4}};
            struct msghdr m = {.msg_name = &from,
                               .msg_namelen = sizeof(from),
                               .msg_iov = iov + 1,
                               .msg_iovlen = 1,
                               .msg_control = ctl,
                               .msg_controllen = sizeof(ctl)};
            struct cmsghdr *c;
            ssize_t n = recvmsg(fd, &m, 0);
            bool local = false;

            if (n < 0)
                break;
            /* Answer from the address we were reached at, as QUIC servers
             * do: without it (a datagram forwarded without its control
             * messages) this server, like ngtcp2's, drops it. */
            for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
                local |= c->cmsg_level == SOL_IP && c->cmsg_type == IP_PKTINFO;
            if (!local)
                continue;
            iov[1].iov_len = (size_t)n;
            m.msg_iov = iov;
            m.msg_iovlen = 2;
            m.msg_controllen = 0;
            m.msg_control = NULL;
            if (sendmsg(fd, &m, 0) < 0 && errno != EAGAIN)
                die("serve: sendmsg");
        }
    }
}

/* ---- the client ---- */

static int port;
static unsigned misrouted, lost;

static int client(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_DGRAM, 0);

    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        die("client socket");
    return fd;
}

/* One reply within 1 s: its sequence number and the pid that answered;
 * -1 on a timeout. */
static int64_t reply(int fd, uint32_t *pid)
{
    struct pollfd p = {fd, POLLIN, 0};
    uint8_t buf[64];
    uint64_t seq;

    if (poll(&p, 1, 1000) != 1 || recv(fd, buf, sizeof(buf), 0) != 12)
        return -1;
    memcpy(pid, buf, 4);
    memcpy(&seq, buf + 4, 8);
    return (int64_t)seq;
}

static void check(uint32_t got, uint32_t want)
{
    if (got != want)
        misrouted++;
}

/* Round trips, one datagram at a time: median and p99 in us. */
static void rtt(int fd, uint32_t want, double *p50, double *p99)
{
    int64_t *t = malloc(sizeof(int64_t) * (size_t)pings);

    for (int i = 0; i < pings; i++) {
        uint64_t seq = (uint64_t)i;
        int64_t t0 = now_ns(), r;
        uint32_t pid = 0;

        if (send(fd, &seq, 8, 0) != 8)
            die("send");
        while ((r = reply(fd, &pid)) >= 0 && r != i) {
        }
        if (r < 0) {
            lost++;
            t[i] = 1000000000;
            continue;
        }
        check(pid, want);
        t[i] = now_ns() - t0;
    }
    qsort(t, (size_t)pings, sizeof(*t), cmp_i64);
    *p50 = (double)t[pings / 2] / 1000;
    *p99 = (double)t[pings * 99 / 100] / 1000;
    free(t);
}

/* Datagrams per second with window in flight: the median of runs. */
static double rate(int fd, uint32_t want)
{
    double r[16];
    uint64_t base = 1u << 30;

    for (int k = 0; k < runs; k++) {
        int64_t t0 = now_ns();
        uint64_t sent = 0, got = 0;
        while (got < (uint64_t)count) {
            while (sent < (uint64_t)count && sent - got < (uint64_t)window) {
                uint64_t seq = base + sent++;
                if (send(fd, &seq, 8, 0) != 8)
                    die("send");
            }
            uint32_t pid = 0;
            int64_t s = reply(fd, &pid);
            if (s < 0) {
                /* Lost: the window moves on without it. */
                lost += (unsigned)(sent - got);
                got = sent;
                continue;
            }
            check(pid, want);
            got++;
        }
        r[k] = (double)count / ((double)(now_ns() - t0) / 1e9);
        base += (uint64_t)count;
    }
    for (int i = 1; i < runs; i++) /* a few: insertion sort */
        for (int j = i; j > 0 && r[j] < r[j - 1]; j--) {
            double x = r[j];
            r[j] = r[j - 1];
            r[j - 1] = x;
        }
    return r[runs / 2];
}

static pid_t start(bool under_baton)
{
    char p[16];
    pid_t pid = fork();

    if (pid < 0)
        die("fork");
    if (pid == 0) {
        snprintf(p, sizeof(p), "%d", port);
        if (under_baton)
            execl(baton_bin, baton_bin, "run", "--dir", dir, "--drain-timeout", "600",
                  "--udp-steer", "--", self, "--serve", p, (char *)NULL);
        else
            execl(self, self, "--serve", p, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The pid that answers a fresh socket: the copy that serves new flows. */
static uint32_t who(void)
{
    int fd = client();
    uint32_t pid = 0;

    /* Asked again every 20 ms for 10 s: the server may not be bound yet
     * (then the kernel refuses at once, and we wait out the 20 ms). */
    for (int64_t end = now_ns() + 10000000000; !pid && now_ns() < end;) {
        uint64_t seq = 7;
        struct pollfd p = {fd, POLLIN, 0};
        struct timespec pace = {0, 20000000};
        uint8_t buf[64];
        if (send(fd, &seq, 8, 0) != 8 && errno != ECONNREFUSED)
            die("send");
        if (poll(&p, 1, 20) == 1 && recv(fd, buf, sizeof(buf), 0) == 12)
            memcpy(&pid, buf, 4);
        else if (p.revents & POLLERR)
            nanosleep(&pace, NULL);
    }
    close(fd);
    return pid;
}

static int run_baton(const char *cmd)
{
    pid_t pid = fork();
    int st;

    if (pid == 0) {
        int null = open("/dev/null", 1);
        dup2(null, 1);
        execl(baton_bin, baton_bin, cmd, dir, (char *)NULL);
        _exit(127);
    }
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

struct row {
    const char *name, *what;
    double p50, p99, rate;
};

static void measure(struct row *r, int fd, uint32_t want)
{
    rtt(fd, want, &r->p50, &r->p99);
    r->rate = rate(fd, want);
    fprintf(stderr,
            "  %-8s p50 %.1f us, p99 %.1f us, %.0f datagrams/s (so far: lost %u, misrouted %u)\n",
            r->name, r->p50, r->p99, r->rate, lost, misrouted);
}

int main(int argc, char **argv)
{
    struct row rows[4] = {
        {.name = "plain", .what = "the server alone"},
        {.name = "shim", .what = "under baton run: it reads its own flows through the shim"},
        {.name = "steered",
         .what = "after an upgrade: the new copy hands the old copy's flow to it"},
        {.name = "new", .what = "after an upgrade: a new flow, the new copy's own"},
    };
    uint32_t first, second;
    pid_t srv, run;
    int old_fd, fd;
    char *slash;

    if (argc == 3 && !strcmp(argv[1], "--serve"))
        serve(atoi(argv[2]));
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--pings"))
            pings = v;
        else if (!strcmp(argv[i], "--count"))
            count = v;
        else if (!strcmp(argv[i], "--window"))
            window = v;
        else if (!strcmp(argv[i], "--runs"))
            runs = v;
        else {
            fprintf(stderr, "usage: %s [--pings N] [--count N] [--window N] [--runs N]\n", argv[0]);
            return 2;
        }
    }
    if (pings < 100 || count < 1000 || window < 1 || runs < 1 || runs > 16) {
        fprintf(stderr, "baton-bench-run-udp: --pings >= 100, --count >= 1000, --window >= 1, "
                        "--runs 1..16\n");
        return 2;
    }
    if (readlink("/proc/self/exe", self, sizeof(self) - 1) < 0)
        die("readlink");
    snprintf(baton_bin, sizeof(baton_bin), "%s", self);
    slash = strrchr(baton_bin, '/');
    snprintf(slash + 1, sizeof(baton_bin) - (size_t)(slash + 1 - baton_bin), "baton");
    if (access(baton_bin, X_OK) < 0)
        die(baton_bin);
    if (!mkdtemp(dir))
        die("mkdtemp");
    srand((unsigned)getpid());
    port = 30000 + rand() % 20000;
    printf("# baton-bench-run-udp: a UDP echo that knows nothing of baton, 8-byte datagrams on "
           "loopback; %d pings, %d runs of %d with %d in flight\n",
           pings, runs, count, window);

    srv = start(false);
    if (!(first = who()))
        die("the plain server does not answer");
    fd = client();
    measure(&rows[0], fd, first);
    close(fd);
    kill(srv, SIGKILL);
    waitpid(srv, NULL, 0);

    run = start(true);
    if (!(first = who()))
        die("the server under baton run does not answer");
    old_fd = client();
    measure(&rows[1], old_fd, first);
    if (run_baton("upgrade") != 0)
        die("baton upgrade");
    second = who();
    if (!second || second == first)
        die("no second copy serves new flows");
    measure(&rows[2], old_fd, first);
    fd = client();
    measure(&rows[3], fd, second);
    close(fd);
    close(old_fd);
    kill(second, SIGKILL);
    kill(first, SIGKILL);
    waitpid(run, NULL, 0);

    printf("\n| path | round trip p50 | p99 | datagrams/s | vs plain |\n|---|---|---|---|---|\n");
    for (int i = 0; i < 4; i++)
        printf("| %s: %s | %.1f us | %.1f us | %.0f | %.2f |\n", rows[i].name, rows[i].what,
               rows[i].p50, rows[i].p99, rows[i].rate, rows[i].rate / rows[0].rate);
    printf("\nshim cost per round trip: %+.1f us (p50); steered: %+.1f us; lost %u, misrouted %u\n",
           rows[1].p50 - rows[0].p50, rows[2].p50 - rows[0].p50, lost, misrouted);
    {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0) {
            /* Left behind in /tmp: harmless. */
        }
    }
    return lost || misrouted ? 1 : 0;
}
