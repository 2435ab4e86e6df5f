/* SPDX-License-Identifier: MIT */
/*
 * The cap on generations alive at once, with long keep-alive clients that
 * never move (baton-echo --no-handoff --drain-timeout 60000
 * --max-generations CAP): UPGRADES upgrades, 100 ms apart, each after
 * CONNS new connections to the generation serving then. Requires:
 *   - never more than CAP + 1 baton-echo processes of this directory (a
 *     thread counts them all along);
 *   - every connection that breaks belongs to a generation the owner said
 *     it ended, and for each ended generation the number of connections it
 *     said that cost is exactly the number that broke;
 *   - the connections of the generations still alive all still answer.
 *
 * usage: test-gens-cap BIN_DIR
 */
#include <dirent.h>
#include <linux/kcmp.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define CAP      4
#define UPGRADES 20
#define CONNS    3
#define GENS     (UPGRADES + 2)
#define WAIT_MS  10000

static char bin[PATH_MAX], dir[PATH_MAX], logpath[PATH_MAX];
static int port, dirfd_;

struct client {
    int fd, gen;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a turn of the client thread */
    struct client c[UPGRADES * CONNS + CONNS];
    int n;
    int errors[GENS + 1];
    atomic_bool stop;
    atomic_long cycles;
    atomic_int procs_max;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Every connection asks once a turn; a broken one counts against its
 * generation and is closed. */
static void *io_main(void *arg)
{
    char resp[64];

    (void)arg;
    while (!atomic_load(&S.stop)) {
        pthread_mutex_lock(&S.mu);
        for (int i = 0; i < S.n; i++) {
            struct client *c = &S.c[i];
            if (c->fd < 0)
                continue;
            if (t_ask(c->fd, "ping", resp, sizeof(resp), 5000) == 0 && !strcmp(resp, "ping"))
                continue;
            S.errors[c->gen]++;
            close(c->fd);
            c->fd = -1;
        }
        atomic_fetch_add(&S.cycles, 1);
        pthread_cond_broadcast(&S.cv);
        pthread_mutex_unlock(&S.mu);
        sleep_ms(2); /* pacing: a turn every 2 ms or so */
    }
    return NULL;
}

/* baton-echo processes of our directory, zombies not counted. */
static char seen[1024], seen_max[1024]; /* the pids counted, for a failure's message */

/* The pid tracing pid (TracerPid in /proc/PID/status), 0 none. */
static int tracer_of(const char *pid)
{
    char path[300], buf[4096], *t;
    ssize_t len;
    int fd;

    snprintf(path, sizeof(path), "/proc/%s/status", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[len > 0 ? len : 0] = 0;
    t = strstr(buf, "\nTracerPid:");
    return t ? atoi(t + 11) : 0;
}

/*
 * A process that leak-checks itself at exit (LeakSanitizer, in the
 * sanitizer build) clones a tracer that shares its memory, and so its
 * command line: that tracer is not a process of its own, and is not
 * counted.
 */
static int count_procs(void)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0, pids[64], tracers[64], np = 0;

    seen[0] = 0;
    if (!d)
        return 0;
    while ((e = readdir(d))) {
        char path[300], buf[4096], st[512];
        ssize_t len;
        int fd;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        len = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = 0;
        for (ssize_t k = 0; k < len; k++)
            if (!buf[k])
                buf[k] = ' ';
        if (!strstr(buf, "baton-echo") || !strstr(buf, dir))
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        len = read(fd, st, sizeof(st) - 1);
        close(fd);
        st[len > 0 ? len : 0] = 0;
        char *p = strrchr(st, ')');
        if (p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X' && np < 64) {
            size_t l = strlen(seen);
            snprintf(seen + l, sizeof(seen) - l, " %s(%c)", e->d_name, p[2]);
            pids[np] = atoi(e->d_name);
            tracers[np++] = tracer_of(e->d_name);
        }
    }
    closedir(d);
    for (int i = 0; i < np; i++) {
        bool tracer = false;
        /* Traced by it, or (before it attaches) sharing its memory. */
        for (int k = 0; k < np && !tracer; k++)
            tracer =
                tracers[k] == pids[i] || (k != i && pids[i] > pids[k] &&
                                          syscall(SYS_kcmp, pids[i], pids[k], KCMP_VM, 0, 0) == 0);
        n += !tracer;
    }
    return n;
}

static void *count_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&S.stop)) {
        int n = count_procs();
        if (n > atomic_load(&S.procs_max)) {
            atomic_store(&S.procs_max, n);
            snprintf(seen_max, sizeof(seen_max), "%s", seen);
        }
        sleep_ms(1); /* a sample a millisecond */
    }
    return NULL;
}

/* Until the client thread has done k more turns (it signals each). */
static void wait_cycles(int k)
{
    struct timespec until;
    long want;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&S.mu);
    want = atomic_load(&S.cycles) + k;
    while (atomic_load(&S.cycles) < want && pthread_cond_timedwait(&S.cv, &S.mu, &until) == 0) {
    }
    pthread_mutex_unlock(&S.mu);
    T_GE(atomic_load(&S.cycles), want);
}

static int owner_gen(void)
{
    int g = 0;

    t_owner_pid(dirfd_, &g);
    return g;
}

