/* SPDX-License-Identifier: MIT */
/*
 * The successor's side of a takeover: ask the owner for its fds and state
 * in baton_open(), and tell it we serve in baton_ready().
 *
 * READY is answered with COMMIT before we publish our control socket: the
 * owner may have given up on us (timeout) while we were starting, and then
 * we must not replace its socket. Only after PUBLISHED does the owner step
 * down, so until then it serves as if nothing happened.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

struct rx {
    char buf[BATON__MSG_MAX];
    int fds[BATON__BATCH_MAX];
    size_t len, nfds;
    struct baton__msg m;
};

/* Receive and decode the next message before the deadline. An ERROR from
 * the owner becomes its error code. */
static int rx_next(baton *b, int fd, uint64_t deadline, struct rx *x)
{
    int r;

    for (;;) {
        r = baton__wait_fd(fd, POLLIN, deadline);
        if (r < 0)
            return baton__fail(b, r, "waiting for the owner of %s", b->dir);
        r = baton__recv(fd, x->buf, sizeof(x->buf), x->fds, BATON__BATCH_MAX, &x->len, &x->nfds);
        if (r == -EAGAIN)
            continue;
        if (r == -EMFILE)
            return baton__fail(b, r, "receiving fds from the owner (raise RLIMIT_NOFILE?)");
        if (r < 0)
            return baton__fail(b, r, "receiving from the owner of %s", b->dir);
        break;
    }
    r = baton__msg_decode(x->buf, x->len, &x->m);
    if (r < 0) {
        baton__close_fds(x->fds, x->nfds);
        return baton__fail(b, r, "malformed message from the owner of %s", b->dir);
    }
    if (x->m.type == BATON__MSG_ERROR) {
        int err = x->m.u.result.err < 0 ? x->m.u.result.err : -EPROTO;
        baton__close_fds(x->fds, x->nfds);
        return baton__fail(b, err, "the owner refused: %.*s", (int)x->m.u.result.text_len,
                           x->m.u.result.text);
    }
    return 0;
}

/* The most fds this process could receive: its RLIMIT_NOFILE soft limit,
 * and no more than 65,536 (the fd table baton_open() reserved). */
static uint32_t nofile_max(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur > 65536)
        return 65536;
    return (uint32_t)rl.rlim_cur;
}

static int expect(baton *b, struct rx *x, int type, size_t nfds)
{
    if (x->m.type == type && x->nfds == nfds)
        return 0;
    baton__close_fds(x->fds, x->nfds);
    return baton__fail(b, EPROTO, "the owner sent message type %d with %zu fds, expected %d",
                       x->m.type, x->nfds, type);
}

/* Take one FDS batch into b->inh; every entry must come with its fd. */
static int take_batch(baton *b, struct rx *x, uint32_t announced)
{
    uint32_t count = x->m.u.fds.count;
    uint32_t i;
    int r = 0;

    if (x->nfds != count || b->inh.n + count > announced) {
        baton__close_fds(x->fds, x->nfds);
        return baton__fail(b, EPROTO, "fd batch of %u entries came with %zu fds", count, x->nfds);
    }
    for (i = 0; i < count && r == 0; i++) {
        const struct baton__wire_entry *e = &x->m.u.fds.entries[i];
        char name[BATON_NAME_MAX + 1], addr[BATON_ADDR_MAX + 1];

        memcpy(name, e->name, e->name_len);
        name[e->name_len] = 0;
        memcpy(addr, e->addr, e->addr_len);
        addr[e->addr_len] = 0;
        if (!baton__name_ok(name) || baton__table_find(&b->inh, name) ||
            (e->kind == BATON__KIND_FD ? e->addr_len != 0 : baton__addr_kind(addr) != e->kind))
            r = baton__fail(b, EPROTO, "bad fd entry \"%s\" from the owner", name);
        else if ((r = baton__table_add(&b->inh, name, addr, e->kind, x->fds[i])) < 0)
            r = baton__fail(b, r, "storing inherited fd %s", name);
    }
    if (r < 0)
        baton__close_fds(x->fds + i - 1, count - i + 1);
    return r;
}

