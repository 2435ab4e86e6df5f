/* SPDX-License-Identifier: MIT */
/*
 * The owner's side: answer successors and the tool on the control socket.
 *
 * Everything here is non-blocking and driven by one epoll fd, so that the
 * same code runs on the library's own thread or, with BATON_NO_THREAD, from
 * the application's loop through baton_dispatch(). Every peer has a
 * deadline; a peer that stalls, lies or vanishes is dropped and the owner
 * carries on with everything it had.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

enum {
    TAG_CTL = 1,
    TAG_TIMER,
    TAG_WAKE,
    TAG_JOB,
    TAG_PRED,
    TAG_DIR,
    TAG_PEER,
    TAG_DOOMED,
    TAG_PROB,
    TAG_ENDING = BATON__TAG_ENDING,
    TAG_STANDBY = BATON__TAG_STANDBY,
};

/* epoll data: the tag in the low byte, a peer's slot and fd above it, so a
 * stale event for a slot that was reused is recognised. */
static uint64_t peer_tag(int slot, int fd)
{
    return TAG_PEER | (uint64_t)slot << 8 | (uint64_t)(uint32_t)fd << 32;
}

uint64_t baton__peer_tag(const baton *b, const struct baton__peer *p)
{
    return peer_tag((int)(p - b->peers), p->fd);
}

