/* SPDX-License-Identifier: MIT */
/*
 * Chaos under load: repeated upgrades of a serving owner, each with one
 * fault injected, while a client process keeps requests going.
 *
 *   chaos-upgrade [ROUNDS [SEED]]      (default 100 rounds, seed from time)
 *
 * Every generation is a child of this test serving a line protocol on one
 * fixed loopback port ("ping\n" -> "gGEN PID\n") with 300 named fds (so
 * that fds travel in more than one batch), a small state, and
 * BATON_TAKE_CONNS: a superseded generation hands its live connections to
 * its successor. The client keeps 4 keep-alive connections and makes fresh
 * connections in turn, and counts every outcome: ok, refused, reset (or
 * end of stream without an answer), timeout (3 s).
 *
 * A round starts a successor with one injection (BATON_FAULT for an exact
 * protocol step, or a signal at a random moment), lets it settle (every
 * stopped process gets SIGCONT within 400 ms), and then checks what must
 * hold. What must hold depends on who was hit and when:
 *
 *  S-early  the successor killed or stopped before it serves (s-hello,
 *           s-mid-fds, s-mid-state, s-ready, s-commit, s-publish; a random
 *           signal that lands before its READY): the owner gives up
 *           nothing before PUBLISHED, so not one request fails: no
 *           refusal, no reset, no timeout. Afterwards exactly one
 *           generation serves (never both: no split brain).
 *  S-late   the successor killed after it serves (s-mid-conns, a random
 *           kill after READY): the old owner has stepped down and the
 *           connections it confirmed died with the successor; once the old
 *           owner exits nobody holds the listener, so refusals and resets
 *           are expected. What must hold: a fresh start (generation 1)
 *           on the same port succeeds at once: the lock and the control
 *           socket recover by themselves. Stopped instead of killed: no
 *           request fails (a stopped process keeps its sockets).
 *  O-early  the owner killed before the successor holds every fd
 *           (o-hello, o-mid-fds, a random kill before the successor said
 *           OPENED): the listener may die with the owner (a successor that
 *           loses its predecessor mid-transfer starts fresh and binds
 *           again), and the owner's accepted connections die with it, so
 *           refusals and resets are expected. What must hold: the
 *           successor serves (fresh, per README "An owner that dies
 *           mid-transfer makes the successor start fresh instead of
 *           failing"), or, if it failed, a fresh start succeeds at once.
 *  O-late   the owner killed after the successor holds every fd (o-ready,
 *           o-commit, o-stepdown, o-mid-conns, a random kill after
 *           OPENED): the successor holds the same listening socket, so the
 *           accept queue survives: no connect is refused. Connections the
 *           owner had accepted and not handed off die with it (resets
 *           allowed). The successor must serve (README: "a predecessor that
 *           is gone after handing everything over (before READY) makes the
 *           successor take over anyway").
 *  O-stop   the owner stopped at any step and continued within 400 ms: it
 *           holds its sockets throughout, so nothing is refused or reset;
 *           the successor may fail (its wait timed out) or serve; either
 *           way exactly one generation serves afterwards.
 *
 * After every round: the generation that should serve answers a direct
 * request, and the next (clean) upgrade succeeds within a bounded time
 * (retried while the lock's lease of a stopped successor runs out). A
 * summary of outcomes per injection point is printed at the end, one line
 * "chaos: POINT ACTION rounds=N ok=N ..." each.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define NAMED      300
#define READY_MS   600
#define CLIENT_MS  3000
#define HOLD_MS    400
#define MAX_CONNS  64
#define SETTLE_MS  8000
#define RECOVER_MS 10000

/* Channel messages: generation -> test. */
enum {
    M_OPENED = 3001, /* + generation */
    M_READY,         /* + generation, pid */
    M_FAILED,        /* + -errno */
    M_SUPERSEDED,
    /* test -> generation */
    M_ARM, /* + point index, action */
    M_ARMED,
    M_STOP,
    /* test <-> client */
    M_CHECK, /* -> ok, refused, reset, timeout */
};

