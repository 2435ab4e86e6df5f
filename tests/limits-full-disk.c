/* SPDX-License-Identifier: MIT */
/*
 * A full file system under the coordination directory gives a clear error
 * and costs the owner nothing. The directory lives on a tiny tmpfs (16 KiB,
 * 16 inodes) mounted in a private mount namespace (skipped without the
 * privilege, or in a chroot whose / is not a mount point: see
 * t_private_mounts()). An owner serves there; then:
 *
 *  1. no inode and no block left: a successor takes everything over in
 *     baton_open() (no file is created there), but baton_ready() cannot
 *     create its control socket and fails with -ENOSPC, naming the path;
 *     the owner serves on with its control socket still published;
 *  2. inodes free again but no block: the successor's control socket can
 *     be created, its owner record cannot be written. Either baton_ready()
 *     fails (and the owner serves on) or it succeeds and the record names
 *     the new owner: `baton status` and `baton wait` must never report a
 *     process that is no longer the owner;
 *  3. space again: the next successor takes over.
 */
#include <errno.h>
#include <fcntl.h>
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
static int nfill;

static pid_t main_pid;

/* At the test's exit; children share the mount namespace and exit too. */
static void unmount(void)
{
    if (mnt[0] && getpid() == main_pid)
        umount2(mnt, MNT_DETACH);
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

/* Tells baton_ready()'s result; serves when it succeeded. */
static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd, r;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
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

/* Fill the file system's blocks, then its inodes. */
static void fill(bool blocks, bool inodes)
{
    char path[PATH_MAX + 32], buf[4096] = {0};

    if (blocks) {
        snprintf(path, sizeof(path), "%s/fill", mnt);
        int fd = T_SYS(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        while (write(fd, buf, sizeof(buf)) > 0)
            ;
        T_EQ(errno, ENOSPC);
        close(fd);
    }
    while (inodes) {
        snprintf(path, sizeof(path), "%s/i%d", mnt, nfill);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            T_EQ(errno, ENOSPC);
            break;
        }
        close(fd);
        nfill++;
    }
}

static void unfill(bool blocks, bool inodes)
{
    char path[PATH_MAX + 32];

    if (blocks) {
        snprintf(path, sizeof(path), "%s/fill", mnt);
        T_SYS(unlink(path));
    }
    for (; inodes && nfill > 0; nfill--) {
        snprintf(path, sizeof(path), "%s/i%d", mnt, nfill - 1);
        T_SYS(unlink(path));
    }
}

/* The pid in DIR/owner, or -1. */
static int record_pid(void)
{
    char path[PATH_MAX + 16], line[128];
    int pid = -1;
    FILE *f;

    snprintf(path, sizeof(path), "%s/owner", dir);
    f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "pid %d", &pid) == 1)
            break;
    fclose(f);
    return pid;
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ;
    char ctl[PATH_MAX + 16];
    struct stat before, after;
    int port, r, rec, owner_pid, succ_pid;

    t_init(argc, argv);
    t_private_mounts();
    t_path(mnt, "mnt");
    T_SYS(mkdir(mnt, 0700));
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=16k,nr_inodes=16,mode=0700") < 0) {
        mnt[0] = 0;
        t_skip("mounting a tmpfs: %s", strerror(errno));
    }
    main_pid = getpid();
    atexit(unmount);
    T_LT(strlen(mnt) + 5, sizeof(dir));
    strcat(strcpy(dir, mnt), "/run");

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    owner_pid = owner.pid;
    snprintf(ctl, sizeof(ctl), "%s/control.sock", dir);
    T_SYS(stat(ctl, &before));

    /* 1. Nothing left. */
    fill(true, true);
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), -ENOSPC);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    expect_served(&owner, port, "gen1 ping");
    T_SYS(stat(ctl, &after));
    T_EQ(after.st_ino, before.st_ino);
    T_EQ(record_pid(), owner_pid);

    /* 2. Inodes, but no block. */
    unfill(false, true);
    t_spawn(&succ, succ_main, NULL);
    r = (int)t_hear(succ.chan, T_TIMEOUT);
    if (r < 0) {
        t_log("no room for the record: baton_ready() failed with %d", r);
        T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
        expect_served(&owner, port, "gen1 ping");
        T_EQ(record_pid(), owner_pid);
        unfill(true, false);
        t_spawn(&succ, succ_main, NULL);
        T_EQ(t_hear(succ.chan, T_TIMEOUT), 0);
    } else {
        unfill(true, false);
    }
    /* 3. (Or 2 succeeded.) The successor serves; the record says so. */
    succ_pid = succ.pid;
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&succ, port, "gen2 ping");
    rec = record_pid();
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    if (rec == owner_pid)
        t_log("baton_ready() succeeded but the owner record still names the old owner");
    T_EQ(rec, succ_pid);
    return t_done();
}