static int ep_add(baton *b, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int baton__ep_add(baton *b, int fd, uint32_t events, uint64_t tag)
{
    return ep_add(b, fd, events, tag);
}

static void ep_mod(baton *b, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    epoll_ctl(b->epfd, EPOLL_CTL_MOD, fd, &ev);
}

int baton__owner_init(baton *b)
{
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    b->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    b->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    /* A semaphore: one count per upgrade event waiting to be read. */
    b->upgradefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
    b->jobfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    b->connfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    b->connep = epoll_create1(EPOLL_CLOEXEC);
    b->txbuf = malloc(BATON__MSG_MAX);
    if (!b->txbuf)
        return -ENOMEM;
    if (b->epfd < 0 || b->timerfd < 0 || b->wakefd < 0 || b->upgradefd < 0 || b->jobfd < 0 ||
        b->connfd < 0 || b->connep < 0)
        return baton__fail(b, errno, "creating the control loop's fds");
    {
        struct epoll_event ev = {.events = EPOLLIN};
        if (epoll_ctl(b->connep, EPOLL_CTL_ADD, b->connfd, &ev) < 0)
            return baton__fail(b, errno, "epoll_ctl(connections)");
    }
    if (ep_add(b, b->timerfd, EPOLLIN, TAG_TIMER) < 0 || ep_add(b, b->wakefd, EPOLLIN, TAG_WAKE))
        return baton__fail(b, errno, "epoll_ctl");
    return 0;
}

/* A job started and not yet finished. */
static bool job_active(const baton *b)
{
    return b->job.token && !b->job.done;
}

/* Is p a process of the current job: it sent the job's token, or it is the
 * process we started (a successor of before job tokens sends none)? */
static bool peer_of_job(const baton *b, const struct baton__peer *p)
{
    return b->job.token &&
           ((p->job && p->job == b->job.token) || (b->job.pid && p->pid == b->job.pid));
}

static void arm_timer(baton *b)
{
    uint64_t next = UINT64_MAX, now = baton__now_ms();
    struct itimerspec its = {0};

    for (int i = 0; i < BATON__MAX_PEERS; i++)
        if (b->peers[i].fd >= 0 && b->peers[i].deadline && b->peers[i].deadline < next)
            next = b->peers[i].deadline;
    if (job_active(b) && b->job.deadline < next)
        next = b->job.deadline;
    for (int i = 0; i < BATON__DOOMED_MAX; i++)
        if (b->doomed[i].pid && b->doomed[i].kill_at && b->doomed[i].kill_at < next)
            next = b->doomed[i].kill_at;
    if (b->accept_paused_until && b->accept_paused_until < next)
        next = b->accept_paused_until;
    if (b->ctl_retry_at && b->ctl_retry_at < next)
        next = b->ctl_retry_at;
    if (b->prob.pidfd >= 0 && b->prob.until < next)
        next = b->prob.until;
    if (b->prob.rolling_back && b->prob.retry_at < next)
        next = b->prob.retry_at;
    for (int i = 0; i < BATON__ENDING_MAX; i++)
        if (b->ending[i].pid && b->ending[i].kill_at && b->ending[i].kill_at < next)
            next = b->ending[i].kill_at;
    if (b->gens_check_at && b->gens_check_at < next)
        next = b->gens_check_at;
    if (b->sweep_at && b->sweep_at < next)
        next = b->sweep_at;
    if (b->standby.at && b->standby.at < next)
        next = b->standby.at;
    if (next != UINT64_MAX) {
        uint64_t d = next > now ? next - now : 1;
        its.it_value.tv_sec = d / 1000;
        its.it_value.tv_nsec = (d % 1000) * 1000000;
    }
    timerfd_settime(b->timerfd, 0, &its, NULL);
}

static void job_finish(baton *b, int err, uint32_t generation, pid_t pid, const char *msg);
static void ctl_check(baton *b);
static void accept_peers(baton *b);

/* Start a standby successor soon, if wanted and none is there: not at
 * once, so that it does not compete with a takeover just finished. */
static void standby_plan(baton *b)
{
    if ((b->opts.flags & BATON_STANDBY) && !b->standby.pid && !b->superseded)
        b->standby.at = baton__now_ms() + 200;
}

/* A signal by pidfd: never to a process that reused the pid. */
static int pidfd_signal(int pidfd, int sig)
{
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

void baton__drop_peer(baton *b, struct baton__peer *p, int err, const char *why)
{
    bool taking = p->phase >= BATON__PEER_SENDING && p->phase <= BATON__PEER_PUBLISH;
    bool ofjob = taking && job_active(b) && peer_of_job(b, p);
    pid_t pid = p->pid;

    if (p->fd < 0)
        return;
    if (err)
        baton__send_error(p->fd, err, why);
    if (taking) {
        b->takeover_busy = false;
        baton__upgrade_write(b, p, err ? err : -ECONNRESET, why ? why : "hung up");
        if (why)
            baton__log(b, BATON_LOG_WARNING, "successor pid %d failed: %s; serving on", (int)pid,
                       why);
    } else if (why) {
        baton__log(b, BATON_LOG_WARNING, "control peer pid %d dropped: %s", (int)pid, why);
    }
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    if (p->state_fd >= 0)
        close(p->state_fd);
    memset(p, 0, sizeof(*p));
    p->fd = p->state_fd = -1;
    /* Last, once the slot is free: job_finish() drops the job's peers. */
    if (ofjob)
        job_finish(b, err ? err : -ECONNRESET, 0, 0, why);
}

/* Is pid a process of a failed job, on its way out? */
static bool doomed_pid(const baton *b, pid_t pid)
{
    for (int i = 0; i < BATON__DOOMED_MAX; i++)
        if (b->doomed[i].pid && b->doomed[i].pid == pid)
            return true;
    return false;
}

/* Did we report the upgrade of the job with this token failed? */
static bool doomed_token(const baton *b, uint64_t token)
{
    for (int i = 0; token && i < BATON__FAILED_TOKENS; i++)
        if (b->failed_tokens[i] == token)
            return true;
    return false;
}

/*
 * End a process of a failed job: SIGTERM now, SIGKILL after the grace
 * period, reaped when it exits (TAG_DOOMED). Takes pidfd. With every slot
 * taken (four failed jobs' processes at once) it gets SIGKILL at once.
 */
static void doom(baton *b, pid_t pid, int pidfd)
{
    struct baton__doomed *d = NULL;
    siginfo_t si;

    for (int i = 0; i < BATON__DOOMED_MAX && !d; i++)
        if (!b->doomed[i].pid)
            d = &b->doomed[i];
    if (!d || pidfd_signal(pidfd, SIGTERM) < 0 ||
        ep_add(b, pidfd, EPOLLIN, TAG_DOOMED | (uint64_t)(d - b->doomed) << 8) < 0) {
        pidfd_signal(pidfd, SIGKILL);
        waitid(P_PIDFD, pidfd, &si, WEXITED | WNOHANG);
        close(pidfd);
        return;
    }
    d->pid = pid;
    d->pidfd = pidfd;
    d->kill_at = baton__now_ms() + BATON__KILL_GRACE_MS;
    baton__log(b, BATON_LOG_INFO, "stopping successor pid %d (SIGTERM)", (int)pid);
}

static void doom_pid(baton *b, pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    if (fd >= 0)
        doom(b, pid, fd);
}

/* A doomed process exited: reap it if it is our child, free its slot. */
static void on_doomed(baton *b, int slot)
{
    struct baton__doomed *d = &b->doomed[slot];
    siginfo_t si;

    if (slot >= BATON__DOOMED_MAX || !d->pid)
        return;
    waitid(P_PIDFD, d->pidfd, &si, WEXITED | WNOHANG);
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, d->pidfd, NULL);
    close(d->pidfd);
    memset(d, 0, sizeof(*d));
}

/*
 * accept() at the fd limit fails and leaves the connection queued, so a
 * level-triggered listener would wake us at once, for ever: stop watching
 * it for a while (100 ms, doubling to 1 s while it goes on) and say so once
 * per episode, as libuv and nginx do. Connections wait in the backlog
 * meanwhile; none is refused by us.
 */
static void accept_pause(baton *b, int err)
{
    uint64_t now = baton__now_ms();

    if (!b->accept_backoff_ms) {
        b->accept_backoff_ms = 100;
        baton__log(b, BATON_LOG_WARNING,
                   "control socket: accept: %s; pausing accepts until fds free up", strerror(err));
    } else if (b->accept_backoff_ms < 1000) {
        b->accept_backoff_ms *= 2;
    }
    b->accept_paused_until = now + b->accept_backoff_ms;
    b->accept_refusals++;
    ep_mod(b, b->ctl_fd, 0, TAG_CTL);
}

static void accept_resume(baton *b)
{
    b->accept_paused_until = 0;
    if (b->ctl_fd >= 0)
        ep_mod(b, b->ctl_fd, EPOLLIN, TAG_CTL);
}

static void accept_peers(baton *b)
{
    for (;;) {
        struct ucred cr;
        socklen_t l = sizeof(cr);
        struct baton__peer *p = NULL;
        int fd, slot;

        fd = accept4(b->ctl_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
            accept_pause(b, errno);
            return;
        }
        if (fd < 0 && (errno == ECONNABORTED || errno == EINTR))
            continue;
        if (fd < 0)
            return;
        if (b->accept_backoff_ms) {
            baton__log(b, BATON_LOG_INFO, "control socket: accepting again after %u pauses",
                       b->accept_refusals);
            b->accept_backoff_ms = 0;
            b->accept_refusals = 0;
        }
        for (slot = 0; slot < BATON__MAX_PEERS && !p; slot++)
            if (b->peers[slot].fd < 0)
                p = &b->peers[slot];
        slot--;
        if (!p || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0) {
            baton__log(b, BATON_LOG_WARNING, "control peer refused: %s",
                       p ? "no credentials" : "too many control peers at once");
            close(fd);
            continue;
        }
        /* Root may ask for status and upgrades; root could do anything to us
         * anyway. Nobody else but our uid and the allowed one. */
        if (cr.uid != geteuid() && cr.uid != b->opts.allowed_uid && cr.uid != 0) {
            baton__log(b, BATON_LOG_WARNING, "control peer pid %d uid %u refused: not allowed",
                       (int)cr.pid, (unsigned)cr.uid);
            baton__send_error(fd, -EACCES, "uid not allowed to take over");
            close(fd);
            continue;
        }
        if (doomed_pid(b, cr.pid)) {
            baton__log(b, BATON_LOG_WARNING,
                       "successor pid %d refused: its upgrade was reported failed", (int)cr.pid);
            baton__send_error(fd, -ETIMEDOUT, "this upgrade was reported failed");
            close(fd);
            continue;
        }
        p->fd = fd;
        p->pid = cr.pid;
        p->uid = cr.uid;
        p->t.connected = baton__now_us();
        p->phase = BATON__PEER_REQ;
        p->deadline = baton__now_ms() + b->opts.ready_timeout_ms;
        if (ep_add(b, fd, EPOLLIN, peer_tag(slot, fd)) < 0) {
            close(fd);
            memset(p, 0, sizeof(*p));
            p->fd = p->state_fd = -1;
        }
    }
}

/* Send fd batches, then STATE and END, as far as the socket takes them. */
static int pump(baton *b, struct baton__peer *p, int slot)
{
    char *buf = b->txbuf;
    int r;

    while (p->sent < p->total) {
        int fds[BATON__BATCH_MAX];
        size_t len = baton__fds_begin(buf), n = 0;

        while (p->sent + n < p->total && n < BATON__BATCH_MAX) {
            struct baton__entry *e = &b->own.v[p->sent + n];
            if (baton__fds_add(buf, &len, e->kind, e->name, e->addr) < 0)
                break;
            fds[n++] = e->fd;
        }
        baton__fds_end(buf, len, n);
        r = baton__send(p->fd, buf, BATON__HDR_LEN + len, fds, n);
        if (r == -EAGAIN)
            goto full;
        if (r < 0)
            return r;
        if (p->sent == 0)
            baton__fault("o-mid-fds");
        p->sent += n;
    }
    if (p->sent == p->total) {
        size_t len = baton__enc_state(buf, p->state_len);
        r = baton__send(p->fd, buf, len, &p->state_fd, p->state_len ? 1 : 0);
        if (r == -EAGAIN)
            goto full;
        if (r < 0)
            return r;
        p->sent++;
    }
    r = baton__send(p->fd, buf, baton__enc_empty(buf, BATON__MSG_END), NULL, 0);
    if (r == -EAGAIN)
        goto full;
    if (r < 0)
        return r;
    if (p->state_fd >= 0)
        close(p->state_fd);
    p->state_fd = -1;
    p->phase = BATON__PEER_READY;
    p->t.fds_sent = baton__now_us();
    ep_mod(b, p->fd, EPOLLIN, peer_tag(slot, p->fd));
    return 0;
full:
    ep_mod(b, p->fd, EPOLLIN | EPOLLOUT, peer_tag(slot, p->fd));
    return 0;
}

static int start_takeover(baton *b, struct baton__peer *p, int slot)
{
    char *buf = b->txbuf;
    int r;

    if (b->takeover_busy || b->superseded) {
        baton__drop_peer(b, p, -EBUSY,
                         b->superseded ? "superseded already" : "takeover in progress");
        return 0;
    }
    if (baton__gens_room(b) > 0) {
        /* Over the cap: the oldest draining generations are ending; this
         * takeover starts once they have exited (room_made()). */
        if (!p->waits_room) {
            baton__log(b, BATON_LOG_INFO,
                       "successor pid %d waits until generations over the cap have exited",
                       (int)p->pid);
            /* Once: the grace, and a margin for the exit to be seen. */
            p->deadline = baton__now_ms() + (uint64_t)b->opts.kill_grace_ms + 2000;
        }
        p->waits_room = true;
        return 0;
    }
    p->waits_room = false;
    p->total = b->own.n;
    p->state_len = b->own_state_len;
    p->state_fd = -1;
    if (b->own_state_fd >= 0) {
        p->state_fd = fcntl(b->own_state_fd, F_DUPFD_CLOEXEC, 3);
        if (p->state_fd < 0)
            return -errno;
    }
    r = baton__send(
        p->fd, buf,
        baton__enc_hello(buf, b->generation, getpid(), p->total, p->state_len, b->since_ms), NULL,
        0);
    if (r < 0)
        return r;
    b->takeover_busy = true;
    p->phase = BATON__PEER_SENDING;
    baton__log(b, BATON_LOG_INFO, "successor pid %d is taking over %zu fds", (int)p->pid, p->total);
    return pump(b, p, slot);
}

/* A generation we ended has exited: a takeover that waited for room may
 * start now. */
static void room_made(baton *b)
{
    for (int i = 0; i < BATON__MAX_PEERS; i++) {
        struct baton__peer *p = &b->peers[i];
        if (p->fd < 0 || !p->waits_room || p->phase != BATON__PEER_REQ)
            continue;
        int r = start_takeover(b, p, i);
        if (r < 0)
            baton__drop_peer(b, p, r, strerror(-r));
        return; /* one at a time: the others get EBUSY or wait on */
    }
}

/* Our control socket must be the one at control.sock. After a successor
 * renamed its own there and then failed, put ours back. */
static void ctl_check(baton *b)
{
    int fd = b->ctl_fd, r;

    if (fd < 0 || b->superseded)
        return;
    r = baton__ctl_ensure(b, &fd);
    if (r < 0) {
        /* At the fd limit, say: try again in a second, for as long as it
         * takes, or nobody can reach us. */
        if (!b->ctl_retry_at)
            baton__log(b, BATON_LOG_WARNING, "cannot put our control socket back: %s",
                       baton__last_err());
        b->ctl_retry_at = baton__now_ms() + 1000;
        return;
    }
    b->ctl_retry_at = 0;
    if (r > 0) {
        /* ctl_ensure closed the old socket, which took its epoll entry. */
        b->ctl_fd = fd;
        ep_add(b, fd, EPOLLIN, TAG_CTL);
        baton__log(b, BATON_LOG_WARNING, "republished our control socket");
    }
    /* The record too: a failed successor may have renamed its own over
     * ours after we looked (its pid, a generation that never served). */
    if ((r > 0 || baton__record_pid(b) != getpid()) && baton__record_write_locked(b) == 0 && r == 0)
        baton__log(b, BATON_LOG_WARNING, "rewrote our owner record");
}

/*
 * Something happened to control.sock while we own it. A successor that we
 * gave up on (its deadline passed) may still rename its socket into place
 * when it wakes up, then fail, leaving a dead socket there: the next
 * successor would find "nobody serves" and bind anew beside us. So while
 * no successor is between COMMIT and PUBLISHED (when a rename is expected),
 * any change there puts ours back.
 */
static void on_dir_change(baton *b)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool ours = false, gens = false;
    ssize_t n;

    while ((n = read(b->inotifyfd, buf, sizeof(buf))) > 0)
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            ours |=
                e->len && (strcmp(e->name, "control.sock") == 0 || strcmp(e->name, "owner") == 0);
            gens |= e->len && strncmp(e->name, "gen.", 4) == 0;
            p += sizeof(*e) + e->len;
        }
    /* A generation started draining (its drain bound is in its record):
     * look 100 ms later, once for a burst of changes, and not while a
     * predecessor hands us its connections under the same lock (its
     * record changes then). Drain bounds are seconds. */
    if (gens && !b->superseded) {
        uint64_t soon = baton__now_ms() + 100;
        if (!b->gens_check_at || b->gens_check_at > soon)
            b->gens_check_at = soon;
    }
    if (!ours || b->superseded)
        return;
    for (int i = 0; i < BATON__MAX_PEERS; i++)
        if (b->peers[i].fd >= 0 && b->peers[i].phase == BATON__PEER_PUBLISH)
            return;
    ctl_check(b);
}

