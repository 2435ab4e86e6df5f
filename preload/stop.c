/* SPDX-License-Identifier: MIT */
/*
 * A copy that no longer serves (a successor does) or never will (its
 * takeover failed): its listeners are retired in every process, and it
 * drains, every SCAN_MS, until its process tree holds no connection
 * accepted on them and no accept call on a live one, or the drain
 * timeout; idle keep-alive connections are ended on the way. Then the
 * program gets its stop signal, and its tree SIGKILL KILL_MS later. The
 * decisions are drain.c's; this file gathers the facts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>

#include "drain.h"
#include "internal.h"
#include "shim.h"

/* The new owner's pid, read when the drain starts (DIR/owner, through the
 * handle's directory fd): its subtree is left out of ours, as when our
 * copy started it (baton upgrade). A copy that dropped its privileges
 * cannot read it, and then has started no successor either. 0 if none. */
static pid_t skip_pid;

static pid_t owner_pid(void)
{
    pid_t pid = S.b ? baton__record_pid(S.b) : 0;

    return pid == getpid() ? 0 : pid;
}

/* Is fd (ours, or a duplicate) a connection accepted on one of our
 * listeners: a connected stream socket whose local port or path is a
 * listener's? */
static bool is_conn(int fd)
{
    struct sockaddr_storage ss, peer;
    socklen_t l = sizeof(ss), pl = sizeof(peer), il = sizeof(int);
    int acc = 1, type = 0;

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &il) < 0 || acc)
        return false;
    il = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &il) < 0 || type != SOCK_STREAM ||
        REAL(getsockname)(fd, (struct sockaddr *)&ss, &l) < 0 ||
        getpeername(fd, (struct sockaddr *)&peer, &pl) < 0)
        return false;
    for (int i = 0; i < S.ne; i++)
        if (baton_run__conn_of(S.e[i].key, (struct sockaddr *)&ss, l))
            return true;
    return false;
}

/* Is fd an idle keep-alive connection (baton_run__conn_idle) that the
 * drain has not ended yet? (After shutdown(SHUT_RD), an established
 * connection with nothing unread polls POLLRDHUP.) */
static bool conn_idle(int fd)
{
    struct baton_run__tcp t = {0};
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};

    memset(&ti, 0, sizeof(ti));
    if (S.idle_close_ms <= 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        l < offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof(ti.tcpi_bytes_sent) ||
        ioctl(fd, SIOCINQ, &t.inq) < 0 || ioctl(fd, SIOCOUTQ, &t.outq) < 0 ||
        REAL(poll)(&p, 1, 0) != 0)
        return false;
    t.state = ti.tcpi_state;
    t.last_recv_ms = ti.tcpi_last_data_recv;
    t.last_sent_ms = ti.tcpi_last_data_sent;
    t.bytes_received = ti.tcpi_bytes_received;
    t.bytes_sent = ti.tcpi_bytes_sent;
    return baton_run__conn_idle(&t, (unsigned)S.idle_close_ms);
}

/* One connection of the copy's tree, fd ours or a duplicate: 1 if it
 * counts. An idle keep-alive one is shut down for reading: the program
 * reads what the client has sent (even a request racing with this), answers
 * it, then reads EOF and closes the connection, so the client sees it end
 * between requests rather than a reset at the stop signal. */
static int visit_conn(int fd, pid_t pid)
{
    if (!is_conn(fd))
        return 0;
    if (S.draining && conn_idle(fd) && shutdown(fd, SHUT_RD) == 0)
        say("ending an idle keep-alive connection of pid %d", (int)pid);
    return 1;
}

/* Connections process pid holds: its socket fds are looked at through
 * pidfd_getfd() (a duplicate, closed again), ours directly. Costs what the
 * tree holds, not what the host holds. */
static int proc_conns(pid_t pid)
{
    char path[64], link[64];
    struct dirent *d;
    int n = 0, pidfd = -1;
    bool self = pid == getpid();
    DIR *dir;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    if (!dir) /* gone, or closed to us (a non-dumpable process of another uid) */
        return errno == EACCES ? 1 : 0;
    if (!self)
        pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    while ((d = readdir(dir))) {
        char fp[320];
        ssize_t len;
        int fd, dup;
        if (d->d_name[0] == '.')
            continue;
        snprintf(fp, sizeof(fp), "%s/%s", path, d->d_name);
        len = readlink(fp, link, sizeof(link) - 1);
        if (len <= 0 || strncmp(link, "socket:", 7) != 0)
            continue;
        fd = atoi(d->d_name);
        if (self) {
            n += fd != dirfd(dir) && visit_conn(fd, pid);
            continue;
        }
        dup = pidfd >= 0 ? (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0) : -1;
        if (dup < 0) {
            n++; /* cannot look: assume a connection, until the drain timeout */
            continue;
        }
        n += visit_conn(dup, pid);
        REAL(close)(dup);
    }
    closedir(dir);
    if (pidfd >= 0)
        REAL(close)(pidfd);
    return n;
}

static void count_proc(pid_t pid, int depth, void *arg)
{
    *(int *)arg += proc_conns(pid);
}

/* This process's slot in S.shm->in_accept: a free one, or one whose process
 * is gone (its pid may be ours now: a fresh process has no calls yet). */
