/* SPDX-License-Identifier: MIT */
/*
 * baton_open()'s error paths return the exact -errno, leave *ret untouched
 * and keep no fd open: bad options, a directory that cannot be one, a lock
 * held by someone else, and BATON_NO_INHERIT while an owner serves.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* A pointer that baton_open() must not overwrite on failure. */
static baton *const untouched = (baton *)&untouched;

static int open_err(const struct baton_options *o)
{
    baton *b = untouched;
    int r = baton_open(o, &b);

    if (r == 0) {
        baton_free(b);
        return 0;
    }
    T_ASSERT(b == untouched);
    return r;
}

int main(int argc, char **argv)
{
    char dir[PATH_MAX], file[PATH_MAX], missing[PATH_MAX], lock[PATH_MAX];
    static char longdir[5000];
    struct baton_options o;
    baton *b = untouched, *b2;
    int fd;

    t_init(argc, argv);
    t_path(dir, "run");

    /* NULL arguments. */
    o = t_opts(dir, 0, 0);
    T_EQ(baton_open(NULL, &b), -EINVAL);
    T_ASSERT(b == untouched);
    T_EQ(baton_open(&o, NULL), -EINVAL);
    o.dir = NULL;
    T_EQ(open_err(&o), -EINVAL);
    o.dir = "";
    T_EQ(open_err(&o), -EINVAL);

    /* Unknown flag bits, each alone and all together. */
    const unsigned known = BATON_NO_THREAD | BATON_WAIT_LOCK | BATON_NO_INHERIT | BATON_TAKE_CONNS |
                           BATON_FDSTORE | BATON_STANDBY;
    for (unsigned bit = 0; bit < 32; bit++) {
        if (known & (1u << bit))
            continue;
        o = t_opts(dir, 0, 1u << bit);
        T_EQ(open_err(&o), -EINVAL);
    }
    o = t_opts(dir, 0, ~known);
    T_EQ(open_err(&o), -EINVAL);

    /* Reserved room not zero: a program built against a newer header. */
    for (size_t i = 0; i < sizeof(o.resv) / sizeof(o.resv[0]); i++) {
        o = t_opts(dir, 0, 0);
        o.resv[i] = 1;
        T_EQ(open_err(&o), -EINVAL);
        T_ASSERT(strstr(baton_last_error(NULL), "reserved option field") != NULL);
    }

    /* A negative timeout. */
    o = t_opts(dir, -1, 0);
    T_EQ(open_err(&o), -EINVAL);

    /* Probation, cap, drain bound and grace out of range: named, with the
     * range, in the message. */
    {
        static const struct {
            int field, value;
            const char *name;
        } bad[] = {
            {0, -1, "probation_ms"},
            {0, BATON_PROBATION_MAX_MS + 1, "probation_ms"},
            {1, -1, "max_generations"},
            {1, 1, "max_generations"},
            {1, BATON_MAX_GENERATIONS_MAX + 1, "max_generations"},
            {2, -1, "drain_timeout_ms"},
            {2, BATON_PROBATION_MAX_MS + 1, "drain_timeout_ms"},
            {3, -1, "kill_grace_ms"},
            {3, 60001, "kill_grace_ms"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            o = t_opts(dir, 0, 0);
            *(bad[i].field == 0   ? &o.probation_ms
              : bad[i].field == 1 ? &o.max_generations
              : bad[i].field == 2 ? &o.drain_timeout_ms
                                  : &o.kill_grace_ms) = bad[i].value;
            T_EQ(open_err(&o), -EINVAL);
            if (!strstr(baton_last_error(NULL), bad[i].name) ||
                !strstr(baton_last_error(NULL), "out of range"))
                t_fail(__FILE__, __LINE__, "%s = %d: %s", bad[i].name, bad[i].value,
                       baton_last_error(NULL));
        }
    }

    /* A directory path longer than PATH_MAX. */
    memset(longdir, 'd', sizeof(longdir) - 1);
    longdir[0] = '/';
    o = t_opts(longdir, 0, 0);
    T_EQ(open_err(&o), -ENAMETOOLONG);

    /* A directory whose parent does not exist: mkdir's error. */
    t_path(missing, "no/such/dir");
    o = t_opts(missing, 0, 0);
    T_EQ(open_err(&o), -ENOENT);

    /* A regular file where the directory should be. */
    t_path(file, "file");
    fd = T_SYS(open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    close(fd);
    o = t_opts(file, 0, 0);
    T_EQ(open_err(&o), -ENOTDIR);

    /* The lock held by another open file description: -EBUSY at once, and
     * with BATON_WAIT_LOCK after ready_timeout_ms. The directory is created
     * 0700 by a first open. */
    o = t_opts(dir, 0, 0);
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 1);
    T_EQ(baton_inherited(b), 0);
    baton_free(b);
    struct stat st;
    T_SYS(stat(dir, &st));
    T_EQ(st.st_mode & 07777, 0700);
    t_path(lock, "run/lock");
    fd = T_SYS(open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    T_SYS(flock(fd, LOCK_EX | LOCK_NB));
    o = t_opts(dir, 200, 0);
    T_EQ(open_err(&o), -EBUSY);
    o = t_opts(dir, 200, BATON_WAIT_LOCK);
    T_EQ(open_err(&o), -EBUSY);
    close(fd);

    /* BATON_NO_INHERIT while an owner serves: -EEXIST, the owner unharmed. */
    o = t_opts(dir, 2000, 0);
    T_OK(baton_open(&o, &b));
    T_OK(baton_ready(b));
    o.flags = BATON_NO_INHERIT;
    T_EQ(open_err(&o), -EEXIST);
    T_EQ(baton_wait_upgrade(b, 0), 0);
    /* Without the flag, the same process can take over from itself. */
    o.flags = 0;
    T_OK(baton_open(&o, &b2));
    T_EQ(baton_generation(b2), 2);
    T_EQ(baton_inherited(b2), 1);
    T_OK(baton_ready(b2));
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    baton_free(b);
    baton_free(b2);

    /* With nobody serving any more, NO_INHERIT is a fresh start. */
    o.flags = BATON_NO_INHERIT;
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 1);
    baton_free(b);

    baton_free(NULL);
    return t_done();
}