/* Queue an upgrade event for baton_upgrade_event(). Called with b->mu held. */
static struct baton_event *event_push(baton *b, int type, pid_t pid, int generation, unsigned lost)
{
    const unsigned cap = sizeof(b->ev) / sizeof(b->ev[0]);
    uint64_t one = 1;

    if (b->ev_n == cap) {
        /* Eight unread events: the oldest is stale by now. Its count in
         * the eventfd stays, and is read with the newest. */
        b->ev_head = (b->ev_head + 1) % cap;
        b->ev_n--;
    } else if (write(b->upgradefd, &one, sizeof(one)) < 0) {
        /* A semaphore of at most eight cannot overflow. */
    }
    b->ev[(b->ev_head + b->ev_n) % cap] =
        (struct baton_event){.type = type, .pid = pid, .generation = generation, .lost = lost};
    return &b->ev[(b->ev_head + b->ev_n++) % cap];
}

int baton__event_pop(baton *b, struct baton_event *ev)
{
    const unsigned cap = sizeof(b->ev) / sizeof(b->ev[0]);
    uint64_t junk;
    int type = BATON_EVENT_NONE;

    pthread_mutex_lock(&b->mu);
    if (b->ev_n) {
        if (ev)
            *ev = b->ev[b->ev_head];
        type = b->ev[b->ev_head].type;
        b->ev_head = (b->ev_head + 1) % cap;
        b->ev_n--;
        if (read(b->upgradefd, &junk, sizeof(junk)) < 0) {
            /* Counted when pushed; nothing else reads it. */
        }
    } else if (ev) {
        memset(ev, 0, sizeof(*ev));
    }
    pthread_mutex_unlock(&b->mu);
    return type;
}

