/* SPDX-License-Identifier: MIT */
/*
 * The program's pid file (`baton run --pidfile`, BATON_RUN_PIDFILE): a new
 * copy does not see its predecessor's at start-up, the file names the
 * serving copy once it serves, and only that copy may remove it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

/* The pid file (BATON_RUN_PIDFILE) names the serving copy: only that copy
 * may remove it (when it stops with no successor). A superseded copy
 * removing it at exit (Apache does) would remove its successor's, and a
 * copy that failed to take over would remove its predecessor's. */
bool baton_run__is_pidfile(const char *path)
{
    const char *base = strrchr(S.pidfile, '/');
    const char *pbase = strrchr(path, '/');
    struct stat a, b;
    bool hit;

    if (!S.active || !S.pidfile[0] || strcmp(base + 1, pbase ? pbase + 1 : path) != 0)
        return false;
    hit = strcmp(path, S.pidfile) == 0 || (stat(path, &a) == 0 && stat(S.pidfile, &b) == 0 &&
                                           a.st_dev == b.st_dev && a.st_ino == b.st_ino);
    if (!hit || (is_holder() && S.ready && !S.retired))
        return false;
    say("kept %s: the pid file names the serving copy", path);
    return true;
}

/* Replace the pid file's content at once (a reader sees the old or the new
 * one, never a partial one). 0, or -1 with errno. */
static int pidfile_put(const char *content, size_t len)
{
    char tmp[PATH_MAX + 32];
    int fd, r, e;

    if (snprintf(tmp, sizeof(tmp), "%s.baton-%d", S.pidfile, (int)getpid()) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -1;
    errno = EIO; /* a short write sets none */
    r = write(fd, content, len) == (ssize_t)len ? 0 : -1;
    e = errno;
    if (REAL(close)(fd) < 0 && r == 0)
        r = -1, e = errno;
    if (r == 0 && rename(tmp, S.pidfile) < 0)
        r = -1, e = errno;
    if (r < 0) {
        REAL(unlink)(tmp);
        errno = e;
    }
    return r;
}

/* At a takeover, before the program runs: a program that checks its pid
 * file at start-up ("httpd (pid N) already running") must not find its
 * predecessor's. The file is moved out of the way, and put back if this
 * copy does not take over (pidfile_restore). */
void baton_run__pidfile_hide(void)
{
    int fd = open(S.pidfile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n;

    if (fd < 0)
        return;
    n = read(fd, S.pid_saved, sizeof(S.pid_saved) - 1);
    REAL(close)(fd);
    S.pid_saved[n > 0 ? n : 0] = 0;
    if (REAL(unlink)(S.pidfile) < 0) {
        say("pid file %s: %m", S.pidfile);
        return;
    }
    S.pid_hidden = true;
    say("pid file %s moved away while this copy starts", S.pidfile);
}

/* This copy serves: the pid file names it. */
void baton_run__pidfile_claim(void)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());

    if (!S.pidfile[0])
        return;
    if (pidfile_put(buf, (size_t)n) < 0)
        say("pid file %s: %m", S.pidfile);
    S.pid_hidden = false;
}

/* This copy did not take over: the predecessor's pid file comes back. */
void baton_run__pidfile_restore(void)
{
    if (!S.pid_hidden)
        return;
    if (pidfile_put(S.pid_saved, strlen(S.pid_saved)) < 0)
        say("pid file %s: cannot put it back: %m", S.pidfile);
    S.pid_hidden = false;
}

/* BATON_RUN_PIDFILE, made absolute against our working directory. */
void baton_run__pidfile_name(void)
{
    const char *v = getenv("BATON_RUN_PIDFILE");
    char cwd[PATH_MAX];

    if (!v || !*v)
        return;
    if (v[0] == '/')
        snprintf(S.pidfile, sizeof(S.pidfile), "%s", v);
    else if (getcwd(cwd, sizeof(cwd)) &&
             snprintf(S.pidfile, sizeof(S.pidfile), "%s/%s", cwd, v) >= (int)sizeof(S.pidfile))
        S.pidfile[0] = 0;
}
