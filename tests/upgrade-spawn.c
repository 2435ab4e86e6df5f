/* SPDX-License-Identifier: MIT */
/*
 * baton_upgrade(b, argv) starts a successor program (helper-server, given
 * as argv[1]) and returns 0 once it is ready: the successor serves on the
 * same listener with generation 2, and the owner's upgrade fd fires.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX], report[PATH_MAX];
static char *helper;

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    char *args[] = {helper, dir, report, "serve", NULL};
    baton *b;
    int lfd, r;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    T_HEAR_EQ(chan, T_MSG_GO);
    r = baton_upgrade(b, args);
    if (r < 0)
        t_log("baton_upgrade: %s", baton_last_error(b));
    t_tell(chan, r);
    /* The upgrade fd fires: the successor is ready. */
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ;
    char msg[256], resp[64];
    int port, gen, pid, port2, rfd;
    long long ino, ino2;

    t_init(argc, argv);
    if (argc != 2)
        t_fail(__FILE__, __LINE__, "usage: %s HELPER", argv[0]);
    helper = argv[1];
    t_path(dir, "run");
    t_path(report, "report.sock");
    rfd = t_report_bind(report);

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    ino = t_hear(owner.chan, T_TIMEOUT);
    t_tell(owner.chan, T_MSG_GO);

    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    T_EQ(sscanf(msg, "ready %d %d %d %lld", &gen, &pid, &port2, &ino2), 4);
    T_EQ(gen, 2);
    T_EQ(port2, port);
    T_EQ(ino2, ino);
    T_EQ(t_hear(owner.chan, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);

    /* The successor, now our child (we are its subreaper), serves. */
    t_proc_adopt(&succ, pid);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "helper2 ping");
    T_OK(t_request(AF_INET, port, "quit", resp, sizeof(resp)));
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    close(rfd);
    return t_done();
}