/* Tell the tools that wait for the probation's outcome, and let them go. */
static void prob_answer(baton *b, int err, const char *text)
{
    char *buf = b->txbuf;

    for (int i = 0; i < BATON__MAX_PEERS; i++) {
        struct baton__peer *p = &b->peers[i];
        if (p->fd < 0 || !p->waits_prob)
            continue;
        baton__send(p->fd, buf,
                    baton__enc_result(buf, BATON__MSG_RESULT, err, (uint32_t)b->prob.generation,
                                      (uint32_t)b->prob.pid, text),
                    NULL, 0);
        baton__drop_peer(b, p, 0, NULL);
    }
}

static void prob_stop_watching(baton *b)
{
    if (b->prob.pidfd < 0)
        return;
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->prob.pidfd, NULL);
    close(b->prob.pidfd);
    b->prob.pidfd = -1;
}

/* The successor's probation began at step_down(): watch it by its pidfd
 * (opened while its link is still up, so it is that process), and tell
 * the tools that wait how long it lasts. */
static void prob_start(baton *b, struct baton__peer *succ)
{
    char *buf = b->txbuf, text[96];
    int fd = (int)syscall(SYS_pidfd_open, succ->pid, 0);

    if (fd < 0 || ep_add(b, fd, EPOLLIN, TAG_PROB) < 0) {
        baton__log(b, BATON_LOG_WARNING,
                   "cannot watch successor pid %d (%s): no probation, stepping down for good",
                   (int)succ->pid, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    b->prob.pid = succ->pid;
    b->prob.pidfd = fd;
    b->prob.generation = b->generation + 1;
    b->prob.began = baton__now_ms();
    b->prob.until = b->prob.began + (uint64_t)b->opts.probation_ms;
    b->prob.until_rt = baton__realtime_ms() + (uint64_t)b->opts.probation_ms;
    b->prob.rolling_back = false;
    b->prob.job = succ->job;
    b->prob.t = succ->t;
    snprintf(text, sizeof(text), "serving, on probation for %d ms", b->opts.probation_ms);
    for (int i = 0; i < BATON__MAX_PEERS; i++) {
        struct baton__peer *p = &b->peers[i];
        if (p->fd < 0 || !p->waits_job)
            continue;
        /* Answered when the probation ends (prob_answer). */
        baton__send(p->fd, buf,
                    baton__enc_result(buf, BATON__MSG_PROBATION, b->opts.probation_ms,
                                      (uint32_t)b->prob.generation, (uint32_t)succ->pid, text),
                    NULL, 0);
        p->waits_job = false;
        p->waits_prob = true;
        p->deadline = 0;
    }
    baton__log(b, BATON_LOG_INFO, "successor pid %d is on probation for %d ms", (int)succ->pid,
               b->opts.probation_ms);
}

/* The successor lived through its probation (or stopped without dying:
 * the deadline decides): it is final. */
static void prob_pass(baton *b)
{
    prob_stop_watching(b);
    baton__log(b, BATON_LOG_INFO, "successor pid %d passed its probation (%d ms)", (int)b->prob.pid,
               b->opts.probation_ms);
    baton__gen_write(b);
    event_push(b, BATON_EVENT_RELEASED, b->prob.pid, b->prob.generation, 0);
    prob_answer(b, 0, "passed its probation");
}

/* Another process took over from our successor: it is not ours to undo. */
static pid_t other_owner(baton *b)
{
    pid_t owner = baton__record_pid(b);

    /* Alive by its pidfd: a zombie or a reused pid is no owner. */
    if (owner > 0 && owner != b->prob.pid && owner != getpid() && !baton__pid_gone(owner, 0))
        return owner;
    return 0;
}

/* Become the owner again: the directory's lock, our control socket and
 * our owner record, with the generation we had. Retried every 10 ms while
 * another process holds the lock (a successor of our dead successor,
 * whose takeover fails). Called with b->mu held. */
static void prob_resume(baton *b)
{
    char tmp[128], status[320];
    pid_t other;
    int fd = -1, r;

    r = baton__lock_try(b);
    if (r == -EBUSY) {
        b->prob.retry_at = baton__now_ms() + 10;
        return;
    }
    other = r == 0 ? other_owner(b) : 0;
    if (other) {
        struct baton__record rec;
        int gen = 0;
        if (baton__record_read(b->dirfd, &rec) == 0) {
            gen = rec.pid == other ? rec.generation : 0;
            baton__record_free(&rec);
        }
        baton__unlock(b);
        b->prob.rolling_back = false;
        baton__log(b, BATON_LOG_INFO, "pid %d took over meanwhile: stepping down again",
                   (int)other);
        b->superseded = true;
        baton__gen_write(b);
        event_push(b, BATON_EVENT_STEP_DOWN, other, gen, 0);
        event_push(b, BATON_EVENT_RELEASED, other, gen, 0);
        prob_answer(b, 0, "a later generation serves");
        return;
    }
    /* The history first: whoever sees our owner record again finds the
     * last upgrade rolled back. */
    {
        /* The takeover's own timeline, with the outcome it came to. */
        struct baton__peer was = {.pid = b->prob.pid, .job = b->prob.job, .t = b->prob.t};
        snprintf(status, sizeof(status), "rolled back: %s; generation %d serves again", b->prob.why,
                 b->generation);
        baton__upgrade_write(b, &was, -EOWNERDEAD, status);
    }
    if (r == 0)
        r = baton__ctl_create(b, &fd, tmp, sizeof(tmp));
    if (r == 0) {
        r = baton__ctl_publish(b, fd, tmp);
        if (r < 0)
            close(fd);
    }
    if (r == 0) {
        b->ctl_fd = fd;
        ep_add(b, fd, EPOLLIN, TAG_CTL);
    }
    b->prob.rolling_back = false;
    b->prob.retry_at = 0;
    b->prob.until_rt = 0;
    if (r == 0)
        r = baton__record_write_locked(b);
    baton__unlock(b);
    baton__gen_write(b);
    if (r < 0) {
        /* We serve (the application resumed), but nobody can reach us to
         * take over: ctl_check() puts the socket back when it can. */
        baton__log(b, BATON_LOG_WARNING, "rolling back: cannot republish ourselves: %s",
                   baton__last_err());
        b->ctl_retry_at = baton__now_ms() + 1000;
    }
    snprintf(status, sizeof(status), "serving, generation %d (rolled back: %s)", b->generation,
             b->prob.why);
    baton__sd_notify_status(b, status);
    baton__log(b, BATON_LOG_WARNING, "rolled back: generation %d serves again", b->generation);
    standby_plan(b);
    prob_answer(b, -EOWNERDEAD, b->prob.why);
}

/* Announce the rollback and take the directory back: the application
 * hears it at once (its listeners were never closed: what queued meanwhile
 * is accepted), the directory follows. */
static void prob_rollback(baton *b)
{
    unsigned lost = b->handed;
    size_t len = strlen(b->prob.why);

    snprintf(b->prob.why + len, sizeof(b->prob.why) - len, "; %u handed connection(s) lost with it",
             lost);
    baton__log(b, BATON_LOG_WARNING, "%s; rolling back", b->prob.why);
    b->superseded = false;
    b->draining_since_ms = 0;
    b->handoff_ended = false;
    b->handed = 0;
    b->prob.await_app = false;
    b->prob.retry_at = 0;
    baton__gen_write(b);
    event_push(b, BATON_EVENT_RESUME, b->prob.pid, b->prob.generation, lost);
    prob_resume(b);
}

/* The successor died within its probation: unless a later generation
 * serves, we take the service back. If the application is handing off on
 * the link right now, the rollback waits until it is done with it
 * (baton__prob_app_done()): only then is the count of connections the
 * successor confirmed, and so lost with it, final. */
static void prob_died(baton *b, const char *gave_up)
{
    siginfo_t si = {0};
    char how[64];
    uint64_t ms = baton__now_ms() - b->prob.began;
    bool busy = false;

    if (b->prob.pidfd < 0)
        return;
    if (gave_up)
        snprintf(how, sizeof(how), "%s", gave_up);
    else if (waitid(P_PIDFD, b->prob.pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid &&
             si.si_code != CLD_EXITED)
        snprintf(how, sizeof(how), "was killed by signal %d", si.si_status);
    else if (si.si_pid)
        snprintf(how, sizeof(how), "exited with status %d", si.si_status);
    else
        snprintf(how, sizeof(how), "died");
    prob_stop_watching(b);
    snprintf(b->prob.why, sizeof(b->prob.why),
             "successor pid %d (generation %d) %s %llu ms into its probation", (int)b->prob.pid,
             b->prob.generation, how, (unsigned long long)ms);
    if (other_owner(b)) {
        baton__log(b, BATON_LOG_INFO, "%s; a later generation serves: nothing to roll back",
                   b->prob.why);
        baton__gen_write(b);
        event_push(b, BATON_EVENT_RELEASED, b->prob.pid, b->prob.generation, 0);
        prob_answer(b, 0, "a later generation serves");
        return;
    }
    /* Its link is of no use any more; a handoff on it fails. */
    for (int i = 0; i < BATON__MAX_PEERS; i++) {
        struct baton__peer *p = &b->peers[i];
        if (p->fd < 0 || p->phase != BATON__PEER_SUCCESSOR)
            continue;
        if (p->app_busy)
            busy = true;
        else
            baton__drop_peer(b, p, 0, NULL);
    }
    b->prob.rolling_back = true;
    if (busy) {
        b->prob.await_app = true;
        baton__gen_write(b);
        return;
    }
    prob_rollback(b);
}

void baton__prob_app_done(baton *b)
{
    if (b->prob.await_app)
        prob_rollback(b);
}

static void step_down(baton *b, struct baton__peer *p)
{
    bool probation = b->opts.probation_ms > 0;

    /* Our standby would wait on for a job we can no longer start. */
    baton__standby_release(b, p->pid);
    baton__standby_end(b);
    b->superseded = true;
    b->takeover_busy = false;
    p->phase = BATON__PEER_SUCCESSOR;
    p->deadline = 0;
    p->t.serving = baton__now_us();
    b->draining_since_ms = baton__realtime_ms();
    b->handed = 0;
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->ctl_fd, NULL);
    close(b->ctl_fd);
    b->ctl_fd = -1;
    if (probation)
        prob_start(b, p);
    {
        char text[256];
        snprintf(text, sizeof(text), "serving%s%s", b->cap_note[0] ? "; " : "", b->cap_note);
        baton__upgrade_write(b, p, 0, text);
        b->cap_note[0] = 0;
    }
    baton__log(b, BATON_LOG_INFO, "successor pid %d (generation %d) serves; stepping down",
               (int)p->pid, b->generation + 1);
    baton__gen_write(b);
    if (job_active(b))
        job_finish(b, 0, b->generation + 1, p->pid, "ready");
    /* Last: the application's handoff needs the lock we hold anyway, so
     * telling it sooner would gain nothing, and when it hears, the records
     * are written and no file of ours is open. */
    event_push(b, BATON_EVENT_STEP_DOWN, p->pid, b->generation + 1, 0);
    if (b->prob.pidfd < 0)
        event_push(b, BATON_EVENT_RELEASED, p->pid, b->generation + 1, 0);
}

static void on_message(baton *b, struct baton__peer *p, int slot, const struct baton__msg *m)
{
    char *buf = b->txbuf;
    int r = 0;

    switch (p->phase * 16 + m->type) {
    case BATON__PEER_REQ * 16 + BATON__MSG_REQ:
        if (m->u.req.kind == BATON__REQ_TAKEOVER && doomed_token(b, m->u.req.job)) {
            /* A process of a job we reported failed (one that forked, or
             * came late): it never takes over, and it is ended. */
            pid_t pid = p->pid;
            baton__drop_peer(b, p, -ETIMEDOUT, "its upgrade was reported failed");
            doom_pid(b, pid);
            return;
        } else if (m->u.req.kind == BATON__REQ_TAKEOVER) {
            p->job = m->u.req.job;
            baton__fault("o-hello");
            r = start_takeover(b, p, slot);
        } else if (m->u.req.kind == BATON__REQ_UPGRADE && !b->superseded) {
            p->phase = BATON__PEER_UPGRADE;
            p->waits_job = true;
            p->deadline = 0;
            r = baton__job_start(
                b, NULL, m->u.req.timeout_ms ? (int)m->u.req.timeout_ms : b->opts.ready_timeout_ms,
                false);
            if (r > 0)
                r = 0;
            if (r < 0) {
                /* The tool is told why; nobody else is. */
                baton__drop_peer(b, p, r, baton__last_err());
                return;
            }
        } else
            baton__drop_peer(b, p, -EINVAL,
                             b->superseded ? "superseded already" : "unknown request");
        break;
    case BATON__PEER_READY * 16 + BATON__MSG_READY:
        p->takes_conns = m->u.ready.flags & BATON__READY_TAKES_CONNS;
        p->t.ready = baton__now_us();
        baton__fault("o-ready");
        r = baton__send(p->fd, buf, baton__enc_empty(buf, BATON__MSG_COMMIT), NULL, 0);
        p->t.committed = baton__now_us();
        p->phase = BATON__PEER_PUBLISH;
        /* It has a rename and a small write left to do: a fresh, full
         * deadline for that, however long it took to get ready. */
        p->deadline = baton__now_ms() + b->opts.ready_timeout_ms;
        baton__fault("o-commit");
        break;
    case BATON__PEER_PUBLISH * 16 + BATON__MSG_PUBLISHED:
        /* Step down only if the successor hears that we do: if it gave up
         * (shut its side at its deadline), this send fails and we keep
         * serving, with our socket put back. */
        baton__fault("o-stepdown");
        r = baton__send(p->fd, buf, baton__enc_empty(buf, BATON__MSG_RELEASED), NULL, 0);
        if (r < 0) {
            ctl_check(b);
            break;
        }
        step_down(b, p);
        break;
    default:
        baton__drop_peer(b, p, -EPROTO, "unexpected message");
        return;
    }
    if (r < 0)
        baton__drop_peer(b, p, r, strerror(-r));
}

static void on_peer(baton *b, int slot, int fd, uint32_t events)
{
    struct baton__peer *p = &b->peers[slot];
    struct baton__msg m;
    size_t len, nfds;
    int fds[BATON__BATCH_MAX], r;

    if (p->fd != fd)
        return;
    if ((events & EPOLLOUT) && p->phase == BATON__PEER_SENDING) {
        r = pump(b, p, slot);
        if (r < 0) {
            baton__drop_peer(b, p, r, "send failed");
            return;
        }
    }
    while (p->fd == fd && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        r = baton__recv(fd, b->txbuf, BATON__MSG_MAX, fds, BATON__BATCH_MAX, &len, &nfds);
        if (r == -EAGAIN)
            return;
        if (r < 0) {
            /* Our successor on probation hung up, alive: if it no longer
             * owns the directory (it freed its handle), it gave up. */
            bool gave_up = p->phase == BATON__PEER_SUCCESSOR && b->prob.pidfd >= 0 &&
                           p->pid == b->prob.pid && baton__record_pid(b) != b->prob.pid;
            if (p->phase == BATON__PEER_PUBLISH)
                ctl_check(b);
            /* A peer that hangs up before asking anything is `baton status`
             * checking that we live: nothing to report. */
            bool quiet = p->phase == BATON__PEER_SUCCESSOR || p->phase == BATON__PEER_REQ;
            baton__drop_peer(b, p, 0, r == -ECONNRESET ? (quiet ? NULL : "hung up") : strerror(-r));
            if (gave_up)
                prob_died(b, "gave the directory up (freed its handle)");
            return;
        }
        if (nfds) {
            baton__close_fds(fds, nfds);
            baton__drop_peer(b, p, -EPROTO, "sent fds unasked");
            return;
        }
        if (baton__msg_decode(b->txbuf, len, &m) < 0) {
            baton__drop_peer(b, p, -EPROTO, "malformed message");
            return;
        }
        on_message(b, p, slot, &m);
    }
}

static void expire(baton *b)
{
    uint64_t now = baton__now_ms();

    for (int i = 0; i < BATON__MAX_PEERS; i++) {
        struct baton__peer *p = &b->peers[i];
        if (p->fd < 0 || !p->deadline || p->deadline > now)
            continue;
        if (p->phase == BATON__PEER_PUBLISH)
            ctl_check(b);
        baton__drop_peer(b, p, -ETIMEDOUT, "timed out");
    }
    if (job_active(b) && b->job.deadline <= now)
        job_finish(b, -ETIMEDOUT, 0, 0,
                   b->job.exited ? "the successor exited (status 0) and no process of its took "
                                   "over in time"
                                 : "successor not ready in time");
    for (int i = 0; i < BATON__DOOMED_MAX; i++) {
        struct baton__doomed *d = &b->doomed[i];
        if (!d->pid || !d->kill_at || d->kill_at > now)
            continue;
        d->kill_at = 0;
        baton__log(b, BATON_LOG_WARNING,
                   "successor pid %d still runs %d ms after SIGTERM; sending SIGKILL", (int)d->pid,
                   BATON__KILL_GRACE_MS);
        pidfd_signal(d->pidfd, SIGKILL);
    }
    if (b->ctl_retry_at && b->ctl_retry_at <= now) {
        if (b->ctl_fd < 0 && !b->superseded) {
            /* A rollback could not republish us: try again from scratch. */
            b->ctl_retry_at = 0;
            b->prob.rolling_back = true;
            prob_resume(b);
        } else {
            ctl_check(b);
        }
    }
    if (b->prob.pidfd >= 0 && b->prob.until <= now)
        prob_pass(b);
    baton__gens_expire(b, now);
    if (b->sweep_at && b->sweep_at <= now) {
        /* Once superseded, the directory's leftovers are our successor's
         * to sweep (it does, 100 ms after its own ready). Skipping it also
         * keeps the thread from holding a directory handle for a moment
         * while the application, told it stepped down, counts its files. */
        b->sweep_at = 0;
        if (!b->superseded)
            baton__dir_sweep(b);
    }
    if (b->standby.at && b->standby.at <= now)
        baton__standby_start(b);
    if (b->prob.rolling_back && b->prob.retry_at && b->prob.retry_at <= now)
        prob_resume(b);
    if (b->accept_paused_until && b->accept_paused_until <= now) {
        accept_resume(b);
        if (b->ctl_fd >= 0)
            accept_peers(b);
    }
}

/*
 * The process we started exited. Before READY with a failure status, the
 * job fails now. With status 0 it may have forked (a server that
 * daemonizes, a wrapper script): a process of its job may still take
 * over, so the job's deadline decides.
 */
static void on_job(baton *b)
{
    siginfo_t si = {0};
    char msg[128];

    if (b->job.pidfd < 0)
        return;
    if (waitid(P_PIDFD, b->job.pidfd, &si, WEXITED | WNOHANG) < 0) {
        if (errno != ECHILD)
            return;
        si.si_code = CLD_EXITED; /* the application reaped it for us */
        si.si_status = -1;
    } else if (si.si_pid == 0) {
        return;
    }
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->job.pidfd, NULL);
    close(b->job.pidfd);
    b->job.pidfd = -1;
    if (job_active(b) && si.si_code == CLD_EXITED && si.si_status == 0) {
        b->job.exited = true;
        baton__log(b, BATON_LOG_INFO,
                   "successor pid %d exited (status 0) before ready; a process of its job may "
                   "still take over until the deadline",
                   (int)b->job.pid);
    } else if (job_active(b)) {
        if (si.si_code == CLD_EXITED)
            snprintf(msg, sizeof(msg), "successor pid %d exited with status %d before ready",
                     (int)b->job.pid, si.si_status);
        else
            snprintf(msg, sizeof(msg), "successor pid %d killed by signal %d before ready",
                     (int)b->job.pid, si.si_status);
        b->job.pid = 0; /* reaped: nothing of it to end */
        job_finish(b, -ECHILD, 0, 0, msg);
    }
    b->job.pid = 0;
}

/*
 * The job's upgrade is reported failed: that must stay true. Its token is
 * refused from now on; every link of its processes is dropped, wherever it
 * got to (one between COMMIT and PUBLISHED may have put its socket in
 * place: put ours back), and those processes and the one we started are
 * ended. A peer's own deadline may be later than the job's; what we
 * reported wins.
 */
static void job_stop(baton *b)
{
    b->failed_tokens[b->failed_next++ % BATON__FAILED_TOKENS] = b->job.token;
    for (int i = 0; i < BATON__MAX_PEERS; i++) {
        struct baton__peer *p = &b->peers[i];
        bool published = p->phase == BATON__PEER_PUBLISH;
        pid_t pid = p->pid;

        if (p->fd < 0 || p->waits_job || !peer_of_job(b, p))
            continue;
        baton__drop_peer(b, p, -ETIMEDOUT, "its upgrade was reported failed");
        if (published)
            ctl_check(b);
        if (pid != b->job.pid)
            doom_pid(b, pid);
    }
    if (b->job.pidfd >= 0) {
        epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->job.pidfd, NULL);
        doom(b, b->job.pid, b->job.pidfd);
    }
    b->job.pidfd = -1;
    b->job.pid = 0;
}

