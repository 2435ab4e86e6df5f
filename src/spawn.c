/* SPDX-License-Identifier: MIT */
/* Starting ourselves again: our argv as the kernel gave it, posix_spawn. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

/*
 * The path successors are started from: the one we were started as
 * (AT_EXECFN, made absolute against the working directory now), so that
 * a deploy that flips a symlink (`current -> releases/N`) is followed as
 * one that replaces the file is; but only if it still names the file we
 * run. Else, the path /proc/self/exe names.
 */
static void exe_path(baton *b)
{
    static const char deleted[] = " (deleted)";
    const char *fn = (const char *)getauxval(AT_EXECFN);
    ssize_t n = readlink("/proc/self/exe", b->exe, sizeof(b->exe) - 1);
    size_t dl = sizeof(deleted) - 1;
    char path[sizeof(b->exe)], cwd[PATH_MAX];
    struct stat at, self;
    int len = -1;

    b->exe[n > 0 ? n : 0] = 0;
    n = strlen(b->exe);
    if ((size_t)n > dl && strcmp(b->exe + n - dl, deleted) == 0)
        b->exe[n - dl] = 0;
    /* Not an fd's name (fexecve()): it is gone once we run. */
    if (!fn || !fn[0] || strncmp(fn, "/dev/fd/", 8) == 0 || strncmp(fn, "/proc/", 6) == 0)
        return;
    if (fn[0] == '/')
        len = snprintf(path, sizeof(path), "%s", fn);
    else if (getcwd(cwd, sizeof(cwd)))
        len = snprintf(path, sizeof(path), "%s/%s", cwd, fn);
    if (len > 0 && (size_t)len < sizeof(path) && stat(path, &at) == 0 &&
        stat("/proc/self/exe", &self) == 0 && at.st_dev == self.st_dev && at.st_ino == self.st_ino)
        memcpy(b->exe, path, (size_t)len + 1);
}

/* Read our argv from /proc/self/cmdline at open time, before the
 * application can have changed it (some servers overwrite argv[0]). */
int baton__argv_load(baton *b)
{
    char *buf = NULL, **argv;
    size_t len = 0, cap = 0, n = 0;
    int fd;

    fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* no /proc: baton_upgrade(NULL) will fail later */
    for (;;) {
        ssize_t r;
        if (len == cap) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 4096);
            if (!nb) {
                free(buf);
                close(fd);
                return -ENOMEM;
            }
            buf = nb;
        }
        r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += r;
    }
    close(fd);
    exe_path(b);
    for (size_t i = 0; i < len; i++)
        n += buf[i] == 0;
    argv = calloc(n + 1, sizeof(*argv));
    if (!argv) {
        free(buf);
        return -ENOMEM;
    }
    for (size_t i = 0, k = 0; i < len && k < n; k++) {
        argv[k] = strdup(buf + i);
        if (!argv[k]) {
            for (size_t j = 0; j < k; j++)
                free(argv[j]);
            free(argv);
            free(buf);
            return -ENOMEM;
        }
        i += strlen(buf + i) + 1;
    }
    free(buf);
    b->argv = argv;
    return 0;
}

/*
 * Our environment with var ("NAME=value") in place of any BATON_JOB or
 * BATON_STANDBY_FD it had. A successor sends its BATON_JOB token when it
 * asks to take over, so that the owner knows which job it belongs to even
 * when the process that asks is not the one it started (a server that
 * forks first, a wrapper script); a standby gets its token later.
 */
static char **spawn_environ(const char *var)
{
    size_t n = 0, k = 0;
    char **env;

    for (char **e = environ; e && *e; e++)
        n++;
    env = calloc(n + 2, sizeof(*env));
    if (!env)
        return NULL;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "BATON_JOB=", 10) != 0 && strncmp(*e, "BATON_STANDBY_FD=", 17) != 0)
            env[k++] = *e;
    env[k] = (char *)var;
    return env;
}

int baton__spawn(baton *b, char *const argv[], uint64_t token, pid_t *ret_pid, int *ret_pidfd)
{
    char var[32];

    snprintf(var, sizeof(var), "BATON_JOB=%016llx", (unsigned long long)token);
    return baton__spawn_with(b, argv, var, -1, ret_pid, ret_pidfd);
}

int baton__spawn_with(baton *b, char *const argv[], const char *var, int keep_fd, pid_t *ret_pid,
                      int *ret_pidfd)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    const char *path;
    char **env;
    pid_t pid;
    int r, pidfd;

    if (!argv)
        argv = b->argv;
    if (!argv || !argv[0])
        return baton__fail(b, ENOENT, "no argv to start a successor with");
    /* By default the file at our executable's path, not /proc/self/exe: an
     * upgrade installs the new binary there, and /proc/self/exe would run
     * the old, replaced one. */
    path = argv == b->argv ? b->exe : argv[0];
    if (!path[0])
        return baton__fail(b, ENOENT, "cannot tell our own executable's path");
    env = spawn_environ(var);
    if (!env)
        return baton__fail(b, ENOMEM, "posix_spawn(%s): environment", path);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawn_file_actions_init(&fa);
    /* keep_fd goes to fd 3 and nothing else of ours beyond 0-2 is
     * inherited (glibc 2.34's closefrom action). */
    if (keep_fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, keep_fd, 3);
        posix_spawn_file_actions_addclosefrom_np(&fa, 4);
    }
    r = argv == b->argv || strchr(path, '/') ? posix_spawn(&pid, path, &fa, &attr, argv, env)
                                             : posix_spawnp(&pid, path, &fa, &attr, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(env);
    if (r != 0)
        return baton__fail(b, r, "posix_spawn(%s)", path);
    pidfd = syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        r = baton__fail(b, errno, "pidfd_open(%d)", (int)pid);
        kill(pid, SIGKILL);
        return r;
    }
    fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    *ret_pid = pid;
    *ret_pidfd = pidfd;
    return 0;
}
