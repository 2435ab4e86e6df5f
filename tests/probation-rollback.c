/* SPDX-License-Identifier: MIT */
/*
 * Probation under load, with a program nobody wrote for this test:
 * baton-echo --probation. A load thread keeps LONG connections busy (each
 * handed to the successor at every upgrade) and opens short ones all the
 * time. Each of ROUNDS rounds runs `baton upgrade`, waits until the
 * successor serves, kills it (SIGKILL) at a random point inside its
 * probation, and then requires:
 *   - `baton upgrade` exits 1 and says the upgrade was rolled back (or, if
 *     the kill came before the old owner stepped down, that it failed);
 *   - the old generation owns the directory again, same pid, same
 *     generation, and answers;
 *   - DIR/last-upgrade says how many handed connections were lost, at
 *     least as many long connections as broke this round (those the
 *     successor had confirmed) and at most one more (a short one);
 * and over all rounds: no connection refused.
 * Then a successor that stops (SIGSTOP) instead of dying: the probation's
 * deadline decides, `baton upgrade` exits 0, and the old copy exits.
 *
 * usage: test-probation-rollback BIN_DIR [ROUNDS]
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define LONG      4
#define PROBATION 300 /* ms */
#define WAIT_MS   10000

static char bin[PATH_MAX], dir[PATH_MAX], logpath[PATH_MAX];
static int port, dirfd_;

struct load {
    atomic_bool stop;
    atomic_long refused, short_ok, short_broken, long_breaks, cycles;
};
static struct load L;
static pthread_mutex_t cycle_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cycle_cv = PTHREAD_COND_INITIALIZER;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static int connect_counted(void)
{
    int fd = t_tcp_connect(AF_INET, port, 5000);

    if (fd == -ECONNREFUSED)
        atomic_fetch_add(&L.refused, 1);
    return fd;
}

/* Long connections ask every turn; one short connection per turn. */
static void *load_main(void *arg)
{
    int fds[LONG];
    char resp[64];
    long n = 0;

    (void)arg;
    for (int i = 0; i < LONG; i++)
        fds[i] = connect_counted();
    while (!atomic_load(&L.stop)) {
        for (int i = 0; i < LONG; i++) {
            char req[32];
            snprintf(req, sizeof(req), "long %d %ld", i, n);
            if (fds[i] >= 0 && t_ask(fds[i], req, resp, sizeof(resp), 5000) == 0 &&
                strcmp(resp, req) == 0)
                continue;
            /* Broken: it was the successor's when it died. */
            if (fds[i] >= 0) {
                atomic_fetch_add(&L.long_breaks, 1);
                close(fds[i]);
            }
            fds[i] = connect_counted();
        }
        int fd = connect_counted();
        if (fd >= 0) {
            if (t_ask(fd, "short", resp, sizeof(resp), 5000) == 0 && strcmp(resp, "short") == 0)
                atomic_fetch_add(&L.short_ok, 1);
            else
                atomic_fetch_add(&L.short_broken, 1);
            close(fd);
        }
        n++;
        pthread_mutex_lock(&cycle_mu);
        atomic_fetch_add(&L.cycles, 1);
        pthread_cond_broadcast(&cycle_cv);
        pthread_mutex_unlock(&cycle_mu);
        sleep_ms(1); /* pacing: about a turn per millisecond or two */
    }
    for (int i = 0; i < LONG; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

/* Until the load thread has done k more turns (it signals each). */
static void wait_cycles(int k)
{
    struct timespec until;
    long want;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&cycle_mu);
    want = atomic_load(&L.cycles) + k;
    while (atomic_load(&L.cycles) < want &&
           pthread_cond_timedwait(&cycle_cv, &cycle_mu, &until) == 0) {
    }
    pthread_mutex_unlock(&cycle_mu);
    T_GE(atomic_load(&L.cycles), want);
}

/* The owner record's pid and generation (0 when unreadable). */
static int owner(int *gen)
{
    return t_owner_pid(dirfd_, gen);
}

static bool owner_not(void *arg)
{
    int now = owner(NULL);
    return now > 0 && now != *(int *)arg;
}

static int wait_owner_not(int pid)
{
    if (t_dir_wait(dir, owner_not, &pid, WAIT_MS) < 0)
        t_fail(__FILE__, __LINE__, "no successor took over from pid %d", pid);
    return owner(NULL);
}

/* Does pid's gen.PID say its successor's probation runs (it stepped down)? */
static bool on_probation(void *arg)
{
    struct baton__gen *g = NULL;
    bool on = false;
    int n = baton__gens_read(dirfd_, &g);

    for (int k = 0; k < n; k++)
        on |= g[k].pid == *(int *)arg && g[k].draining && g[k].probation_until;
    free(g);
    return on;
}

static void wait_probation(int pid)
{
    if (t_dir_wait(dir, on_probation, &pid, WAIT_MS) < 0)
        t_fail(__FILE__, __LINE__, "pid %d never put its successor on probation", pid);
}

/* `baton upgrade DIR`, started; its stdout and stderr in *out. */
static void upgrade_start(struct t_proc *p, int *out)
{
    char cmd[PATH_MAX * 3];
    snprintf(cmd, sizeof(cmd), "exec '%s/baton' upgrade '%s' 2>&1", bin, dir);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    t_spawn_exec(p, argv, out);
}

static void read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = 0;
    close(fd);
}

