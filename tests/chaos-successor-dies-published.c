/* SPDX-License-Identifier: MIT */
/*
 * A successor that dies after renaming its control socket over
 * control.sock but before it sends PUBLISHED (BATON_FAULT s-publish=kill)
 * leaves the owner serving: the owner notices, puts its own control socket
 * back, and answers the next successor, which takes over. Then the same
 * with the successor stopped at that step for longer than the owner's
 * ready_timeout_ms (the owner's deadline passes in the same state) and
 * killed afterwards.
 *
 * The owner record, which the dying successor had replaced, names the
 * owner again. The owner's control thread must survive both: the next successor's
 * baton_open() must succeed within its own timeout.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define ADDR "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 500, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

/* arg: the BATON_FAULT spec, or NULL for a plain successor. */
static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 3000, 0);
    baton *b;
    int lfd, r;

    if (arg)
        setenv("BATON_FAULT", arg, 1);
    r = baton_open(&o, &b);
    t_tell(chan, r);
    if (r < 0) {
        t_log("baton_open: %d (%s)", r, strerror(-r));
        return 0;
    }
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    r = baton_ready(b);
    t_tell(chan, r);
    if (r < 0) {
        t_log("baton_ready: %s", baton_last_error(b));
        baton_free(b);
        return 0;
    }
    t_tell(chan, t_port(lfd));
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

/* The pid the owner record names, once it names want (bounded; polled:
 * the owner fixes it on its own thread when it sees the successor die). */
static void expect_record(pid_t want)
{
    char path[PATH_MAX + 16], line[128];
    int pid = 0;

    snprintf(path, sizeof(path), "%s/owner", dir);
    for (int i = 0; i < 1000 && pid != want; i++) {
        FILE *f = fopen(path, "re");
        pid = 0;
        while (f && fgets(line, sizeof(line), f) && sscanf(line, "pid %d", &pid) != 1)
            ;
        if (f)
            fclose(f);
        if (pid != want)
            poll(NULL, 0, 5);
    }
    T_EQ(pid, want);
}

/* Until the process is stopped (bounded; polled, nothing to wait on). */
static void wait_stopped(pid_t pid)
{
    char path[64], buf[256], *p;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 2000; i++) {
        FILE *f = fopen(path, "re");
        bool stopped = false;
        if (f) {
            if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')))
                stopped = p[2] == 'T';
            fclose(f);
        }
        if (stopped)
            return;
        poll(NULL, 0, 5);
    }
    t_fail(__FILE__, __LINE__, "pid %d did not stop", (int)pid);
}

int main(int argc, char **argv)
{
    struct t_proc owner, dying, succ;
    int port;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    /* Killed between the rename and PUBLISHED. */
    t_spawn(&dying, succ_main, "s-publish=kill");
    T_EQ(t_hear(dying.chan, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&dying, T_TIMEOUT), 128 + SIGKILL);
    expect_served(&owner, port, "gen1 ping");
    /* It had written its owner record too: the owner's is put back. */
    expect_record(owner.pid);

    /* Stopped there past the owner's deadline, then killed. */
    t_spawn(&dying, succ_main, "s-publish=stop");
    T_EQ(t_hear(dying.chan, T_TIMEOUT), 0);
    wait_stopped(dying.pid);
    /* The owner's deadline (500 ms from the connect) passes while the
     * successor is stopped: that is the case under test, not a wait for
     * an event. */
    poll(NULL, 0, 800);
    t_proc_kill(&dying);
    expect_served(&owner, port, "gen1 ping");

    /* Stopped after its socket was renamed into place, before it wrote
     * its owner record, past the owner's deadline: the owner puts its
     * socket back; continued, the successor writes its record over the
     * owner's, then fails. The owner must put its record back too (an
     * adversarial review found it left naming the failed successor). */
    t_spawn(&dying, succ_main, "s-record=stop");
    T_EQ(t_hear(dying.chan, T_TIMEOUT), 0);
    wait_stopped(dying.pid);
    poll(NULL, 0, 800); /* the owner's deadline passes: the case under test */
    T_SYS(kill(dying.pid, SIGCONT));
    T_LT(t_hear(dying.chan, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&dying, T_TIMEOUT), 0);
    expect_served(&owner, port, "gen1 ping");
    expect_record(owner.pid);

    /* The owner answers the next successor. */
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), 0);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), 0);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&succ, port, "gen2 ping");
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