static const char *const points[] = {
    "s-hello",   "s-mid-fds",   "s-mid-state", "s-ready",          "s-commit",
    "s-publish", "s-mid-conns", "o-hello",     "o-mid-fds",        "o-ready",
    "o-commit",  "o-stepdown",  "o-mid-conns", "random-successor", "random-owner",
};
#define NPOINTS (int)(sizeof(points) / sizeof(points[0]))

static char dir[PATH_MAX], addr[64];
static int port;

/* ---- a generation ------------------------------------------------------ */

struct conn {
    int fd;
    size_t len;
    bool closing;
    char buf[64];
};

struct gen {
    baton *b;
    int chan, gen;
    struct conn c[MAX_CONNS];
    int n;
};

static void conn_add(struct gen *g, int fd, const void *state, size_t len)
{
    struct conn *c;

    if (g->n == MAX_CONNS || len > sizeof(c->buf)) {
        close(fd);
        return;
    }
    c = &g->c[g->n++];
    c->fd = fd;
    c->len = len;
    c->closing = false;
    memcpy(c->buf, state, len);
}

static void conn_del(struct gen *g, int i)
{
    close(g->c[i].fd);
    g->c[i] = g->c[--g->n];
}

/* Answer a complete line if there is one; false when the connection ends. */
static bool conn_answer(struct gen *g, struct conn *c)
{
    char out[64];
    char *nl = memchr(c->buf, '\n', c->len);
    int n;

    if (!nl)
        return c->len < sizeof(c->buf);
    n = snprintf(out, sizeof(out), "g%d %d%s\n", g->gen, (int)getpid(), c->closing ? " bye" : "");
    c->len -= (size_t)(nl + 1 - c->buf);
    memmove(c->buf, nl + 1, c->len);
    return send(c->fd, out, n, MSG_NOSIGNAL) == n && !c->closing;
}

static bool conn_read(struct gen *g, struct conn *c)
{
    ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);

    if (n < 0 && errno == EAGAIN)
        return true;
    if (n <= 0)
        return false;
    c->len += n;
    return conn_answer(g, c);
}

/* Take what the predecessor handed off; false once none will come. */
static bool take_conns(struct gen *g)
{
    for (;;) {
        char state[64];
        size_t len;
        int fd = baton_conn_accept(g->b, state, sizeof(state), &len);
        if (fd == -ENOTCONN)
            return false;
        if (fd < 0)
            return true;
        conn_add(g, fd, state, len);
        if (!conn_answer(g, &g->c[g->n - 1]))
            conn_del(g, g->n - 1);
    }
}

/* Stop accepting, hand every connection over, drain what stays ours. */
static void step_down(struct gen *g)
{
    struct baton_conn hc[MAX_CONNS];
    int n = g->n, r;

    t_tell(g->chan, M_SUPERSEDED);
    for (int i = 0; i < n; i++)
        hc[i] = (struct baton_conn){.fd = g->c[i].fd, .state = g->c[i].buf, .len = g->c[i].len};
    r = n ? baton_handoff_batch(g->b, hc, n) : 0;
    baton_handoff_done(g->b);
    for (int i = n - 1; i >= 0; i--) {
        if (r >= 0 && hc[i].result == 0)
            conn_del(g, i);
        else
            g->c[i].closing = true;
    }
}

static void arm(int chan)
{
    long long point = t_hear(chan, T_TIMEOUT), stop = t_hear(chan, T_TIMEOUT);
    char spec[64];

    snprintf(spec, sizeof(spec), "%s=%s", points[point], stop ? "stop" : "kill");
    setenv("BATON_FAULT", spec, 1);
}