static void job_finish(baton *b, int err, uint32_t generation, pid_t pid, const char *msg)
{
    char *buf = b->txbuf;
    uint64_t one = 1;

    b->job.done = true;
    b->job.result = err;
    snprintf(b->job.msg, sizeof(b->job.msg), "%s", msg ? msg : "");
    if (err && !b->job.recorded)
        baton__upgrade_write(b, NULL, err, b->job.msg);
    for (int i = 0; i < BATON__MAX_PEERS; i++) {
        struct baton__peer *p = &b->peers[i];
        if (p->fd < 0 || !p->waits_job)
            continue;
        baton__send(p->fd, buf,
                    baton__enc_result(buf, BATON__MSG_RESULT, err, generation, pid, b->job.msg),
                    NULL, 0);
        baton__drop_peer(b, p, 0, NULL);
    }
    if (err && b->job.notify)
        event_push(b, BATON_EVENT_FAILED, b->job.started, b->generation + 1, 0)->error = err;
    if (err) {
        baton__log(b, BATON_LOG_WARNING, "upgrade failed: %s", b->job.msg);
        job_stop(b);
        standby_plan(b);
    }
    if (b->job.local && write(b->jobfd, &one, sizeof(one)) < 0) {
        /* Cannot overflow: one write per job. */
    }
    /* A successor that became the owner lives on; stop watching it so that
     * its exit, much later, is none of our business. */
    if (!err && b->job.pidfd >= 0) {
        epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->job.pidfd, NULL);
        close(b->job.pidfd);
        b->job.pidfd = -1;
        b->job.pid = 0;
    }
}

