/* SPDX-License-Identifier: MIT */
/*
 * A control peer of another uid is refused and gets no fd: a process
 * running as nobody (65534) connects to the owner's control socket (the
 * directory made reachable for it on purpose) and asks to take over; it
 * receives no fd and no HELLO, only an error or the end of the stream.
 * The owner serves on, and a legitimate successor then takes over. With
 * allowed_uid set to nobody, the same request is answered (a control
 * that the refusal is the uid check). Needs root.
 */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define NOBODY 65534
#define ADDR   "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

struct role {
    const char *dir;
    uid_t allowed;
};

static int owner_main(int chan, void *arg)
{
    const struct role *r = arg;
    struct baton_options o = t_opts(r->dir, 5000, 0);
    char ctl[PATH_MAX + 16];
    baton *b;
    int lfd;

    o.allowed_uid = r->allowed;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_add_fd(b, "secret", 0));
    T_OK(baton_ready(b));
    /* Reachable for anyone: search on the directory, write on the socket.
     * Only the peer check stands in the way now. */
    T_SYS(chmod(r->dir, 0711));
    snprintf(ctl, sizeof(ctl), "%s/control.sock", r->dir);
    T_SYS(chmod(ctl, 0777));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

/* As nobody: connect, ask to take over, and tell the parent the type of
 * the first message (0 for none) and how many fds came with anything. */
static int intruder_main(int chan, void *arg)
{
    const char *d = arg;
    static char buf[BATON__MSG_MAX];
    int fds[BATON__BATCH_MAX], fd, first = 0;
    size_t total = 0;

    T_SYS(setgroups(0, NULL));
    T_SYS(setgid(NOBODY));
    T_SYS(setuid(NOBODY));
    T_EQ(geteuid(), NOBODY);
    fd = T_OK(t_ctl_connect(d));
    /* The request may fail if the owner hung up on us already. */
    baton__send(fd, buf, baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid()), NULL, 0);
    for (;;) {
        struct baton__msg m;
        size_t len, nfds;
        int r;
        if (baton__wait_fd(fd, POLLIN, baton__now_ms() + T_TIMEOUT) < 0)
            t_fail(__FILE__, __LINE__, "the owner neither answered nor hung up");
        r = baton__recv(fd, buf, sizeof(buf), fds, BATON__BATCH_MAX, &len, &nfds);
        if (r == -EAGAIN)
            continue;
        if (r < 0)
            break;
        total += nfds;
        baton__close_fds(fds, nfds);
        if (!first && baton__msg_decode(buf, len, &m) == 0)
            first = m.type;
        if (first == BATON__MSG_HELLO || first == BATON__MSG_ERROR)
            break;
    }
    close(fd);
    t_tell(chan, first);
    t_tell(chan, (long long)total);
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
    T_OK(baton_fd(b, "secret"));
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

int main(int argc, char **argv)
{
    char dir2[PATH_MAX];
    struct role r1 = {dir, (uid_t)-1}, r2 = {dir2, NOBODY};
    struct t_proc owner, owner2, intruder, succ;
    long long type;
    int port, port2;

    t_init(argc, argv);
    if (geteuid() != 0)
        t_skip("needs root to run a peer as another uid");
    T_SYS(chmod(t_tmpdir(), 0711));
    t_path(dir, "run");
    t_path(dir2, "run2");

    t_spawn(&owner, owner_main, &r1);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    t_spawn(&intruder, intruder_main, dir);
    type = t_hear(intruder.chan, T_TIMEOUT);
    T_ASSERT(type == 0 || type == BATON__MSG_ERROR);
    T_EQ(t_hear(intruder.chan, T_TIMEOUT), 0); /* no fd, ever */
    T_EQ(t_proc_wait(&intruder, T_TIMEOUT), 0);
    expect_served(&owner, port, "gen1 ping");

    /* The control: nobody allowed by name is answered. */
    t_spawn(&owner2, owner_main, &r2);
    port2 = (int)t_hear(owner2.chan, T_TIMEOUT);
    t_spawn(&intruder, intruder_main, dir2);
    T_EQ(t_hear(intruder.chan, T_TIMEOUT), BATON__MSG_HELLO);
    t_hear(intruder.chan, T_TIMEOUT);
    T_EQ(t_proc_wait(&intruder, T_TIMEOUT), 0);
    expect_served(&owner2, port2, "gen1 ping");
    t_tell(owner2.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&owner2, T_TIMEOUT), 0);

    /* The first owner is untouched: a real successor takes over. */
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&succ, port, "gen2 ping");
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    return t_done();
}
