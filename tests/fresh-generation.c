/* SPDX-License-Identifier: MIT */
/*
 * A fresh start (no owner answers) while an older generation still drains
 * is numbered above it: a generation number names one live process, which
 * UDP flow steering relies on (docs/udp-steering.md). Before, the owner's
 * death while generation 1 drained made the next start generation 1 too,
 * and the two took each other's datagrams.
 *
 * Generation 1 serves, generation 2 takes over (1 drains), 2 is killed,
 * and a new process starts: it must be generation 2 (above the live 1),
 * and its steering must reach generation 1's process.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

/* Generation 1: serves until superseded, then drains until told. */
static int first_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;

    (void)arg;
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 1);
    T_OK(baton_steer_open(b));
    T_OK(baton_ready(b));
    t_tell(chan, T_MSG_DONE);
    T_EQ(baton_wait_upgrade(b, 5000), 1);
    t_tell(chan, T_MSG_SUPERSEDED);
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

/* The next ones: say their generation, serve until killed or told. */
static int next_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;

    T_OK(baton_open(&o, &b));
    t_tell(chan, baton_generation(b));
    T_OK(baton_steer_open(b));
    T_OK(baton_ready(b));
    if (arg) {
        /* Steering reaches generation 1's process, not ourselves. */
        T_EQ(baton_steer_route(b, 1, "x", 1, NULL, 0), 1);
    }
    t_tell(chan, T_MSG_DONE);
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

int main(void)
{
    struct t_proc g1, g2, g3;

    t_path(dir, "svc");
    t_spawn(&g1, first_main, NULL);
    T_EQ(t_hear(g1.chan, 5000), T_MSG_DONE);
    t_spawn(&g2, next_main, NULL);
    T_EQ(t_hear(g2.chan, 5000), 2);
    T_EQ(t_hear(g2.chan, 5000), T_MSG_DONE);
    T_EQ(t_hear(g1.chan, 5000), T_MSG_SUPERSEDED);
    /* The owner dies; generation 1 still drains. */
    t_proc_kill(&g2);
    t_spawn(&g3, next_main, (void *)1);
    T_EQ(t_hear(g3.chan, 5000), 2);
    T_EQ(t_hear(g3.chan, 5000), T_MSG_DONE);
    t_tell(g3.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g3, 5000), 0);
    t_tell(g1.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g1, 5000), 0);
    return 0;
}
