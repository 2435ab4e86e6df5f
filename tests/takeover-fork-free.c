/* SPDX-License-Identifier: MIT */
/*
 * A prefork server's workers inherit the handle, and may free it at exit.
 * baton_free() in a forked child releases only the child's copies: it
 * returns at once (it does not wait for a thread that exists only in the
 * parent), and the parent goes on owning the directory: its library
 * thread still answers, control.sock and the owner record stay, and a
 * successor takes over from it as from any owner. Likewise a successor
 * that forks before baton_ready(): its worker's free leaves the lock held
 * and the link to the owner up, and the successor then takes over.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

/* 0 when the child exited 0 within 5 s (its pidfd turns readable), else
 * -ETIMEDOUT (it was killed) or -ECHILD. */
static int reap_bounded(pid_t pid)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0), st = 0, r = -ETIMEDOUT;
    struct pollfd p = {.fd = pfd, .events = POLLIN};

    if (pfd < 0 || poll(&p, 1, 5000) != 1)
        kill(pid, SIGKILL);
    else
        r = 0;
    if (pfd >= 0)
        close(pfd);
    waitpid(pid, &st, 0);
    if (r == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        r = -ECHILD;
    return r;
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    pid_t worker;
    int lfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    worker = T_SYS(fork());
    if (worker == 0) {
        baton_free(b);
        _exit(0);
    }
    t_tell(chan, reap_bounded(worker));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

static int next_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    t_tell(chan, baton_generation(b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

/* A successor that forks a worker before baton_ready(); the worker frees
 * the handle and exits; the successor then readies. */
static int forking_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    pid_t worker;
    int lfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    worker = T_SYS(fork());
    if (worker == 0) {
        baton_free(b);
        _exit(0);
    }
    t_tell(chan, reap_bounded(worker));
    T_HEAR_EQ(chan, T_MSG_GO);
    T_OK(baton_ready(b));
    t_tell(chan, baton_generation(b));
    t_owner_loop(b, lfd, chan, "gen3");
    baton_free(b);
    return 0;
}

/* baton_open() while another successor holds the lock: its result. */
static int busy_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b = NULL;

    (void)arg;
    t_tell(chan, baton_open(&o, &b));
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc owner, next, forking, busy;
    char path[PATH_MAX + 32], resp[64];
    struct stat st;
    int port;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    T_EQ(t_hear(owner.chan, T_TIMEOUT), 0);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    snprintf(path, sizeof(path), "%s/control.sock", dir);
    T_SYS(stat(path, &st));
    snprintf(path, sizeof(path), "%s/owner", dir);
    T_SYS(stat(path, &st));
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen1 ping");
    T_HEAR_EQ(owner.chan, T_MSG_SERVED);

    t_spawn(&next, next_main, NULL);
    T_EQ(t_hear(next.chan, T_TIMEOUT), 2);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen2 ping");
    T_HEAR_EQ(next.chan, T_MSG_SERVED);

    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);

    /* A successor that forked before ready: the lock stays its own. */
    t_spawn(&forking, forking_main, NULL);
    T_EQ(t_hear(forking.chan, T_TIMEOUT), 0);
    t_spawn(&busy, busy_main, NULL);
    T_EQ(t_hear(busy.chan, T_TIMEOUT), -EBUSY);
    T_EQ(t_proc_wait(&busy, T_TIMEOUT), 0);
    t_tell(forking.chan, T_MSG_GO);
    T_EQ(t_hear(forking.chan, T_TIMEOUT), 3);
    T_HEAR_EQ(next.chan, T_MSG_SUPERSEDED);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen3 ping");
    T_HEAR_EQ(forking.chan, T_MSG_SERVED);
    T_EQ(t_proc_wait(&next, T_TIMEOUT), 0);
    t_tell(forking.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&forking, T_TIMEOUT), 0);
    return t_done();
}
