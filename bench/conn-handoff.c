/* SPDX-License-Identifier: MIT */
/*
 * bench/conn-handoff: how long handing N idle connections to a successor
 * takes, beside the listener handoff measured in the same run.
 *
 *   baton-bench-conn-handoff [--runs R] [--conns N]...
 *
 * A client process holds N connections open for the whole run. A chain of
 * generations passes the listener and all N connections on, R times: each
 * new generation takes over (listener handoff: spawn to READY), then the
 * old one hands every connection over in one baton_handoff_batch() (timed
 * by the old owner, from the call to its return, every connection
 * confirmed), and the new one accepts them all (timed from READY). Each
 * connection carries 16 bytes of state. Medians over the runs.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "baton.h"

extern char **environ;

enum { R_PORT = 1, R_ACCEPTED, R_READY, R_TOOK, R_HANDOFF };

struct rec {
    int kind;
    int pid;
    long long value;
    double t; /* monotonic microseconds when written */
};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void report(int fd, int kind, long long value)
{
    struct rec r = {.kind = kind, .pid = getpid(), .value = value, .t = now_us()};
    /* Smaller than PIPE_BUF: one atomic write. */
    if (write(fd, &r, sizeof(r)) != sizeof(r))
        _exit(3);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Take the connections handed to us (all n of them). */
static int take_all(baton *b, int *fds, int n)
{
    char state[64];
    int got = 0;

    while (got < n) {
        struct pollfd p = {.fd = baton_conn_fd(b), .events = POLLIN};
        size_t len;
        int fd;

        if (poll(&p, 1, 30000) != 1)
            return -ETIMEDOUT;
        fd = baton_conn_accept(b, state, sizeof(state), &len);
        if (fd == -EAGAIN)
            continue;
        if (fd < 0)
            return fd;
        fds[got++] = fd;
    }
    return got;
}

static int hand_all(baton *b, int *fds, int n, int rep)
{
    struct baton_conn *c = calloc(n, sizeof(*c));
    double t0;
    int taken;

    if (!c)
        return -ENOMEM;
    for (int i = 0; i < n; i++)
        c[i] = (struct baton_conn){.fd = fds[i], .state = "state-0123456789", .len = 16};
    t0 = now_us();
    taken = baton_handoff_batch(b, c, n);
    report(rep, R_HANDOFF, (long long)(now_us() - t0));
    for (int i = 0; i < n; i++)
        if (c[i].result == 0)
            close(fds[i]);
    baton_handoff_done(b);
    free(c);
    return taken == n ? 0 : -EIO;
}

static int child(const char *dir, int n, int rep)
{
    struct baton_options o = {.dir = dir, .allowed_uid = (uid_t)-1, .flags = BATON_TAKE_CONNS};
    int *fds = calloc(n, sizeof(int)), lfd, r;
    baton *b;

    raise_nofile();
    if (!fds || baton_open(&o, &b) < 0)
        return 1;
    lfd = baton_listen(b, "l0", "tcp://127.0.0.1:0", 4096);
    if (lfd < 0 || baton_ready(b) < 0)
        return 1;
    report(rep, R_READY, 0);
    if (baton_inherited(b)) {
        r = take_all(b, fds, n);
        report(rep, R_TOOK, r);
    } else {
        struct sockaddr_in sa;
        socklen_t sl = sizeof(sa);
        getsockname(lfd, (struct sockaddr *)&sa, &sl);
        report(rep, R_PORT, ntohs(sa.sin_port));
        for (r = 0; r < n; r++)
            if ((fds[r] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0)
                return 1;
        report(rep, R_ACCEPTED, n);
    }
    if (baton_wait_upgrade(b, 60000) != 1)
        return 1;
    r = hand_all(b, fds, n, rep);
    baton_free(b);
    free(fds);
    return r < 0;
}

static int clients(int port, int n, int stop_fd)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    char c;

    raise_nofile();
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
            return 1;
    }
    /* Hold them until the parent is done. */
    return read(stop_fd, &c, 1) < 0;
}

static int next_rec(int fd, struct rec *r)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 60000) != 1 || read(fd, r, sizeof(*r)) != sizeof(*r))
        return -1;
    return 0;
}

/* Wait for a record of kind; fails on timeout or on any other kind. */
static int expect(int fd, int kind, struct rec *r)
{
    if (next_rec(fd, r) < 0)
        return -1;
    if (r->kind != kind) {
        fprintf(stderr, "conn-handoff: got record %d, expected %d\n", r->kind, kind);
        return -1;
    }
    return 0;
}

