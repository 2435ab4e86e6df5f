/* SPDX-License-Identifier: MIT */
/*
 * A deploy that flips a symlink (`app -> releases/N/app`, as Capistrano
 * and many package layouts do) is an upgrade like one that replaces the
 * file: the owner, started as DIR/app, starts its successors from that
 * path, not from the release /proc/self/exe resolves to.
 *
 *  1. Started as `app` (-> rel1/helper); `app` flipped to rel2/helper;
 *     `baton upgrade`: generation 2 runs rel2/helper.
 *  2. The same with a standby parked (BATON_TEST_STANDBY=1, started
 *     through the symlink when rel2 was current): `app` flipped back to
 *     rel1/helper; woken, the standby starts afresh and generation 3 runs
 *     rel1/helper.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char top[PATH_MAX];

static void copy_file(const char *from, const char *to)
{
    char buf[65536];
    ssize_t n;
    int in = T_SYS(open(from, O_RDONLY | O_CLOEXEC));
    int out = T_SYS(open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755));

    while ((n = read(in, buf, sizeof(buf))) > 0)
        T_EQ(t_write_all(out, buf, n), 0);
    T_EQ(n, 0);
    close(in);
    T_SYS(close(out));
}

/* Point link at target atomically (a new symlink renamed over it). */
static void flip(const char *link, const char *target)
{
    char tmp[PATH_MAX + 8];

    snprintf(tmp, sizeof(tmp), "%s.tmp", link);
    unlink(tmp);
    T_SYS(symlink(target, tmp));
    T_SYS(rename(tmp, link));
}

static void expect_exe(int pid, const char *want)
{
    char path[64], target[PATH_MAX];
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/exe", pid);
    n = T_SYS(readlink(path, target, sizeof(target) - 1));
    target[n] = 0;
    T_STREQ(target, want);
}

/* Reports after an upgrade, in any order, until "ready": its pid (and
 * its port in *ret_port). */
static int hear_ready(int rfd, int want_gen, int *ret_port)
{
    char msg[256];
    int gen, pid, port;
    long long ino;

    for (;;) {
        t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
        if (sscanf(msg, "ready %d %d %d %lld", &gen, &pid, &port, &ino) == 4) {
            T_EQ(gen, want_gen);
            *ret_port = port;
            return pid;
        }
        if (strncmp(msg, "superseded", 10) != 0 && strncmp(msg, "main", 4) != 0)
            t_fail(__FILE__, __LINE__, "unexpected report \"%s\"", msg);
    }
}

/* Ask the server on port to quit, and wait for p to exit 0. */
static void quit(int port, struct t_proc *p)
{
    char resp[64];

    T_OK(t_request(AF_INET, port, "quit", resp, sizeof(resp)));
    T_EQ(t_proc_wait(p, T_TIMEOUT), 0);
}

int main(int argc, char **argv)
{
    char dir[PATH_MAX], dir2[PATH_MAX], report[PATH_MAX], app[PATH_MAX], rel1[PATH_MAX + 16],
        rel2[PATH_MAX + 16], out[1024], *tool;
    struct t_proc first, second;
    int rfd, pid, port;
    pid_t s;

    t_init(argc, argv);
    if (argc != 3)
        t_fail(__FILE__, __LINE__, "usage: %s BATON-TOOL HELPER", argv[0]);
    tool = argv[1];
    snprintf(top, sizeof(top), "%s", t_tmpdir());
    t_path(dir, "run");
    t_path(dir2, "run2");
    t_path(report, "report.sock");
    t_path(app, "app");
    snprintf(rel1, sizeof(rel1), "%s/rel1", top);
    T_SYS(mkdir(rel1, 0755));
    strcat(rel1, "/helper");
    snprintf(rel2, sizeof(rel2), "%s/rel2", top);
    T_SYS(mkdir(rel2, 0755));
    strcat(rel2, "/helper");
    copy_file(argv[2], rel1);
    copy_file(argv[2], rel2);
    flip(app, rel1);
    rfd = t_report_bind(report);
    char *upgrade[] = {tool, "upgrade", dir, "--timeout", "10", NULL};
    char *upgrade2[] = {tool, "upgrade", dir2, "--timeout", "10", NULL};
    char *server[] = {app, dir, report, "serve", NULL};
    char *server2[] = {app, dir2, report, "serve", NULL};

    /* 1. Without a standby. */
    t_spawn_exec(&first, server, NULL);
    T_EQ(hear_ready(rfd, 1, &port), first.pid);
    expect_exe(first.pid, rel1);
    flip(app, rel2);
    T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 0);
    pid = hear_ready(rfd, 2, &port);
    expect_exe(pid, rel2);
    T_EQ(t_proc_wait(&first, T_TIMEOUT), 0);
    t_proc_adopt(&second, pid);
    quit(port, &second);

    /* 2. With a standby parked while rel2 is current. */
    T_SYS(setenv("BATON_TEST_STANDBY", "1", 1));
    t_spawn_exec(&first, server2, NULL);
    T_EQ(hear_ready(rfd, 1, &port), first.pid);
    s = t_wait_standby(first.pid);
    expect_exe(s, rel2);
    flip(app, rel1);
    T_EQ(t_run(upgrade2, 15000, out, sizeof(out)), 0);
    T_EQ(hear_ready(rfd, 2, &port), s);
    expect_exe(s, rel1);
    T_EQ(t_proc_wait(&first, T_TIMEOUT), 0);
    t_proc_adopt(&second, s);
    quit(port, &second);
    close(rfd);
    return t_done();
}
