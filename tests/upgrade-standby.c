/* SPDX-License-Identifier: MIT */
/*
 * BATON_STANDBY: an owner keeps a successor parked before its main(), and
 * `baton upgrade` wakes it instead of starting one. helper-server, run from
 * a copy of its binary that the test can replace, with BATON_TEST_STANDBY=1:
 *
 *  0. BATON_STANDBY_FD in the environment of a program no owner started:
 *     it exits (127) before main() rather than serve unwoken.
 *  1. Once generation 1 is ready, a child of it is parked in libbaton's
 *     constructor (blocked in recvfrom(2), BATON_STANDBY_FD in its
 *     environment, no BATON_JOB), and its main() has not run; `baton
 *     status --json` names it. SIGHUP, SIGTERM and SIGUSR1 (`killall
 *     -HUP` meant for the owner) leave it parked.
 *  2. `baton upgrade` exits 0 and generation 2 is that very process: its
 *     main() ran once, after the trigger, with BATON_JOB set and
 *     BATON_STANDBY_FD gone. The listener is the same socket.
 *  3. A standby that died before it was needed (SIGKILL): the next upgrade
 *     starts a successor the usual way and succeeds; and left alone, the
 *     owner parks another a second later.
 *  4. The binary replaced at its path while the standby waits (the old
 *     one renamed to a backup): woken, it starts afresh (same pid, exec)
 *     and runs the new file at the path, not the replaced one.
 *  5. A copy started by hand takes over: the old owner's standby ends
 *     without ever running main().
 *  6. The owner killed outright: its standby ends too, and nobody serves.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX], report[PATH_MAX], exe[PATH_MAX];
static int rfd;

/* Does pid's environment hold a variable starting with prefix? */
static bool environ_has(pid_t pid, const char *prefix)
{
    char path[64], buf[65536];
    ssize_t n, len = 0;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    fd = T_SYS(open(path, O_RDONLY | O_CLOEXEC));
    while (len < (ssize_t)sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += n;
    close(fd);
    buf[len] = 0;
    for (ssize_t i = 0; i < len; i += strlen(buf + i) + 1)
        if (strncmp(buf + i, prefix, strlen(prefix)) == 0)
            return true;
    return false;
}

/* The fds pid has open, ascending, space-separated. */
static const char *fd_list(pid_t pid)
{
    static char list[256];
    int fds[64], n = 0;
    char path[64];
    struct dirent *e;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    d = opendir(path);
    T_ASSERT(d != NULL);
    while ((e = readdir(d)) && n < 64)
        if (e->d_name[0] != '.')
            fds[n++] = atoi(e->d_name);
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
            int t = fds[j];
            fds[j] = fds[j - 1];
            fds[j - 1] = t;
        }
    list[0] = 0;
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%d", i ? " " : "", fds[i]);
    return list;
}

/* The process behind pidfd exits within the timeout. */
static void expect_exit(int pidfd, pid_t pid, const char *what)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};

    if (poll(&p, 1, T_TIMEOUT) != 1)
        t_fail(__FILE__, __LINE__, "%s (pid %d) still runs", what, (int)pid);
    close(pidfd);
}

/* The next report, which must be "main PID"; its pid. */
static pid_t hear_main(void)
{
    char msg[256];
    int pid;

    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    if (sscanf(msg, "main %d", &pid) != 1)
        t_fail(__FILE__, __LINE__, "expected \"main PID\", got \"%s\"", msg);
    return pid;
}

/* Reports after an upgrade: "main PID" (unless started by hand: already
 * heard), "ready GEN PID PORT INO" and the old one's "superseded", the
 * last two in either order. Returns the new pid; checks the generation,
 * the port and the listener's inode. */
static pid_t hear_takeover(int want_gen, int want_port, long long want_ino, int old_gen)
{
    char msg[256];
    int gen, pid, port, got_ready = 0, got_super = 0, sgen;
    long long ino;

    while (!got_ready || !got_super) {
        t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
        if (sscanf(msg, "ready %d %d %d %lld", &gen, &pid, &port, &ino) == 4) {
            T_EQ(gen, want_gen);
            T_EQ(port, want_port);
            T_EQ(ino, want_ino);
            got_ready = pid;
        } else if (sscanf(msg, "superseded %d", &sgen) == 1) {
            T_EQ(sgen, old_gen);
            got_super = 1;
        } else {
            t_fail(__FILE__, __LINE__, "unexpected report \"%s\"", msg);
        }
    }
    return got_ready;
}