atomic_int *baton_run__in_accept_counter(void)
{
    atomic_int *cnt = atomic_load(&S.in_accept);
    pid_t me = getpid();

    if (cnt)
        return cnt;
    pthread_mutex_lock(&S.mu);
    cnt = atomic_load(&S.in_accept);
    for (int pass = 0; pass < 2 && !cnt; pass++)
        for (int i = 0; i < MAX_PROCS && !cnt; i++) {
            struct in_accept *c = &S.shm->in_accept[i];
            int pid = atomic_load(&c->pid);
            if (pass == 0 ? pid != me : pid != 0 && !baton_run__proc_dead(pid))
                continue;
            if (pid == me || atomic_compare_exchange_strong(&c->pid, &pid, me)) {
                atomic_store(&c->n, 0);
                cnt = &c->n;
            }
        }
    if (!cnt)
        cnt = &S.shm->in_accept_rest;
    atomic_store(&S.in_accept, cnt);
    pthread_mutex_unlock(&S.mu);
    return cnt;
}

/* Accept calls in flight in live processes; a dead one's slot is freed. */
static int in_accept_live(void)
{
    int n = atomic_load(&S.shm->in_accept_rest);

    for (int i = 0; i < MAX_PROCS; i++) {
        struct in_accept *c = &S.shm->in_accept[i];
        int pid = atomic_load(&c->pid), k = atomic_load(&c->n);
        if (pid == 0 || k == 0)
            continue;
        if (!baton_run__proc_dead(pid))
            n += k;
        else if (atomic_compare_exchange_strong(&c->pid, &pid, 0))
            say("pid %d died in accept: no longer counted", pid);
    }
    return n;
}

/* What keeps the copy from stopping: connections its tree holds, less
 * the new owner's subtree, and accept calls on a live listener. */
static int count_conns(void)
{
    int n = in_accept_live() + (int)baton_run__udp_live();

    baton_run__tree_walk(getpid(), skip_pid, count_proc, &n);
    return n;
}

/* Sleep ms, dispatching control events at most once: a superseded
 * handle's control fd may stay readable (the successor's link) and must not
 * turn this into a busy loop. */
static void sleep_dispatching(int ms)
{
    struct pollfd p = {.fd = S.ctl_fd, .events = POLLIN};
    uint64_t end = now_ms() + (uint64_t)ms, now;

    if (S.ctl_fd >= 0 && REAL(poll)(&p, 1, ms) > 0)
        baton_dispatch(S.b);
    while ((now = now_ms()) < end) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(end - now) * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Retire the listeners in every process of the copy and drain until it is
 * time for the stop signal. The connections left then. */
static int drain_until_stop(const char *why, struct baton_run__drain *d)
{
    int n;

    atomic_store(&S.shm->superseded, 1);
    /* Wakes every blocking accept() of the copy, in every process (a
     * successor's serving, which wakes them too, may never come). */
    if (write(S.retire_efd, &(uint64_t){1}, sizeof(uint64_t)) < 0) {
        /* Cannot fail: the counter is far from its maximum. */
    }
    pthread_mutex_lock(&S.mu);
    baton_run__retire();
    pthread_mutex_unlock(&S.mu);
    skip_pid = owner_pid();
    *d = (struct baton_run__drain){
        .start_ms = now_ms(), .drain_ms = (unsigned)S.drain_ms, .kill_ms = KILL_MS};
    say("%s: draining (at most %d ms)", why, S.drain_ms);
    S.draining = true;
    do {
        sleep_dispatching(SCAN_MS);
        n = count_conns();
        /* For `baton status`: what this draining copy still holds. */
        if (S.b)
            baton__gen_conns(S.b, n);
    } while (baton_run__drain_next(d, now_ms(), n) == BATON_RUN_DRAIN_WAIT);
    S.draining = false;
    return n;
}

void baton_run__drain(const char *why)
{
    struct baton_run__drain d;
    int n = drain_until_stop(why, &d);

    say("%s; stopping with signal %d", n == 0 ? "no connections left" : "drain timeout",
        S.stop_sig);
    if (S.flows)
        say("udp: %u datagram(s) forwarded to other generations, %u taken from them, %u "
            "dropped (queue full)",
            atomic_load(&S.udp_forwarded), atomic_load(&S.udp_taken), atomic_load(&S.udp_dropped));
    kill(getpid(), S.stop_sig);
    d.stopped_ms = now_ms();
    while (baton_run__drain_next(&d, now_ms(), -1) == BATON_RUN_DRAIN_WAIT)
        sleep_dispatching(SCAN_MS);
    say("still alive %d ms after the stop signal: SIGKILL", KILL_MS);
    baton_run__kill_tree(getpid(), skip_pid, SIGKILL);
    kill(getpid(), SIGKILL);
}

/* This copy does not serve, and never will (complain() said why): the
 * predecessor's pid file comes back, the listeners are let go, what the
 * copy accepted meanwhile (usually nothing) is finished, and then its
 * process tree ends with EXIT_NOT_SERVING. The program's own clean-up does
 * not run: it would remove what belongs to the copy that serves (its pid
 * file, its unix socket paths). Manager thread only. */
_Noreturn void baton_run__give_up(void)
{
    struct baton_run__drain d;

    atomic_store(&S.gave_up, true);
    pthread_mutex_lock(&S.mu);
    baton_run__pidfile_restore();
    pthread_mutex_unlock(&S.mu);
    drain_until_stop("not serving", &d);
    baton_run__kill_tree(getpid(), 0, SIGKILL);
    _exit(EXIT_NOT_SERVING);
}
