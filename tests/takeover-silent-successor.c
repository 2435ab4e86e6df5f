/* SPDX-License-Identifier: MIT */
/*
 * A silent successor (a raw connect to DIR/control.sock that sends
 * nothing) is dropped after the owner's ready_timeout_ms; the owner serves
 * throughout, and the next successor takes over while the silent one is
 * still alive.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

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
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
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

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
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
    struct t_proc owner, succ;
    char buf[512];
    long long t0, waited;
    int port, fd;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    /* The silent peer: this process, connected and mute. */
    t0 = now_ms();
    fd = T_OK(t_ctl_connect(dir));
    expect_served(&owner, port, "gen1 ping");

    /* The owner hangs up on us (an ERROR message may come first). */
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        T_EQ(poll(&p, 1, 5000), 1);
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n <= 0)
            break;
    }
    waited = now_ms() - t0;
    t_log("the owner dropped the silent peer after %lld ms", waited);
    T_GE(waited, TIMEOUT_MS - 50);
    T_LT(waited, 5000);
    expect_served(&owner, port, "gen1 ping");

    /* A connected-but-mute peer that is still there does not stop the next
     * successor either. */
    int mute = T_OK(t_ctl_connect(dir));
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&succ, port, "gen2 ping");
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    close(fd);
    close(mute);
    return t_done();
}