static void whoami(int port, int gen, pid_t pid, int exe_replaced)
{
    char resp[256], want[256];

    T_OK(t_request(AF_INET, port, "whoami", resp, sizeof(resp)));
    snprintf(want, sizeof(want), "helper%d whoami pid=%d job=1 standby=0 exe=%d", gen, (int)pid,
             exe_replaced);
    T_STREQ(resp, want);
}

/* Copy the file at from to to (mode 0755) under a temporary name, then
 * rename it into place: as a package manager installs a binary. */
static void install(const char *from, const char *to)
{
    char tmp[PATH_MAX + 8], buf[65536];
    ssize_t n;
    int in, out;

    snprintf(tmp, sizeof(tmp), "%s.new", to);
    in = T_SYS(open(from, O_RDONLY | O_CLOEXEC));
    out = T_SYS(open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755));
    while ((n = read(in, buf, sizeof(buf))) > 0)
        T_EQ(t_write_all(out, buf, n), 0);
    T_EQ(n, 0);
    close(in);
    T_SYS(close(out));
    T_SYS(rename(tmp, to));
}

int main(int argc, char **argv)
{
    char msg[256], out[1024], *tool;
    struct t_proc first, copy;
    int gen, port, pid, pidfd, opidfd, fd;
    char backup[PATH_MAX + 8];
    char linger[PATH_MAX + 8];
    pid_t owner, s, s2;
    long long ino;

    t_init(argc, argv);
    if (argc != 3)
        t_fail(__FILE__, __LINE__, "usage: %s BATON-TOOL HELPER", argv[0]);
    tool = argv[1];
    t_path(dir, "run");
    t_path(report, "report.sock");
    t_path(exe, "helper");
    install(argv[2], exe);
    rfd = t_report_bind(report);
    T_SYS(setenv("BATON_TEST_STANDBY", "1", 1));
    char *upgrade[] = {tool, "upgrade", dir, "--timeout", "10", NULL};
    char *server[] = {exe, dir, report, "serve", NULL};

    /* 0. BATON_STANDBY_FD that no owner set (here fd 0, not a socket of
     * a standby): the program exits before main() rather than serve
     * unwoken. */
    T_SYS(setenv("BATON_STANDBY_FD", "0:1", 1));
    T_EQ(t_run(server, T_TIMEOUT, out, sizeof(out)), 127);
    T_SYS(unsetenv("BATON_STANDBY_FD"));

    /* 1. Generation 1 and its standby, parked before main(). */
    t_spawn_exec(&first, server, NULL);
    T_EQ(hear_main(), first.pid);
    t_report_recv(rfd, msg, sizeof(msg), T_TIMEOUT);
    T_EQ(sscanf(msg, "ready %d %d %d %lld", &gen, &pid, &port, &ino), 4);
    T_EQ(gen, 1);
    T_EQ(pid, first.pid);
    s = t_wait_standby(first.pid);
    T_ASSERT(environ_has(s, "BATON_STANDBY_FD="));
    T_ASSERT(!environ_has(s, "BATON_JOB="));
    T_STREQ(fd_list(s), "0 1 2 3"); /* not the owner's fd without O_CLOEXEC */
    t_log("generation 1 is pid %d, its standby pid %d", (int)first.pid, (int)s);
    {
        char *status[] = {tool, "status", "--json", dir, NULL}, want[64];
        T_EQ(t_run(status, T_TIMEOUT, out, sizeof(out)), 0);
        snprintf(want, sizeof(want), "\"standby_pid\":%d", (int)s);
        if (!strstr(out, want))
            t_fail(__FILE__, __LINE__, "baton status --json lacks %s: %s", want, out);
    }

    /* Signals meant for the owner that reach it too (killall, pkill and
     * systemctl kill signal by name or by unit) do not end it. */
    T_SYS(kill(s, SIGHUP));
    T_SYS(kill(s, SIGTERM));
    T_SYS(kill(s, SIGUSR1));

    /* 2. The upgrade wakes it: the standby is generation 2. */
    T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 0);
    T_EQ(hear_main(), s);
    T_EQ(hear_takeover(2, port, ino, 1), s);
    T_EQ(t_proc_wait(&first, T_TIMEOUT), 0);
    owner = s;
    whoami(port, 2, owner, 0);

    /* 3. Its own standby killed before it is needed: the next upgrade
     * starts a successor the usual way. */
    s2 = t_wait_standby(owner);
    pidfd = T_SYS((int)syscall(SYS_pidfd_open, s2, 0));
    T_SYS(kill(s2, SIGKILL));
    expect_exit(pidfd, s2, "the killed standby");
    T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 0);
    pid = hear_main();
    T_NE(pid, s2);
    T_EQ(hear_takeover(3, port, ino, 2), pid);
    owner = pid;
    whoami(port, 3, owner, 0);

    /* 3b. Killed, and left alone: another is parked in its place. */
    s2 = t_wait_standby(owner);
    pidfd = T_SYS((int)syscall(SYS_pidfd_open, s2, 0));
    T_SYS(kill(s2, SIGKILL));
    expect_exit(pidfd, s2, "the killed standby");
    s = t_wait_standby(owner);
    T_NE(s, s2);

    /* 4. A new binary installed while the standby waits, the old one kept
     * as a backup under another name: woken, the same process execs the
     * new file at the path it was started as, not the backup. */
    s = t_wait_standby(owner);
    snprintf(backup, sizeof(backup), "%s.old", exe);
    T_SYS(rename(exe, backup));
    install(argv[2], exe);
    T_EQ(t_run(upgrade, 15000, out, sizeof(out)), 0);
    T_EQ(hear_main(), s);
    T_EQ(hear_takeover(4, port, ino, 3), s);
    owner = s;
    whoami(port, 4, owner, 0);
    {
        char path[64], target[PATH_MAX];
        ssize_t n;
        snprintf(path, sizeof(path), "/proc/%d/exe", (int)owner);
        n = T_SYS(readlink(path, target, sizeof(target) - 1));
        target[n] = 0;
        T_STREQ(target, exe);
    }

    /* 5. A copy started by hand takes over: generation 4's standby ends
     * before its main(), while generation 4 lives on (it lingers, as a
     * draining server would: the step-down ends the standby, not exit). */
    s = t_wait_standby(owner);
    pidfd = T_SYS((int)syscall(SYS_pidfd_open, s, 0));
    opidfd = T_SYS((int)syscall(SYS_pidfd_open, owner, 0));
    snprintf(linger, sizeof(linger), "%s.linger", report);
    fd = T_SYS(open(linger, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    T_SYS(close(fd));
    t_spawn_exec(&copy, server, NULL);
    T_EQ(hear_main(), copy.pid);
    T_EQ(hear_takeover(5, port, ino, 4), copy.pid);
    expect_exit(pidfd, s, "the stepped-down owner's standby");
    {
        struct pollfd p = {.fd = opidfd, .events = POLLIN};
        T_EQ(poll(&p, 1, 0), 0); /* generation 4 still runs */
    }
    T_SYS(kill(owner, SIGTERM));
    expect_exit(opidfd, owner, "generation 4");

    /* 6. The owner killed outright: its standby goes with it. Meanwhile
     * not one report came from a standby's main(). */
    s = t_wait_standby(copy.pid);
    pidfd = T_SYS((int)syscall(SYS_pidfd_open, s, 0));
    t_proc_kill(&copy);
    expect_exit(pidfd, s, "the killed owner's standby");
    T_EQ(t_request(AF_INET, port, "ping", msg, sizeof(msg)), -ECONNREFUSED);
    {
        struct pollfd p = {.fd = rfd, .events = POLLIN};
        T_EQ(poll(&p, 1, 0), 0);
    }
    close(rfd);
    return t_done();
}