static int receive_all(baton *b, int fd, uint64_t deadline)
{
    struct rx *x = malloc(sizeof(*x));
    uint32_t nfds;
    uint64_t state_len;
    char req[BATON__HDR_LEN + 20];
    int r;

    if (!x)
        return baton__fail(b, ENOMEM, "taking over from the owner of %s", b->dir);
    r = baton__send(
        fd, req, baton__enc_req_job(req, BATON__REQ_TAKEOVER, 0, getpid(), b->job_token), NULL, 0);
    if (r < 0) {
        r = baton__fail(b, r, "sending to the owner of %s", b->dir);
        goto out;
    }
    if ((r = rx_next(b, fd, deadline, x)) < 0 || (r = expect(b, x, BATON__MSG_HELLO, 0)) < 0)
        goto out;
    nfds = x->m.u.hello.nfds;
    state_len = x->m.u.hello.state_len;
    b->generation = x->m.u.hello.generation + 1;
    b->pred_pid = x->m.u.hello.pid;
    if (b->generation <= 1) {
        r = baton__fail(b, EPROTO, "generation overflow");
        goto out;
    }
    baton__fault("s-hello");
    /* The owner said how many fds come: make room once (at most what this
     * process may open; more would fail at receipt anyway), also in the
     * table of what we pass on, where the application's claims go. */
    if ((r = baton__table_reserve(&b->inh, nfds < nofile_max() ? nfds : nofile_max())) < 0 ||
        (r = baton__table_reserve(&b->own, nfds < nofile_max() ? nfds : nofile_max())) < 0) {
        r = baton__fail(b, r, "making room for %u inherited fds", nfds);
        goto out;
    }
    while (b->inh.n < nfds) {
        if ((r = rx_next(b, fd, deadline, x)) < 0 ||
            (r = expect(b, x, BATON__MSG_FDS, x->nfds)) < 0 || (r = take_batch(b, x, nfds)) < 0)
            goto out;
        if (b->inh.n < nfds)
            baton__fault("s-mid-fds");
    }
    if ((r = rx_next(b, fd, deadline, x)) < 0 ||
        (r = expect(b, x, BATON__MSG_STATE, state_len ? 1 : 0)) < 0)
        goto out;
    if (x->m.u.state.len != state_len) {
        baton__close_fds(x->fds, x->nfds);
        r = baton__fail(b, EPROTO, "state length changed from %llu to %llu",
                        (unsigned long long)state_len, (unsigned long long)x->m.u.state.len);
        goto out;
    }
    if (state_len && (r = baton__state_map(b, x->fds[0], state_len)) < 0)
        goto out;
    baton__fault("s-mid-state");
    if ((r = rx_next(b, fd, deadline, x)) < 0 || (r = expect(b, x, BATON__MSG_END, 0)) < 0)
        goto out;
out:
    free(x);
    return r;
}

static void forget_inherited(baton *b)
{
    baton__table_close(&b->inh);
    if (b->state_map)
        munmap(b->state_map, b->state_map_len);
    b->state_map = NULL;
    b->state_map_len = 0;
    b->generation = 1;
    b->pred_pid = 0;
}

/*
 * Who the owner is, from the kernel (SO_PEERCRED), before it says a word:
 * if it dies before HELLO we still know whom to wait for. And it must be
 * one of us: our euid, root, or the uid we allow to take over from us. A
 * socket of anyone else's at control.sock would hand us its listeners and
 * state, so nothing it sent is read.
 */
static int peer_check(baton *b, int fd)
{
    struct ucred cr;
    socklen_t l = sizeof(cr);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0)
        return baton__fail(b, errno, "SO_PEERCRED on the control socket of %s", b->dir);
    b->pred_pid = cr.pid;
    if (cr.uid != geteuid() && cr.uid != 0 && cr.uid != b->opts.allowed_uid)
        return baton__fail(b, EPERM,
                           "the owner of %s (pid %d) runs as uid %u, not as us (uid %u), root "
                           "or the allowed uid; refusing what it would pass on",
                           b->dir, (int)cr.pid, (unsigned)cr.uid, (unsigned)geteuid());
    return 0;
}

/* The owner hung up on us: did it die? (A live owner that refuses says
 * why with ERROR first.) */
static bool pred_gone(const baton *b)
{
    return baton__pid_gone(b->pred_pid, 500);
}

int baton__takeover(baton *b)
{
    uint64_t deadline = baton__now_ms() + b->opts.ready_timeout_ms;
    int fd = -1, r = 0;

    baton__fault("s-connect");
    for (int attempt = 0; attempt < 3; attempt++) {
        r = baton__connect(b, deadline, &fd);
        if (r <= 0)
            return r;
        if (b->opts.flags & BATON_NO_INHERIT) {
            close(fd);
            return baton__fail(b, EEXIST, "%s: an owner serves (BATON_NO_INHERIT)", b->dir);
        }
        r = peer_check(b, fd);
        if (r < 0) {
            close(fd);
            b->pred_pid = 0;
            return r;
        }
        r = receive_all(b, fd, deadline);
        if (r == 0) {
            b->pred_fd = fd;
            b->inherited = true;
            baton__log(b, BATON_LOG_INFO, "took %zu fds from pid %d (generation %d)", b->inh.n,
                       (int)b->pred_pid, b->generation - 1);
            return 0;
        }
        close(fd);
        if ((r != -ECONNRESET && r != -EPIPE) || !pred_gone(b))
            break;
        if (b->generation == 1) {
            /* It died before HELLO. Its sockets are released by now (its
             * pidfd turns readable only after that), so ask again: its
             * stale socket refuses, and we start fresh. */
            forget_inherited(b);
            continue;
        }
        /* It died mid-transfer. Keep the sockets that did arrive: they
         * are still open, so their accept queues live on; the rest the
         * application creates anew. */
        baton__log(b, BATON_LOG_WARNING,
                   "owner pid %d died during the takeover; keeping the %zu fds received",
                   (int)b->pred_pid, b->inh.n);
        b->inherited = true;
        return 0;
    }
    forget_inherited(b);
    return r;
}

