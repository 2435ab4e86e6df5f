/* SPDX-License-Identifier: MIT */
/*
 * Bounding the generations alive at once. Upgrades in quick succession
 * while long connections drain would otherwise pile up old processes, each
 * with its memory and its fds. Two bounds, both enforced by the owner of
 * the day, which sees every live generation in DIR/gen.PID:
 *
 *   - the cap (baton_options.max_generations): a takeover that would make
 *     more generations live at once first ends the oldest draining ones,
 *     and waits until they have exited;
 *   - the drain bound (baton_options.drain_timeout_ms, each generation's
 *     own, written in its gen.PID as drain_until): past it, the generation
 *     is ended.
 *
 * Ending is SIGTERM, then SIGKILL kill_grace_ms later, always through a
 * pidfd opened while the recorded start time still matches, so never a
 * process that reused the pid. What it cost (the connections the
 * generation said it had) is logged and written in DIR/last-upgrade.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static struct baton__ending *ending_of(baton *b, pid_t pid)
{
    for (int i = 0; i < BATON__ENDING_MAX; i++)
        if (b->ending[i].pid && b->ending[i].pid == pid)
            return &b->ending[i];
    return NULL;
}

static int nending(const baton *b)
{
    int n = 0;

    for (int i = 0; i < BATON__ENDING_MAX; i++)
        n += b->ending[i].pid != 0;
    return n;
}

/* Does pid hold our coordination directory open? Every generation does
 * (its handle's directory fd); a process that a stale or planted gen.PID
 * names (after a reboot in a persistent directory, start times repeat)
 * does not. A process whose fds we may not read is not ours to end. */
static bool holds_dir(baton *b, pid_t pid)
{
    char path[64];
    struct stat want, st;
    struct dirent *e;
    bool found = false;
    DIR *d;
    int fd;

    if (fstat(b->dirfd, &want) < 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return false;
    }
    while (!found && (e = readdir(d)))
        found = e->d_name[0] != '.' && fstatat(fd, e->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode) &&
                st.st_dev == want.st_dev && st.st_ino == want.st_ino;
    closedir(d);
    return found;
}

/* End generation g: 0, or -errno (it is gone, reused its pid, is not a
 * generation of this directory older than ours, is not ours to signal, or
 * every slot is taken). */
static int end_gen(baton *b, const struct baton__gen *g, const char *why)
{
    struct baton__ending *e = NULL;
    char cost[48];
    int fd;

    for (int i = 0; i < BATON__ENDING_MAX && !e; i++)
        if (!b->ending[i].pid)
            e = &b->ending[i];
    if (!e)
        return -ENOSPC;
    if (!g->start || g->generation >= b->generation)
        return -ESRCH;
    fd = (int)syscall(SYS_pidfd_open, g->pid, 0);
    if (fd < 0)
        return -errno;
    /* The pidfd pins the process; the start time says it is the one the
     * record names, and its open directory that it is one of ours. */
    if (baton__proc_start(g->pid) != g->start || !holds_dir(b, g->pid)) {
        baton__log(b, BATON_LOG_WARNING,
                   "%s/gen.%d names pid %d, which is not a generation of this directory: left "
                   "alone",
                   b->dir, g->pid, g->pid);
        close(fd);
        return -ESRCH;
    }
    if (syscall(SYS_pidfd_send_signal, fd, SIGTERM, NULL, 0) < 0) {
        int err = errno;
        baton__log(b, BATON_LOG_WARNING, "cannot end generation %d (pid %d), %s: %s", g->generation,
                   g->pid, why, strerror(err));
        close(fd);
        return -err;
    }
    if (baton__ep_add(b, fd, EPOLLIN, BATON__TAG_ENDING | (uint64_t)(e - b->ending) << 8) < 0) {
        /* Unwatched, it would never be forgotten: no grace then. */
        syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
        close(fd);
        return 0;
    }
    *e = (struct baton__ending){.pid = g->pid,
                                .pidfd = fd,
                                .generation = g->generation,
                                .conns = g->conns,
                                .kill_at = baton__now_ms() + (uint64_t)b->opts.kill_grace_ms};
    if (g->conns >= 0)
        snprintf(cost, sizeof(cost), "%d connection%s cut", g->conns, g->conns == 1 ? "" : "s");
    else
        snprintf(cost, sizeof(cost), "its connections (number unknown) cut");
    baton__log(b, BATON_LOG_WARNING, "ending generation %d (pid %d), %s: %s", g->generation, g->pid,
               why, cost);
    return 0;
}

