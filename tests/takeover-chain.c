/* SPDX-License-Identifier: MIT */
/*
 * No fd leaks over 100 takeovers in a chain: each generation takes over
 * from the last (listener, a named fd, state), serves one request and
 * steps down. Each generation counts its fds when it is told to step
 * down (its predecessor long gone, its successor ready): the last has as
 * many as the first. Each closes all of the library's fds at
 * baton_free(), and this process leaks none either.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define GENERATIONS 100
#define ADDR        "tcp://127.0.0.1:0"

static char dir[PATH_MAX];

static int gen_main(int chan, void *arg)
{
    int gen = (int)(long)arg, lfd, before = t_fd_count();
    struct baton_options o = t_opts(dir, 5000, 0);
    char state[32], tag[32];
    const void *data;
    size_t len;
    baton *b;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), gen);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_state(b, &data, &len));
    if (gen == 1) {
        int null = T_SYS(open("/dev/null", O_RDWR | O_CLOEXEC));
        T_OK(baton_add_fd(b, "null", null));
        close(null);
        T_EQ(len, 0);
    } else {
        T_OK(baton_fd(b, "null"));
        snprintf(state, sizeof(state), "generation %d", gen - 1);
        T_EQ(len, strlen(state));
        T_ASSERT(memcmp(data, state, len) == 0);
    }
    snprintf(state, sizeof(state), "generation %d", gen);
    T_OK(baton_set_state(b, state, strlen(state)));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    snprintf(tag, sizeof(tag), "gen%d", gen);
    if (t_owner_loop(b, lfd, chan, tag) == 1)
        t_tell(chan, t_fd_count());
    baton_free(b);
    /* Everything the library opened is closed again. */
    T_EQ(t_fd_count(), before);
    t_tell(chan, T_MSG_DONE);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc cur, next;
    char resp[64], want[64];
    /* Set by generation 1 and checked against by the later ones; the
     * compiler cannot see that the loop starts at 1, so start them at 0. */
    long long ino = 0, fds1 = 0;
    int port = 0;

    t_init(argc, argv);
    t_path(dir, "run");

    /* One more than GENERATIONS, so that the last counted one steps down. */
    for (int gen = 1; gen <= GENERATIONS + 1; gen++) {
        t_spawn(&next, gen_main, (void *)(long)gen);
        if (gen == 1) {
            port = (int)t_hear(next.chan, T_TIMEOUT);
            ino = t_hear(next.chan, T_TIMEOUT);
        } else {
            T_EQ(t_hear(next.chan, T_TIMEOUT), port);
            T_EQ(t_hear(next.chan, T_TIMEOUT), ino);
        }
        if (gen > 1) {
            long long fds;
            T_HEAR_EQ(cur.chan, T_MSG_SUPERSEDED);
            fds = t_hear(cur.chan, T_TIMEOUT);
            if (gen == 2)
                fds1 = fds;
            if (fds != fds1)
                t_fail(__FILE__, __LINE__,
                       "generation %d had %lld fds open when it stepped down, generation 1 %lld",
                       gen - 1, fds, fds1);
            T_HEAR_EQ(cur.chan, T_MSG_DONE);
            T_EQ(t_proc_wait(&cur, T_TIMEOUT), 0);
        }
        cur = next;
        T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
        snprintf(want, sizeof(want), "gen%d ping", gen);
        T_STREQ(resp, want);
        T_HEAR_EQ(cur.chan, T_MSG_SERVED);
    }
    t_log("%d generations, each with %lld fds open when it stepped down", GENERATIONS, fds1);
    t_tell(cur.chan, T_MSG_STOP);
    T_HEAR_EQ(cur.chan, T_MSG_DONE);
    T_EQ(t_proc_wait(&cur, T_TIMEOUT), 0);
    return t_done();
}