/* Wait for RELEASED, the owner's word that it heard PUBLISHED and steps
 * down. At the deadline we shut our receiving side first and then look
 * once more: a RELEASED sent before that still counts, one sent after it
 * fails at the owner, which then keeps serving. Either way both agree. */
static int wait_released(baton *b, uint64_t deadline)
{
    struct rx *x = malloc(sizeof(*x));
    int r;

    if (!x)
        return baton__fail(b, ENOMEM, "waiting for the owner of %s to step down", b->dir);
    r = rx_next(b, b->pred_fd, deadline, x);
    if (r == -ETIMEDOUT) {
        shutdown(b->pred_fd, SHUT_RD);
        r = rx_next(b, b->pred_fd, baton__now_ms() + 1, x);
        if (r < 0)
            r = -ETIMEDOUT;
    }
    if (r == 0)
        r = expect(b, x, BATON__MSG_RELEASED, 0);
    free(x);
    return r;
}

/* The predecessor is gone: we are the owner. Our socket must be the one
 * at control.sock (it may have put its own back before it died). */
static int take_over_anyway(baton *b, int *ctl, const char *tmp, bool published)
{
    int r;

    baton__log(b, BATON_LOG_WARNING, "owner pid %d is gone; taking over anyway", (int)b->pred_pid);
    r = published ? baton__ctl_ensure(b, ctl) : baton__ctl_publish(b, *ctl, tmp);
    if (r < 0)
        return r;
    return baton__record_write(b);
}

/*
 * READY -> COMMIT -> publish -> PUBLISHED -> RELEASED. COMMIT says the
 * owner has not given up on us, so we may replace its socket; RELEASED says
 * it heard that we did and steps down. Without RELEASED it takes its socket
 * back, and we must not serve. When the predecessor died instead, we are
 * the owner: take over anyway.
 */
int baton__takeover_finish(baton *b, int *ctl, const char *tmp)
{
    uint64_t deadline = baton__now_ms() + b->opts.ready_timeout_ms;
    char buf[BATON__HDR_LEN + 8];
    uint32_t flags = b->opts.flags & BATON_TAKE_CONNS ? BATON__READY_TAKES_CONNS : 0;
    struct rx *x;
    int r;

    if (b->pred_fd < 0) /* it died during the transfer */
        return take_over_anyway(b, ctl, tmp, false);
    baton__fault("s-ready");
    r = baton__send(b->pred_fd, buf, baton__enc_ready(buf, getpid(), flags), NULL, 0);
    if (r == 0) {
        baton__fault("s-commit");
        x = malloc(sizeof(*x));
        if (!x)
            return baton__fail(b, ENOMEM, "waiting for the owner of %s to commit", b->dir);
        r = rx_next(b, b->pred_fd, deadline, x);
        if (r == 0)
            r = expect(b, x, BATON__MSG_COMMIT, 0);
        free(x);
    }
    if (r < 0) {
        if ((r == -ECONNRESET || r == -EPIPE) && pred_gone(b))
            return take_over_anyway(b, ctl, tmp, false);
        return baton__fail(b, r, "the owner (pid %d) did not let us take over", (int)b->pred_pid);
    }
    r = baton__ctl_publish(b, *ctl, tmp);
    if (r == 0) {
        baton__fault("s-record");
        r = baton__record_write(b);
    }
    if (r < 0)
        return r; /* the owner sees us hang up and puts its socket back */
    baton__fault("s-publish");
    r = baton__send(b->pred_fd, buf, baton__enc_empty(buf, BATON__MSG_PUBLISHED), NULL, 0);
    if (r == 0)
        r = wait_released(b, baton__now_ms() + b->opts.ready_timeout_ms);
    if (r < 0) {
        if ((r == -ECONNRESET || r == -EPIPE) && pred_gone(b))
            return take_over_anyway(b, ctl, tmp, true);
        return baton__fail(b, r, "the owner (pid %d) did not step down", (int)b->pred_pid);
    }
    return 0;
}
