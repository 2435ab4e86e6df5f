/* SPDX-License-Identifier: MIT */
/*
 * BATON_NO_THREAD: an owner that polls baton_control_fd() in its own loop
 * and calls baton_dispatch() is taken over from correctly (listener, named fd,
 * state); and a NO_THREAD owner blocked in baton_wait_upgrade() dispatches
 * by itself and is taken over by the next generation.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define ADDR "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

/* Generation 1: NO_THREAD, serves from t_owner_loop() (which polls the
 * control fd and dispatches). */
static int gen1_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, BATON_NO_THREAD);
    baton *b;
    int lfd, p[2];

    T_OK(baton_open(&o, &b));
    T_OK(baton_control_fd(b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_SYS(pipe2(p, O_CLOEXEC));
    T_OK(baton_add_fd(b, "pipe", p[1]));
    T_OK(baton_set_state(b, "state of gen1", 13));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    T_EQ(t_owner_loop(b, lfd, chan, "gen1"), 1);
    baton_free(b);
    /* Our write end is closed by baton_free(); the successor's copy must
     * keep the pipe open: it writes, we read. */
    close(p[1]);
    char buf[8];
    T_OK(t_read_full(p[0], buf, 3, T_TIMEOUT));
    T_ASSERT(memcmp(buf, "hi!", 3) == 0);
    close(p[0]);
    t_tell(chan, T_MSG_DONE);
    return 0;
}

/* Generation 2: NO_THREAD too; waits in baton_wait_upgrade(). */
static int gen2_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, BATON_NO_THREAD);
    const void *state;
    size_t len;
    baton *b;
    int lfd, pfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    T_EQ(baton_inherited(b), 1);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    pfd = T_OK(baton_fd(b, "pipe"));
    T_OK(baton_state(b, &state, &len));
    T_EQ(len, 13);
    T_ASSERT(memcmp(state, "state of gen1", 13) == 0);
    T_OK(baton_set_state(b, "state of gen2", 13));
    T_OK(baton_ready(b));
    T_OK(t_write_all(pfd, "hi!", 3));
    t_tell(chan, t_ino(lfd));
    T_OK(t_serve_one(lfd, "gen2", T_TIMEOUT));
    t_tell(chan, T_MSG_SERVED);
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    t_tell(chan, T_MSG_SUPERSEDED);
    baton_free(b);
    return 0;
}

/* Generation 3: the default thread. */
static int gen3_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    const void *state;
    size_t len;
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 3);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_fd(b, "pipe"));
    T_OK(baton_state(b, &state, &len));
    T_EQ(len, 13);
    T_ASSERT(memcmp(state, "state of gen2", 13) == 0);
    T_OK(baton_ready(b));
    t_tell(chan, t_ino(lfd));
    t_owner_loop(b, lfd, chan, "gen3");
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc g1, g2, g3;
    char resp[64];
    long long ino;
    int port;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&g1, gen1_main, NULL);
    port = (int)t_hear(g1.chan, T_TIMEOUT);
    ino = t_hear(g1.chan, T_TIMEOUT);
    T_OK(t_request(AF_INET, port, "a", resp, sizeof(resp)));
    T_STREQ(resp, "gen1 a");
    T_HEAR_EQ(g1.chan, T_MSG_SERVED);

    t_spawn(&g2, gen2_main, NULL);
    T_EQ(t_hear(g2.chan, T_TIMEOUT), ino);
    T_HEAR_EQ(g1.chan, T_MSG_SUPERSEDED);
    T_HEAR_EQ(g1.chan, T_MSG_DONE);
    T_EQ(t_proc_wait(&g1, T_TIMEOUT), 0);
    T_OK(t_request(AF_INET, port, "b", resp, sizeof(resp)));
    T_STREQ(resp, "gen2 b");
    T_HEAR_EQ(g2.chan, T_MSG_SERVED);

    t_spawn(&g3, gen3_main, NULL);
    T_EQ(t_hear(g3.chan, T_TIMEOUT), ino);
    T_HEAR_EQ(g2.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&g2, T_TIMEOUT), 0);
    T_OK(t_request(AF_INET, port, "c", resp, sizeof(resp)));
    T_STREQ(resp, "gen3 c");
    T_HEAR_EQ(g3.chan, T_MSG_SERVED);
    t_tell(g3.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g3, T_TIMEOUT), 0);
    return t_done();
}
