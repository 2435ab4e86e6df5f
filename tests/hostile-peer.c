/* SPDX-License-Identifier: MIT */
/*
 * A hostile or broken peer on the owner's control socket is logged and
 * dropped; the owner serves on, leaks no fd, and a real successor takes
 * over afterwards. The peer is argv[1]:
 *
 *   wrong-version  a request with protocol version 2, then 0, then a wrong
 *                  magic: each is answered with ERROR (-EPROTO) or a hang-up,
 *                  never with HELLO or an fd
 *   truncated      records cut short: an empty one, half a header, a REQ
 *                  whose payload is shorter than its header says, and a
 *                  READY cut short in the middle of a real takeover
 *   huge-length    a header whose length field says 4 GiB - 1, a record
 *                  larger than any message (MSG_TRUNC), and the same huge
 *                  length in place of READY mid-takeover
 *   fd-flood       10,000 unrequested fds in batches of 253 (SCM_RIGHTS),
 *                  one batch per connection so that the owner receives and
 *                  closes every one, then 40 batches queued on one connection
 *   stall          peers that connect and say nothing, or ask to take over
 *                  and then neither read nor answer, for longer than the
 *                  owner's ready_timeout_ms; they are still connected when
 *                  the real successor takes over
 *   connect-flood  about 1,000 connects a second to the control socket for
 *                  2 s (up to 100 held open at once, so that the owner's 32
 *                  peer slots and its backlog fill); the owner answers TCP
 *                  clients meanwhile and a real successor right after
 *   foreign-uid    a peer running as nobody that sends 253 fds with its
 *                  request (needs root; tests/security-foreign-uid.c covers
 *                  the refusal itself, this adds the fds and the fd count)
 *
 * "Logged": the owner's log callback counts warnings, and every case waits
 * (bounded) for the count to grow. "No fd leaked": the owner reports its
 * open fd count (t_fd_count) over its channel; it must come back to what it
 * was before the peer (bounded), and the test process's own count is
 * checked by t_done(). The fd flood also checks that the owner's count
 * never ends up higher by even one.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define ADDR      "tcp://127.0.0.1:0"
#define NOBODY    65534
#define STATE     "hostile-test-state"
#define FLOOD_FDS 10000

enum {
    MSG_FDS = 2001,   /* -> owner: tell your open fd count */
    MSG_WARNS = 2002, /* -> owner: tell how many warnings you logged */
};

static char dir[PATH_MAX];
static const char *mode;
static int owner_timeout_ms = 1000;

static atomic_int warnings;

static void owner_log(void *ctx, int level, const char *msg)
{
    int n;

    if (level > BATON_LOG_WARNING)
        return;
    n = atomic_fetch_add(&warnings, 1);
    if (n < 12)
        t_log("owner log: %s", msg);
    else if (n == 12)
        t_log("owner log: (more warnings not shown)");
}

/* Serve lfd; answer MSG_FDS and MSG_WARNS; step down when superseded. */
static int owner_loop(baton *b, int lfd, int chan)
{
    int ufd = baton_upgrade_fd(b);

    for (;;) {
        struct pollfd p[3] = {{.fd = ufd, .events = POLLIN},
                              {.fd = chan, .events = POLLIN},
                              {.fd = lfd, .events = POLLIN}};
        long long v;
        int r = poll(p, 3, 30000);

        if (r < 0 && errno == EINTR)
            continue;
        T_GT(r, 0);
        if (p[0].revents & POLLIN) {
            t_tell(chan, T_MSG_SUPERSEDED);
            return 1;
        }
        if (p[1].revents) {
            if (t_try_hear(chan, 1000, &v) < 0 || v == T_MSG_STOP)
                return 0;
            if (v == MSG_FDS)
                t_tell(chan, t_fd_count());
            else if (v == MSG_WARNS)
                t_tell(chan, atomic_load(&warnings));
        }
        if (p[2].revents & POLLIN) {
            T_OK(t_serve_one(lfd, "gen1", T_TIMEOUT));
            t_tell(chan, T_MSG_SERVED);
        }
    }
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, owner_timeout_ms, 0);
    baton *b;
    int lfd;

    o.log = owner_log;
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_add_fd(b, "stdin", 0));
    T_OK(baton_set_state(b, STATE, sizeof(STATE)));
    T_OK(baton_ready(b));
    if (strcmp(mode, "foreign-uid") == 0) {
        char ctl[PATH_MAX + 16];
        T_SYS(chmod(dir, 0711));
        snprintf(ctl, sizeof(ctl), "%s/control.sock", dir);
        T_SYS(chmod(ctl, 0777));
    }
    t_tell(chan, t_port(lfd));
    owner_loop(b, lfd, chan);
    baton_free(b);
    return 0;
}

