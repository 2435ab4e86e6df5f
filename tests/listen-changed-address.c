/* SPDX-License-Identifier: MIT */
/*
 * A changed address under the same name gives a new socket: the successor
 * asks for "web" on another port and gets a new listener there, not the
 * inherited one; the inherited socket is closed at baton_ready(), so once
 * the old owner exits nobody listens on the old port any more.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    long long old_ino = t_hear(chan, T_TIMEOUT);
    int port = (int)t_hear(chan, T_TIMEOUT);
    char addr[64];
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    T_EQ(t_fds_with_ino(old_ino, NULL), 1); /* inherited, not claimed */
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", port);
    lfd = T_OK(baton_listen(b, "web", addr, 0));
    T_EQ(t_port(lfd), port);
    T_NE(t_ino(lfd), old_ino);
    T_OK(baton_ready(b));
    T_EQ(t_fds_with_ino(old_ino, NULL), 0); /* closed at ready */
    t_tell(chan, t_ino(lfd));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ;
    char resp[64];
    long long ino;
    int port, port2, fd;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    ino = t_hear(owner.chan, T_TIMEOUT);

    do
        port2 = t_free_port(AF_INET);
    while (port2 == port);
    t_spawn(&succ, succ_main, NULL);
    t_tell(succ.chan, ino);
    t_tell(succ.chan, port2);
    T_NE(t_hear(succ.chan, T_TIMEOUT), ino);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);

    /* The new port serves; the old one is closed everywhere. */
    T_OK(t_request(AF_INET, port2, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen2 ping");
    T_HEAR_EQ(succ.chan, T_MSG_SERVED);
    fd = t_tcp_connect(AF_INET, port, T_TIMEOUT);
    if (fd >= 0)
        close(fd);
    T_EQ(fd, -ECONNREFUSED);

    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
