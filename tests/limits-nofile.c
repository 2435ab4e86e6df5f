/* SPDX-License-Identifier: MIT */
/*
 * A successor whose RLIMIT_NOFILE is too low to receive every fd fails
 * cleanly: the owner has 600 named fds, the successor's soft limit is 100.
 * baton_open() returns -EMFILE with a message that names RLIMIT_NOFILE,
 * leaves the successor no fd it did not have before, and the owner keeps
 * everything and serves on: a successor with a normal limit then takes
 * over all 600 fds and the same listener.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define NAMED 600
#define LOW   100
#define ADDR  "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    char name[32];
    baton *b;
    int lfd, null;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    null = T_SYS(open("/dev/null", O_RDONLY | O_CLOEXEC));
    for (int i = 0; i < NAMED; i++) {
        snprintf(name, sizeof(name), "f%03d", i);
        T_OK(baton_add_fd(b, name, null));
    }
    close(null);
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

static int low_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    struct rlimit rl;
    baton *b = NULL;
    int before, r;

    T_SYS(getrlimit(RLIMIT_NOFILE, &rl));
    rl.rlim_cur = LOW;
    T_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    before = t_fd_count();
    r = baton_open(&o, &b);
    t_tell(chan, r);
    T_EQ(r, -EMFILE);
    T_ASSERT(b == NULL);
    T_EQ(t_fd_count(), before);
    /* The message: baton_open() fails without a handle; the thread's last
     * error has it. */
    return 0;
}

static int low_logged_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    struct rlimit rl;
    baton *b = NULL;

    T_SYS(getrlimit(RLIMIT_NOFILE, &rl));
    rl.rlim_cur = LOW;
    T_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    T_EQ(baton_open(&o, &b), -EMFILE);
    t_log("the error logged: %s", baton_last_error(NULL));
    T_ASSERT(strstr(baton_last_error(NULL), "RLIMIT_NOFILE"));
    t_tell(chan, T_MSG_DONE);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    char name[32];
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    for (int i = 0; i < NAMED; i++) {
        snprintf(name, sizeof(name), "f%03d", i);
        T_OK(baton_fd(b, name));
    }
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
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
    struct t_proc owner, low, succ;
    long long ino;
    int port;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    ino = t_hear(owner.chan, T_TIMEOUT);

    t_spawn(&low, low_main, NULL);
    T_EQ(t_hear(low.chan, T_TIMEOUT), -EMFILE);
    T_EQ(t_proc_wait(&low, T_TIMEOUT), 0);
    expect_served(&owner, port, "gen1 ping");

    t_spawn(&low, low_logged_main, NULL);
    T_HEAR_EQ(low.chan, T_MSG_DONE);
    T_EQ(t_proc_wait(&low, T_TIMEOUT), 0);
    expect_served(&owner, port, "gen1 ping");

    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), ino);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&succ, port, "gen2 ping");
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
