/* SPDX-License-Identifier: MIT */
/*
 * What an upgrade reports is the final truth. An outside review saw
 * `baton upgrade DIR --timeout 1` print "upgrade failed" and exit 1, and a
 * successor that needed 3 s take over 2 s later anyway.
 *
 * The owner is helper-server; its FAILFILE makes the successor it starts
 * slow in one way or another, always past the timeout:
 *   slow      it sleeps before baton_open() (not yet connected)
 *   stall     it has taken the fds and sleeps before baton_ready()
 *   stubborn  the same, and it ignores SIGTERM
 *   fork-stall   it forks and exits 0 (a server that daemonizes); the
 *                child stalls (an adversarial review won this way)
 *   wrap-stall   it forks and waits (a wrapper script); the child stalls
 * Each time the tool must exit 1, the process that asked to take over must
 * end (the stubborn one by SIGKILL after the grace period), and generation
 * 1 must still serve, with its control socket and owner record. Then
 * baton_upgrade() in a process of the test's own, the same way round.
 * Last, the other direction: a server that daemonizes and is quick
 * (reported success; its child serves), then a plain one.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

static char dir[PATH_MAX], dir2[PATH_MAX], report[PATH_MAX], failfile[PATH_MAX];
static const char *helper;

static void say_slow(const char *how)
{
    FILE *f = fopen(failfile, "we");

    T_ASSERT(f != NULL);
    fprintf(f, "%s\n", how);
    T_EQ(fclose(f), 0);
}

/* The successor with this pid must be gone within grace + a bound. It is
 * the owner's child, not ours: watch it by pidfd. */
static void expect_gone(pid_t pid, int within_ms)
{
    struct pollfd p = {.events = POLLIN};

    p.fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (p.fd < 0) {
        T_EQ(errno, ESRCH);
        return;
    }
    if (poll(&p, 1, within_ms) != 1)
        t_fail(__FILE__, __LINE__, "successor pid %d still runs %d ms after its upgrade failed",
               (int)pid, within_ms);
    close(p.fd);
}

static void report_recv(int rfd, char *msg, size_t cap)
{
    t_report_recv(rfd, msg, cap, T_TIMEOUT);
    t_log("report: %s", msg);
}

/* The generation that answers on port is still the one tagged tag. */
static void expect_owner(int port, const char *tag)
{
    char resp[64], want[64];

    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    snprintf(want, sizeof(want), "%s ping", tag);
    T_STREQ(resp, want);
}

