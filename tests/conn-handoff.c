/* SPDX-License-Identifier: MIT */
/*
 * Live connections handed from the owner to its successor, with state.
 *
 *   conn-handoff MODE [N]
 *
 * The test process is the client: it opens N connections to the owner and
 * sends "<i>\n" on each; the owner reads that line and keeps it as the
 * connection's state. After the successor is ready, the owner hands every
 * connection over; then the client sends "ping\n" on each and expects
 * "<i> <pid>\n" back from exactly one process. Modes:
 *
 *   all            every connection moves; each answer comes from the
 *                  successor with the connection's own id
 *   mid-request    the client has sent half of "ping\n" before the handoff;
 *                  the owner passes those bytes in the state, the client
 *                  sends the rest afterwards and gets its full answer
 *   kill-early     the successor is SIGKILLed before it takes any: the owner
 *                  keeps every connection and answers every ping
 *   kill-late      the successor takes some, then is SIGKILLed: each
 *                  connection the owner reports as unconfirmed is answered by
 *                  the owner; each confirmed one is not (it died with the
 *                  successor): never both, never a confirmed one kept
 *   no-confirm     the successor never takes any: after its timeout the
 *                  owner keeps every connection and answers every ping
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define ADDR "tcp://127.0.0.1:0"

enum { ALL, MID, KILL_EARLY, KILL_LATE, NO_CONFIRM };

static char dir[PATH_MAX];
static int mode, n;

static void raise_nofile(void)
{
    struct rlimit rl;

    T_SYS(getrlimit(RLIMIT_NOFILE, &rl));
    rl.rlim_cur = rl.rlim_max;
    T_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    if (rl.rlim_cur < (rlim_t)n + 64)
        t_skip("RLIMIT_NOFILE hard limit %llu is below %d", (unsigned long long)rl.rlim_max,
               n + 64);
}

/* What the client sends before the handoff on connection i. */
static int first_bytes(int i, char *buf, size_t cap)
{
    return snprintf(buf, cap, mode == MID ? "%d\npi" : "%d\n", i);
}

/* Read "ping\n", with prefix already read, and answer "<id> <pid>\n". */
static void answer(int fd, const char *id, const char *prefix)
{
    char line[64], out[80];
    size_t have = strlen(prefix);

    memcpy(line, prefix, have);
    T_EQ(t_read_full(fd, line + have, 5 - have, T_TIMEOUT), 0);
    line[5] = 0;
    T_STREQ(line, "ping\n");
    snprintf(out, sizeof(out), "%s %d\n", id, (int)getpid());
    T_OK(t_write_all(fd, out, strlen(out)));
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, mode == NO_CONFIRM ? 1500 : 10000, 0);
    struct baton_conn *c = calloc(n, sizeof(*c));
    char(*state)[24] = calloc(n, 24);
    baton *b;
    int lfd, taken;

    T_ASSERT(c && state);
    raise_nofile();
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 4096));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    for (int i = 0; i < n; i++) {
        char want[24];
        int len = first_bytes(i, want, sizeof(want));
        c[i].fd = T_SYS(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
        T_EQ(t_read_full(c[i].fd, state[i], len, T_TIMEOUT), 0);
        c[i].state = state[i];
        c[i].len = len;
    }
    t_tell(chan, T_MSG_DONE);

    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    taken = baton_handoff_batch(b, c, n);
    if (taken < 0) {
        /* The successor may be dead before we even start: then there is
         * no link at all, and every connection says so. */
        T_EQ(mode, KILL_EARLY);
        T_EQ(taken, -ENOTCONN);
        T_EQ(c[0].result, -ENOTCONN);
        taken = 0;
    }
    /* DONE needs the link, which is gone once the successor died or was
     * given up on. */
    int done = baton_handoff_done(b);
    if (mode == ALL || mode == MID)
        T_EQ(done, 0);
    else
        T_ASSERT(done == 0 || done == -ENOTCONN);
    t_tell(chan, taken);
    for (int i = 0; i < n; i++) {
        if (c[i].result == 0) {
            close(c[i].fd); /* the successor's now */
            c[i].fd = -1;
        } else if (mode == ALL || mode == MID) {
            t_fail(__FILE__, __LINE__, "connection %d not handed: %d", i, c[i].result);
        }
        t_tell(chan, c[i].result == 0);
    }
    /* Serve what stayed ours. */
    for (int i = 0; i < n; i++) {
        char id[24];
        if (c[i].fd < 0)
            continue;
        snprintf(id, sizeof(id), "%d", i);
        answer(c[i].fd, id, "");
        close(c[i].fd);
    }
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    free(c);
    free(state);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 10000, BATON_TAKE_CONNS);
    int *fds = calloc(n, sizeof(int)), got = 0, limit;
    char(*state)[24] = calloc(n, 24);
    baton *b;

    T_ASSERT(fds && state);
    raise_nofile();
    T_OK(baton_open(&o, &b));
    T_OK(baton_listen(b, "web", ADDR, 4096));
    T_OK(baton_ready(b));
    t_tell(chan, getpid());
    if (mode == KILL_EARLY || mode == NO_CONFIRM) {
        /* Take nothing; wait to be killed or stopped. */
        T_HEAR_EQ(chan, T_MSG_STOP);
        baton_free(b);
        free(fds);
        free(state);
        return 0;
    }
    limit = mode == KILL_LATE ? n / 3 : n;
    while (got < limit) {
        struct pollfd p = {.fd = baton_conn_fd(b), .events = POLLIN};
        size_t len;
        int fd;

        T_EQ(poll(&p, 1, T_TIMEOUT), 1);
        fd = baton_conn_accept(b, state[got], sizeof(state[got]) - 1, &len);
        if (fd == -EAGAIN)
            continue;
        if (fd == -ENOTCONN)
            break;
        T_OK(fd);
        state[got][len] = 0;
        fds[got++] = fd;
    }
    t_tell(chan, got);
    if (mode == KILL_LATE) {
        T_HEAR_EQ(chan, T_MSG_STOP); /* killed before this comes */
        return 1;
    }
    /* Serve every connection taken: the state is "<id>\n" and, in
     * mid-request mode, the first bytes of the ping. */
    for (int i = 0; i < got; i++) {
        char *nl = strchr(state[i], '\n');
        T_ASSERT(nl);
        *nl = 0;
        answer(fds[i], state[i], nl + 1);
        close(fds[i]);
    }
    T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    free(fds);
    free(state);
    return 0;
}

