/* SPDX-License-Identifier: MIT */
/*
 * on_move_done: once per baton_session_move() call that returned > 0,
 * after every session of the call has its outcome, with the right counts:
 * a move that succeeds, one the next server refuses, one with a session
 * whose client leaves mid-move, one cut short by baton_session_server_free().
 * A call that moves nothing, or fails, reports nothing.
 *
 * And the two helpers every server needs: baton_session_listen() and
 * baton_session_load_key(), with their errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "session-util.h"

#define N 6

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static struct ts_client cl[N];

static bool answered(void *arg)
{
    for (int i = 0; i < N; i++)
        if (cl[i].c && !cl[i].lost && (cl[i].got < cl[i].sent || cl[i].got == 0))
            return false;
    return true;
}

static bool done(void *arg)
{
    return a.done_calls >= *(long long *)arg;
}

static bool b_done(void *arg)
{
    return b.done_calls >= 1;
}

static void clients(const char *addr)
{
    for (int i = 0; i < N; i++) {
        ts_client_start(&cl[i], addr);
        ts_client_send(&cl[i]);
    }
    T_ASSERT(ts_pump_until(srvs, cl, N, answered, NULL, T_TIMEOUT));
}

static void clients_stop(void)
{
    for (int i = 0; i < N; i++)
        ts_client_stop(&cl[i]);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = T_SYS(open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));

    T_EQ(t_write_all(fd, text, strlen(text)), 0);
    T_SYS(fchmod(fd, mode));
    close(fd);
}

static void helpers(void)
{
    char path[PATH_MAX], key[64], addr[64];
    size_t len = 0;
    int fd, fd2, fl;

    /* listen */
    T_EQ(baton_session_listen(NULL, 0), -EINVAL);
    T_EQ(baton_session_listen("127.0.0.1:0", 0), -EINVAL);
    T_EQ(baton_session_listen("tcp://localhost:80", 0), -EINVAL);
    fd = (int)T_OK(baton_session_listen("tcp://127.0.0.1:0", 16));
    fl = T_SYS(fcntl(fd, F_GETFL));
    T_ASSERT(fl & O_NONBLOCK);
    T_ASSERT(T_SYS(fcntl(fd, F_GETFD)) & FD_CLOEXEC);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", t_port(fd));
    T_EQ(baton_session_listen(addr, 0), -EADDRINUSE);
    if (t_have_ipv6()) {
        fd2 = (int)T_OK(baton_session_listen("tcp://[::1]:0", 0));
        close(fd2);
    }
    close(fd);

    /* load_key */
    t_path(path, "key");
    T_EQ(baton_session_load_key(path, key, sizeof(key), &len), -ENOENT);
    write_file(path, "0123456789abcdef-key\n", 0600);
    T_OK(baton_session_load_key(path, key, sizeof(key), &len));
    T_EQ(len, 20); /* the newline is not part of it */
    T_ASSERT(!memcmp(key, "0123456789abcdef-key", 20));
    write_file(path, "0123456789abcdef-key\n", 0640);
    T_EQ(baton_session_load_key(path, key, sizeof(key), &len), -EACCES);
    write_file(path, "0123456789abcdef-key\n", 0602);
    T_EQ(baton_session_load_key(path, key, sizeof(key), &len), -EACCES);
    write_file(path, "short\n", 0600);
    T_EQ(baton_session_load_key(path, key, sizeof(key), &len), -EINVAL);
    write_file(path, "0123456789abcdef0123456789abcdef\n", 0600);
    T_EQ(baton_session_load_key(path, key, 32, &len), 0); /* exactly cap, and the newline */
    T_EQ(len, 32);
    T_EQ(baton_session_load_key(path, key, 31, &len), -EINVAL); /* longer than cap */
    T_EQ(baton_session_load_key(t_tmpdir(), key, sizeof(key), &len), -EINVAL);
    t_path(addr, "link");
    T_SYS(symlink(path, addr));
    T_EQ(baton_session_load_key(addr, key, sizeof(key), &len), -ELOOP);
    T_EQ(baton_session_load_key(path, NULL, 32, &len), -EINVAL);
}

int main(int argc, char **argv)
{
    long long want;

    t_init(argc, argv);
    helpers();

    t_log("a move that succeeds: one report, after every on_moved");
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_server_peer(&b, "a", &a);
    clients(a.addr);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), N);
    want = 1;
    T_ASSERT(ts_pump_until(srvs, cl, N, done, &want, T_TIMEOUT));
    T_EQ(a.done_moved, N);
    T_EQ(a.done_failed, 0);
    T_STREQ(a.done_peer, "b");
    T_EQ(a.moved, N);
    /* Nothing to move: no call, no report. */
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 0);
    T_EQ(baton_session_move(a.srv, "nobody", NULL, 0), -ENOENT);
    ts_pump(srvs, cl, N, 20);
    T_EQ(a.done_calls, 1);

    t_log("back to A, one client leaving mid-move: it counts as not moved");
    T_ASSERT(ts_pump_until(srvs, cl, N, answered, NULL, T_TIMEOUT));
    T_EQ(baton_session_move(b.srv, "a", NULL, 0), N);
    ts_client_stop(&cl[0]); /* its client is gone before the MOVE reaches it */
    T_ASSERT(ts_pump_until(srvs, cl + 1, N - 1, b_done, NULL, T_TIMEOUT));
    T_EQ(b.done_calls, 1);
    T_EQ(b.done_moved + b.done_failed, N);
    T_EQ(b.done_failed, 1);
    T_EQ(b.done_moved, N - 1);
    clients_stop();
    ts_server_stop(&a);
    ts_server_stop(&b);

    t_log("a next server that refuses our key: every session reported not moved");
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY2);
    ts_server_peer(&a, "b", &b);
    clients(a.addr);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), N);
    want = 1;
    T_ASSERT(ts_pump_until(srvs, cl, N, done, &want, T_TIMEOUT));
    T_EQ(a.done_moved, 0);
    T_EQ(a.done_failed, N);
    T_EQ(a.move_failed, N);

    t_log("a move cut short by baton_session_server_free(): reported from it");
    ts_server_stop(&b);
    ts_server_start(&b, "B", TS_KEY);
    T_OK(baton_session_server_add_peer(a.srv, "b2", b.paddr, b.addr));
    T_EQ(baton_session_move(a.srv, "b2", NULL, 0), N);
    baton_session_server_free(a.srv); /* before any dispatch */
    a.srv = NULL;
    T_EQ(a.done_calls, 2);
    T_EQ(a.done_failed, 2 * N);
    T_EQ(a.errors, 0);
    clients_stop();
    ts_server_stop(&a);
    ts_server_stop(&b);
    return t_done();
}
