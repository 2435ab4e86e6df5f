/* SPDX-License-Identifier: MIT */
/*
 * A successor that gives up (baton_free() before baton_ready()) frees the
 * directory's lock for the next one at once, even when it forked a child
 * in between, which shares the lock's open file: a close() alone would
 * leave the flock held by that child until it exits or the lease runs out,
 * and the next successor would get -EBUSY.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

/* Opens (holding the lock), forks a child that lives on until told, gives
 * up, says so, then waits for the word to end the child. */
static int quitter_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    int hold[2];
    baton *b;
    pid_t child;

    (void)arg;
    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    T_SYS(pipe(hold));
    child = T_SYS(fork());
    if (child == 0) {
        char c;
        close(hold[1]);
        while (read(hold[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    close(hold[0]);
    baton_free(b);
    t_tell(chan, T_MSG_DONE);
    T_HEAR_EQ(chan, T_MSG_GO);
    close(hold[1]);
    T_EQ(waitpid(child, NULL, 0), child);
    return 0;
}

static int next_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int r, lfd;

    (void)arg;
    r = baton_open(&o, &b);
    t_tell(chan, r);
    if (r < 0) {
        t_log("baton_open: %s", baton_last_error(NULL));
        return 0;
    }
    t_tell(chan, baton_generation(b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc owner, quitter, next;
    char resp[64];
    int port;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    t_spawn(&quitter, quitter_main, NULL);
    T_HEAR_EQ(quitter.chan, T_MSG_DONE);

    /* The quitter's child still lives: the lock must be free anyway. */
    t_spawn(&next, next_main, NULL);
    T_EQ(t_hear(next.chan, T_TIMEOUT), 0);
    T_EQ(t_hear(next.chan, T_TIMEOUT), 2);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen2 ping");
    T_HEAR_EQ(next.chan, T_MSG_SERVED);

    t_tell(quitter.chan, T_MSG_GO);
    T_EQ(t_proc_wait(&quitter, T_TIMEOUT), 0);
    t_tell(next.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&next, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    return t_done();
}