static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    const void *state;
    size_t len;
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    T_EQ(baton_generation(b), 2);
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_fd(b, "stdin"));
    T_OK(baton_state(b, &state, &len));
    T_EQ(len, sizeof(STATE));
    T_EQ(memcmp(state, STATE, len), 0);
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

static struct t_proc owner;
static int port, owner_fds;

static long long ask(int what)
{
    t_tell(owner.chan, what);
    return t_hear(owner.chan, T_TIMEOUT);
}

static void expect_served(struct t_proc *p, const char *want)
{
    char resp[64];

    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, want);
    T_HEAR_EQ(p->chan, T_MSG_SERVED);
}

static uint64_t now_ms(void)
{
    return baton__now_ms();
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The owner logs at least `more` warnings beyond `since` (bounded), and its
 * fd count returns to what it was at the start (bounded: the owner closes
 * a dropped peer's fds on its own thread). Polling a condition at a short
 * interval with a deadline; nothing depends on the pace. */
static void expect_owner_clean(int since, int more)
{
    uint64_t deadline = now_ms() + T_TIMEOUT;
    long long w, fds;

    while ((w = ask(MSG_WARNS)) < since + more && now_ms() < deadline)
        pause_ms(5);
    T_GE(w, since + more);
    while ((fds = ask(MSG_FDS)) != owner_fds && now_ms() < deadline)
        pause_ms(5);
    T_EQ(fds, owner_fds);
}

/* Wait (bounded) until the owner ends our connection; what it sent before
 * must be nothing or one ERROR with `err`, never an fd. */
static void expect_dropped(int fd, int err)
{
    static char buf[BATON__MSG_MAX];
    int fds[BATON__BATCH_MAX];

    for (;;) {
        struct baton__msg m;
        size_t len, nfds;
        int r;

        T_OK(baton__wait_fd(fd, POLLIN, now_ms() + T_TIMEOUT));
        r = baton__recv(fd, buf, sizeof(buf), fds, BATON__BATCH_MAX, &len, &nfds);
        if (r == -EAGAIN)
            continue;
        if (r < 0)
            break; /* hung up */
        T_EQ(nfds, 0);
        T_OK(baton__msg_decode(buf, len, &m));
        T_EQ(m.type, BATON__MSG_ERROR);
        /* The sign of an ERROR's code is not what this test is about (see
         * tests/hostile-takeover-busy.c): compare the magnitude. */
        if (err)
            T_EQ(abs(m.u.result.err), abs(err));
    }
    close(fd);
}

static int ctl(void)
{
    return (int)T_OK(t_ctl_connect(dir));
}

static void send_raw(int fd, const void *buf, size_t len)
{
    T_SYS(send(fd, buf, len, MSG_NOSIGNAL));
}

/* A takeover by hand up to END: the fds that came are closed at once. */
static int takeover_to_end(void)
{
    static char buf[BATON__MSG_MAX];
    int fds[BATON__BATCH_MAX], fd = ctl();
    struct baton__msg m;
    size_t len, nfds;

    T_OK(baton__send(fd, buf, baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid()), NULL, 0));
    do {
        T_OK(baton__wait_fd(fd, POLLIN, now_ms() + T_TIMEOUT));
        T_OK(baton__recv(fd, buf, sizeof(buf), fds, BATON__BATCH_MAX, &len, &nfds));
        baton__close_fds(fds, nfds);
        T_OK(baton__msg_decode(buf, len, &m));
        T_NE(m.type, BATON__MSG_ERROR);
    } while (m.type != BATON__MSG_END);
    return fd;
}

static void run_wrong_version(void)
{
    char buf[BATON__HDR_LEN + 12];
    const struct {
        int off, value;
    } lies[] = {{4, 2}, {4, 0}, {0, 0x58}};

    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        int w = (int)ask(MSG_WARNS), fd = ctl();
        size_t len = baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid());
        buf[lies[i].off] = (char)lies[i].value;
        buf[lies[i].off + 1] = 0;
        send_raw(fd, buf, len);
        expect_dropped(fd, -EPROTO);
        expect_owner_clean(w, 1);
        expect_served(&owner, "gen1 ping");
    }
}