/* CONNS connections to the generation serving now, each answered once. */
static void connect_some(int gen)
{
    char resp[64];

    for (int i = 0; i < CONNS; i++) {
        int fd = T_OK(t_tcp_connect(AF_INET, port, 5000));
        T_OK(t_ask(fd, "hello", resp, sizeof(resp), 5000));
        pthread_mutex_lock(&S.mu);
        S.c[S.n++] = (struct client){fd, gen};
        pthread_mutex_unlock(&S.mu);
    }
}

int main(int argc, char **argv)
{
    char cmd[PATH_MAX * 4], line[512], upcmd[PATH_MAX * 2];
    int reported[GENS + 1], ended = 0, survivors = 0;
    struct t_proc echo;
    pthread_t io, counter;
    FILE *f;

    t_init(argc, argv);
    if (argc < 2)
        t_fail(__FILE__, __LINE__, "usage: test-gens-cap BIN_DIR");
    snprintf(bin, sizeof(bin), "%s", argv[1]);
    t_path(dir, "coord");
    t_path(logpath, "echo.log");
    port = t_free_port(AF_INET);
    snprintf(cmd, sizeof(cmd),
             "exec '%s/baton-echo' --dir '%s' --listen tcp://127.0.0.1:%d --no-handoff "
             "--drain-timeout 60000 --max-generations %d >/dev/null 2>>'%s'",
             bin, dir, port, CAP, logpath);
    char *eargv[] = {"/bin/sh", "-c", cmd, NULL};
    t_spawn_exec(&echo, eargv, NULL);
    T_EQ(t_wait_owner(dir, echo.pid, WAIT_MS), 0);
    dirfd_ = T_SYS(open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    T_EQ(owner_gen(), 1);
    T_EQ(pthread_create(&io, NULL, io_main, NULL), 0);
    T_EQ(pthread_create(&counter, NULL, count_main, NULL), 0);

    snprintf(upcmd, sizeof(upcmd), "%s/baton", bin);
    for (int r = 1; r <= UPGRADES; r++) {
        char *uargv[] = {upcmd, "upgrade", dir, NULL};
        char out[1024];
        connect_some(r);
        T_EQ(owner_gen(), r);
        T_EQ(t_run(uargv, WAIT_MS, out, sizeof(out)), 0);
        T_EQ(owner_gen(), r + 1);
        sleep_ms(100); /* the pace the issue names: 100 ms apart */
    }
    connect_some(UPGRADES + 1);
    wait_cycles(5);
    atomic_store(&S.stop, true);
    pthread_join(io, NULL);
    pthread_join(counter, NULL);

    /* What the owners said each ending cost. */
    memset(reported, -1, sizeof(reported));
    f = fopen(logpath, "r");
    T_ASSERT(f);
    while (fgets(line, sizeof(line), f)) {
        const char *at = strstr(line, "ending generation ");
        int g, pid, cost;
        if (!at)
            continue;
        if (sscanf(at, "ending generation %d (pid %d), over the cap of %*d generations: %d", &g,
                   &pid, &cost) != 3 ||
            g < 1 || g > GENS)
            t_fail(__FILE__, __LINE__, "unexpected line: %s", line);
        T_EQ(reported[g], -1); /* each ended once */
        reported[g] = cost;
        ended++;
    }
    fclose(f);
    t_log("%d upgrades, cap %d: at most %d processes at once; %d generations ended", UPGRADES, CAP,
          atomic_load(&S.procs_max), ended);
    if (atomic_load(&S.procs_max) > CAP + 1) {
        char show[PATH_MAX + 64];
        snprintf(show, sizeof(show), "cat '%s' >&2", logpath);
        if (system(show) != 0)
            t_log("cannot show %s", logpath);
        t_fail(__FILE__, __LINE__, "%d processes at once (pids:%s), more than the cap %d + 1",
               atomic_load(&S.procs_max), seen_max, CAP);
    }
    for (int g = 1; g <= UPGRADES + 1; g++) {
        if (reported[g] < 0) {
            if (S.errors[g])
                t_fail(__FILE__, __LINE__,
                       "generation %d was not ended, yet %d of its connections broke", g,
                       S.errors[g]);
            survivors++;
            continue;
        }
        if (S.errors[g] != reported[g])
            t_fail(__FILE__, __LINE__,
                   "generation %d: %d connection(s) broke, its ending was said to cut %d", g,
                   S.errors[g], reported[g]);
    }
    /* Alive at the end: the owner and CAP - 1 draining ones. */
    T_EQ(survivors, CAP);
    T_EQ(ended, UPGRADES + 1 - CAP);
    for (int i = 0; i < S.n; i++)
        if (S.c[i].fd >= 0)
            close(S.c[i].fd);
    /* The generations still alive: the owner and CAP - 1 draining ones.
     * SIGTERM ends them all (they drain what is left and exit). */
    {
        struct baton__gen *g = NULL;
        int n = baton__gens_read(dirfd_, &g);
        for (int i = 0; i < n; i++)
            kill(g[i].pid, SIGTERM);
        /* Each one's exit, by its pidfd (zombies count as exited: their
         * parent, or we, reap them). */
        for (int i = 0; i < n; i++) {
            struct pollfd p = {.fd = (int)syscall(SYS_pidfd_open, g[i].pid, 0), .events = POLLIN};
            if (p.fd < 0)
                continue; /* gone already */
            T_EQ(poll(&p, 1, WAIT_MS), 1);
            close(p.fd);
        }
        free(g);
    }
    /* Generation 1 was ended long ago: reap it. */
    T_EQ(t_proc_wait(&echo, WAIT_MS), 0); /* it drains, then exits 0 */
    close(dirfd_);
    return t_done();
}