static pid_t start(const char *self, const char *dir, int n, int rep)
{
    char nbuf[16], rbuf[16];
    char *argv[] = {(char *)self, "--child", (char *)dir, nbuf, rbuf, NULL};
    pid_t pid;

    snprintf(nbuf, sizeof(nbuf), "%d", n);
    snprintf(rbuf, sizeof(rbuf), "%d", rep);
    return posix_spawn(&pid, self, NULL, NULL, argv, environ) == 0 ? pid : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One chain of runs generations with n connections. */
static int chain(const char *self, int n, int runs, double *ready, double *hand, double *took)
{
    char tmpl[64], dir[96];
    int rep[2], stop[2];
    struct rec r;
    pid_t cl, last;

    snprintf(tmpl, sizeof(tmpl), "%s/baton-bench-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(tmpl) || pipe(rep) < 0 || pipe(stop) < 0)
        return -1;
    snprintf(dir, sizeof(dir), "%s/coord", tmpl);
    last = start(self, dir, n, rep[1]);
    if (last < 0 || expect(rep[0], R_READY, &r) < 0 || expect(rep[0], R_PORT, &r) < 0)
        return -1;
    cl = fork();
    if (cl == 0) {
        close(stop[1]);
        _exit(clients((int)r.value, n, stop[0]));
    }
    if (expect(rep[0], R_ACCEPTED, &r) < 0)
        return -1;
    for (int i = 0; i < runs; i++) {
        struct rec rd, hd, tk;
        double t0 = now_us();
        pid_t pid = start(self, dir, n, rep[1]);

        if (pid < 0 || expect(rep[0], R_READY, &rd) < 0)
            return -1;
        /* The handoff's and the take's records come in either order. */
        if (next_rec(rep[0], &hd) < 0 || next_rec(rep[0], &tk) < 0)
            return -1;
        if (hd.kind == R_TOOK) {
            struct rec x = hd;
            hd = tk;
            tk = x;
        }
        if (hd.kind != R_HANDOFF || tk.kind != R_TOOK || tk.value != n) {
            fprintf(stderr, "conn-handoff: run %d: bad records\n", i);
            return -1;
        }
        ready[i] = rd.t - t0;
        hand[i] = hd.value;
        took[i] = tk.t - rd.t;
        waitpid(last, NULL, 0);
        last = pid;
    }
    kill(last, SIGTERM);
    waitpid(last, NULL, 0);
    close(stop[1]);
    waitpid(cl, NULL, 0);
    close(stop[0]);
    close(rep[0]);
    close(rep[1]);
    return 0;
}

int main(int argc, char **argv)
{
    int runs = 20, sizes[8], nsizes = 0;
    const char *self = "/proc/self/exe";

    if (argc == 5 && !strcmp(argv[1], "--child"))
        return child(argv[2], atoi(argv[3]), atoi(argv[4]));
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--conns") && nsizes < 8)
            sizes[nsizes++] = atoi(argv[i + 1]);
    }
    if (!nsizes) {
        sizes[nsizes++] = 1000;
        sizes[nsizes++] = 10000;
    }
    if (runs < 3) {
        fprintf(stderr, "usage: %s [--runs R>=3] [--conns N]...\n", argv[0]);
        return 2;
    }
    raise_nofile();
    printf("conn-handoff: %d runs per size, medians\n", runs);
    printf("%8s %16s %18s %14s %20s\n", "conns", "listener (us)", "handoff (us)", "per conn (us)",
           "READY to all taken");
    for (int s = 0; s < nsizes; s++) {
        double *ready = calloc(runs, sizeof(double)), *hand = calloc(runs, sizeof(double)),
               *took = calloc(runs, sizeof(double));
        if (chain(self, sizes[s], runs, ready, hand, took) < 0) {
            fprintf(stderr, "conn-handoff: the chain of %d connections failed\n", sizes[s]);
            return 1;
        }
        double mh = median(hand, runs);
        printf("%8d %16.0f %18.0f %14.2f %17.0f us\n", sizes[s], median(ready, runs), mh,
               mh / sizes[s], median(took, runs));
        free(ready);
        free(hand);
        free(took);
    }
    printf("target: under 2 us per connection (10,000 in under 20 ms)\n");
    return 0;
}