static void run_truncated(void)
{
    char buf[BATON__HDR_LEN + 12];
    size_t len = baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid());
    int w, fd;

    /* An empty record reads as a hang-up: dropped quietly. */
    fd = ctl();
    send_raw(fd, buf, 0);
    expect_dropped(fd, 0);
    expect_owner_clean(0, 0);

    /* Half a header, then a payload shorter than the header says. */
    const size_t cuts[] = {BATON__HDR_LEN / 2, BATON__HDR_LEN + 4, BATON__HDR_LEN};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        w = (int)ask(MSG_WARNS);
        fd = ctl();
        send_raw(fd, buf, cuts[i]);
        expect_dropped(fd, -EPROTO);
        expect_owner_clean(w, 1);
    }

    /* Mid-takeover: READY whose header promises 8 bytes, with 3. */
    w = (int)ask(MSG_WARNS);
    fd = takeover_to_end();
    len = baton__enc_ready(buf, getpid(), 0);
    send_raw(fd, buf, len - 5);
    expect_dropped(fd, -EPROTO);
    expect_owner_clean(w, 1);
    expect_served(&owner, "gen1 ping");
}

static void run_huge_length(void)
{
    static char big[128 * 1024];
    char buf[BATON__HDR_LEN + 12];
    int w, fd;

    /* 4 GiB - 1 in the length field of a request. */
    w = (int)ask(MSG_WARNS);
    fd = ctl();
    baton__msg_header(buf, BATON__MSG_REQ, 0xffffffffu);
    send_raw(fd, buf, BATON__HDR_LEN);
    expect_dropped(fd, -EPROTO);
    expect_owner_clean(w, 1);

    /* A record larger than any message: the owner's receive truncates. */
    w = (int)ask(MSG_WARNS);
    fd = ctl();
    int sz = sizeof(big) * 2;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    baton__msg_header(big, BATON__MSG_REQ, sizeof(big) - BATON__HDR_LEN);
    send_raw(fd, big, sizeof(big));
    expect_dropped(fd, 0);
    expect_owner_clean(w, 1);

    /* The same lie in place of READY, mid-takeover. */
    w = (int)ask(MSG_WARNS);
    fd = takeover_to_end();
    baton__msg_header(buf, BATON__MSG_READY, 0xffffffffu);
    send_raw(fd, buf, BATON__HDR_LEN + 8);
    expect_dropped(fd, -EPROTO);
    expect_owner_clean(w, 1);
    expect_served(&owner, "gen1 ping");
}

/* Send one batch of n copies of fd with a valid request; 0, or -errno when
 * the owner hung up first. */
static int send_batch(int sock, int fd, size_t n)
{
    char buf[BATON__HDR_LEN + 12];
    int fds[BATON__BATCH_MAX];
    int r;

    for (size_t i = 0; i < n; i++)
        fds[i] = fd;
    for (;;) {
        r = baton__send(sock, buf, baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, getpid()), fds, n);
        if (r != -EAGAIN)
            return r;
        T_OK(baton__wait_fd(sock, POLLOUT, now_ms() + T_TIMEOUT));
    }
}

static void run_fd_flood(void)
{
    int null = T_SYS(open("/dev/null", O_RDONLY | O_CLOEXEC));
    int sent = 0, w = (int)ask(MSG_WARNS), conns = 0, fd;

    /* One batch per connection: the owner receives each and closes it. */
    while (sent < FLOOD_FDS) {
        int n = FLOOD_FDS - sent < BATON__BATCH_MAX ? FLOOD_FDS - sent : BATON__BATCH_MAX;
        fd = ctl();
        T_OK(send_batch(fd, null, n));
        expect_dropped(fd, -EPROTO);
        sent += n;
        conns++;
    }
    t_log("sent %d fds over %d connections", sent, conns);
    expect_owner_clean(w, conns);
    expect_served(&owner, "gen1 ping");

    /* Many batches queued on one connection: dropped after the first, the
     * rest freed with the connection. */
    w = (int)ask(MSG_WARNS);
    fd = ctl();
    for (int i = 0; i < 40; i++)
        if (send_batch(fd, null, BATON__BATCH_MAX) < 0)
            break;
    expect_dropped(fd, 0);
    expect_owner_clean(w, 1);
    close(null);
    expect_served(&owner, "gen1 ping");
}

/* Closed only after the real successor took over. */
static int silent[4] = {-1, -1, -1, -1}, asked = -1;

static void run_stall(void)
{
    int w = (int)ask(MSG_WARNS);
    uint64_t start = now_ms();

    for (int i = 0; i < 4; i++)
        silent[i] = ctl();
    asked = takeover_to_end();
    /* The owner serves while they stall, and drops them all by its
     * deadline. */
    expect_served(&owner, "gen1 ping");
    for (int i = 0; i < 4; i++) {
        struct pollfd p = {.fd = silent[i], .events = POLLIN | POLLRDHUP};
        T_EQ(poll(&p, 1, T_TIMEOUT), 1);
    }
    struct pollfd p = {.fd = asked, .events = POLLRDHUP};
    T_EQ(poll(&p, 1, T_TIMEOUT), 1);
    T_GE(now_ms() - start, owner_timeout_ms - 50);
    expect_owner_clean(w, 5);
    expect_served(&owner, "gen1 ping");
    /* The stalled peers keep their ends open while the real successor
     * takes over; main() closes them at the end. */
}