int baton__owner_dispatch(baton *b)
{
    struct epoll_event ev[32];
    bool job = false, stop = false;
    uint64_t junk;
    int n;

    n = epoll_wait(b->epfd, ev, 32, 0);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < n; i++) {
        uint64_t d = ev[i].data.u64;
        switch (d & 0xff) {
        case TAG_CTL:
            if (b->ctl_fd >= 0)
                accept_peers(b);
            break;
        case TAG_TIMER:
            if (read(b->timerfd, &junk, sizeof(junk)) < 0) {
                /* Spurious wake-ups read nothing; expire() checks times. */
            }
            break;
        case TAG_WAKE:
            stop = true;
            break;
        case TAG_JOB:
            job = true; /* after the peers: PUBLISHED may be in this batch */
            break;
        case TAG_PRED:
            baton__pred_event(b);
            break;
        case TAG_DIR:
            on_dir_change(b);
            break;
        case TAG_PEER:
            on_peer(b, (d >> 8) & 0xff, (int)(d >> 32), ev[i].events);
            break;
        case TAG_DOOMED:
            on_doomed(b, (int)((d >> 8) & 0xff));
            break;
        case TAG_PROB:
            prob_died(b, NULL);
            break;
        case TAG_ENDING:
            baton__gens_exited(b, (int)((d >> 8) & 0xff));
            room_made(b);
            break;
        case TAG_STANDBY:
            baton__standby_exited(b);
            break;
        }
    }
    if (job)
        on_job(b);
    expire(b);
    arm_timer(b);
    pthread_mutex_unlock(&b->mu);
    return stop ? 1 : 0;
}