/* The servers' log, the last lines, for a failure's message. */
static void dump_log(void)
{
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof(cmd), "tail -n 40 '%s' >&2", logpath);
    if (system(cmd) != 0)
        t_log("cannot show %s", logpath);
}

static void round_once(int r, int old, int gen)
{
    struct t_proc up;
    struct baton__upgrade u;
    char out[2048];
    unsigned lost = 0, delay;
    long breaks0 = atomic_load(&L.long_breaks), breaks;
    int fd, succ, g = 0, status;
    const char *at;

    upgrade_start(&up, &fd);
    succ = wait_owner_not(old);
    T_SYS(getrandom(&delay, sizeof(delay), 0));
    delay %= PROBATION * 8 / 10;
    sleep_ms((int)delay); /* the random point inside the window */
    T_SYS(kill(succ, SIGKILL));
    status = t_proc_wait(&up, WAIT_MS);
    read_all(fd, out, sizeof(out));
    if (status != 1 || (!strstr(out, "rolled back") && !strstr(out, "failed"))) {
        dump_log();
        t_fail(__FILE__, __LINE__, "round %d: baton upgrade exited %d: %s", r, status, out);
    }
    /* It answers once the directory is ours again. */
    T_EQ(owner(&g), old);
    T_EQ(g, gen);
    wait_cycles(3); /* every long connection asked again since */
    breaks = atomic_load(&L.long_breaks) - breaks0;
    T_OK(baton__upgrade_read(dirfd_, &u));
    if (strstr(out, "rolled back")) {
        T_EQ(u.result, -EOWNERDEAD);
        T_EQ(u.to_pid, succ);
        at = strstr(u.text, "; ");
        T_ASSERT(at && sscanf(at, "; %u handed connection(s) lost", &lost) == 1);
        if ((long)lost < breaks || (long)lost > breaks + 1)
            t_fail(__FILE__, __LINE__,
                   "round %d: %ld long connection(s) broke, the old owner reported %u lost: %s", r,
                   breaks, lost, u.text);
    } else {
        /* Killed before the old owner stepped down: nothing was handed. */
        T_EQ(breaks, 0);
    }
    if (r % 10 == 0)
        t_log("round %d: killed pid %d %u ms in, %u lost, %ld refused so far", r, succ, delay, lost,
              atomic_load(&L.refused));
}

int main(int argc, char **argv)
{
    char a_listen[64], a_prob[16], cmd[PATH_MAX * 4], out[2048];
    struct t_proc echo, up;
    pthread_t load;
    int rounds = argc > 2 ? atoi(argv[2]) : 100, old, gen = 0, fd, succ, status;

    t_init(argc, argv);
    if (argc < 2)
        t_fail(__FILE__, __LINE__, "usage: test-probation-rollback BIN_DIR [ROUNDS]");
    snprintf(bin, sizeof(bin), "%s", argv[1]);
    t_path(dir, "coord");
    t_path(logpath, "echo.log");
    port = t_free_port(AF_INET);
    snprintf(a_listen, sizeof(a_listen), "tcp://127.0.0.1:%d", port);
    snprintf(a_prob, sizeof(a_prob), "%d", PROBATION);
    snprintf(cmd, sizeof(cmd),
             "exec '%s/baton-echo' --dir '%s' --listen %s --probation %s >/dev/null 2>>'%s'", bin,
             dir, a_listen, a_prob, logpath);
    char *eargv[] = {"/bin/sh", "-c", cmd, NULL};
    t_spawn_exec(&echo, eargv, NULL);
    T_EQ(t_wait_owner(dir, echo.pid, WAIT_MS), 0);
    dirfd_ = T_SYS(open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    old = owner(&gen);
    T_EQ(old, echo.pid);
    T_EQ(pthread_create(&load, NULL, load_main, NULL), 0);
    wait_cycles(10);

    for (int r = 1; r <= rounds; r++)
        round_once(r, old, gen);
    t_log("%d rounds: %ld refused, %ld short connections answered, %ld broken, %ld long "
          "connections lost with a successor",
          rounds, atomic_load(&L.refused), atomic_load(&L.short_ok), atomic_load(&L.short_broken),
          atomic_load(&L.long_breaks));
    T_EQ(atomic_load(&L.refused), 0);

    /* A successor that stops without dying: the deadline decides for it. */
    upgrade_start(&up, &fd);
    succ = wait_owner_not(old);
    wait_probation(old);
    T_SYS(kill(succ, SIGSTOP));
    status = t_proc_wait(&up, WAIT_MS);
    read_all(fd, out, sizeof(out));
    if (status != 0 || !strstr(out, "passed its probation"))
        t_fail(__FILE__, __LINE__, "stopped successor: baton upgrade exited %d: %s", status, out);
    T_EQ(owner(NULL), succ);
    T_SYS(kill(succ, SIGCONT));
    /* Released, the old copy hands what it has and exits. */
    T_EQ(t_proc_wait(&echo, WAIT_MS), 0);
    wait_cycles(3);
    atomic_store(&L.stop, true);
    pthread_join(load, NULL);
    T_EQ(atomic_load(&L.refused), 0);
    T_SYS(kill(succ, SIGTERM));
    close(dirfd_);
    return t_done();
}
