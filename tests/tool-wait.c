/* SPDX-License-Identifier: MIT */
/*
 * `baton wait DIR --generation N [--timeout S]`: exit 0 at once when
 * generation N (or later) serves, 1 after the timeout when it does not,
 * and 0 as soon as a successor reaches N while it waits; 2 without
 * --generation.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define ADDR "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

static int node_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    char tag[16];
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    if (baton_generation(b) > 1)
        T_HEAR_EQ(chan, T_MSG_GO);
    T_OK(baton_ready(b));
    t_tell(chan, baton_generation(b));
    snprintf(tag, sizeof(tag), "gen%d", baton_generation(b));
    t_owner_loop(b, lfd, chan, tag);
    baton_free(b);
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ, waiter;
    char *tool, out[1024];
    long long t0, took;
    int fd;

    t_init(argc, argv);
    if (argc != 2)
        t_fail(__FILE__, __LINE__, "usage: %s BATON-TOOL", argv[0]);
    tool = argv[1];
    t_path(dir, "run");
    char *gen1[] = {tool, "wait", dir, "--generation", "1", "--timeout", "5", NULL};
    char *gen2_short[] = {tool, "wait", dir, "--generation", "2", "--timeout", "1", NULL};
    char *gen2_long[] = {tool, "wait", dir, "--generation", "2", "--timeout", "20", NULL};
    char *no_gen[] = {tool, "wait", dir, NULL};

    T_EQ(t_run(no_gen, T_TIMEOUT, NULL, 0), 2);

    t_spawn(&owner, node_main, NULL);
    T_HEAR_EQ(owner.chan, 1);

    t0 = now_ms();
    T_EQ(t_run(gen1, T_TIMEOUT, out, sizeof(out)), 0);
    T_LT(now_ms() - t0, 3000);

    t0 = now_ms();
    T_EQ(t_run(gen2_short, T_TIMEOUT, out, sizeof(out)), 1);
    took = now_ms() - t0;
    t_log("wait --generation 2 --timeout 1 gave up after %lld ms", took);
    T_GE(took, 900);
    T_LT(took, 5000);

    /* Waiting while a successor takes over. */
    t_spawn_exec(&waiter, gen2_long, &fd);
    t_spawn(&succ, node_main, NULL);
    t_tell(succ.chan, T_MSG_GO);
    T_HEAR_EQ(succ.chan, 2);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&waiter, T_TIMEOUT), 0);
    close(fd);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    /* Generation 1 is reached too: "or later". */
    T_EQ(t_run(gen1, T_TIMEOUT, out, sizeof(out)), 0);

    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