static void serve(struct gen *g, int lfd)
{
    int ufd = baton_upgrade_fd(g->b), cfd = baton_conn_fd(g->b);
    bool superseded = false, conns_done = !baton_inherited(g->b);
    uint64_t until = 0;

    for (;;) {
        struct pollfd p[4 + MAX_CONNS];
        int np = 0, r;

        p[np++] = (struct pollfd){.fd = g->chan, .events = POLLIN};
        p[np++] = (struct pollfd){.fd = superseded ? -1 : ufd, .events = POLLIN};
        p[np++] = (struct pollfd){.fd = superseded ? -1 : lfd, .events = POLLIN};
        p[np++] = (struct pollfd){.fd = conns_done ? -1 : cfd, .events = POLLIN};
        for (int i = 0; i < g->n; i++)
            p[np++] = (struct pollfd){.fd = g->c[i].fd, .events = POLLIN};
        r = poll(p, np, superseded ? 50 : 30000);
        if (r < 0 && errno == EINTR)
            continue;
        T_GE(r, 0);
        if (superseded && (g->n == 0 || baton__now_ms() > until))
            return;
        if (p[0].revents) {
            long long v;
            if (t_try_hear(g->chan, 1000, &v) < 0 || v == M_STOP)
                return;
            if (v == M_ARM) {
                arm(g->chan);
                /* Orders our setenv before the library thread's next
                 * getenv: it runs under the lock this takes. */
                T_OK(baton_set_state(g->b, "armed", 5));
                t_tell(g->chan, M_ARMED);
            }
        }
        if (p[1].revents & POLLIN) {
            superseded = true;
            until = baton__now_ms() + 3000;
            step_down(g);
            continue;
        }
        if (p[2].revents & POLLIN) {
            int fd;
            while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0)
                conn_add(g, fd, "", 0);
        }
        if ((p[3].revents & POLLIN) && !take_conns(g))
            conns_done = true;
        for (int i = np - 1; i >= 4; i--)
            if (p[i].revents && i - 4 < g->n && !conn_read(g, &g->c[i - 4]))
                conn_del(g, i - 4);
    }
}

struct gen_args {
    int fault_point; /* successor point for this process, or -1 */
    bool fault_stop;
};

static void gen_log(void *ctx, int level, const char *msg)
{
    if (level <= BATON_LOG_WARNING || getenv("CHAOS_DEBUG"))
        t_log("library: %s", msg);
}

static int gen_main(int chan, void *arg)
{
    const struct gen_args *a = arg;
    struct baton_options o = t_opts(dir, READY_MS, BATON_TAKE_CONNS);
    struct gen g = {.chan = chan};
    char name[16], spec[64];
    int lfd, r, null;

    if (getenv("CHAOS_VERBOSE"))
        o.log = gen_log;

    if (a->fault_point >= 0) {
        snprintf(spec, sizeof(spec), "%s=%s", points[a->fault_point],
                 a->fault_stop ? "stop" : "kill");
        setenv("BATON_FAULT", spec, 1);
    }
    r = baton_open(&o, &g.b);
    if (r < 0) {
        t_tell(chan, M_FAILED);
        t_tell(chan, r);
        return 0;
    }
    g.gen = baton_generation(g.b);
    t_tell(chan, M_OPENED);
    t_tell(chan, g.gen);
    lfd = baton_listen(g.b, "web", addr, 0);
    if (lfd >= 0 && fcntl(lfd, F_SETFL, O_NONBLOCK) < 0)
        lfd = -errno;
    null = T_SYS(open("/dev/null", O_RDONLY | O_CLOEXEC));
    for (int i = 0; i < NAMED && lfd >= 0; i++) {
        snprintf(name, sizeof(name), "f%03d", i);
        /* An owner that died mid-transfer passed only some: make the rest
         * anew, as any application does with what it did not inherit. */
        if (baton_fd(g.b, name) == -ENOENT)
            T_OK(baton_add_fd(g.b, name, null));
    }
    close(null);
    r = lfd < 0 ? lfd : baton_ready(g.b);
    if (r < 0) {
        t_tell(chan, M_FAILED);
        t_tell(chan, r);
        baton_free(g.b);
        return 0;
    }
    t_tell(chan, M_READY);
    t_tell(chan, g.gen);
    serve(&g, lfd);
    while (g.n)
        conn_del(&g, 0);
    baton_free(g.b);
    return 0;
}

/* ---- the client ---------------------------------------------------------- */

enum { OK, REFUSED, RESET, TIMEOUT, NOUT };
static const char *const outcome_names[] = {"ok", "refused", "reset", "timeout"};

