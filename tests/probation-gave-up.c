/* SPDX-License-Identifier: MIT */
/*
 * A successor that frees its handle within its probation and lives on has
 * given the service up (nobody owns the directory then): the old owner
 * takes it back, as when the successor dies.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

static char dir[PATH_MAX];

static int gen1_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    struct pollfd p;
    baton *b;

    (void)arg;
    o.probation_ms = 60000; /* longer than the test: only giving up ends it */
    T_OK(baton_open(&o, &b));
    T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, T_MSG_DONE);
    p = (struct pollfd){.fd = baton_upgrade_fd(b), .events = POLLIN};
    for (int n = 0; n < 2; n++) {
        T_EQ(poll(&p, 1, T_TIMEOUT), 1);
        t_tell(chan, baton_upgrade_event(b, NULL));
    }
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

static int quitter_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;

    (void)arg;
    T_OK(baton_open(&o, &b));
    T_OK(baton_fd(b, "web"));
    T_OK(baton_ready(b));
    t_tell(chan, baton_generation(b));
    T_HEAR_EQ(chan, T_MSG_GO);
    baton_free(b); /* gives the directory up, and lives on */
    t_tell(chan, T_MSG_DONE);
    T_HEAR_EQ(chan, T_MSG_STOP);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc g1, g2;
    int dirfd;

    t_init(argc, argv);
    t_path(dir, "coord");
    t_spawn(&g1, gen1_main, NULL);
    T_HEAR_EQ(g1.chan, T_MSG_DONE);
    t_spawn(&g2, quitter_main, NULL);
    T_HEAR_EQ(g2.chan, 2);
    T_HEAR_EQ(g1.chan, BATON_EVENT_STEP_DOWN);
    t_tell(g2.chan, T_MSG_GO);
    T_HEAR_EQ(g2.chan, T_MSG_DONE);
    T_HEAR_EQ(g1.chan, BATON_EVENT_RESUME);
    dirfd = T_SYS(open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    /* It takes the directory back: its owner record names it again. */
    T_EQ(t_wait_owner(dir, g1.pid, T_TIMEOUT), 0);
    T_EQ(t_proc_exited(&g2, 0), -ETIMEDOUT); /* it lives on */
    t_tell(g2.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g2, T_TIMEOUT), 0);
    t_tell(g1.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g1, T_TIMEOUT), 0);
    close(dirfd);
    return t_done();
}
