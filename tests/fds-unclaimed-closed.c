/* SPDX-License-Identifier: MIT */
/*
 * An inherited fd that the successor does not claim is closed at
 * baton_ready(); a claimed one stays open (close-on-exec). The owner
 * passes a listener and two pipes; the successor claims one pipe only.
 * End to end: once the owner has freed its handle, the unclaimed pipe's
 * read end is closed everywhere, so the owner's write to it gets EPIPE,
 * while the claimed pipe still carries a byte to the successor.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

/* The owner passes the read ends of two pipes and keeps their write ends;
 * fds are recognised across processes by their inode. */
static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    int keep[2], drop[2], lfd;
    baton *b;

    T_SYS(pipe2(keep, O_CLOEXEC));
    T_SYS(pipe2(drop, O_CLOEXEC));
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_add_fd(b, "keep", keep[0]));
    T_OK(baton_add_fd(b, "drop", drop[0]));
    close(keep[0]);
    close(drop[0]);
    T_OK(baton_ready(b));
    t_tell(chan, t_ino(lfd));
    t_tell(chan, t_ino(keep[1]));
    t_tell(chan, t_ino(drop[1]));
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    baton_free(b);
    /* Now only the successor can hold the read ends. */
    T_HEAR_EQ(chan, T_MSG_GO);
    signal(SIGPIPE, SIG_IGN);
    T_EQ(write(keep[1], "k", 1), 1);
    T_EQ(write(drop[1], "d", 1), -1);
    T_EQ(errno, EPIPE);
    close(keep[1]);
    close(drop[1]);
    t_tell(chan, T_MSG_DONE);
    return 0;
}

static int next_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;

    /* Forked before the test process had threads; waits for its turn. */
    T_HEAR_EQ(chan, T_MSG_GO);
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 3);
    T_OK(baton_fd(b, "keep"));
    T_EQ(baton_fd(b, "drop"), -ENOENT);
    T_EQ(baton_fd(b, "web"), -ENOENT);
    T_OK(baton_ready(b));
    t_tell(chan, T_MSG_DONE);
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct baton_options o;
    struct t_proc owner, next;
    long long web, keep, drop;
    int kfd, found = -1;
    char c;
    baton *b;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    t_spawn(&next, next_main, NULL);
    web = t_hear(owner.chan, T_TIMEOUT);
    keep = t_hear(owner.chan, T_TIMEOUT);
    drop = t_hear(owner.chan, T_TIMEOUT);

    o = t_opts(dir, 5000, 0);
    T_OK(baton_open(&o, &b));
    T_EQ(t_fds_with_ino(web, NULL), 1);
    T_EQ(t_fds_with_ino(keep, NULL), 1);
    T_EQ(t_fds_with_ino(drop, &found), 1);
    T_EQ(fcntl(found, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    kfd = T_OK(baton_fd(b, "keep"));
    T_EQ(t_ino(kfd), keep);

    T_OK(baton_ready(b));
    T_EQ(t_fds_with_ino(web, NULL), 0);
    T_EQ(t_fds_with_ino(drop, NULL), 0);
    T_EQ(t_fds_with_ino(keep, NULL), 1);
    T_EQ(fcntl(kfd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    /* Unclaimed names are gone for good. */
    T_EQ(baton_fd(b, "drop"), -ENOENT);
    T_EQ(baton_fd(b, "web"), -ENOENT);

    t_tell(owner.chan, T_MSG_GO);
    T_HEAR_EQ(owner.chan, T_MSG_DONE);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    T_OK(t_read_full(kfd, &c, 1, T_TIMEOUT));
    T_EQ(c, 'k');

    /* What we pass on is only what we claimed: the next successor takes
     * over from us and gets "keep" and nothing else. */
    t_tell(next.chan, T_MSG_GO);
    T_HEAR_EQ(next.chan, T_MSG_DONE);
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    T_EQ(t_proc_wait(&next, T_TIMEOUT), 0);
    baton_free(b);
    return t_done();
}
