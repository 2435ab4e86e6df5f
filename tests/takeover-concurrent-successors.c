/* SPDX-License-Identifier: MIT */
/*
 * Two successors at once: while the first holds the directory (between
 * baton_open() and baton_ready()), a second baton_open() in another process
 * fails with -EBUSY and leaves nothing open; the first then takes over.
 * A third with BATON_WAIT_LOCK, started while the first still holds the
 * lock, takes over from the first once it is ready.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define ADDR "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

struct role {
    const char *tag;
    int gen;
    unsigned flags;
};

/* Open, report, wait for GO, ready, serve. */
static int node_main(int chan, void *arg)
{
    const struct role *r = arg;
    struct baton_options o = t_opts(dir, 5000, r->flags);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), r->gen);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    t_tell(chan, T_MSG_DONE);
    if (r->gen > 1)
        T_HEAR_EQ(chan, T_MSG_GO);
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, r->tag);
    baton_free(b);
    return 0;
}

static int busy_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b = NULL;
    int fds = t_fd_count(), r;

    r = baton_open(&o, &b);
    T_ASSERT(b == NULL);
    T_EQ(t_fd_count(), fds);
    t_tell(chan, r);
    return 0;
}

static void expect_served(struct t_proc *p, int port, const char *want)
{
    char resp[64];

    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, want);
    T_HEAR_EQ(p->chan, T_MSG_SERVED);
}

int main(int argc, char **argv)
{
    struct role r1 = {"gen1", 1, 0}, r2 = {"gen2", 2, 0}, r3 = {"gen3", 3, BATON_WAIT_LOCK};
    struct t_proc owner, first, second, third;
    int port;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, node_main, &r1);
    T_HEAR_EQ(owner.chan, T_MSG_DONE);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    t_spawn(&first, node_main, &r2);
    T_HEAR_EQ(first.chan, T_MSG_DONE); /* holds the lock now */

    t_spawn(&second, busy_main, NULL);
    T_EQ(t_hear(second.chan, T_TIMEOUT), -EBUSY);
    T_EQ(t_proc_wait(&second, T_TIMEOUT), 0);
    expect_served(&owner, port, "gen1 ping");

    /* The third waits for the lock (BATON_WAIT_LOCK) ... */
    t_spawn(&third, node_main, &r3);

    /* ... while the first takes over. */
    t_tell(first.chan, T_MSG_GO);
    T_EQ(t_hear(first.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&first, port, "gen2 ping");

    /* Then the third takes over from the first. */
    T_HEAR_EQ(third.chan, T_MSG_DONE);
    t_tell(third.chan, T_MSG_GO);
    T_EQ(t_hear(third.chan, T_TIMEOUT), port);
    T_HEAR_EQ(first.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&first, T_TIMEOUT), 0);
    expect_served(&third, port, "gen3 ping");
    t_tell(third.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&third, T_TIMEOUT), 0);
    return t_done();
}
