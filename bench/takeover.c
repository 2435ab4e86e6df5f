/* SPDX-License-Identifier: MIT */
/*
 * bench/takeover: how long a successor takes from being started to READY,
 * beside a bare fork+exec of the same binary measured in the same run.
 *
 *   baton-bench-takeover [--runs N] [--fds N]
 *
 * Each run starts this binary again (posix_spawn) in one of three ways:
 *   bare      it writes one byte to a pipe first thing in main() and exits;
 *   1 fd      it takes over 1 listener from the current owner and readies;
 *   N fds     the same with 1 listener and N-1 more named fds.
 * The time is measured from posix_spawn() to the byte the child writes
 * (after baton_ready() returned, for the takeovers). The kinds alternate
 * so that machine noise hits them alike. The owner of the chain is always
 * the previous successor, which exits once superseded.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"

extern char **environ;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
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

/* The child side: take over (or start fresh) with nfds fds, ready, report,
 * then serve until superseded. */
static int child(const char *dir, int nfds, int report_fd)
{
    struct baton_options o = {.dir = dir, .allowed_uid = (uid_t)-1};
    char name[32];
    baton *b;
    int r;

    r = baton_open(&o, &b);
    if (r < 0) {
        fprintf(stderr, "takeover: baton_open: %s\n", baton_strerror(r));
        return 1;
    }
    if (baton_listen(b, "l0", "tcp://127.0.0.1:0", 0) < 0)
        goto fail;
    for (int i = 1; i < nfds; i++) {
        snprintf(name, sizeof(name), "f%d", i);
        if (baton_fd(b, name) < 0 && baton_add_fd(b, name, 0) < 0)
            goto fail;
    }
    if (baton_ready(b) < 0)
        goto fail;
    if (write(report_fd, "r", 1) != 1)
        goto fail;
    close(report_fd);
    r = baton_wait_upgrade(b, 60000);
    baton_free(b);
    return r == 1 ? 0 : 1;
fail:
    fprintf(stderr, "takeover: %s\n", baton_last_error(b));
    baton_free(b);
    return 1;
}

/* Start ourselves with args and return the microseconds until the child
 * wrote its byte; the child is left running (it owns the chain now). */
static double spawn_timed(const char *self, char **args, pid_t *ret_pid)
{
    int p[2];
    char fdarg[16], c;
    char *argv[8];
    double t0, t1;
    int i = 0;

    if (pipe(p) < 0)
        return -1;
    snprintf(fdarg, sizeof(fdarg), "%d", p[1]);
    argv[i++] = (char *)self;
    for (char **a = args; *a; a++)
        argv[i++] = *a;
    argv[i++] = fdarg;
    argv[i] = NULL;
    t0 = now_us();
    if (posix_spawn(ret_pid, self, NULL, NULL, argv, environ) != 0)
        return -1;
    close(p[1]);
    if (read(p[0], &c, 1) != 1) {
        close(p[0]);
        return -1;
    }
    t1 = now_us();
    close(p[0]);
    return t1 - t0;
}

/* The old owner's timeline of the last takeover (DIR/last-upgrade, see
 * docs/control-protocol.md): microseconds from its accept() of the
 * successor to fds sent, READY, COMMIT and serving. 0, or -1 if absent. */
static int last_times(const char *dir, double t[4])
{
    char path[160], line[256];
    long long v[6];
    int r = -1;
    FILE *f;

    snprintf(path, sizeof(path), "%s/last-upgrade", dir);
    f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "times %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5]) == 6 &&
            v[1] == 0 && v[5] > 0) {
            for (int i = 0; i < 4; i++)
                t[i] = (double)v[i + 2];
            r = 0;
        }
    fclose(f);
    return r;
}

static void cleanup(const char *top, const char *dir)
{
    static const char *const leaves[] = {"control.sock", "owner", "lock", "last-upgrade"};
    char path[128];

    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, leaves[i]);
        unlink(path);
    }
    rmdir(dir);
    rmdir(top);
}

