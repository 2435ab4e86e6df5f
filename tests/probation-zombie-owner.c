/* SPDX-License-Identifier: MIT */
/*
 * A dead owner is not a later generation. Generation 1 has a probation;
 * 2 takes over from it, 3 from 2; 3 is SIGKILLed and stays a zombie (we do
 * not reap it yet: a parent that never reaps, or a container whose init
 * does not), its owner record left behind; then 2 dies within 1's
 * probation. Generation 1 must take the service back (RESUME), not give up
 * because the record names a pid that kill(pid, 0) still finds.
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

static void next_event(baton *b, int chan)
{
    struct pollfd p = {.fd = baton_upgrade_fd(b), .events = POLLIN};

    T_EQ(poll(&p, 1, T_TIMEOUT), 1);
    t_tell(chan, baton_upgrade_event(b, NULL));
}

static int gen1_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;

    (void)arg;
    o.probation_ms = 60000;
    T_OK(baton_open(&o, &b));
    T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, T_MSG_DONE);
    next_event(b, chan); /* STEP_DOWN: 2 took over */
    next_event(b, chan); /* RESUME: 2 died, 3 is a zombie */
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

static int later_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_fd(b, "web"));
    T_OK(baton_ready(b));
    t_tell(chan, baton_generation(b));
    if (t_owner_loop(b, lfd, chan, "later") == 1)
        T_HEAR_EQ(chan, T_MSG_STOP); /* superseded: linger until killed */
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc g1, g2, g3;
    int dirfd;

    t_init(argc, argv);
    t_path(dir, "coord");
    t_spawn(&g1, gen1_main, NULL);
    T_HEAR_EQ(g1.chan, T_MSG_DONE);
    t_spawn(&g2, later_main, NULL);
    T_HEAR_EQ(g2.chan, 2);
    T_HEAR_EQ(g1.chan, BATON_EVENT_STEP_DOWN);
    t_spawn(&g3, later_main, NULL);
    T_HEAR_EQ(g3.chan, 3);
    T_HEAR_EQ(g2.chan, T_MSG_SUPERSEDED);

    dirfd = T_SYS(open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    T_EQ(t_owner_pid(dirfd, NULL), g3.pid);
    /* 3 dies unreaped: a zombie the owner record still names. */
    T_SYS(kill(g3.pid, SIGKILL));
    T_EQ(t_proc_exited(&g3, T_TIMEOUT), 0);
    T_EQ(kill(g3.pid, 0), 0);
    /* 2 dies within 1's probation: 1 takes the service back. */
    T_SYS(kill(g2.pid, SIGKILL));
    T_HEAR_EQ(g1.chan, BATON_EVENT_RESUME);
    /* It takes the directory back: its owner record names it again. */
    T_EQ(t_wait_owner(dir, g1.pid, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&g2, T_TIMEOUT), 128 + SIGKILL);
    T_EQ(t_proc_wait(&g3, T_TIMEOUT), 128 + SIGKILL);
    t_tell(g1.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g1, T_TIMEOUT), 0);
    close(dirfd);
    return t_done();
}