static int api_owner(int chan, void *arg)
{
    struct baton_options o = t_opts(dir2, 1000, 0);
    char *argv[] = {(char *)helper, dir2, report, "serve", failfile, NULL};
    baton *b;
    int lfd, r;

    (void)arg;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    r = baton_upgrade(b, argv);
    t_tell(chan, r);
    t_log("baton_upgrade: %s", baton_last_error(b));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    char msg[256], out[1024];
    int rfd, gen, pid, port, port2;
    struct t_proc first, owner2;
    long long ino;
    const char *tool;

    t_init(argc, argv);
    if (argc != 3)
        t_fail(__FILE__, __LINE__, "usage: %s BATON-TOOL HELPER", argv[0]);
    tool = argv[1];
    helper = argv[2];
    t_path(dir, "run");
    t_path(dir2, "run2");
    t_path(report, "report.sock");
    t_path(failfile, "slow");
    rfd = t_report_bind(report);
    char *server[] = {(char *)helper, dir, report, "serve", failfile, NULL};
    char *status[] = {(char *)tool, "status", dir, NULL};

    t_spawn_exec(&first, server, NULL);
    report_recv(rfd, msg, sizeof(msg));
    T_EQ(sscanf(msg, "ready %d %d %d %lld", &gen, &pid, &port, &ino), 4);
    T_EQ(gen, 1);

    /* The last two: the process that asks to take over is not the one
     * the owner started (a server that daemonizes; a wrapper script). */
    static const char *const hows[] = {"slow 3000", "stall 3000", "stubborn 8000",
                                       "fork-stall 3000", "wrap-stall 3000"};
    for (size_t i = 0; i < sizeof(hows) / sizeof(hows[0]); i++) {
        char *upgrade[] = {(char *)tool, "upgrade", dir, "--timeout", "1", NULL};
        int spid;

        say_slow(hows[i]);
        t_log("successor: %s", hows[i]);
        T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 1);
        report_recv(rfd, msg, sizeof(msg));
        T_EQ(sscanf(msg, "start %d", &spid), 1);
        /* Gone within the grace period and a margin, however it sleeps;
         * had it lived on, it would have taken over 2 s after the tool's
         * verdict (3 s sleep, 1 s timeout). */
        expect_gone(spid, BATON__KILL_GRACE_MS + 5000);
        T_EQ(t_run(status, T_TIMEOUT, out, sizeof(out)), 0);
        T_ASSERT(strstr(out, "generation 1,") != NULL);
        expect_owner(port, "helper1");
    }

    /* baton_upgrade() with ready_timeout_ms 1000: the same truth. */
    say_slow("stall 4000");
    t_spawn(&owner2, api_owner, NULL);
    port2 = (int)t_hear(owner2.chan, T_TIMEOUT);
    report_recv(rfd, msg, sizeof(msg));
    T_EQ(sscanf(msg, "start %d", &pid), 1);
    T_EQ(t_hear(owner2.chan, T_TIMEOUT), -ETIMEDOUT);
    expect_gone(pid, BATON__KILL_GRACE_MS + 5000);
    expect_owner(port2, "gen1");
    T_HEAR_EQ(owner2.chan, T_MSG_SERVED);
    t_tell(owner2.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&owner2, T_TIMEOUT), 0);

    /* The other direction: reported success, and it serves. First by a
     * server that daemonizes: the process started exits 0 at once, its
     * child takes over. */
    say_slow("fork-ready");
    {
        char *upgrade[] = {(char *)tool, "upgrade", dir, "--timeout", "10", NULL};
        char resp[64];
        int gen2, pid2, p2, cpid;
        long long ino2;

        T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 0);
        T_ASSERT(strstr(out, "generation 2 serves") != NULL);
        report_recv(rfd, msg, sizeof(msg));
        T_EQ(sscanf(msg, "start %d", &cpid), 1);
        for (int i = 0; i < 2; i++) {
            report_recv(rfd, msg, sizeof(msg));
            if (sscanf(msg, "ready %d %d %d %lld", &gen2, &pid2, &p2, &ino2) == 4)
                continue;
            T_ASSERT(strncmp(msg, "superseded 1", 12) == 0);
        }
        T_EQ(gen2, 2);
        T_EQ(pid2, cpid);
        T_EQ(p2, port);
        T_EQ(t_proc_wait(&first, T_TIMEOUT), 0);
        T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
        T_STREQ(resp, "helper2 ping");
        /* Its parent is gone: the daemon is reparented to us (subreaper). */
        t_proc_adopt(&first, pid2);
        port = p2;
    }

    /* Then a plain one. */
    T_SYS(unlink(failfile));
    {
        char *upgrade[] = {(char *)tool, "upgrade", dir, "--timeout", "10", NULL};
        char resp[64];
        struct t_proc second;
        int gen2, pid2, p2;
        long long ino2;

        T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 0);
        T_ASSERT(strstr(out, "generation 3 serves") != NULL);
        for (int i = 0; i < 2; i++) {
            report_recv(rfd, msg, sizeof(msg));
            if (sscanf(msg, "ready %d %d %d %lld", &gen2, &pid2, &p2, &ino2) == 4)
                continue;
            T_ASSERT(strncmp(msg, "superseded 2", 12) == 0);
        }
        T_EQ(gen2, 3);
        T_EQ(p2, port);
        T_EQ(t_proc_wait(&first, T_TIMEOUT), 0);
        t_proc_adopt(&second, pid2);
        T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
        T_STREQ(resp, "helper3 ping");
        T_OK(t_request(AF_INET, port, "quit", resp, sizeof(resp)));
        T_EQ(t_proc_wait(&second, T_TIMEOUT), 0);
    }
    close(rfd);
    return t_done();
}
