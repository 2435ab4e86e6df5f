/* SPDX-License-Identifier: MIT */
/*
 * baton_open() refuses a coordination directory owned by another user
 * with -EPERM (run as root: the directory is chowned to nobody, 65534),
 * even when its mode is private; and it refuses it as that other user
 * too when the directory belongs to root.
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define NOBODY 65534

static char dir[PATH_MAX], dir2[PATH_MAX];

static int as_nobody(int chan, void *arg)
{
    struct baton_options o = t_opts(dir2, 2000, 0);
    baton *b = NULL;
    int fds = t_fd_count(), r;

    T_SYS(setgroups(0, NULL));
    T_SYS(setgid(NOBODY));
    T_SYS(setuid(NOBODY));
    r = baton_open(&o, &b);
    T_ASSERT(b == NULL);
    T_EQ(t_fd_count(), fds);
    t_tell(chan, r);
    return 0;
}

int main(int argc, char **argv)
{
    struct baton_options o;
    struct t_proc p;
    baton *b = NULL;
    int fds;

    t_init(argc, argv);
    if (geteuid() != 0)
        t_skip("needs root to chown a directory to another user");
    t_path(dir, "run");
    T_SYS(mkdir(dir, 0700));
    T_SYS(chown(dir, NOBODY, NOBODY));

    o = t_opts(dir, 2000, 0);
    fds = t_fd_count();
    T_EQ(baton_open(&o, &b), -EPERM);
    T_ASSERT(b == NULL);
    T_EQ(t_fd_count(), fds);
    T_ASSERT(baton_last_error(NULL) != NULL);

    /* The other way round: root's private directory, opened by nobody. The
     * path must be searchable for the check to be reached at all. */
    T_SYS(chmod(t_tmpdir(), 0711));
    t_path(dir2, "run2");
    T_SYS(mkdir(dir2, 0755));
    t_spawn(&p, as_nobody, NULL);
    T_EQ(t_hear(p.chan, T_TIMEOUT), -EPERM);
    T_EQ(t_proc_wait(&p, T_TIMEOUT), 0);
    return t_done();
}
