/* SPDX-License-Identifier: MIT */
/*
 * A read-only coordination directory gives a clear error and costs the
 * owner nothing. The directory lives on a tmpfs mounted in a private mount
 * namespace (t_private_mounts(); skipped without root, or in a chroot whose
 * / is not a mount point), which the test remounts read-only and back:
 *
 *  1. a fresh start on a read-only file system: baton_open() fails with
 *     -EROFS, and its message names the path;
 *  2. an owner serves, the file system turns read-only, a successor
 *     fails with -EROFS (it cannot take the lock) and the owner serves on,
 *     its control socket still published;
 *  3. back to read-write, a successor takes over the same listener.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define ADDR "tcp://127.0.0.1:0"

static char mnt[PATH_MAX], dir[PATH_MAX];

static pid_t main_pid;

/* At the test's exit; children share the mount namespace and exit too. */
static void unmount(void)
{
    if (mnt[0] && getpid() == main_pid)
        umount2(mnt, MNT_DETACH);
}

static void remount(bool ro)
{
    T_SYS(mount(NULL, mnt, NULL, MS_REMOUNT | (ro ? MS_RDONLY : 0), "size=1m"));
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
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

/* Tells baton_open()'s result; serves when it succeeded. */
static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b = NULL;
    int lfd, r;

    r = baton_open(&o, &b);
    t_tell(chan, r);
    if (r < 0) {
        t_log("baton_open: %s", baton_last_error(NULL));
        T_ASSERT(strstr(baton_last_error(NULL), dir));
        return 0;
    }
    T_EQ(baton_generation(b), 2);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_ready(b));
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

int main(int argc, char **argv)
{
    struct baton_options o;
    struct t_proc owner, succ;
    char ctl[PATH_MAX + 16];
    struct stat before, after;
    baton *b = NULL;
    int port;

    t_init(argc, argv);
    t_private_mounts();
    t_path(mnt, "mnt");
    T_SYS(mkdir(mnt, 0700));
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0700") < 0) {
        mnt[0] = 0;
        t_skip("mounting a tmpfs: %s", strerror(errno));
    }
    main_pid = getpid();
    atexit(unmount);
    T_LT(strlen(mnt) + 5, sizeof(dir));
    strcat(strcpy(dir, mnt), "/run");

    /* 1. A fresh start on a read-only file system. */
    remount(true);
    o = t_opts(dir, 5000, 0);
    T_EQ(baton_open(&o, &b), -EROFS);
    T_ASSERT(b == NULL);
    t_log("fresh start: %s", baton_last_error(NULL));
    T_ASSERT(strstr(baton_last_error(NULL), dir));

    /* 2. Read-only under a serving owner. */
    remount(false);
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    snprintf(ctl, sizeof(ctl), "%s/control.sock", dir);
    T_SYS(stat(ctl, &before));
    remount(true);
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), -EROFS);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    expect_served(&owner, port, "gen1 ping");
    T_SYS(stat(ctl, &after));
    T_EQ(after.st_ino, before.st_ino);

    /* 3. Writable again: the next successor takes over. */
    remount(false);
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), 0);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&succ, port, "gen2 ping");
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