/* One request on *fd (connecting first when *fd < 0). */
static int request(int *fd)
{
    char line[64];
    ssize_t n;

    if (*fd < 0) {
        *fd = t_tcp_connect(AF_INET, port, CLIENT_MS);
        if (*fd == -ECONNREFUSED)
            return REFUSED;
        if (*fd == -ETIMEDOUT)
            return TIMEOUT;
        if (*fd < 0)
            return RESET;
    }
    if (t_write_all(*fd, "ping\n", 5) < 0)
        goto reset;
    n = t_read_line(*fd, line, sizeof(line), CLIENT_MS);
    if (n == -ETIMEDOUT) {
        close(*fd);
        *fd = -1;
        return TIMEOUT;
    }
    if (n <= 0 || line[n - 1] != '\n')
        goto reset;
    if (strstr(line, " bye")) {
        close(*fd);
        *fd = -1;
    }
    return OK;
reset:
    close(*fd);
    *fd = -1;
    return RESET;
}

static int client_main(int chan, void *arg)
{
    long long count[NOUT] = {0};
    int keep[4] = {-1, -1, -1, -1};

    for (unsigned i = 0;; i++) {
        struct pollfd p = {.fd = chan, .events = POLLIN};
        int fresh = -1, r;

        if (poll(&p, 1, 0) > 0) {
            long long v;
            if (t_try_hear(chan, 1000, &v) < 0 || v == M_STOP)
                break;
            for (int k = 0; k < NOUT; k++) {
                t_tell(chan, count[k]);
                count[k] = 0;
            }
        }
        if (i % 5 < 4) {
            r = request(&keep[i % 5]);
        } else {
            r = request(&fresh);
            if (fresh >= 0)
                close(fresh);
        }
        count[r]++;
        if (r == REFUSED) {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL); /* pace refused connects; not a wait */
        }
    }
    for (int k = 0; k < 4; k++)
        if (keep[k] >= 0)
            close(keep[k]);
    return 0;
}

/* ---- the test ------------------------------------------------------------ */

struct proc {
    struct t_proc p;
    int gen;
    bool opened, ready, failed, superseded, exited, stopped, conted;
    int err;
    uint64_t cont_at;
};

struct stats {
    int rounds, served, failed, fresh, split;
    long long out[NOUT];
};

static struct stats stats[NPOINTS][2];
static unsigned long long rng;
static int problems;

static unsigned rnd(unsigned n)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(rng >> 33) % n;
}

static uint64_t now_ms(void)
{
    return baton__now_ms();
}

static struct t_proc client;

static void client_check(long long out[NOUT])
{
    t_tell(client.chan, M_CHECK);
    for (int k = 0; k < NOUT; k++)
        out[k] = t_hear(client.chan, CLIENT_MS * 3);
}

