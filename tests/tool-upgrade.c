/* SPDX-License-Identifier: MIT */
/*
 * `baton upgrade DIR`: the owner (helper-server) starts its own executable
 * again with its argv; the tool exits 0 once generation 2 serves on the
 * same listener. When that successor fails (helper-server's FAILFILE
 * exists), the tool exits 1 and generation 2 serves on. With nobody
 * serving, it exits 3.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

int main(int argc, char **argv)
{
    char dir[PATH_MAX], empty[PATH_MAX], report[PATH_MAX], failfile[PATH_MAX];
    char msg[256], resp[64], out[1024], *tool, *helper;
    int rfd, gen, pid, port, port2, fd;
    struct t_proc first, second;
    long long ino, ino2;

    t_init(argc, argv);
    if (argc != 3)
        t_fail(__FILE__, __LINE__, "usage: %s BATON-TOOL HELPER", argv[0]);
    tool = argv[1];
    helper = argv[2];
    t_path(dir, "run");
    t_path(empty, "empty");
    t_path(report, "report.sock");
    t_path(failfile, "fail");
    rfd = t_report_bind(report);
    char *upgrade[] = {tool, "upgrade", dir, "--timeout", "10", NULL};
    char *upgrade_empty[] = {tool, "upgrade", empty, "--timeout", "10", NULL};
    char *server[] = {helper, dir, report, "serve", failfile, NULL};

    T_SYS(mkdir(empty, 0700));
    T_EQ(t_run(upgrade_empty, T_TIMEOUT, out, sizeof(out)), 3);

    t_spawn_exec(&first, server, NULL);
    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    T_EQ(sscanf(msg, "ready %d %d %d %lld", &gen, &pid, &port, &ino), 4);
    T_EQ(gen, 1);
    T_EQ(pid, first.pid);

    /* The owner re-executes itself; the tool waits for the outcome. */
    T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 0);
    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    if (strncmp(msg, "superseded", 10) == 0) /* either report may come first */
        t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    else {
        char other[256];
        t_report_recv(rfd, other, sizeof(other), T_TIMEOUT);
        T_ASSERT(strncmp(other, "superseded 1", 12) == 0);
    }
    T_EQ(sscanf(msg, "ready %d %d %d %lld", &gen, &pid, &port2, &ino2), 4);
    T_EQ(gen, 2);
    T_EQ(port2, port);
    T_EQ(ino2, ino);
    T_EQ(t_proc_wait(&first, T_TIMEOUT), 0);
    t_proc_adopt(&second, pid);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "helper2 ping");

    /* A failing successor: exit 1, generation 2 serves on. */
    fd = T_SYS(open(failfile, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    close(fd);
    T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 1);
    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    T_EQ(sscanf(msg, "fail %d", &gen), 1);
    T_EQ(gen, 3);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "helper2 ping");

    T_OK(t_request(AF_INET, port, "quit", resp, sizeof(resp)));
    T_EQ(t_proc_wait(&second, T_TIMEOUT), 0);
    close(rfd);
    return t_done();
}