static int parse_mode(const char *s)
{
    static const char *const names[] = {"all", "mid-request", "kill-early", "kill-late",
                                        "no-confirm"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i]))
            return i;
    t_fail(__FILE__, __LINE__, "unknown mode %s", s);
}

/* Ping every client; expect the answer from want_pid, or (want_pid 0) that
 * the connection was closed by a dead successor. */
static void ping_all(int *cl, const long long *who)
{
    for (int i = 0; i < n; i++)
        T_OK(t_write_all(cl[i], mode == MID ? "ng\n" : "ping\n", mode == MID ? 3 : 5));
    for (int i = 0; i < n; i++) {
        char line[64], want[64];
        ssize_t len = t_read_line(cl[i], line, sizeof(line), T_TIMEOUT);

        if (who[i] == 0) {
            /* Confirmed to the successor, which died: gone, not answered. */
            T_ASSERT(len == 0 || len == -ECONNRESET);
            continue;
        }
        snprintf(want, sizeof(want), "%d %lld\n", i, who[i]);
        T_GT(len, 0);
        T_STREQ(line, want);
    }
}

int main(int argc, char **argv)
{
    struct t_proc owner, succ;
    long long *who, succ_pid, taken;
    int *cl, port;

    t_init(argc, argv);
    if (argc < 2)
        t_fail(__FILE__, __LINE__, "usage: %s MODE [N]", argv[0]);
    mode = parse_mode(argv[1]);
    n = argc > 2 ? atoi(argv[2]) : 600;
    raise_nofile();
    cl = calloc(n, sizeof(int));
    who = calloc(n, sizeof(long long));
    T_ASSERT(cl && who);
    t_path(dir, "run");

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    for (int i = 0; i < n; i++) {
        char buf[24];
        int len = first_bytes(i, buf, sizeof(buf));
        cl[i] = T_OK(t_tcp_connect(AF_INET, port, T_TIMEOUT));
        T_OK(t_write_all(cl[i], buf, len));
    }
    T_HEAR_EQ(owner.chan, T_MSG_DONE);

    t_spawn(&succ, succ_main, NULL);
    succ_pid = t_hear(succ.chan, T_TIMEOUT);
    if (mode == KILL_EARLY)
        t_proc_kill(&succ);
    if (mode == KILL_LATE) {
        T_EQ(t_hear(succ.chan, T_TIMEOUT), n / 3);
        t_proc_kill(&succ);
    }
    taken = t_hear(owner.chan, 3 * T_TIMEOUT);
    for (int i = 0; i < n; i++)
        who[i] = t_hear(owner.chan, T_TIMEOUT) ? succ_pid : owner.pid;
    if (mode == KILL_LATE)
        for (int i = 0; i < n; i++)
            if (who[i] == succ_pid)
                who[i] = 0;
    t_log("mode %s: %lld of %d connections handed off", argv[1], taken, n);
    switch (mode) {
    case ALL:
    case MID:
        T_EQ(taken, n);
        T_EQ(t_hear(succ.chan, T_TIMEOUT), n);
        break;
    case KILL_EARLY:
    case NO_CONFIRM:
        T_EQ(taken, 0);
        break;
    case KILL_LATE:
        T_GE(taken, n / 3);
        break;
    }
    ping_all(cl, who);

    t_tell(owner.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    if (mode != KILL_EARLY && mode != KILL_LATE) {
        t_tell(succ.chan, T_MSG_STOP);
        T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    }
    for (int i = 0; i < n; i++)
        close(cl[i]);
    free(cl);
    free(who);
    return t_done();
}
