/* SPDX-License-Identifier: MIT */
/*
 * baton_open() refuses a coordination directory writable by group or
 * others with -EPERM, leaves *ret untouched and keeps nothing open; a
 * private one (0700, or 0750/0711: readable or searchable is fine) is
 * accepted. A successor is refused the same way when the directory of a
 * serving owner is made group-writable, and the owner serves on.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

static int open_mode(mode_t mode)
{
    struct baton_options o = t_opts(dir, 2000, 0);
    baton *b = NULL;
    int fds = t_fd_count(), r;

    T_SYS(chmod(dir, mode));
    r = baton_open(&o, &b);
    if (r == 0) {
        T_ASSERT(b != NULL);
        baton_free(b);
    } else {
        T_ASSERT(b == NULL);
    }
    T_EQ(t_fd_count(), fds);
    return r;
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    static const mode_t refused[] = {0770, 0720, 0707, 0702, 0777, 01777, 0722};
    static const mode_t accepted[] = {0700, 0750, 0711, 0755};
    struct baton_options o;
    struct t_proc owner;
    char resp[64];
    baton *b = NULL;
    int port;

    t_init(argc, argv);
    t_path(dir, "run");
    T_SYS(mkdir(dir, 0700));

    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        int r = open_mode(refused[i]);
        if (r != -EPERM)
            t_log("mode %04o", (unsigned)refused[i]);
        T_EQ(r, -EPERM);
    }
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        int r = open_mode(accepted[i]);
        if (r != 0)
            t_log("mode %04o", (unsigned)accepted[i]);
        T_EQ(r, 0);
    }

    /* A serving owner's directory turns group-writable. */
    T_SYS(chmod(dir, 0700));
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    T_SYS(chmod(dir, 0770));
    o = t_opts(dir, 2000, 0);
    T_EQ(baton_open(&o, &b), -EPERM);
    T_ASSERT(b == NULL);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen1 ping");
    T_HEAR_EQ(owner.chan, T_MSG_SERVED);
    T_SYS(chmod(dir, 0700));
    t_tell(owner.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    return t_done();
}