static bool is_stopped(pid_t pid)
{
    siginfo_t si = {0};

    return waitid(P_PID, pid, &si, WSTOPPED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid &&
           si.si_code == CLD_STOPPED;
}

static void proc_start(struct proc *x, int point, bool stop)
{
    struct gen_args a = {.fault_point = point, .fault_stop = stop};

    memset(x, 0, sizeof(*x));
    t_spawn(&x->p, gen_main, &a);
}

/* Read what a generation says, without blocking; notice exit and stops. */
static void proc_poll(struct proc *x)
{
    long long v;

    if (x->exited)
        return;
    while (!x->exited) {
        struct pollfd p = {.fd = x->p.chan, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            break;
        if (t_try_hear(x->p.chan, 1000, &v) < 0) {
            break;
        }
        if (v == M_OPENED) {
            x->opened = true;
            x->gen = (int)t_hear(x->p.chan, T_TIMEOUT);
        } else if (v == M_READY) {
            x->ready = true;
            t_hear(x->p.chan, T_TIMEOUT);
        } else if (v == M_FAILED) {
            x->failed = true;
            x->err = (int)t_hear(x->p.chan, T_TIMEOUT);
        } else if (v == M_SUPERSEDED) {
            x->superseded = true;
        }
    }
    if (t_proc_exited(&x->p, 0) == 0) {
        x->exited = true;
        t_proc_wait(&x->p, T_TIMEOUT);
        return;
    }
    if (!x->stopped && is_stopped(x->p.pid)) {
        x->stopped = true;
        x->cont_at = now_ms() + rnd(HOLD_MS);
    }
    if (x->stopped && !x->conted && now_ms() >= x->cont_at) {
        kill(x->p.pid, SIGCONT);
        x->conted = true;
    }
}

static bool proc_busy(const struct proc *x)
{
    return !x->exited && x->stopped && !x->conted;
}

static void expect_serves(const struct proc *x)
{
    char resp[64], want[64];

    snprintf(want, sizeof(want), "g%d %d", x->gen, (int)x->p.pid);
    for (int i = 0; i < 3; i++) {
        T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
        if (strcmp(resp, want) != 0) {
            t_log("PROBLEM: expected \"%s\" to answer, got \"%s\"", want, resp);
            problems++;
            return;
        }
    }
}

static void stop_proc(struct proc *x)
{
    if (x->exited)
        return;
    kill(x->p.pid, SIGCONT);
    t_tell(x->p.chan, M_STOP);
    if (t_proc_exited(&x->p, 5000) < 0)
        kill(x->p.pid, SIGKILL);
    t_proc_wait(&x->p, T_TIMEOUT);
    x->exited = true;
}

/* The generation that does not serve on after a round: a superseded one
 * drains and exits by itself, a failed successor exits; give it a moment,
 * then stop it, and reap it either way, so no process (or its fds) is
 * left behind. */
static void retire_proc(struct proc *x)
{
    uint64_t until = now_ms() + 5000;

    while (!x->exited && now_ms() < until) {
        proc_poll(x);
        poll(NULL, 0, 5);
    }
    stop_proc(x);
}

/* Start a clean successor of cur (or a fresh start) and wait until it
 * serves; retried while a stale lease still blocks. */
static void clean_upgrade(struct proc *cur, bool expect_fresh)
{
    uint64_t deadline = now_ms() + RECOVER_MS;
    struct proc next;

    for (;;) {
        proc_start(&next, -1, false);
        while (!next.ready && !next.exited && now_ms() < deadline) {
            struct pollfd p = {.fd = next.p.chan, .events = POLLIN};
            poll(&p, 1, 20);
            proc_poll(&next);
            proc_poll(cur);
        }
        if (next.ready)
            break;
        T_ASSERT(!next.exited || next.failed);
        stop_proc(&next);
        if (now_ms() >= deadline)
            t_fail(__FILE__, __LINE__, "no upgrade succeeded within %d ms (last: %d)", RECOVER_MS,
                   next.err);
        if (next.err != -EBUSY)
            t_fail(__FILE__, __LINE__, "upgrade after the round failed: %d (%s)", next.err,
                   strerror(-next.err));
    }
    T_EQ(next.gen, expect_fresh ? 1 : cur->gen + 1);
    if (!expect_fresh) {
        while (!cur->exited && now_ms() < deadline)
            proc_poll(cur), poll(NULL, 0, 5);
        T_ASSERT(cur->superseded && cur->exited);
    }
    *cur = next;
    expect_serves(cur);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    unsigned long long seed =
        argc > 2 ? strtoull(argv[2], NULL, 0) : (unsigned long long)time(NULL);
    struct proc cur;
    long long base[NOUT];
    uint64_t t0;

    t_init(argc, argv);
    rng = seed;
    t_log("%d rounds, seed %llu (run again with: %s %d %llu)", rounds, seed, argv[0], rounds, seed);
    t_path(dir, "run");
    port = t_free_port(AF_INET);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", port);
    t0 = now_ms();

    proc_start(&cur, -1, false);
    while (!cur.ready) {
        T_ASSERT(!cur.exited && !cur.failed);
        struct pollfd p = {.fd = cur.p.chan, .events = POLLIN};
        poll(&p, 1, 1000);
        proc_poll(&cur);
    }
    t_spawn(&client, client_main, NULL);
    client_check(base);

    for (int r = 0; r < rounds; r++) {
        int pt = r < NPOINTS * 2 ? r / 2 : (int)rnd(NPOINTS);
        bool stop = r < NPOINTS * 2 ? r % 2 : rnd(2) != 0;
        bool owner_side = points[pt][0] == 'o' || strcmp(points[pt], "random-owner") == 0;
        bool random = strncmp(points[pt], "random", 6) == 0;
        struct stats *st = &stats[pt][stop];
        const char *skip = getenv("CHAOS_SKIP");

        /* CHAOS_SKIP="s-publish,o-commit": leave out points known broken,
         * to see what else breaks. */
        if (skip && strstr(skip, points[pt]))
            continue;
        uint64_t hit_at = 0, deadline, ready_at = 0;
        bool hit = false, hit_after_open = false, hit_after_ready = false;
        struct proc next, old = cur;
        long long out[NOUT];

        client_check(out); /* start the round's counts afresh */
        if (owner_side && !random) {
            t_tell(cur.p.chan, M_ARM);
            t_tell(cur.p.chan, pt);
            t_tell(cur.p.chan, stop);
            T_HEAR_EQ(cur.p.chan, M_ARMED);
        }
        proc_start(&next, !owner_side && !random ? pt : -1, stop);
        if (random)
            hit_at = now_ms() + rnd(250);
        deadline = now_ms() + SETTLE_MS;
        for (;;) {
            struct pollfd p[2] = {{.fd = next.p.chan, .events = POLLIN},
                                  {.fd = old.p.chan, .events = POLLIN}};
            poll(p, old.exited ? 1 : 2, 5);
            proc_poll(&next);
            proc_poll(&old);
            if (random && !hit && now_ms() >= hit_at) {
                struct proc *victim = owner_side ? &old : &next;
                hit = true;
                hit_after_open = next.opened;
                hit_after_ready = next.ready;
                if (!victim->exited)
                    kill(victim->p.pid, stop ? SIGSTOP : SIGKILL);
                continue;
            }
            if (random && !hit)
                continue;
            /* A signal is delivered asynchronously: a process we SIGKILLed
             * is not settled until we saw it end, one we SIGSTOPped not
             * until we saw it stopped (and so continue it later), or the
             * round could end with it about to stop, for good. Both bounded
             * by the round's deadline. */
            struct proc *vp = owner_side ? &old : &next;
            if (random && !vp->exited && (stop ? !vp->stopped : true) && now_ms() < deadline)
                continue;
            if (proc_busy(&next) || proc_busy(&old))
                continue;
            /* Settled: the successor serves or is gone, and the old owner
             * either serves on, or stepped down and left. */
            bool next_done = next.exited || next.ready;
            /* The mid-conns points come after READY: wait (bounded) for the
             * hit before calling the round settled. */
            if (strstr(points[pt], "mid-conns") && next.ready) {
                struct proc *target = owner_side ? &old : &next;
                if (!ready_at)
                    ready_at = now_ms();
                if (!target->stopped && !target->exited && now_ms() < ready_at + 1500)
                    continue;
            }
            bool old_done = old.exited || !old.superseded;
            if (next_done && old_done && (next.exited || !next.ready || old.exited))
                break;
            if (next.ready && old.superseded && !old.exited) {
                /* The old owner is draining; let it finish. */
            }
            if (now_ms() >= deadline)
                break;
        }
        client_check(out);
        if (getenv("CHAOS_VERBOSE"))
            t_log("round %d %s %s: next gen %d opened %d ready %d failed %d (%d) exited %d; old "
                  "superseded %d exited %d; ok %lld refused %lld reset %lld timeout %lld",
                  r, points[pt], stop ? "stop" : "kill", next.gen, next.opened, next.ready,
                  next.failed, next.err, next.exited, old.superseded, old.exited, out[OK],
                  out[REFUSED], out[RESET], out[TIMEOUT]);
        st->rounds++;
        for (int k = 0; k < NOUT; k++)
            st->out[k] += out[k];

        /* Who serves now? */
        bool split = next.ready && !next.exited && !old.exited && !old.superseded;
        bool owner_killed =
            owner_side && (stop == false) && (!random || hit) && old.exited && !old.superseded;
        const char *cls;
        /* A random kill of the successor is "late" if the owner had stepped
         * down by then, whatever the successor managed to tell us: it can
         * die between hearing RELEASED and reporting READY. The owner
         * reports its step-down at once; give that report a moment to
         * arrive (bounded; it comes only if the owner stepped down). */
        if (!owner_side && random && !stop && !hit_after_ready && !old.exited && !old.superseded) {
            /* Up to 200 ms; when clients were refused (nobody listened:
             * the owner had stepped down and left), up to 3 s, since on a
             * loaded machine its report can take longer than 200 ms, and
             * an early kill never refuses anyone. */
            bool failed = out[REFUSED] || out[RESET] || out[TIMEOUT];
            uint64_t end = baton__now_ms() + (failed ? 3000 : 200);
            while (!old.superseded && !old.exited && baton__now_ms() < end) {
                struct pollfd q = {.fd = old.p.chan, .events = POLLIN};
                if (poll(&q, 1, (int)(end - baton__now_ms())) <= 0)
                    break;
                proc_poll(&old);
                if (q.revents & (POLLHUP | POLLERR))
                    break; /* what it said is read; it says no more */
            }
            hit_after_ready = old.superseded;
        }
        if (!owner_side)
            cls = (random ? hit_after_ready : pt == 6) && !stop ? "S-late" : "S-early";
        else if (stop)
            cls = "O-stop";
        else
            cls = (random ? hit_after_open : pt >= 9) ? "O-late" : "O-early";
        if (split) {
            t_log("PROBLEM: round %d (%s %s): split brain: generation %d (pid %d) serves while "
                  "generation %d (pid %d) was never superseded",
                  r, points[pt], stop ? "stop" : "kill", next.gen, (int)next.p.pid, old.gen,
                  (int)old.p.pid);
            st->split++;
            problems++;
            stop_proc(&old);
            cur = next;
        } else if (next.ready && !next.exited) {
            st->served++;
            retire_proc(&old);
            cur = next;
        } else if (!old.exited && !old.superseded) {
            st->failed++;
            retire_proc(&next);
            cur = old;
        } else {
            /* Nobody serves: both gone. */
            st->failed++;
            stop_proc(&next);
            retire_proc(&old);
            cur = (struct proc){.exited = true};
        }
        (void)owner_killed;

        /* The round's verdicts. */
        bool quiet = strcmp(cls, "S-early") == 0 || strcmp(cls, "O-stop") == 0 ||
                     (strcmp(cls, "S-late") == 0 && stop);
        if (quiet && (out[REFUSED] || out[RESET] || out[TIMEOUT])) {
            t_log("PROBLEM: round %d (%s %s, %s): %lld refused, %lld reset, %lld timed out", r,
                  points[pt], stop ? "stop" : "kill", cls, out[REFUSED], out[RESET], out[TIMEOUT]);
            problems++;
        }
        if (strcmp(cls, "O-late") == 0 && out[REFUSED]) {
            t_log("PROBLEM: round %d (%s kill, O-late): %lld connects refused", r, points[pt],
                  out[REFUSED]);
            problems++;
        }
        if ((strcmp(cls, "O-late") == 0 || strcmp(cls, "O-early") == 0) && !next.ready) {
            t_log("PROBLEM: round %d (%s kill, %s): the successor did not take over when the "
                  "owner died: %d (%s)",
                  r, points[pt], cls, next.err, next.err < 0 ? strerror(-next.err) : "");
            problems++;
        }

        /* The next upgrade succeeds; nobody serving means a fresh start. */
        if (cur.exited) {
            st->fresh++;
            clean_upgrade(&cur, true);
        } else {
            expect_serves(&cur);
            clean_upgrade(&cur, false);
        }
    }

    t_tell(client.chan, M_STOP);
    T_EQ(t_proc_wait(&client, T_TIMEOUT), 0);
    stop_proc(&cur);

    printf("chaos: %d rounds in %.1f s, seed %llu\n", rounds, (now_ms() - t0) / 1000.0, seed);
    for (int i = 0; i < NPOINTS; i++)
        for (int s = 0; s < 2; s++) {
            struct stats *st = &stats[i][s];
            if (!st->rounds)
                continue;
            printf("chaos: %-16s %-4s rounds=%d successor-serves=%d owner-serves-on=%d "
                   "nobody-then-fresh=%d split=%d requests: ",
                   points[i], s ? "stop" : "kill", st->rounds, st->served, st->failed - st->fresh,
                   st->fresh, st->split);
            for (int k = 0; k < NOUT; k++)
                printf("%s=%lld%s", outcome_names[k], st->out[k], k + 1 < NOUT ? " " : "\n");
        }
    fflush(stdout);
    T_EQ(problems, 0);
    return t_done();
}
