/* SPDX-License-Identifier: MIT */
/*
 * Connections queued while nobody accepts are served by the successor.
 * The owner listens but never accepts; clients connect and send their
 * requests; a successor takes over, the owner exits, and only then does
 * the successor accept: every client gets its answer from it. The accept
 * queue lives in the socket, which is never closed in between.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define CLIENTS 32
#define ADDR    "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 64));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    /* Never accept: wait for the successor, then go. */
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    t_tell(chan, T_MSG_SUPERSEDED);
    baton_free(b);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    lfd = T_OK(baton_listen(b, "web", ADDR, 64));
    T_OK(baton_ready(b));
    t_tell(chan, t_ino(lfd));
    /* Accept only once the owner has exited. */
    T_HEAR_EQ(chan, T_MSG_GO);
    for (int i = 0; i < CLIENTS; i++)
        T_OK(t_serve_one(lfd, "gen2", T_TIMEOUT));
    t_tell(chan, T_MSG_DONE);
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ;
    int port, fds[CLIENTS];
    char line[64], want[64];
    long long ino;

    t_init(argc, argv);
    t_path(dir, "run");

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    ino = t_hear(owner.chan, T_TIMEOUT);

    /* Each connect completes in the kernel; each request waits in its
     * socket's receive buffer. */
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = T_OK(t_tcp_connect(AF_INET, port, T_TIMEOUT));
        snprintf(line, sizeof(line), "req %d\n", i);
        T_OK(t_write_all(fds[i], line, strlen(line)));
    }

    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), ino);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);

    /* Nobody has answered anyone yet. */
    for (int i = 0; i < CLIENTS; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        T_EQ(poll(&p, 1, 0), 0);
    }

    t_tell(succ.chan, T_MSG_GO);
    for (int i = 0; i < CLIENTS; i++) {
        ssize_t n = t_read_line(fds[i], line, sizeof(line), T_TIMEOUT);
        snprintf(want, sizeof(want), "gen2 req %d\n", i);
        if (n < 0)
            t_fail(__FILE__, __LINE__, "client %d: %s", i, strerror((int)-n));
        T_STREQ(line, want);
        close(fds[i]);
    }
    T_HEAR_EQ(succ.chan, T_MSG_DONE);
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
