/* SPDX-License-Identifier: MIT */
/*
 * 1,000 sessions move A->B->A across real network hops, under continuous
 * traffic: three network namespaces (clients, host A, host B) joined by
 * veth pairs with private test addresses; servers and clients run in
 * separate processes, each in its namespace. No message may be lost,
 * duplicated or reordered, no session lost, and every client must have
 * moved twice. Prints the time each move of all sessions took and the
 * pause clients saw (p50/p99/max): bench/session-move.sh runs this.
 *
 *   test-session-netns plain|netem|kill-current|kill-next [SESSIONS]
 *
 * kill-current and kill-next SIGKILL A (the current server) or B (the next
 * one) while every session moves A->B, once A has seen a random number of
 * sessions taken (plus a random few hundred microseconds): every client
 * must then either go on with nothing lost, duplicated or reordered, or
 * have been told "session lost"; and those that go on must be exactly the
 * sessions the surviving server holds.
 *
 * netem adds 5 ms delay and 0.5% loss on every link, each way: with tc
 * netem where the kernel has sch_netem, else with the user-space link
 * emulator of linkem.c (TUN devices instead of veth; skipped without
 * /dev/net/tun). Under loss a move may time out (a SYN lost twice costs
 * 3 s); the session then stays where it was, and the server moves what is
 * left again, as an operator would: every session must end up moved and
 * nothing may be lost. Root only (else skipped). Names are unique per run
 * and everything is removed at exit, on failure too.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "linkem.h"
#include "session-util.h"

enum {
    CMD_MOVE = 1,
    CMD_STOP = 2,
    CMD_MOVE_GO = 3,
    CMD_COUNT = 4,
    MSG_READY = 100,
    MSG_OPEN = 101,
    MSG_AT = 102
};

static char ns[3][32]; /* clients, A, B */
static bool netem;
static struct linkem em; /* the link emulator, if netem without sch_netem */

static uint64_t t_now_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000;
}
static pid_t creator;
static int nsess = 1000;
static unsigned net;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return t_run(argv, 20000, NULL, 0);
}

static void cleanup(void)
{
    if (getpid() != creator)
        return;
    for (int i = 0; i < 3; i++)
        if (ns[i][0])
            sh("ip netns del %s 2>/dev/null", ns[i]);
}

