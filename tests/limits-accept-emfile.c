/* SPDX-License-Identifier: MIT */
/*
 * An owner at its fd limit must not spin on its control socket. accept()
 * then fails with EMFILE and leaves the connection queued; a level-
 * triggered listener woke the library's thread again at once, for ever (an
 * outside review: 100 % CPU after a single `baton status`).
 *
 * The owner fills its fd table, then four control clients connect. Over a
 * one-second window (the window is what is measured, not a wait for an
 * event) the owner must use well under a core's worth of CPU, and it must
 * have logged the episode a bounded number of times. Once it frees its
 * fds, the connections waiting in the backlog are served: a successor
 * takes over.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define ADDR "tcp://127.0.0.1:0"

enum { MSG_LOGS = 2001 };

static char dir[PATH_MAX];
static atomic_int accept_logs;

static void count_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    (void)level;
    if (strstr(msg, "accept"))
        atomic_fetch_add(&accept_logs, 1);
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    struct rlimit rl = {64, 64};
    int fill[64], n = 0, lfd;
    baton *b;

    (void)arg;
    o.log = count_log;
    T_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            T_EQ(errno, EMFILE);
            break;
        }
        T_LT(n, 64);
        fill[n++] = fd;
    }
    t_tell(chan, T_MSG_DONE);
    T_EQ(t_hear(chan, T_TIMEOUT * 3), MSG_LOGS);
    t_tell(chan, atomic_load(&accept_logs));
    T_HEAR_EQ(chan, T_MSG_GO);
    baton__close_fds(fill, n);
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    t_tell(chan, baton_generation(b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

/* utime + stime of pid, in clock ticks (all its threads). */
static long long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut, st;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = T_SYS(open(path, O_RDONLY | O_CLOEXEC));
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    T_GT(n, 0);
    buf[n] = 0;
    p = strrchr(buf, ')');
    T_ASSERT(p != NULL);
    /* After ")": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime. */
    T_EQ(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st), 2);
    return (long long)(ut + st);
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ;
    int port, clients[4];
    long long before, used, hz = sysconf(_SC_CLK_TCK);
    struct timespec window = {1, 0};
    char resp[64];

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    T_HEAR_EQ(owner.chan, T_MSG_DONE);

    for (int i = 0; i < 4; i++)
        clients[i] = T_OK(t_ctl_connect(dir));
    before = cpu_ticks(owner.pid);
    nanosleep(&window, NULL);
    used = cpu_ticks(owner.pid) - before;
    t_log("owner at its fd limit: %lld ms of CPU in 1 s", used * 1000 / hz);
    /* A spinning thread takes a whole core (or, on a busy machine, half of
     * one); a paused one wakes every second at most. */
    T_LT(used * 1000 / hz, 250);
    t_tell(owner.chan, MSG_LOGS);
    T_LE(t_hear(owner.chan, T_TIMEOUT), 2);
    baton__close_fds(clients, 4);

    /* Fds free again: the next successor is answered. */
    t_tell(owner.chan, T_MSG_GO);
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), 2);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen2 ping");
    T_HEAR_EQ(succ.chan, T_MSG_SERVED);
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
