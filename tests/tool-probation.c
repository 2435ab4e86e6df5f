/* SPDX-License-Identifier: MIT */
/*
 * A rollback as the application and `baton status` see it. Generation 1
 * has a probation; generation 2 takes over and is SIGKILLed while another
 * process holds the directory's lock:
 *   - generation 1 gets BATON_EVENT_STEP_DOWN, then BATON_EVENT_RESUME
 *     naming generation 2's pid (and 0 connections lost), and no
 *     BATON_EVENT_RELEASED;
 *   - while the probation runs, `baton status` lists generation 1 with its
 *     successor on probation (text and --json);
 *   - while the lock is held, generation 1 is listed "rolling-back";
 *   - once the lock is free, generation 1 owns the directory again (same
 *     pid, same generation) and the last upgrade says "rolled back";
 *   - `baton wait --generation 2 --final` waits meanwhile, and exits 1;
 *   - a later successor takes over from it as usual (generation 2 again).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX], tool[PATH_MAX];

/* Waits for the next upgrade event and tells its type, pid, generation
 * and lost count. */
static void tell_event(baton *b, int chan)
{
    struct pollfd p = {.fd = baton_upgrade_fd(b), .events = POLLIN};
    struct baton_event ev;

    T_EQ(poll(&p, 1, T_TIMEOUT), 1);
    T_GT(baton_upgrade_event(b, &ev), 0);
    t_tell(chan, ev.type);
    t_tell(chan, ev.pid);
    t_tell(chan, ev.generation);
    t_tell(chan, ev.lost);
}

static int gen1_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    (void)arg;
    o.probation_ms = 60000; /* longer than the test: only a death ends it */
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    T_HEAR_EQ(chan, T_MSG_GO);
    tell_event(b, chan); /* STEP_DOWN */
    tell_event(b, chan); /* RESUME */
    T_EQ(baton_upgrade_event(b, NULL), BATON_EVENT_NONE);
    /* Serving again, until the next successor or the end. */
    if (t_owner_loop(b, lfd, chan, "gen1") == 1)
        T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

static int gen2_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_fd(b, "web"));
    T_OK(baton_ready(b));
    t_tell(chan, baton_generation(b));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

/* 0 while somebody owns the directory; 3 (nobody does) while a rollback
 * waits for the lock. */
static int status(char *out, size_t cap, bool json)
{
    char *argv[] = {tool, "status", dir, json ? "--json" : NULL, NULL};
    int r = t_run(argv, T_TIMEOUT, out, cap);

    if (r != 0 && r != 3)
        t_fail(__FILE__, __LINE__, "baton status exited %d:\n%s", r, out);
    return r;
}

/* Does `baton status` exit rc and say want? (For t_dir_wait().) */
struct status_has {
    char *out;
    size_t cap;
    const char *want;
    int rc;
};

static bool status_has(void *arg)
{
    struct status_has *h = arg;
    return status(h->out, h->cap, false) == h->rc && strstr(h->out, h->want);
}

static void want(const char *out, const char *s)
{
    if (!strstr(out, s))
        t_fail(__FILE__, __LINE__, "status lacks '%s':\n%s", s, out);
}

int main(int argc, char **argv)
{
    struct t_proc g1, g2, g2b;
    char out[8192], s[PATH_MAX + 64];
    int lockfd;

    t_init(argc, argv);
    if (argc < 2)
        t_fail(__FILE__, __LINE__, "usage: test-tool-probation BATON_TOOL");
    snprintf(tool, sizeof(tool), "%s", argv[1]);
    t_path(dir, "coord");
    t_spawn(&g1, gen1_main, NULL);
    t_hear(g1.chan, T_TIMEOUT);
    t_tell(g1.chan, T_MSG_GO);
    t_spawn(&g2, gen2_main, NULL);
    T_HEAR_EQ(g2.chan, 2);
    T_HEAR_EQ(g1.chan, BATON_EVENT_STEP_DOWN);
    T_HEAR_EQ(g1.chan, g2.pid);
    T_HEAR_EQ(g1.chan, 2);
    T_HEAR_EQ(g1.chan, 0);

    T_EQ(status(out, sizeof(out), false), 0);
    snprintf(s, sizeof(s), "1    pid %-8d draining", (int)g1.pid);
    want(out, s);
    want(out, "successor on probation until");
    status(out, sizeof(out), true);
    want(out, "\"successor_probation_until\":");

    /* `baton wait --final` waits for the probation's outcome. */
    struct t_proc waiter;
    char *wargv[] = {tool, "wait", dir, "--generation", "2", "--final", "--timeout", "20", NULL};
    t_spawn_exec(&waiter, wargv, NULL);
    T_EQ(t_proc_exited(&waiter, 300), -ETIMEDOUT);

    /* Hold the lock, kill generation 2: generation 1 resumes serving at
     * once and takes the directory back when it can. */
    snprintf(s, sizeof(s), "%s/lock", dir);
    lockfd = T_SYS(open(s, O_RDWR | O_CLOEXEC));
    T_SYS(flock(lockfd, LOCK_EX));
    T_SYS(kill(g2.pid, SIGKILL));
    T_HEAR_EQ(g1.chan, BATON_EVENT_RESUME);
    T_HEAR_EQ(g1.chan, g2.pid);
    T_HEAR_EQ(g1.chan, 2);
    T_HEAR_EQ(g1.chan, 0);
    snprintf(s, sizeof(s), "1    pid %-8d rolling-back", (int)g1.pid);
    if (t_dir_wait(dir, status_has, &(struct status_has){out, sizeof(out), s, 3}, T_TIMEOUT) < 0)
        t_fail(__FILE__, __LINE__, "never listed rolling back:\n%s", out);
    close(lockfd);
    snprintf(s, sizeof(s), ": pid %d, generation 1, serving", (int)g1.pid);
    T_EQ(t_dir_wait(dir, status_has, &(struct status_has){out, sizeof(out), s, 0}, T_TIMEOUT), 0);
    want(out, s);
    want(out, "rolled back");
    want(out, "handed connection(s) lost");
    T_EQ(t_proc_wait(&waiter, T_TIMEOUT), 1);
    T_EQ(t_proc_wait(&g2, T_TIMEOUT), 128 + SIGKILL);

    /* It serves, and can be taken over again. */
    t_spawn(&g2b, gen2_main, NULL);
    T_HEAR_EQ(g2b.chan, 2);
    T_HEAR_EQ(g1.chan, T_MSG_SUPERSEDED);
    t_tell(g2b.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g2b, T_TIMEOUT), 0);
    t_tell(g1.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g1, T_TIMEOUT), 0);
    return t_done();
}
