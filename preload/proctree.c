/* SPDX-License-Identifier: MIT */
/*
 * The process tree under a process, for the drain (which connections it
 * holds) and the stop (who gets SIGKILL): children are found through
 * /proc/PID/task/TID/children (Linux 3.5 and later, CONFIG_PROC_CHILDREN),
 * so the walk costs what the tree holds, not what the host runs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "drain.h"
#include "shim.h"

/* Deeper than any server's tree; a bound against a cycle of reused pids. */
#define MAX_DEPTH 16

static void walk(pid_t pid, pid_t skip, int depth, baton_run__visit_fn *visit, void *arg)
{
    char path[64], buf[4096];
    struct dirent *d;
    DIR *dir;

    if (pid == skip || depth > MAX_DEPTH)
        return;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    dir = opendir(path);
    while (dir && (d = readdir(dir))) {
        char cp[340];
        FILE *f;
        if (d->d_name[0] == '.')
            continue;
        snprintf(cp, sizeof(cp), "%s/%s/children", path, d->d_name);
        f = fopen(cp, "re");
        if (!f)
            continue;
        while (fgets(buf, sizeof(buf), f)) {
            char *p = buf, *end;
            for (long c; (c = strtol(p, &end, 10)) > 0; p = end)
                walk((pid_t)c, skip, depth + 1, visit, arg);
        }
        fclose(f);
    }
    if (dir)
        closedir(dir);
    visit(pid, depth, arg);
}

/* Every process of the tree under pid (pid itself at depth 0), except
 * skip's subtree, children before their parent: a parent that dies first
 * would hand its children to another reaper, out of our sight. */
void baton_run__tree_walk(pid_t pid, pid_t skip, baton_run__visit_fn *visit, void *arg)
{
    walk(pid, skip, 0, visit, arg);
}

static void kill_one(pid_t pid, int depth, void *arg)
{
    if (depth > 0)
        kill(pid, *(int *)arg);
}

/* Signal pid's descendants (not pid), except skip's subtree. */
void baton_run__kill_tree(pid_t pid, pid_t skip, int sig)
{
    baton_run__tree_walk(pid, skip, kill_one, &sig);
}

static void note_child(pid_t pid, int depth, void *arg)
{
    if (depth > 0)
        *(bool *)arg = true;
}

/* Does this process have children (live or zombie)? */
bool baton_run__has_children(void)
{
    bool any = false;

    baton_run__tree_walk(getpid(), 0, note_child, &any);
    return any;
}

/* Gone, or a zombie: it holds nothing and accepts nothing. */
bool baton_run__proc_dead(pid_t pid)
{
    char path[64], buf[512];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH;
    n = read(fd, buf, sizeof(buf) - 1);
    REAL(close)(fd);
    if (n <= 0)
        return true;
    buf[n] = 0;
    return baton_run__stat_gone(buf);
}