int main(int argc, char **argv)
{
    int runs = 200, many = 1000;
    char tmpl[64], dir[96], nbuf[16], mbuf[16];
    double *bare, *one, *lots, *connect_, *sent, *ready, *commit, *serving, t[4];
    int nt = 0;
    pid_t pid, last = 0;

    if (argc == 3 && !strcmp(argv[1], "--bare")) {
        return write(atoi(argv[2]), "r", 1) == 1 ? 0 : 1;
    }
    if (argc == 5 && !strcmp(argv[1], "--child"))
        return child(argv[2], atoi(argv[3]), atoi(argv[4]));
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--fds"))
            many = atoi(argv[i + 1]);
    }
    if (runs < 3 || many < 2) {
        fprintf(stderr, "usage: %s [--runs N>=3] [--fds N>=2]\n", argv[0]);
        return 2;
    }
    /* The coordination directory belongs on tmpfs (/run in production):
     * on a disk file system every create and rename costs a journal
     * write, which would dominate the figures. */
    snprintf(tmpl, sizeof(tmpl), "%s/baton-bench-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(tmpl))
        return 1;
    printf("takeover: coordination dir in %s\n", tmpl);
    snprintf(dir, sizeof(dir), "%s/coord", tmpl);
    snprintf(nbuf, sizeof(nbuf), "%d", 1);
    snprintf(mbuf, sizeof(mbuf), "%d", many);
    bare = calloc(runs, sizeof(double));
    one = calloc(runs, sizeof(double));
    lots = calloc(runs, sizeof(double));
    connect_ = calloc(runs, sizeof(double));
    sent = calloc(runs, sizeof(double));
    ready = calloc(runs, sizeof(double));
    commit = calloc(runs, sizeof(double));
    serving = calloc(runs, sizeof(double));

    /* Generation 1, not measured: the chain's first owner. */
    char *first[] = {"--child", dir, mbuf, NULL};
    if (spawn_timed("/proc/self/exe", first, &last) < 0)
        return 1;
    for (int r = 0; r < runs; r++) {
        char *b_args[] = {"--bare", NULL};
        char *o_args[] = {"--child", dir, nbuf, NULL};
        char *m_args[] = {"--child", dir, mbuf, NULL};

        bare[r] = spawn_timed("/proc/self/exe", b_args, &pid);
        waitpid(pid, NULL, 0);
        /* 1 fd: first an owner with only the listener (not measured: it
         * takes over from one with many and drops the rest), then the
         * measured successor takes over from it. */
        if (spawn_timed("/proc/self/exe", o_args, &pid) < 0)
            return 1;
        waitpid(last, NULL, 0);
        last = pid;
        one[r] = spawn_timed("/proc/self/exe", o_args, &pid);
        waitpid(last, NULL, 0);
        last = pid;
        /* The old owner wrote its timeline before it stepped down. */
        if (last_times(dir, t) == 0) {
            connect_[nt] = one[r] - t[3];
            sent[nt] = t[0];
            ready[nt] = t[1] - t[0];
            commit[nt] = t[2] - t[1];
            serving[nt] = t[3] - t[2];
            nt++;
        }
        /* Set up the many-fds owner (not measured), then measure a takeover
         * of every one of its fds. */
        if (spawn_timed("/proc/self/exe", m_args, &pid) < 0)
            return 1;
        waitpid(last, NULL, 0);
        last = pid;
        lots[r] = spawn_timed("/proc/self/exe", m_args, &pid);
        waitpid(last, NULL, 0);
        last = pid;
        if (bare[r] < 0 || one[r] < 0 || lots[r] < 0) {
            fprintf(stderr, "takeover: run %d failed\n", r);
            return 1;
        }
    }
    kill(last, SIGTERM);
    waitpid(last, NULL, 0);
    cleanup(tmpl, dir);

    double mb = median(bare, runs), m1 = median(one, runs), mm = median(lots, runs);
    printf("takeover: %d runs each, medians (microseconds)\n", runs);
    printf("  bare fork+exec to main():          %8.0f\n", mb);
    printf("  successor start to READY, 1 fd:    %8.0f  (%.2fx bare, +%.0f us)\n", m1, m1 / mb,
           m1 - mb);
    printf("  successor start to READY, %d fds: %8.0f  (%.2fx bare, +%.2f us per extra fd)\n", many,
           mm, mm / mb, (mm - m1) / (many - 1));
    printf("targets: +1 fd under 1000 us over bare: %s; per extra fd under 2 us: %s\n",
           m1 - mb < 1000 ? "met" : "MISSED", (mm - m1) / (many - 1) < 2 ? "met" : "MISSED");
    /* Where the 1-fd takeover's time goes, by the old owner's clock
     * (DIR/last-upgrade); the first step is the rest of the total. */
    if (nt >= 3) {
        printf("where the 1-fd takeover's time goes, %d runs, medians (microseconds):\n", nt);
        printf("  start to the owner's accept():      %8.0f  (bare exec %.0f)\n",
               median(connect_, nt), mb);
        printf("  accept() to fds and state sent:     %8.0f\n", median(sent, nt));
        printf("  fds sent to READY (the successor):  %8.0f\n", median(ready, nt));
        printf("  READY to COMMIT sent:               %8.0f\n", median(commit, nt));
        printf("  COMMIT to serving (its publish):    %8.0f\n", median(serving, nt));
    } else {
        printf("no timeline: DIR/last-upgrade was not read in %d of %d runs\n", runs - nt, runs);
    }
    free(connect_);
    free(sent);
    free(ready);
    free(commit);
    free(serving);
    free(bare);
    free(one);
    free(lots);
    return 0;
}