static void on_signal(int sig)
{
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void enter(const char *name)
{
    char path[128];
    int fd;

    snprintf(path, sizeof(path), "/var/run/netns/%s", name);
    fd = T_SYS(open(path, O_RDONLY | O_CLOEXEC));
    T_SYS(setns(fd, CLONE_NEWNET));
    close(fd);
}

/* Whether tc netem works here (the kernel may lack sch_netem). */
static bool have_tc_netem(void)
{
    if (sh("tc -n %s qdisc add dev lo root netem delay 1ms 2>/dev/null", ns[0]) != 0)
        return false;
    sh("tc -n %s qdisc del dev lo root", ns[0]);
    return true;
}

/* c<->a on 10.N.1.0/24, c<->b on 10.N.2.0/24, a<->b on 10.N.3.0/24; the
 * device on the first-named side is <tag><pid>x with .1, the other ...y
 * with .2. */
static void setup(void)
{
    static const char *links[3][4] = {
        {"0", "1", "1", "ca"}, {"0", "2", "2", "cb"}, {"1", "2", "3", "ab"}};
    int id = (int)getpid() % 100000;
    bool emulate = false;

    for (int i = 0; i < 3; i++) {
        snprintf(ns[i], sizeof(ns[i]), "bsess%d%c", (int)getpid(), "cab"[i]);
        if (sh("ip netns add %s", ns[i]) != 0)
            t_fail(__FILE__, __LINE__, "ip netns add %s failed", ns[i]);
        T_EQ(sh("ip -n %s link set lo up", ns[i]), 0);
    }
    if (netem && !have_tc_netem()) {
        int r;
        emulate = true;
        em.n = 3;
        em.delay_us = 5000;
        em.loss_ppm = 5000;
        for (int i = 0; i < 3; i++) {
            em.links[i].ns[0] = ns[links[i][0][0] - '0'];
            em.links[i].ns[1] = ns[links[i][1][0] - '0'];
            snprintf(em.links[i].dev[0], 16, "v%s%d-x", links[i][3], id);
            snprintf(em.links[i].dev[1], 16, "v%s%d-y", links[i][3], id);
        }
        if ((r = linkem_start(&em)) < 0)
            t_skip("no tc netem (sch_netem) and no TUN devices for the link emulator: %s",
                   strerror(-r));
        printf("tc netem is not available here (no sch_netem): links are TUN devices and the "
               "user-space link emulator\n");
    }
    for (int i = 0; i < 3; i++) {
        int x = links[i][0][0] - '0', y = links[i][1][0] - '0';
        const char *sub = links[i][2], *tag = links[i][3];
        if (!emulate)
            T_EQ(sh("ip link add v%s%d-x netns %s type veth peer name v%s%d-y netns %s", tag, id,
                    ns[x], tag, id, ns[y]),
                 0);
        T_EQ(sh("ip -n %s addr add 10.%u.%s.1/24 dev v%s%d-x && ip -n %s link set v%s%d-x up",
                ns[x], net, sub, tag, id, ns[x], tag, id),
             0);
        T_EQ(sh("ip -n %s addr add 10.%u.%s.2/24 dev v%s%d-y && ip -n %s link set v%s%d-y up",
                ns[y], net, sub, tag, id, ns[y], tag, id),
             0);
        if (netem && !emulate) {
            T_EQ(sh("tc -n %s qdisc add dev v%s%d-x root netem delay 5ms loss 0.5%%", ns[x], tag,
                    id),
                 0);
            T_EQ(sh("tc -n %s qdisc add dev v%s%d-y root netem delay 5ms loss 0.5%%", ns[y], tag,
                    id),
                 0);
        }
    }
}

static bool chan_ready(int chan)
{
    struct pollfd p = {chan, POLLIN, 0};

    return poll(&p, 1, 0) > 0;
}

/* A server in namespace ns[which] (1 = A, 2 = B): moves every session to
 * the other on CMD_MOVE, again for those whose move failed (up to 5
 * times), and answers with sessions moved, moves that failed, sessions
 * left here, microseconds. */
static int server_main(int chan, void *arg)
{
    int which = (int)(intptr_t)arg, other = 3 - which;
    struct ts_server s, *srvs[] = {&s, NULL};
    char paddr[64], caddr[64];

    enter(ns[which]);
    ts_server_start_at(&s, which == 1 ? "A" : "B", TS_KEY, "0.0.0.0", 7000, 7001);
    snprintf(paddr, sizeof(paddr), "tcp://10.%u.3.%d:7001", net, other);
    snprintf(caddr, sizeof(caddr), "tcp://10.%u.%d.2:7000", net, other);
    T_OK(baton_session_server_add_peer(s.srv, "other", paddr, caddr));
    t_tell(chan, MSG_READY);
    for (long long at = -1;;) {
        long long cmd;
        ts_pump(srvs, NULL, 0, at >= 0 ? 0 : 10);
        if (at >= 0 && s.moved >= at) {
            t_tell(chan, MSG_AT); /* the parent strikes now */
            at = -1;
        }
        if (!chan_ready(chan))
            continue;
        cmd = t_hear(chan, T_TIMEOUT);
        if (cmd == CMD_STOP)
            break;
        if (cmd == CMD_MOVE_GO) {
            /* Start moving everything, answer at once, and say MSG_AT as
             * soon as the given number of sessions has been taken. */
            at = t_hear(chan, T_TIMEOUT);
            t_tell(chan, T_OK(baton_session_move(s.srv, "other", NULL, 0)));
            continue;
        }
        if (cmd == CMD_COUNT) {
            t_tell(chan, (long long)baton_session_server_count(s.srv));
            continue;
        }
        long long moved0 = s.moved, failed0 = s.move_failed, t0 = (long long)t_now_us();
        for (int attempt = 0; attempt < 5 && baton_session_server_count(s.srv) > 0; attempt++) {
            long long before = s.moved + s.move_failed;
            int n = (int)T_OK(baton_session_move(s.srv, "other", NULL, 0));
            while (s.moved + s.move_failed < before + n)
                ts_pump(srvs, NULL, 0, 10);
        }
        t_tell(chan, s.moved - moved0);
        t_tell(chan, s.move_failed - failed0);
        t_tell(chan, (long long)baton_session_server_count(s.srv));
        t_tell(chan, (long long)t_now_us() - t0);
    }
    t_tell(chan, s.errors);
    ts_server_stop(&s);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* nsess clients on A, sending all the time: each every SEND_US (up to 3
 * unanswered), at its own phase, so that the load is even rather than
 * bursts of a thousand messages. On CMD_STOP they finish their moves and
 * messages and report. */
enum { SEND_US = 50000 };
static int want_moves = 2; /* A->B, B->A; 0 when a server is killed */

static int clients_main(int chan, void *arg)
{
    struct ts_client *cl = calloc((size_t)nsess, sizeof(*cl));
    char addr[64];
    bool open_told = false, stopping = false;
    int reopened = 0;
    uint64_t *next = calloc((size_t)nsess, sizeof(*next)), *pauses, t0;
    long long errors = 0, lost = 0, missing = 0, moves = 0, np = 0;

    enter(ns[0]);
    snprintf(addr, sizeof(addr), "tcp://10.%u.1.2:7000", net);
    t0 = t_now_us();
    /* Under loss a SYN lost twice costs 3 s: wait for that (1 + 2 + 4 s). */
    if (netem)
        ts_client_timeout_ms = 10000;
    for (int i = 0; i < nsess; i++) {
        ts_client_start(&cl[i], addr);
        next[i] = t0 + (uint64_t)i * SEND_US / (uint64_t)nsess;
    }
    for (int spins = 0;; spins++) {
        bool all = true, open = true;
        ts_pump(NULL, cl, nsess, 1);
        for (int i = 0; i < nsess; i++) {
            if (netem && !open_told && cl[i].lost && cl[i].got == 0 && reopened < nsess) {
                /* Under loss a session can fail to open at all (its
                 * connect timed out): open another, as a client would.
                 * Only before the moves: a session, once open, must not
                 * be lost. */
                t_log("client %d: %s; opening another", i,
                      baton_session_client_last_error(cl[i].c));
                ts_client_stop(&cl[i]);
                ts_client_start(&cl[i], addr);
                reopened++;
            }
            if (cl[i].got == 0)
                open = false; /* not yet answered once */
            if ((!cl[i].lost && cl[i].got < cl[i].sent) ||
                (stopping && !cl[i].lost && cl[i].moves < want_moves))
                all = false;
        }
        if (!open_told && open) {
            t_tell(chan, MSG_OPEN);
            open_told = true;
        }
        if (stopping && open && all)
            break;
        if (!stopping && chan_ready(chan) && t_hear(chan, T_TIMEOUT) == CMD_STOP) {
            stopping = true;
            spins = 0;
            /* One last message each: a client in the middle of a move holds
             * it back, so "all answered" also means every move has ended
             * (the session went on somewhere, or was reported lost). */
            for (int i = 0; i < nsess; i++)
                if (!cl[i].lost)
                    ts_client_send(&cl[i]);
        }
        if (stopping && spins > 20000)
            break; /* report what is missing */
        if (!stopping) {
            uint64_t now = t_now_us();
            for (int i = 0; i < nsess; i++)
                if (now >= next[i]) {
                    next[i] += SEND_US;
                    if (cl[i].sent - cl[i].got < 3 && !cl[i].lost)
                        ts_client_send(&cl[i]);
                }
        }
    }
    pauses = calloc((size_t)nsess * 8, sizeof(*pauses));
    for (int i = 0; i < nsess; i++) {
        errors += cl[i].errors;
        lost += cl[i].lost;
        if (cl[i].lost && want_moves)
            t_log("client %d (%s) lost after %lld moves, %lld called off: %s", i,
                  baton_session_client_id(cl[i].c), cl[i].moves, cl[i].move_failed,
                  baton_session_client_last_error(cl[i].c));
        if (cl[i].lost && cl[i].lost_err != -ECONNABORTED) {
            errors++; /* a session may only be lost as "session lost" */
            t_log("client %d lost with %s", i, baton_session_strerror(cl[i].lost_err));
        }
        if (cl[i].errors)
            t_log("client %d: %lld errors (lost, repeated or reordered messages)", i, cl[i].errors);
        if (!cl[i].lost && cl[i].got < cl[i].sent) {
            missing += (long long)(cl[i].sent - cl[i].got);
            if (missing <= 10)
                t_log("client %d (%s): %llu of %llu answered, %lld moves, %lld failed", i,
                      baton_session_client_id(cl[i].c), (unsigned long long)cl[i].got,
                      (unsigned long long)cl[i].sent, cl[i].moves, cl[i].move_failed);
        }
        moves += cl[i].moves;
        for (int k = 0; k < cl[i].npauses; k++)
            pauses[np++] = cl[i].pauses[k];
    }
    qsort(pauses, (size_t)np, sizeof(*pauses), cmp);
    t_tell(chan, errors);
    t_tell(chan, lost);
    t_tell(chan, missing);
    t_tell(chan, moves);
    t_tell(chan, np ? (long long)pauses[np / 2] : 0);
    t_tell(chan, np ? (long long)pauses[(np - 1) * 99 / 100] : 0);
    t_tell(chan, np ? (long long)pauses[np - 1] : 0);
    /* Keep the sessions until told, so that the servers can be asked what
     * they hold. */
    T_EQ(t_hear(chan, 60000), CMD_STOP);
    for (int i = 0; i < nsess; i++)
        ts_client_stop(&cl[i]);
    free(pauses);
    free(next);
    free(cl);
    return 0;
}

static void move(struct t_proc *srv, const char *what)
{
    long long moved, failed, left, us;

    t_tell(srv->chan, CMD_MOVE);
    moved = t_hear(srv->chan, 120000);
    failed = t_hear(srv->chan, T_TIMEOUT);
    left = t_hear(srv->chan, T_TIMEOUT);
    us = t_hear(srv->chan, T_TIMEOUT);
    printf("move %s: %lld sessions moved, %lld failed, in %.1f ms\n", what, moved, failed,
           (double)us / 1000.0);
    if (failed)
        printf("  (%lld moves failed and were tried again; %lld sessions left behind)\n", failed,
               left);
    T_EQ(moved, nsess);
    T_EQ(left, 0);
    if (!netem)
        T_EQ(failed, 0); /* without loss, no move may fail */
}

/* A server is killed at a random moment while every session moves A->B:
 * each client must either go on (wherever its session now is) with nothing
 * lost, duplicated or reordered, or get the explicit "session lost" event;
 * and the sessions that go on are exactly those the survivor holds.
 * victim: 1 (A, the current server) or 2 (B, the next). */
static void chaos(struct t_proc *a, struct t_proc *b, struct t_proc *c, int victim)
{
    struct t_proc *dead = victim == 1 ? a : b, *alive = victim == 1 ? b : a;
    long long errors, lost, missing, moves, held;
    unsigned seed = (unsigned)getpid() ^ (unsigned)t_now_us();
    int at, delay_us;

    /* The moment of the fault: once A has seen a random number of sessions
     * taken, and a random few hundred microseconds later (so that it falls
     * between steps, not only just after a TAKEN). */
    srand(seed);
    at = rand() % nsess;
    delay_us = rand() % 500;
    printf("killing %s once %d sessions were taken, +%d us (seed %u)\n", victim == 1 ? "A" : "B",
           at, delay_us, seed);
    t_tell(a->chan, CMD_MOVE_GO);
    t_tell(a->chan, at);
    T_EQ(t_hear(a->chan, T_TIMEOUT), nsess);
    T_EQ(t_hear(a->chan, 60000), MSG_AT);
    for (uint64_t until = t_now_us() + (uint64_t)delay_us; t_now_us() < until;)
        ;
    t_proc_kill(dead);
    /* Let every client notice and settle, then stop and report. */
    t_tell(c->chan, CMD_STOP);
    errors = t_hear(c->chan, 60000);
    lost = t_hear(c->chan, T_TIMEOUT);
    missing = t_hear(c->chan, T_TIMEOUT);
    moves = t_hear(c->chan, T_TIMEOUT);
    for (int i = 0; i < 3; i++)
        (void)t_hear(c->chan, T_TIMEOUT); /* pauses */
    t_tell(alive->chan, CMD_COUNT);
    held = t_hear(alive->chan, T_TIMEOUT);
    t_tell(c->chan, CMD_STOP);
    t_tell(alive->chan, CMD_STOP);
    T_EQ(t_hear(alive->chan, T_TIMEOUT), 0); /* the survivor's errors */
    printf("%s killed: %lld sessions lost (told), %lld go on at %s; %lld moves; errors %lld "
           "unanswered %lld\n",
           victim == 1 ? "A" : "B", lost, held, victim == 1 ? "B" : "A", moves, errors, missing);
    T_EQ(t_proc_wait(alive, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(c, T_TIMEOUT), 0);
    T_EQ(errors, 0);
    T_EQ(missing, 0);
    T_EQ(lost + held, nsess);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "plain";
    int victim = strcmp(mode, "kill-current") == 0 ? 1 : strcmp(mode, "kill-next") == 0 ? 2 : 0;

    t_init(argc, argv);
    /* One authority for every process of the test (the servers and the
     * clients are children in their namespaces). */
    if (ts_tls_mode() != TS_PLAIN)
        ts_tls_dir();
    setvbuf(stdout, NULL, _IOLBF, 0); /* children are forked: nothing buffered twice */
    netem = strcmp(mode, "netem") == 0;
    if (!netem && !victim && strcmp(mode, "plain") != 0)
        t_fail(__FILE__, __LINE__, "usage: %s plain|netem|kill-current|kill-next [SESSIONS]",
               argv[0]);
    if (victim)
        want_moves = 0;
    if (argc > 2)
        nsess = atoi(argv[2]);
    if (geteuid() != 0)
        t_skip("needs root (network namespaces)");
    if (access("/usr/sbin/ip", X_OK) != 0 && access("/sbin/ip", X_OK) != 0 &&
        access("/usr/bin/ip", X_OK) != 0)
        t_skip("needs iproute2 (ip)");
    creator = getpid();
    net = 100 + (unsigned)getpid() % 150;
    atexit(cleanup);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    setup();
    if (getenv("TS_MOVE_WINDOW")) /* bench/session-move.sh: compare windows */
        ts_move_window = atoi(getenv("TS_MOVE_WINDOW"));

    struct t_proc a, b, c;
    long long errors, lost, missing, moves, p50, p99, pmax;
    t_spawn(&a, server_main, (void *)(intptr_t)1);
    t_spawn(&b, server_main, (void *)(intptr_t)2);
    T_HEAR_EQ(a.chan, MSG_READY);
    T_HEAR_EQ(b.chan, MSG_READY);
    t_spawn(&c, clients_main, NULL);
    T_EQ(t_hear(c.chan, 60000), MSG_OPEN);
    printf("%d sessions open on A%s\n", nsess, netem ? " (netem: 5 ms delay, 0.5% loss)" : "");
    if (victim) {
        chaos(&a, &b, &c, victim);
        cleanup();
        ns[0][0] = ns[1][0] = ns[2][0] = 0;
        return t_done();
    }
    move(&a, "A->B");
    move(&b, "B->A");
    t_tell(c.chan, CMD_STOP);
    errors = t_hear(c.chan, 60000);
    lost = t_hear(c.chan, T_TIMEOUT);
    missing = t_hear(c.chan, T_TIMEOUT);
    moves = t_hear(c.chan, T_TIMEOUT);
    p50 = t_hear(c.chan, T_TIMEOUT);
    p99 = t_hear(c.chan, T_TIMEOUT);
    pmax = t_hear(c.chan, T_TIMEOUT);
    printf("client pause: p50 %.2f ms p99 %.2f ms max %.2f ms over %lld moves\n",
           (double)p50 / 1000, (double)p99 / 1000, (double)pmax / 1000, moves);
    printf("errors %lld lost_sessions %lld unanswered %lld\n", errors, lost, missing);
    t_tell(a.chan, CMD_COUNT);
    T_EQ(t_hear(a.chan, T_TIMEOUT), nsess); /* every session back at A */
    t_tell(b.chan, CMD_COUNT);
    T_EQ(t_hear(b.chan, T_TIMEOUT), 0);
    t_tell(c.chan, CMD_STOP);
    t_tell(a.chan, CMD_STOP);
    t_tell(b.chan, CMD_STOP);
    T_EQ(t_hear(a.chan, T_TIMEOUT), 0);
    T_EQ(t_hear(b.chan, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&a, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&b, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&c, T_TIMEOUT), 0);
    T_EQ(errors, 0);
    T_EQ(lost, 0);
    T_EQ(missing, 0);
    T_EQ(moves, 2LL * nsess);
    if (em.proc.pid)
        linkem_stop(&em);
    cleanup();
    ns[0][0] = ns[1][0] = ns[2][0] = 0;
    return t_done();
}
