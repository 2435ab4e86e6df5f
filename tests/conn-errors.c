/* SPDX-License-Identifier: MIT */
/*
 * The connection handoff's error paths, with the exact -errno, and nothing
 * lost on any of them:
 *   - NULL arguments: -EINVAL;
 *   - before any successor: baton_handoff -ENOTCONN, baton_conn_accept
 *     -EAGAIN;
 *   - a successor without BATON_TAKE_CONNS: -EOPNOTSUPP, and the
 *     connection still works from the owner;
 *   - a state over BATON_CONN_STATE_MAX, or an fd that is not a socket:
 *     -EMSGSIZE, -ENOTSOCK, checked before anything is sent;
 *   - after baton_handoff_done(): -EPIPE at once;
 *   - a successor buffer too small for the state: -EMSGSIZE with the size
 *     needed, the connection stays queued, and a retry with a larger
 *     buffer gets it with its state intact.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define ADDR      "tcp://127.0.0.1:0"
#define STATE_LEN 1000

static char dir[PATH_MAX];

/* An owner with one accepted connection, which it tries to hand off once
 * the successor is ready; expect is the result it must get. */
static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    static char big[BATON_CONN_STATE_MAX + 1], state[STATE_LEN];
    int expect = (int)(intptr_t)arg, lfd, fd, pfd[2];
    size_t len;
    baton *b;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_handoff(NULL, 0, NULL, 0), -EINVAL);
    T_EQ(baton_conn_accept(NULL, NULL, 0, &len), -EINVAL);
    T_EQ(baton_conn_accept(b, NULL, 0, NULL), -EINVAL);
    T_EQ(baton_conn_fd(NULL), -EINVAL);
    T_EQ(baton_handoff_done(NULL), -EINVAL);
    T_EQ(baton_handoff_batch(b, NULL, 1), -EINVAL);
    lfd = T_OK(baton_listen(b, "web", ADDR, 16));
    T_OK(baton_ready(b));
    T_EQ(baton_conn_accept(b, NULL, 0, &len), -EAGAIN);
    t_tell(chan, t_port(lfd));
    fd = T_SYS(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
    T_EQ(baton_handoff(b, fd, "x", 1), -ENOTCONN);

    t_tell(chan, T_MSG_DONE);
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    T_SYS(pipe(pfd));
    T_EQ(baton_handoff(b, pfd[0], "x", 1), -ENOTSOCK);
    close(pfd[0]);
    close(pfd[1]);
    T_EQ(baton_handoff(b, fd, big, sizeof(big)), -EMSGSIZE);
    if (expect == 0) {
        /* Reserved room not zero: refused, the connection stays ours. */
        struct baton_conn c = {.fd = fd, .state = "x", .len = 1, .resv = {0, 0, 1}};
        T_EQ(baton_handoff_batch(b, &c, 1), 0);
        T_EQ(c.result, -EINVAL);
    }
    for (int i = 0; i < STATE_LEN; i++)
        state[i] = (char)('a' + i % 26);
    T_EQ(baton_handoff(b, fd, state, sizeof(state)), expect);
    if (expect == 0) {
        close(fd);
    } else {
        char line[64];
        /* Still ours: serve it. */
        T_GT(t_read_line(fd, line, sizeof(line), T_TIMEOUT), 0);
        T_OK(t_write_all(fd, "owner\n", 6));
        close(fd);
    }
    T_OK(baton_handoff_done(b));
    if (expect == 0) {
        /* After DONE nothing more may be handed: at once, not after a
         * timeout, and with a message. */
        int sv[2];
        T_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
        T_EQ(baton_handoff(b, sv[0], "y", 1), -EPIPE);
        T_ASSERT(strstr(baton_last_error(b), "baton_handoff_done"));
        close(sv[0]);
        close(sv[1]);
    }
    /* Before the successor is told to stop: its exit ends the link, and a
     * DONE after that would fail with -ENOTCONN. */
    t_tell(chan, T_MSG_DONE);
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    bool takes = arg != NULL;
    struct baton_options o = t_opts(dir, 5000, takes ? BATON_TAKE_CONNS : 0);
    char small[10], state[STATE_LEN + 1], line[64];
    size_t len = 0;
    baton *b;
    int fd;

    T_OK(baton_open(&o, &b));
    T_OK(baton_listen(b, "web", ADDR, 16));
    T_OK(baton_ready(b));
    t_tell(chan, T_MSG_DONE);
    if (!takes) {
        T_HEAR_EQ(chan, T_MSG_STOP);
        baton_free(b);
        return 0;
    }
    for (;;) {
        struct pollfd p = {.fd = baton_conn_fd(b), .events = POLLIN};
        T_EQ(poll(&p, 1, T_TIMEOUT), 1);
        fd = baton_conn_accept(b, small, sizeof(small), &len);
        if (fd != -EAGAIN)
            break;
    }
    T_EQ(fd, -EMSGSIZE);
    T_EQ(len, STATE_LEN);
    fd = T_OK(baton_conn_accept(b, state, sizeof(state), &len));
    T_EQ(len, STATE_LEN);
    for (int i = 0; i < STATE_LEN; i++)
        T_EQ(state[i], 'a' + i % 26);
    T_GT(t_read_line(fd, line, sizeof(line), T_TIMEOUT), 0);
    T_OK(t_write_all(fd, "successor\n", 10));
    close(fd);
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

static void run(bool takes)
{
    struct t_proc owner, succ;
    char line[64];
    int port, fd;

    t_spawn(&owner, owner_main, (void *)(intptr_t)(takes ? 0 : -EOPNOTSUPP));
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    fd = T_OK(t_tcp_connect(AF_INET, port, T_TIMEOUT));
    T_HEAR_EQ(owner.chan, T_MSG_DONE);
    t_spawn(&succ, succ_main, takes ? (void *)1 : NULL);
    T_HEAR_EQ(succ.chan, T_MSG_DONE);
    T_OK(t_ask(fd, "hello", line, sizeof(line), T_TIMEOUT));
    T_STREQ(line, takes ? "successor" : "owner");
    close(fd);
    T_HEAR_EQ(owner.chan, T_MSG_DONE);
    t_tell(owner.chan, T_MSG_STOP);
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    t_path(dir, "run");
    run(false);
    run(true);
    return t_done();
}