int baton__gens_room(baton *b)
{
    struct baton__gen *g = NULL;
    int n, live, want, busy;
    char note[96];

    /* Every takeover asks, while the successor waits for HELLO: when the
     * names alone leave room, reading each record and looking each
     * process up in /proc cannot change the answer. */
    n = baton__gens_count(b->dirfd);
    if (n >= 0 && n + nending(b) + 1 <= b->opts.max_generations)
        return 0;
    n = baton__gens_read(b->dirfd, &g);
    if (n < 0)
        return 0; /* nothing to go by: the takeover goes ahead */
    /* With the successor, n + 1 would be alive. Those we are ending count
     * until their pidfd says they have exited, record or no record: one
     * removes its gen.PID as it frees its handle, well before its exit
     * (at-exit handlers, a sanitizer's leak check). */
    busy = nending(b);
    live = n;
    for (int i = 0; i < BATON__ENDING_MAX; i++) {
        bool listed = false;
        for (int k = 0; k < n && b->ending[i].pid && !listed; k++)
            listed = g[k].pid == b->ending[i].pid;
        live += b->ending[i].pid && !listed;
    }
    want = live + 1 - b->opts.max_generations;
    /* Oldest first: gens_read gives the newest first. */
    for (int i = n - 1; i >= 0 && want > busy; i--) {
        char why[64];
        if (!g[i].draining || g[i].pid == getpid() || ending_of(b, g[i].pid))
            continue;
        snprintf(why, sizeof(why), "over the cap of %d generations", b->opts.max_generations);
        if (end_gen(b, &g[i], why) < 0)
            continue;
        busy++;
        if (g[i].conns >= 0)
            snprintf(note, sizeof(note), "%sended generation %d (pid %d) over the cap: %d cut",
                     b->cap_note[0] ? "; " : "", g[i].generation, g[i].pid, g[i].conns);
        else
            snprintf(note, sizeof(note), "%sended generation %d (pid %d) over the cap",
                     b->cap_note[0] ? "; " : "", g[i].generation, g[i].pid);
        if (strlen(b->cap_note) + strlen(note) < sizeof(b->cap_note))
            strcat(b->cap_note, note);
    }
    free(g);
    return want > 0 && busy > 0 ? 1 : 0;
}

void baton__gens_check(baton *b)
{
    struct baton__gen *g = NULL;
    uint64_t now = baton__realtime_ms(), next = 0;
    int n;

    b->gens_check_at = 0;
    if (b->superseded || !b->ready)
        return;
    n = baton__gens_read(b->dirfd, &g);
    for (int i = 0; i < n; i++) {
        if (!g[i].draining || !g[i].drain_until || g[i].pid == getpid() || ending_of(b, g[i].pid))
            continue;
        if (g[i].drain_until <= now) {
            end_gen(b, &g[i], "past its drain bound");
        } else if (!next || g[i].drain_until < next) {
            next = g[i].drain_until;
        }
    }
    free(g);
    if (next)
        b->gens_check_at = baton__now_ms() + (next - now);
}

void baton__gens_exited(baton *b, int slot)
{
    struct baton__ending *e;
    siginfo_t si;

    if (slot < 0 || slot >= BATON__ENDING_MAX || !b->ending[slot].pid)
        return;
    e = &b->ending[slot];
    /* Our child only if we started it once (baton_upgrade()): reap it. */
    waitid(P_PIDFD, e->pidfd, &si, WEXITED | WNOHANG);
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, e->pidfd, NULL);
    close(e->pidfd);
    baton__log(b, BATON_LOG_INFO, "generation %d (pid %d) has ended", e->generation, e->pid);
    memset(e, 0, sizeof(*e));
}

uint64_t baton__gens_expire(baton *b, uint64_t now)
{
    uint64_t next = 0;

    for (int i = 0; i < BATON__ENDING_MAX; i++) {
        struct baton__ending *e = &b->ending[i];
        if (!e->pid || !e->kill_at)
            continue;
        if (e->kill_at <= now) {
            baton__log(b, BATON_LOG_WARNING,
                       "generation %d (pid %d) still runs %d ms after SIGTERM; sending SIGKILL",
                       e->generation, e->pid, b->opts.kill_grace_ms);
            syscall(SYS_pidfd_send_signal, e->pidfd, SIGKILL, NULL, 0);
            e->kill_at = 0;
        } else if (!next || e->kill_at < next) {
            next = e->kill_at;
        }
    }
    if (b->gens_check_at && b->gens_check_at <= now)
        baton__gens_check(b);
    if (b->gens_check_at && (!next || b->gens_check_at < next))
        next = b->gens_check_at;
    return next;
}

void baton__gens_forget(baton *b)
{
    for (int i = 0; i < BATON__ENDING_MAX; i++)
        if (b->ending[i].pid)
            close(b->ending[i].pidfd);
    memset(b->ending, 0, sizeof(b->ending));
}
