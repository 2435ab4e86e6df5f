/* SPDX-License-Identifier: MIT */
/*
 * baton_upgrade_start(b, argv) starts a successor and returns at once:
 *   - with a successor that fails (helper-server "fail"), the upgrade fd
 *     brings BATON_EVENT_FAILED (its pid, generation 2, a negative errno)
 *     and the owner serves on;
 *   - with a successor that takes long between baton_open() and
 *     baton_ready() (FAILFILE "stall MS": a slow start is the subject), the
 *     owner answers a connection while the successor stalls, before it is
 *     ready; then BATON_EVENT_STEP_DOWN comes, and the successor serves;
 *   - a NULL handle, or an owner that has not called baton_ready(), get
 *     -EINVAL.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX], report[PATH_MAX], stall[PATH_MAX];
static char *helper;

/* The next upgrade event, waiting for it on the upgrade fd. */
static int next_event(baton *b, struct baton_event *ev)
{
    struct pollfd p = {.fd = baton_upgrade_fd(b), .events = POLLIN};

    T_EQ(poll(&p, 1, T_TIMEOUT), 1);
    return baton_upgrade_event(b, ev);
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    char *fail[] = {helper, dir, report, "fail", NULL};
    char *serve[] = {helper, dir, report, "serve", stall, NULL};
    struct baton_event ev;
    baton *b;
    int lfd;

    T_EQ(baton_upgrade_start(NULL, NULL), -EINVAL);
    T_OK(baton_open(&o, &b));
    T_EQ(baton_upgrade_start(b, NULL), -EINVAL); /* not ready yet */
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));

    /* A successor that fails: an event says so, and we serve on. */
    T_OK(baton_upgrade_start(b, fail));
    T_EQ(next_event(b, &ev), BATON_EVENT_FAILED);
    T_LT(ev.error, 0);
    t_log("FAILED: pid %d generation %d error %d (%s)", (int)ev.pid, ev.generation, ev.error,
          baton_strerror(ev.error));
    t_tell(chan, ev.pid);
    t_tell(chan, ev.generation);
    T_EQ(baton_upgrade_event(b, NULL), BATON_EVENT_NONE);
    T_OK(t_serve_one(lfd, "gen1", T_TIMEOUT));

    /* A slow one: we serve while it stalls, then it takes over. */
    T_HEAR_EQ(chan, T_MSG_GO);
    T_OK(baton_upgrade_start(b, serve));
    t_tell(chan, T_MSG_GO);
    T_OK(t_serve_one(lfd, "gen1", T_TIMEOUT));
    T_EQ(next_event(b, &ev), BATON_EVENT_STEP_DOWN);
    T_EQ(ev.generation, 2);
    t_tell(chan, ev.pid);
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ;
    char msg[256], resp[64];
    int port, gen, pid, port2, rfd, failed_pid;
    long long ino2;
    struct pollfd p;
    FILE *f;

    t_init(argc, argv);
    if (argc != 2)
        t_fail(__FILE__, __LINE__, "usage: %s HELPER", argv[0]);
    helper = argv[1];
    t_path(dir, "run");
    t_path(report, "report.sock");
    t_path(stall, "stall");
    f = fopen(stall, "w");
    if (!f || fprintf(f, "stall 3000\n") < 0 || fclose(f) != 0)
        t_fail(__FILE__, __LINE__, "writing %s: %m", stall);
    rfd = t_report_bind(report);

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    T_EQ(sscanf(msg, "fail %d %d", &gen, &failed_pid), 2);
    T_EQ(gen, 2);
    T_EQ(t_hear(owner.chan, T_TIMEOUT), failed_pid);
    T_EQ(t_hear(owner.chan, T_TIMEOUT), 2);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen1 ping");

    t_tell(owner.chan, T_MSG_GO);
    T_HEAR_EQ(owner.chan, T_MSG_GO);
    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    T_EQ(sscanf(msg, "start %d", &pid), 1);
    /* The owner answers while its successor stalls: start did not wait. */
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen1 ping");
    p = (struct pollfd){.fd = rfd, .events = POLLIN};
    T_EQ(poll(&p, 1, 0), 0); /* and the successor has not reported ready */

    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    T_EQ(sscanf(msg, "ready %d %d %d %lld", &gen, &pid, &port2, &ino2), 4);
    T_EQ(gen, 2);
    T_EQ(port2, port);
    T_EQ(t_hear(owner.chan, T_TIMEOUT), pid);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    t_proc_adopt(&succ, pid);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "helper2 ping");
    T_OK(t_request(AF_INET, port, "quit", resp, sizeof(resp)));
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    close(rfd);
    return t_done();
}