static void *thread_main(void *arg)
{
    baton *b = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        struct pollfd p = {.fd = b->epfd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            break;
        if (baton__owner_dispatch(b) == 1)
            break;
    }
    return NULL;
}

int baton__owner_start(baton *b, int ctl_fd)
{
    char watch[64];
    sigset_t all, old;
    int r;

    pthread_mutex_lock(&b->mu);
    b->ctl_fd = ctl_fd;
    r = ep_add(b, ctl_fd, EPOLLIN, TAG_CTL);
    /* The link to our predecessor stays open: handed connections come
     * over it, and its end tells us the predecessor is gone. When the
     * application takes connections, its baton_conn_accept() reads the
     * link itself: we wake only at its end. Woken by every batch too, we
     * would race the application for the link and b->mu in the middle of
     * the handoff, a thread switch its clients wait for. */
    if (r == 0 && b->pred_fd >= 0)
        r = ep_add(b, b->pred_fd, b->opts.flags & BATON_TAKE_CONNS ? EPOLLRDHUP : EPOLLIN,
                   TAG_PRED);
    /* The application's baton_conn_fd() wakes on the link too: its
     * baton_conn_accept() reads the link itself. */
    if (r == 0 && b->pred_fd >= 0 && (b->opts.flags & BATON_TAKE_CONNS)) {
        struct epoll_event ev = {.events = EPOLLIN};
        if (epoll_ctl(b->connep, EPOLL_CTL_ADD, b->pred_fd, &ev) < 0)
            r = -errno;
    }
    /* Best effort: without inotify we still put our socket back whenever
     * a successor we were talking to fails. */
    b->inotifyfd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    snprintf(watch, sizeof(watch), "/proc/self/fd/%d", b->dirfd);
    if (b->inotifyfd >= 0 && (inotify_add_watch(b->inotifyfd, b->dir_by_fd ? watch : b->dir,
                                                IN_MOVED_TO | IN_DELETE | IN_CREATE) < 0 ||
                              ep_add(b, b->inotifyfd, EPOLLIN, TAG_DIR) < 0)) {
        close(b->inotifyfd);
        b->inotifyfd = -1;
    }
    /* Older generations may be past their drain bound already, and
     * successors killed mid-way may have left files behind. Neither is
     * urgent (drain bounds are seconds), and both scan the directory and
     * /proc: look once the handoff that follows baton_ready() is over,
     * not while the application waits for us to return. */
    b->gens_check_at = b->sweep_at = baton__now_ms() + 100;
    standby_plan(b);
    arm_timer(b);
    pthread_mutex_unlock(&b->mu);
    if (r < 0)
        return baton__fail(b, r, "epoll_ctl(control socket)");
    if (b->opts.flags & BATON_NO_THREAD)
        return 0;
    /* The thread must never run the application's signal handlers. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    r = pthread_create(&b->thread, NULL, thread_main, b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0)
        return baton__fail(b, r, "pthread_create");
    b->thread_running = true;
    return 0;
}

void baton__owner_stop(baton *b)
{
    uint64_t one = 1;

    if (b->thread_running) {
        if (write(b->wakefd, &one, sizeof(one)) < 0) {
            /* eventfd writes of 1 do not fail short of overflow. */
        }
        pthread_join(b->thread, NULL);
        b->thread_running = false;
    }
    baton__standby_end(b);
    if (b->prob.pidfd >= 0) {
        /* Nobody can roll back now: what the tools waited for is decided. */
        prob_stop_watching(b);
        prob_answer(b, 0, "the old generation exited before the probation ended");
    }
    for (int i = 0; i < BATON__MAX_PEERS; i++)
        if (b->peers[i].fd >= 0)
            baton__drop_peer(b, &b->peers[i], 0, NULL);
    /* Generations we ended got SIGTERM; SIGKILL, if needed, is the next
     * owner's (the drain bound) or nobody's. */
    baton__gens_forget(b);
    /* Processes of failed jobs must not outlive the handle unchecked. */
    for (int i = 0; i < BATON__DOOMED_MAX; i++) {
        struct baton__doomed *d = &b->doomed[i];
        if (!d->pid)
            continue;
        pidfd_signal(d->pidfd, SIGKILL);
        close(d->pidfd);
        memset(d, 0, sizeof(*d));
    }
    free(b->txbuf);
    b->txbuf = NULL;
}

