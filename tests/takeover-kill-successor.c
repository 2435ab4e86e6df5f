/* SPDX-License-Identifier: MIT */
/*
 * A successor killed (SIGKILL) at one step of the protocol leaves the owner
 * serving, and the next successor takes over. The step is argv[1]:
 *   after-connect  connected to control.sock, nothing sent
 *   after-request  REQ sent, HELLO received
 *   mid-fds        the first of several fd batches received
 *   mid-state      every fd batch and the state received, END not read
 *   before-ready   baton_open() returned, baton_ready() not called
 *   after-ready    baton_ready() returned: the old owner steps down; the
 *                  next process starts fresh (generation 1)
 * The first four speak the protocol by hand (src/wire.h) to stop at an
 * exact point; the last two are real successors.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define NAMED     600
#define STATE_LEN (1u << 20)
#define ADDR      "tcp://127.0.0.1:0"

enum { REACHED = 1 };

static char dir[PATH_MAX];
static const char *step;

static unsigned char state_byte(size_t i)
{
    return (unsigned char)(i * 31 + (i >> 12));
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    unsigned char *state = malloc(STATE_LEN);
    char name[32];
    baton *b;
    int lfd, null;

    T_ASSERT(state);
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    null = T_SYS(open("/dev/null", O_RDONLY | O_CLOEXEC));
    for (int i = 0; i < NAMED; i++) {
        snprintf(name, sizeof(name), "f%03d", i);
        T_OK(baton_add_fd(b, name, null));
    }
    close(null);
    for (size_t i = 0; i < STATE_LEN; i++)
        state[i] = state_byte(i);
    T_OK(baton_set_state(b, state, STATE_LEN));
    free(state);
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

/* Receive one message, bounded; fails the test on anything unexpected. */
static void rx(int fd, char *buf, int *fds, size_t *nfds, struct baton__msg *m, int type)
{
    size_t len;
    int r;

    T_OK(baton__wait_fd(fd, POLLIN, baton__now_ms() + T_TIMEOUT));
    r = baton__recv(fd, buf, BATON__MSG_MAX, fds, BATON__BATCH_MAX, &len, nfds);
    T_OK(r);
    T_OK(baton__msg_decode(buf, len, m));
    T_EQ(m->type, type);
}

/* A hand-made successor that stops at step and waits to be killed. */
static int raw_main(int chan, void *arg)
{
    static char buf[BATON__MSG_MAX];
    static int fds[BATON__BATCH_MAX];
    struct baton__msg m;
    char lock[PATH_MAX + 8];
    size_t nfds, got = 0;
    uint32_t total;
    int fd, lk;

    /* As the library does: the lock first, then the control socket. */
    snprintf(lock, sizeof(lock), "%s/lock", dir);
    lk = T_SYS(open(lock, O_RDWR | O_CLOEXEC));
    T_SYS(flock(lk, LOCK_EX | LOCK_NB));
    fd = T_OK(t_ctl_connect(dir));
    if (strcmp(step, "after-connect") == 0)
        goto reached;

    T_OK(baton__send(fd, buf, baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid()), NULL, 0));
    rx(fd, buf, fds, &nfds, &m, BATON__MSG_HELLO);
    T_EQ(nfds, 0);
    T_EQ(m.u.hello.generation, 1);
    total = m.u.hello.nfds;
    T_EQ(total, NAMED + 1);
    T_EQ(m.u.hello.state_len, STATE_LEN);
    if (strcmp(step, "after-request") == 0)
        goto reached;

    rx(fd, buf, fds, &nfds, &m, BATON__MSG_FDS);
    T_EQ(nfds, m.u.fds.count);
    T_LT(nfds, total); /* there must be more than one batch */
    got += nfds;
    if (strcmp(step, "mid-fds") == 0)
        goto reached;
    while (got < total) {
        rx(fd, buf, fds, &nfds, &m, BATON__MSG_FDS);
        T_EQ(nfds, m.u.fds.count);
        got += nfds;
    }
    T_EQ(got, total);
    rx(fd, buf, fds, &nfds, &m, BATON__MSG_STATE);
    T_EQ(nfds, 1);
    T_EQ(m.u.state.len, STATE_LEN);
    if (strcmp(step, "mid-state") == 0)
        goto reached;
    t_fail(__FILE__, __LINE__, "unknown step %s", step);

