/* SPDX-License-Identifier: MIT */
/*
 * An inherited listener is reused when the successor asks for the same
 * socket address, whatever string names it: generation 1 asks for
 * tcp://127.0.0.1:0 and gets port P; generation 2 asks for
 * tcp://127.0.0.1:P, generation 3 for tcp://localhost:P, generation 4 for
 * tcp://127.0.0.1:0 again. Each gets the very socket generation 1 made
 * (same inode: no EADDRINUSE, no failed upgrade). Likewise a unix
 * listener asked for as DIR/s.sock and then as DIR/./s.sock. Generation 5
 * asks for another address (127.0.0.2): a new socket.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX], sock1[PATH_MAX + 16], sock2[PATH_MAX + 16];

struct want {
    char tcp[64];
    const char *unix_path;
};

static int gen_main(int chan, void *arg)
{
    const struct want *w = arg;
    struct baton_options o = t_opts(dir, 5000, 0);
    char unix_addr[PATH_MAX + 32];
    baton *b;
    int lfd, ufd;

    T_OK(baton_open(&o, &b));
    lfd = baton_listen(b, "web", w->tcp, 0);
    t_tell(chan, lfd);
    T_OK(lfd);
    snprintf(unix_addr, sizeof(unix_addr), "unix:%s", w->unix_path);
    ufd = T_OK(baton_listen(b, "local", unix_addr, 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_tell(chan, t_ino(lfd));
    t_tell(chan, t_ino(ufd));
    t_owner_loop(b, lfd, chan, "gen");
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct want w[5];
    struct t_proc gen[5];
    long long port, ino = 0, uino = 0;

    t_init(argc, argv);
    t_path(dir, "run");
    snprintf(sock1, sizeof(sock1), "%s/s.sock", t_tmpdir());
    snprintf(sock2, sizeof(sock2), "%s/./s.sock", t_tmpdir());

    snprintf(w[0].tcp, sizeof(w[0].tcp), "tcp://127.0.0.1:0");
    w[0].unix_path = sock1;
    t_spawn(&gen[0], gen_main, &w[0]);
    T_GE(t_hear(gen[0].chan, T_TIMEOUT), 0);
    port = t_hear(gen[0].chan, T_TIMEOUT);
    ino = t_hear(gen[0].chan, T_TIMEOUT);
    uino = t_hear(gen[0].chan, T_TIMEOUT);

    snprintf(w[1].tcp, sizeof(w[1].tcp), "tcp://127.0.0.1:%lld", port);
    snprintf(w[2].tcp, sizeof(w[2].tcp), "tcp://localhost:%lld", port);
    snprintf(w[3].tcp, sizeof(w[3].tcp), "tcp://127.0.0.1:0");
    snprintf(w[4].tcp, sizeof(w[4].tcp), "tcp://127.0.0.2:%lld", port);
    for (int g = 1; g < 5; g++) {
        w[g].unix_path = g % 2 ? sock2 : sock1;
        t_log("generation %d asks for %s and unix:%s", g + 1, w[g].tcp, w[g].unix_path);
        t_spawn(&gen[g], gen_main, &w[g]);
        T_GE(t_hear(gen[g].chan, T_TIMEOUT), 0);
        T_EQ(t_hear(gen[g].chan, T_TIMEOUT), port);
        if (g < 4)
            T_EQ(t_hear(gen[g].chan, T_TIMEOUT), ino);
        else
            T_NE(t_hear(gen[g].chan, T_TIMEOUT), ino);
        T_EQ(t_hear(gen[g].chan, T_TIMEOUT), uino);
        T_HEAR_EQ(gen[g - 1].chan, T_MSG_SUPERSEDED);
        T_EQ(t_proc_wait(&gen[g - 1], T_TIMEOUT), 0);
    }
    t_tell(gen[4].chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&gen[4], T_TIMEOUT), 0);
    return t_done();
}