static void run_connect_flood(void)
{
    enum { HELD = 100, TOTAL = 2000 };
    int held[HELD], w = (int)ask(MSG_WARNS), ok = 0, busy = 0;
    uint64_t start = now_ms();
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    T_LT(strlen(dir) + sizeof("/control.sock"), sizeof(sa.sun_path));
    memcpy(sa.sun_path, dir, strlen(dir));
    strcat(sa.sun_path, "/control.sock");
    for (int i = 0; i < HELD; i++)
        held[i] = -1;
    for (int i = 0; i < TOTAL; i++) {
        int fd = T_SYS(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            ok++;
        } else {
            T_ASSERT(errno == EAGAIN);
            busy++;
        }
        if (held[i % HELD] >= 0)
            close(held[i % HELD]);
        held[i % HELD] = fd;
        if (i == TOTAL / 2)
            expect_served(&owner, "gen1 ping");
        /* Pace: connect i is due at start + i ms. */
        int64_t ahead = (int64_t)(start + (uint64_t)i) - (int64_t)now_ms();
        if (ahead > 0)
            pause_ms((int)ahead);
    }
    t_log("%d connects in %llu ms: %d accepted by the kernel, %d refused (backlog full)", TOTAL,
          (unsigned long long)(now_ms() - start), ok, busy);
    T_LT(now_ms() - start, 5000);
    for (int i = 0; i < HELD; i++)
        close(held[i]);
    /* Refusals for want of peer slots are logged. */
    expect_owner_clean(w, 1);
    expect_served(&owner, "gen1 ping");
}

static int nobody_main(int chan, void *arg)
{
    int null = T_SYS(open("/dev/null", O_RDONLY | O_CLOEXEC)), fd;

    T_SYS(setgroups(0, NULL));
    T_SYS(setgid(NOBODY));
    T_SYS(setuid(NOBODY));
    fd = ctl();
    /* The owner may have hung up before our request. */
    send_batch(fd, null, BATON__BATCH_MAX);
    expect_dropped(fd, 0);
    close(null);
    t_tell(chan, T_MSG_DONE);
    return 0;
}

static void run_foreign_uid(void)
{
    struct t_proc p;
    int w = (int)ask(MSG_WARNS);

    t_spawn(&p, nobody_main, NULL);
    T_HEAR_EQ(p.chan, T_MSG_DONE);
    T_EQ(t_proc_wait(&p, T_TIMEOUT), 0);
    expect_owner_clean(w, 1);
    expect_served(&owner, "gen1 ping");
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*run)(void);
    } modes[] = {
        {"wrong-version", run_wrong_version},
        {"truncated", run_truncated},
        {"huge-length", run_huge_length},
        {"fd-flood", run_fd_flood},
        {"stall", run_stall},
        {"connect-flood", run_connect_flood},
        {"foreign-uid", run_foreign_uid},
    };
    void (*run)(void) = NULL;
    struct t_proc succ;

    t_init(argc, argv);
    if (argc != 2)
        t_fail(__FILE__, __LINE__, "usage: %s MODE", argv[0]);
    mode = argv[1];
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (strcmp(mode, modes[i].name) == 0)
            run = modes[i].run;
    if (!run)
        t_fail(__FILE__, __LINE__, "unknown mode %s", mode);
    if (strcmp(mode, "foreign-uid") == 0) {
        if (geteuid() != 0)
            t_skip("needs root to run a peer as another uid");
        T_SYS(chmod(t_tmpdir(), 0711));
    }
    if (strcmp(mode, "stall") == 0)
        owner_timeout_ms = 400;
    t_path(dir, "run");

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    expect_served(&owner, "gen1 ping");
    owner_fds = (int)ask(MSG_FDS);
    t_log("owner pid %d serves port %d with %d open fds", (int)owner.pid, port, owner_fds);

    run();
    T_EQ(ask(MSG_FDS), owner_fds);

    /* A real successor takes over. */
    t_spawn(&succ, succ_main, NULL);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    expect_served(&succ, "gen2 ping");
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    for (int i = 0; i < 4; i++)
        if (silent[i] >= 0)
            close(silent[i]);
    if (asked >= 0)
        close(asked);
    return t_done();
}
