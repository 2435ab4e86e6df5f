/* SPDX-License-Identifier: MIT */
/*
 * A successor that stalls after taking everything loses the takeover after
 * the owner's ready_timeout_ms, and the owner carries on:
 *  1. a hand-made peer that asks, receives HELLO ... END and then says
 *     nothing: the owner drops it and is free for the next successor
 *     while the stalled peer still lives;
 *  2. a real successor whose baton_ready() comes too late: it fails, it
 *     does not take the control socket, and the owner still serves.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define TIMEOUT_MS 300
#define ADDR       "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, TIMEOUT_MS, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_add_fd(b, "stdin", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

/* Wait until the peer at the other end of fd hangs up (bounded). */
static void wait_hangup(int fd)
{
    char buf[BATON__MSG_MAX];

    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
        ssize_t n;
        T_EQ(poll(&p, 1, 5000), 1);
        if (p.revents & (POLLRDHUP | POLLHUP))
            return;
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n <= 0)
            return;
    }
}

/* Our end of the link to the predecessor, found among our fds: the one
 * connected AF_UNIX SOCK_SEQPACKET socket baton_open() left open. */
static int find_pred_link(void)
{
    int found = -1;

    for (int fd = 3; fd < 1024; fd++) {
        struct sockaddr_un peer;
        socklen_t l = sizeof(peer);
        int type = 0;
        socklen_t tl = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET)
            continue;
        if (getpeername(fd, (struct sockaddr *)&peer, &l) < 0 || peer.sun_family != AF_UNIX)
            continue;
        T_EQ(found, -1);
        found = fd;
    }
    T_NE(found, -1);
    return found;
}

static int late_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    char ctl[PATH_MAX + 16];
    struct stat before, after;
    baton *b;
    int r;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    T_OK(baton_listen(b, "web", ADDR, 0));
    snprintf(ctl, sizeof(ctl), "%s/control.sock", dir);
    T_SYS(stat(ctl, &before));
    /* Let the owner give up on us: it hangs up on our link. */
    wait_hangup(find_pred_link());
    r = baton_ready(b);
    t_log("baton_ready() after the owner gave up: %d (%s)", r, baton_last_error(b));
    T_LT(r, 0);
    T_ASSERT(r == -EPIPE || r == -ECONNRESET || r == -ETIMEDOUT);
    /* The owner's control socket is still the one published. */
    T_SYS(stat(ctl, &after));
    T_EQ(after.st_ino, before.st_ino);
    t_tell(chan, T_MSG_DONE);
    baton_free(b);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_fd(b, "stdin"));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

static void expect_served(struct t_proc *p, int port, const char *want)
{
    char resp[64];

    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, want);
    T_HEAR_EQ(p->chan, T_MSG_SERVED);
}

/* The hand-made peer: everything up to END, then silence. */
static int stall_raw(void)
{
    static char buf[BATON__MSG_MAX];
    int fds[BATON__BATCH_MAX];
    struct baton__msg m;
    size_t len, nfds;
    int fd;

    fd = T_OK(t_ctl_connect(dir));
    T_OK(baton__send(fd, buf, baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid()), NULL, 0));
    do {
        T_OK(baton__wait_fd(fd, POLLIN, baton__now_ms() + T_TIMEOUT));
        T_OK(baton__recv(fd, buf, sizeof(buf), fds, BATON__BATCH_MAX, &len, &nfds));
        baton__close_fds(fds, nfds);
        T_OK(baton__msg_decode(buf, len, &m));
        T_NE(m.type, BATON__MSG_ERROR);
    } while (m.type != BATON__MSG_END);
    return fd;
}

int main(int argc, char **argv)
{
    struct t_proc owner, late, succ;
    int port, raw;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    /* 1. Stalled after END; the owner serves meanwhile and hangs up. */
    raw = stall_raw();
    expect_served(&owner, port, "gen1 ping");
    wait_hangup(raw);
    expect_served(&owner, port, "gen1 ping");

    /* 2. A real successor too late for the owner. */
    t_spawn(&late, late_main, NULL);
    T_HEAR_EQ(late.chan, T_MSG_DONE);
    T_EQ(t_proc_wait(&late, T_TIMEOUT), 0);
    expect_served(&owner, port, "gen1 ping");

    /* The next successor takes over, the stalled raw peer still connected. */
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&succ, port, "gen2 ping");
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    close(raw);
    return t_done();
}