void baton__owner_forget(baton *b)
{
    baton__standby_forget(b);
    for (int i = 0; i < BATON__MAX_PEERS; i++) {
        struct baton__peer *p = &b->peers[i];
        if (p->fd >= 0)
            close(p->fd);
        if (p->state_fd >= 0)
            close(p->state_fd);
        p->fd = p->state_fd = -1;
    }
    for (int i = 0; i < BATON__DOOMED_MAX; i++)
        if (b->doomed[i].pid)
            close(b->doomed[i].pidfd);
    memset(b->doomed, 0, sizeof(b->doomed));
    if (b->prob.pidfd >= 0)
        close(b->prob.pidfd);
    b->prob.pidfd = -1;
    baton__gens_forget(b);
    b->thread_running = false;
    free(b->txbuf);
    b->txbuf = NULL;
}

/* Start a successor unless one we started is still on its way (then
 * join it). Called with b->mu held. */
static int job_spawn(baton *b, char *const argv[], int timeout_ms)
{
    uint64_t token = 0;
    int r;

    if (b->superseded)
        return baton__fail(b, EALREADY, "a successor serves already");
    if (job_active(b))
        return 0;
    /* A failed job's processes are the doomed slots' now; a successful
     * job's process is the owner's business, not ours. */
    while (!token)
        if (getrandom(&token, sizeof(token), 0) != sizeof(token))
            return baton__fail(b, errno, "getrandom");
    memset(&b->job, 0, sizeof(b->job));
    b->job.pidfd = -1;
    b->job.token = token;
    b->job.spawned_us = baton__now_us();
    if (!argv && baton__standby_take(b, token, &b->job.pid, &b->job.pidfd)) {
        r = 0;
        baton__log(b, BATON_LOG_INFO, "woke standby successor pid %d", (int)b->job.pid);
    } else {
        r = baton__spawn(b, argv, token, &b->job.pid, &b->job.pidfd);
        if (r == 0)
            baton__log(b, BATON_LOG_INFO, "started successor pid %d", (int)b->job.pid);
    }
    if (r < 0) {
        b->job.pid = 0;
        b->job.token = 0;
        return r;
    }
    b->job.started = b->job.pid;
    ep_add(b, b->job.pidfd, EPOLLIN, TAG_JOB);
    b->job.deadline = baton__now_ms() + timeout_ms;
    arm_timer(b);
    return 0;
}

/* baton_upgrade(): wait for the job's outcome, dispatching ourselves when
 * there is no thread to do it. */
static int job_wait(baton *b)
{
    bool self = b->opts.flags & BATON_NO_THREAD;
    int r;

    for (;;) {
        struct pollfd p[2] = {{.fd = b->jobfd, .events = POLLIN},
                              {.fd = b->epfd, .events = POLLIN}};
        if (poll(p, self ? 2 : 1, -1) < 0 && errno != EINTR)
            return -errno;
        if (p[0].revents & POLLIN)
            break;
        if (self && (p[1].revents & POLLIN))
            baton__owner_dispatch(b);
    }
    pthread_mutex_lock(&b->mu);
    r = b->job.result;
    if (r < 0)
        baton__fail(b, r, "upgrade: %s", b->job.msg);
    b->job.local = false;
    pthread_mutex_unlock(&b->mu);
    return r;
}

/*
 * Start a successor (or join the one being started). For a request from
 * the tool (local = false) the dispatcher calls this with b->mu held and
 * answers later; baton_upgrade() (local = true) waits for the outcome.
 */
int baton__job_start(baton *b, char *const argv[], int timeout_ms, bool local)
{
    uint64_t junk;
    int r;

    if (!local)
        return job_spawn(b, argv, timeout_ms);
    pthread_mutex_lock(&b->mu);
    r = job_spawn(b, argv, timeout_ms);
    if (r == 0) {
        b->job.local = true;
        if (read(b->jobfd, &junk, sizeof(junk)) < 0) {
            /* Nothing pending: the usual case. */
        }
    }
    pthread_mutex_unlock(&b->mu);
    return r < 0 ? r : job_wait(b);
}
