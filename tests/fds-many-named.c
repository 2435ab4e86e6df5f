/* SPDX-License-Identifier: MIT */
/*
 * 600 named fds (more than two batches of 253) added with baton_add_fd()
 * all arrive, each under its name, close-on-exec, and each refers to the
 * same file as the owner's (st_dev/st_ino), with the same file offset
 * (they are the same open file descriptions).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define NAMED 600

static char dir[PATH_MAX];

static void file_path(char *buf, int i)
{
    char leaf[32];

    snprintf(leaf, sizeof(leaf), "files/%03d", i);
    t_path(buf, leaf);
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    char path[PATH_MAX], name[32];
    baton *b;

    T_OK(baton_open(&o, &b));
    for (int i = 0; i < NAMED; i++) {
        file_path(path, i);
        int fd = T_SYS(open(path, O_RDWR | O_CLOEXEC));
        /* A distinct offset per file: the successor sees it too. */
        T_SYS(lseek(fd, i, SEEK_SET));
        snprintf(name, sizeof(name), "file-%03d", i);
        T_OK(baton_add_fd(b, name, fd));
        close(fd);
    }
    T_OK(baton_ready(b));
    t_tell(chan, T_MSG_DONE);
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    t_tell(chan, T_MSG_SUPERSEDED);
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct baton_options o;
    char path[PATH_MAX], name[32];
    struct t_proc owner;
    baton *b;

    t_init(argc, argv);
    t_path(dir, "run");
    t_path(path, "files");
    T_SYS(mkdir(path, 0700));
    for (int i = 0; i < NAMED; i++) {
        file_path(path, i);
        int fd = T_SYS(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        T_OK(t_write_all(fd, path, strlen(path)));
        close(fd);
    }

    t_spawn(&owner, owner_main, NULL);
    T_HEAR_EQ(owner.chan, T_MSG_DONE);

    o = t_opts(dir, 5000, 0);
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    for (int i = 0; i < NAMED; i++) {
        struct stat a, f;
        int fd;
        snprintf(name, sizeof(name), "file-%03d", i);
        fd = baton_fd(b, name);
        if (fd < 0)
            t_fail(__FILE__, __LINE__, "baton_fd(%s): %d %s", name, fd, baton_last_error(b));
        T_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        file_path(path, i);
        T_SYS(fstat(fd, &a));
        T_SYS(stat(path, &f));
        T_EQ(a.st_dev, f.st_dev);
        T_EQ(a.st_ino, f.st_ino);
        T_EQ(lseek(fd, 0, SEEK_CUR), i);
        /* Asking again gives the same fd. */
        T_EQ(baton_fd(b, name), fd);
    }
    T_EQ(baton_fd(b, "file-600"), -ENOENT);
    T_OK(baton_ready(b));
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    baton_free(b);
    return t_done();
}
