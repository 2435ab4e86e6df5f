/* SPDX-License-Identifier: MIT */
/*
 * A successor that reaches the owner while another takeover is in
 * progress is told why: baton_open() fails with -EBUSY (as baton.h
 * promises for "another successor is taking over"), not -EPROTO.
 *
 * A hand-made peer holds the lock with a lease already past its deadline
 * (as a successor stalled past its lease does) and has taken everything up
 * to END, so the owner's one takeover slot is busy. A real successor goes
 * past the expired lease, asks the owner, and is refused with ERROR
 * "takeover in progress". The ERROR carries the code; the successor must
 * return it. Then the peer goes away and the next successor takes over.
 *
 * Also checks the ERROR code on the wire is a negative errno, as the
 * refusal of a foreign uid sends it (-EACCES) and as the successor's
 * decoder expects.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define ADDR "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 10000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

static int busy_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 3000, 0);
    baton *b = NULL;
    int r = baton_open(&o, &b);

    t_log("baton_open while another takeover is in progress: %d (%s)", r,
          r < 0 ? strerror(-r) : "ok");
    t_tell(chan, r);
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
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    static char buf[BATON__MSG_MAX];
    int fds[BATON__BATCH_MAX], lk, raw, raw2, port;
    char lock[PATH_MAX + 8], resp[64];
    struct t_proc owner, busy, succ;
    struct baton__msg m;
    size_t len, nfds;
    long long r;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    /* The stalled successor: the lock, a lease long expired, everything up
     * to END, then silence. */
    snprintf(lock, sizeof(lock), "%s/lock", dir);
    lk = T_SYS(open(lock, O_RDWR | O_CLOEXEC));
    T_SYS(flock(lk, LOCK_EX | LOCK_NB));
    T_SYS(pwrite(lk, "1 1\n", 4, 0));
    raw = T_OK(t_ctl_connect(dir));
    T_OK(baton__send(raw, buf, baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid()), NULL, 0));
    do {
        T_OK(baton__wait_fd(raw, POLLIN, baton__now_ms() + T_TIMEOUT));
        T_OK(baton__recv(raw, buf, sizeof(buf), fds, BATON__BATCH_MAX, &len, &nfds));
        baton__close_fds(fds, nfds);
        T_OK(baton__msg_decode(buf, len, &m));
    } while (m.type != BATON__MSG_END);

    /* On the wire: a second request is refused with a negative errno. */
    raw2 = T_OK(t_ctl_connect(dir));
    T_OK(baton__send(raw2, buf, baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid()), NULL, 0));
    T_OK(baton__wait_fd(raw2, POLLIN, baton__now_ms() + T_TIMEOUT));
    T_OK(baton__recv(raw2, buf, sizeof(buf), fds, BATON__BATCH_MAX, &len, &nfds));
    T_EQ(nfds, 0);
    T_OK(baton__msg_decode(buf, len, &m));
    T_EQ(m.type, BATON__MSG_ERROR);
    t_log("ERROR on the wire: err %d, \"%.*s\"", (int)m.u.result.err, (int)m.u.result.text_len,
          m.u.result.text);
    close(raw2);

    /* Through the library. */
    t_spawn(&busy, busy_main, NULL);
    r = t_hear(busy.chan, T_TIMEOUT);
    T_EQ(t_proc_wait(&busy, T_TIMEOUT), 0);

    /* The owner served throughout; the stalled peer leaves; the next
     * successor takes over. */
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen1 ping");
    T_HEAR_EQ(owner.chan, T_MSG_SERVED);
    close(raw);
    close(lk);
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);

    /* The verdicts last, so that the rest ran and cleaned up. */
    T_EQ(m.u.result.err, -EBUSY);
    T_EQ(r, -EBUSY);
    return t_done();
}
