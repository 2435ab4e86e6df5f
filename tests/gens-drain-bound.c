/* SPDX-License-Identifier: MIT */
/*
 * The library's drain bound, for a process that never exits on its own:
 * generation 1 (drain_timeout_ms = BOUND) is superseded, then ignores
 * SIGTERM and waits for ever. Generation 2, the owner, must end it: not
 * before its bound, with SIGTERM, then SIGKILL after its kill grace, and
 * say so in its log. A generation with no bound (generation 2 itself,
 * once superseded by 3) is left alone. Nor is a process that a gen.PID
 * planted in the directory names, with its right start time: it holds no
 * handle on this directory.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define BOUND 300 /* ms */
#define GRACE 200 /* ms */

enum { MSG_BOUND_LOGGED = 2001, MSG_KILL_LOGGED = 2002, MSG_STRANGER_LOGGED = 2003 };

static char dir[PATH_MAX];
static int log_chan = -1;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void owner_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    (void)level;
    if (strstr(msg, "past its drain bound"))
        t_tell(log_chan, MSG_BOUND_LOGGED);
    if (strstr(msg, "sending SIGKILL"))
        t_tell(log_chan, MSG_KILL_LOGGED);
    if (strstr(msg, "not a generation of this directory"))
        t_tell(log_chan, MSG_STRANGER_LOGGED);
}

/* Generation 1: bounded, and deaf to SIGTERM once superseded. */
static int wedged_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    (void)arg;
    o.drain_timeout_ms = BOUND;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    T_EQ(t_owner_loop(b, lfd, chan, "gen1"), 1);
    signal(SIGTERM, SIG_IGN);
    for (;;)
        pause();
}

/* Generations 2 and 3: the owner of the day. */
static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    (void)arg;
    log_chan = chan;
    o.kill_grace_ms = GRACE;
    o.log = owner_log;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_fd(b, "web"));
    T_OK(baton_ready(b));
    t_tell(chan, T_MSG_DONE);
    /* Superseded, it drains until told to stop. */
    if (t_owner_loop(b, lfd, chan, "owner") == 1)
        T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc g1, g2, g3;
    uint64_t superseded, ended;
    long long v;
    int port;

    t_init(argc, argv);
    t_path(dir, "coord");
    t_spawn(&g1, wedged_main, NULL);
    port = (int)t_hear(g1.chan, T_TIMEOUT);
    t_spawn(&g2, owner_main, NULL);
    T_HEAR_EQ(g2.chan, T_MSG_DONE);
    T_HEAR_EQ(g1.chan, T_MSG_SUPERSEDED);
    superseded = now_ms();
    /* Generation 1 ignores SIGTERM: only SIGKILL ends it. */
    T_EQ(t_proc_wait(&g1, T_TIMEOUT), 128 + SIGKILL);
    ended = now_ms();
    T_GE(ended - superseded, BOUND);
    T_HEAR_EQ(g2.chan, MSG_BOUND_LOGGED);
    T_HEAR_EQ(g2.chan, MSG_KILL_LOGGED);
    /* The service never stopped answering. */
    char resp[64];
    T_OK(t_request(AF_INET, port, "hello", resp, sizeof(resp)));
    T_HEAR_EQ(g2.chan, T_MSG_SERVED);

    /* The attack: a gen.PID planted in the directory, naming a process of
     * ours that is no generation (right pid, right start time, past its
     * "drain bound"). The owner looks (inotify) and leaves it alone. */
    {
        struct t_proc stranger;
        char path[PATH_MAX + 32], tmp[PATH_MAX + 32], text[512];
        char *sargv[] = {"/bin/sleep", "30", NULL};
        FILE *f;

        t_spawn_exec(&stranger, sargv, NULL);
        snprintf(tmp, sizeof(tmp), "%s/.planted", dir);
        snprintf(path, sizeof(path), "%s/gen.%d", dir, (int)stranger.pid);
        snprintf(text, sizeof(text),
                 "baton-gen 1\npid %d\nstart %llu\ngeneration 1\nstate draining\nsince 1\n"
                 "draining_since 1\nconns 7\nprobation_until 0\ndrain_until 1\n",
                 (int)stranger.pid, baton__proc_start(stranger.pid));
        f = fopen(tmp, "w");
        T_ASSERT(f && fputs(text, f) >= 0 && fclose(f) == 0);
        T_SYS(rename(tmp, path));
        T_HEAR_EQ(g2.chan, MSG_STRANGER_LOGGED);
        T_EQ(t_proc_exited(&stranger, 200), -ETIMEDOUT); /* not signalled */
        t_proc_kill(&stranger);
        unlink(path);
    }

    /* Generation 2 has no bound: superseded by 3, it is not ended. */
    t_spawn(&g3, owner_main, NULL);
    T_HEAR_EQ(g3.chan, T_MSG_DONE);
    T_HEAR_EQ(g2.chan, T_MSG_SUPERSEDED);
    T_EQ(t_try_hear(g3.chan, BOUND + GRACE + 500, &v), -ETIMEDOUT);
    T_EQ(t_proc_exited(&g2, 0), -ETIMEDOUT);
    t_tell(g2.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g2, T_TIMEOUT), 0);
    t_tell(g3.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g3, T_TIMEOUT), 0);
    return t_done();
}