reached:
    t_tell(chan, REACHED);
    /* Killed here; the fds received are deliberately left open. */
    t_hear(chan, 30000);
    t_fail(__FILE__, __LINE__, "not killed at step %s", step);
}

/* A real successor: takes over, checks what it got and serves. With stop
 * set (the steps before-ready and after-ready) it waits to be killed. */
struct succ {
    int expect_gen;
    const char *stop; /* "before-ready", "after-ready" or NULL */
};

static int succ_main(int chan, void *arg)
{
    const struct succ *s = arg;
    struct baton_options o = t_opts(dir, 5000, 0);
    const unsigned char *state;
    size_t len;
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), s->expect_gen);
    T_EQ(baton_inherited(b), s->expect_gen > 1);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_state(b, (const void **)&state, &len));
    if (s->expect_gen > 1) {
        T_EQ(len, STATE_LEN);
        for (size_t i = 0; i < STATE_LEN; i++)
            if (state[i] != state_byte(i))
                t_fail(__FILE__, __LINE__, "state differs at byte %zu", i);
        T_OK(baton_fd(b, "f000"));
        T_OK(baton_fd(b, "f599"));
    } else {
        T_EQ(len, 0);
    }
    if (s->stop && strcmp(s->stop, "before-ready") == 0) {
        t_tell(chan, REACHED);
        t_hear(chan, 30000);
        t_fail(__FILE__, __LINE__, "not killed before ready");
    }
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    if (s->stop) {
        t_hear(chan, 30000);
        t_fail(__FILE__, __LINE__, "not killed after ready");
    }
    t_owner_loop(b, lfd, chan, s->expect_gen > 1 ? "gen2" : "fresh");
    baton_free(b);
    return 0;
}

static void expect_served(struct t_proc *owner, int port, const char *tag)
{
    char resp[128], want[128];

    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    snprintf(want, sizeof(want), "%s ping", tag);
    T_STREQ(resp, want);
    T_HEAR_EQ(owner->chan, T_MSG_SERVED);
}

int main(int argc, char **argv)
{
    struct t_proc owner, killed, next;
    struct succ s = {.expect_gen = 2};
    int port, port2;
    long long ino;
    bool raw;

    t_init(argc, argv);
    if (argc != 2)
        t_fail(__FILE__, __LINE__, "usage: %s STEP", argv[0]);
    step = argv[1];
    raw = strcmp(step, "before-ready") != 0 && strcmp(step, "after-ready") != 0;
    t_path(dir, "run");

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    ino = t_hear(owner.chan, T_TIMEOUT);
    expect_served(&owner, port, "gen1");

    if (raw) {
        t_spawn(&killed, raw_main, NULL);
        T_HEAR_EQ(killed.chan, REACHED);
    } else {
        struct succ k = {.expect_gen = 2, .stop = step};
        t_spawn(&killed, succ_main, &k);
        if (strcmp(step, "before-ready") == 0) {
            T_HEAR_EQ(killed.chan, REACHED);
        } else {
            T_EQ(t_hear(killed.chan, T_TIMEOUT), port);
            T_EQ(t_hear(killed.chan, T_TIMEOUT), ino);
        }
    }
    /* The owner serves while the successor is stuck at its step ... */
    if (strcmp(step, "after-ready") != 0)
        expect_served(&owner, port, "gen1");
    t_log("killing the successor at step %s", step);
    t_proc_kill(&killed);

    if (strcmp(step, "after-ready") == 0) {
        /* The old owner was told to step down and does; the successor that
         * took over is dead, so the next process starts afresh. */
        T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
        T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
        s.expect_gen = 1;
        t_spawn(&next, succ_main, &s);
        port2 = (int)t_hear(next.chan, T_TIMEOUT);
        t_hear(next.chan, T_TIMEOUT);
        expect_served(&next, port2, "fresh");
        t_tell(next.chan, T_MSG_STOP);
        T_EQ(t_proc_wait(&next, T_TIMEOUT), 0);
        return t_done();
    }

    /* ... and after it died. */
    expect_served(&owner, port, "gen1");

    /* The next successor takes over everything: the same listener. */
    t_spawn(&next, succ_main, &s);
    T_EQ(t_hear(next.chan, T_TIMEOUT), port);
    T_EQ(t_hear(next.chan, T_TIMEOUT), ino);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&next, port, "gen2");
    t_tell(next.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&next, T_TIMEOUT), 0);
    return t_done();
}
