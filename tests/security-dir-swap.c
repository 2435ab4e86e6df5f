/* SPDX-License-Identifier: MIT */
/*
 * The attack an outside review ran against `baton run`'s default directory,
 * made deterministic. BASE stands for /tmp (sticky, writable by all). An
 * attacker (uid nobody) makes BASE/baton-VICTIM first, mode 0777. The
 * victim (another uid) serves from BASE/baton-VICTIM/run, a directory of
 * its own, 0700. Its successor checks that directory and is stopped right
 * there (fault point s-connect). The attacker then swaps in a directory of
 * its own (renameat2 RENAME_EXCHANGE), with a fake owner behind
 * control.sock that would pass on generation 41, a TCP listener of the
 * attacker's and a state blob. The successor is continued.
 *
 * It must take over from its real owner (generation 2, the victim's
 * listener), never connect to the attacker's socket, and publish where its
 * owner is. Then, in a second round, the attacker's socket is put at the
 * real directory's control.sock itself: the successor must refuse it for
 * its uid, naming the uid and pid, and receive nothing. Needs root.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define VICTIM   65533
#define ATTACKER 65534
#define ADDR     "tcp://127.0.0.1:0"

enum { MSG_SWAP = 2001, MSG_COUNT = 2002 };

static char parent_dir[PATH_MAX], dir[PATH_MAX + 16];

/* Drop to uid (and gid) for good, and still die with the test. */
static void become(uid_t uid)
{
    T_SYS(setgroups(0, NULL));
    T_SYS(setresgid(uid, uid, uid));
    T_SYS(setresuid(uid, uid, uid));
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    const char *st = "victim's state";
    baton *b;
    int lfd;

    (void)arg;
    become(VICTIM);
    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_set_state(b, st, strlen(st)));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

/* Stops itself once its directory is checked (s-connect), then reports
 * its generation, the port of the listener it took and its state's
 * length, readies and serves. */
static int succ_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    const void *st;
    size_t len;
    baton *b;
    int lfd;

    (void)arg;
    become(VICTIM);
    setenv("BATON_FAULT", "s-connect=stop", 1);
    T_OK(baton_open(&o, &b));
    t_tell(chan, baton_generation(b));
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    t_tell(chan, t_port(lfd));
    T_OK(baton_state(b, &st, &len));
    t_tell(chan, (long long)len);
    T_OK(baton_ready(b));
    t_tell(chan, T_MSG_DONE);
    t_owner_loop(b, lfd, chan, "gen2");
    baton_free(b);
    return 0;
}

/* The second round's successor: no fault point; reports what baton_open()
 * returned, whether the message names the attacker's uid, and how many
 * fds it gained (none may arrive). */
static int refused_main(int chan, void *arg)
{
    struct baton_options o = t_opts(arg, 5000, 0);
    char want[64];
    baton *b = NULL;
    int r, fds;

    become(VICTIM);
    fds = t_fd_count();
    r = baton_open(&o, &b);
    t_tell(chan, r);
    snprintf(want, sizeof(want), "runs as uid %d", ATTACKER);
    t_log("baton_open: %s", baton_last_error(NULL));
    t_tell(chan, strstr(baton_last_error(NULL), want) != NULL);
    baton_free(b);
    t_tell(chan, t_fd_count() - fds);
    return 0;
}

/* A fake owner: on every connection, without reading a word, it sends
 * HELLO (generation 41), a batch with its own listener named "web", a
 * state of 5 bytes (a sealed memfd) and END. */
static void fake_answer(int fd, int lfd)
{
    static char buf[BATON__MSG_MAX];
    size_t len;
    int sfd;

    T_OK(baton__state_make("forge", 5, &sfd));
    baton__send(fd, buf, baton__enc_hello(buf, 41, getpid(), 1, 5, 0), NULL, 0);
    len = baton__fds_begin(buf);
    T_OK(baton__fds_add(buf, &len, BATON__KIND_TCP, "web", ADDR));
    baton__fds_end(buf, len, 1);
    baton__send(fd, buf, BATON__HDR_LEN + len, &lfd, 1);
    baton__send(fd, buf, baton__enc_state(buf, 5), &sfd, 1);
    baton__send(fd, buf, baton__enc_empty(buf, BATON__MSG_END), NULL, 0);
    close(sfd);
}

static int fake_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = T_SYS(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    T_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    T_SYS(listen(fd, 16));
    T_SYS(chmod(path, 0777));
    return fd;
}

/*
 * The attacker. Makes BASE/baton-VICTIM, 0777. On MSG_SWAP, with its
 * fake owner at BASE/baton-VICTIM/fake/control.sock, exchanges "fake" and
 * "run" (the second round passes a socket path instead, for the parent to
 * move). Answers every connection as the fake owner; on MSG_COUNT tells how
 * many it had.
 */
static int attacker_main(int chan, void *arg)
{
    char path[PATH_MAX + 32], fake[PATH_MAX + 8];
    bool first = arg == NULL;
    int lfd, sfd = -1, conns = 0, held[8];

    become(ATTACKER);
    if (first) {
        T_SYS(mkdir(parent_dir, 0777));
        T_SYS(chmod(parent_dir, 0777));
    }
    lfd = T_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    {
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
        T_SYS(bind(lfd, (struct sockaddr *)&in, sizeof(in)));
        T_SYS(listen(lfd, 16));
    }
    t_tell(chan, t_port(lfd));
    for (;;) {
        struct pollfd p[2] = {{.fd = chan, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        long long v;

        T_GT(poll(p, sfd >= 0 ? 2 : 1, T_TIMEOUT), 0);
        if (p[1].revents & POLLIN) {
            /* Kept open, as a patient attacker would: the victim must not
             * see the link end before it has believed HELLO. */
            int fd = accept4(sfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0 && conns < 8) {
                fake_answer(fd, lfd);
                held[conns++] = fd;
            } else if (fd >= 0) {
                close(fd);
            }
            continue;
        }
        if (t_try_hear(chan, 0, &v) < 0)
            break;
        if (v == MSG_SWAP && !first) {
            snprintf(path, sizeof(path), "%s/fake2.sock", parent_dir);
            sfd = fake_socket(path);
            t_tell(chan, T_MSG_DONE);
        } else if (v == MSG_SWAP) {
            snprintf(fake, sizeof(fake), "%s/fake", parent_dir);
            T_SYS(mkdir(fake, 0755));
            snprintf(path, sizeof(path), "%s/control.sock", fake);
            sfd = fake_socket(path);
            T_SYS(renameat2(AT_FDCWD, fake, AT_FDCWD, dir, RENAME_EXCHANGE));
            t_tell(chan, T_MSG_DONE);
        } else if (v == MSG_COUNT) {
            t_tell(chan, conns);
        }
    }
    close(lfd);
    if (sfd >= 0)
        close(sfd);
    baton__close_fds(held, conns);
    return 0;
}

/* Wait, bounded, until pid (our child) has stopped at its fault point. */
static void wait_stopped(pid_t pid)
{
    uint64_t deadline = baton__now_ms() + T_TIMEOUT;
    sigset_t chld;
    int sfd;

    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    T_SYS(sigprocmask(SIG_BLOCK, &chld, NULL));
    sfd = T_SYS(signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
    for (;;) {
        struct signalfd_siginfo ssi;
        siginfo_t si = {0};

        T_SYS(waitid(P_PID, pid, &si, WSTOPPED | WEXITED | WNOHANG | WNOWAIT));
        if (si.si_pid == pid) {
            T_EQ(si.si_code, CLD_STOPPED);
            T_SYS(waitid(P_PID, pid, &si, WSTOPPED));
            break;
        }
        if (baton__wait_fd(sfd, POLLIN, deadline) < 0)
            t_fail(__FILE__, __LINE__, "the successor never stopped at s-connect");
        while (read(sfd, &ssi, sizeof(ssi)) > 0)
            ;
    }
    close(sfd);
    T_SYS(sigprocmask(SIG_UNBLOCK, &chld, NULL));
}

/* Round 2: the attacker's socket at control.sock of a directory that is
 * the victim's own (0700). However it got there (here the test, as root,
 * moves it), the successor must refuse it for its uid. */
static void foreign_socket_round(void)
{
    char vdir[PATH_MAX], from[PATH_MAX + 16], to[PATH_MAX + 16];
    struct t_proc att, succ;

    t_path(vdir, "victim2");
    T_SYS(mkdir(vdir, 0700));
    T_SYS(chown(vdir, VICTIM, VICTIM));
    t_spawn(&att, attacker_main, "second");
    (void)t_hear(att.chan, T_TIMEOUT);
    t_tell(att.chan, MSG_SWAP);
    T_HEAR_EQ(att.chan, T_MSG_DONE);
    snprintf(from, sizeof(from), "%s/fake2.sock", parent_dir);
    snprintf(to, sizeof(to), "%s/control.sock", vdir);
    T_SYS(rename(from, to));

    t_spawn(&succ, refused_main, vdir);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), -EPERM);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), 1);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), 0);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    t_proc_kill(&att);
}

int main(int argc, char **argv)
{
    struct t_proc att, owner, succ;
    int port, attacker_port;
    char resp[64];

    t_init(argc, argv);
    if (geteuid() != 0)
        t_skip("needs root to run the victim and the attacker as other uids");
    /* BASE: like /tmp, anyone may make entries in it. */
    T_SYS(chmod(t_tmpdir(), 01777));
    snprintf(parent_dir, sizeof(parent_dir), "%s/baton-%d", t_tmpdir(), VICTIM);
    snprintf(dir, sizeof(dir), "%s/run", parent_dir);

    t_spawn(&att, attacker_main, NULL);
    attacker_port = (int)t_hear(att.chan, T_TIMEOUT);
    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);

    t_spawn(&succ, succ_main, NULL);
    wait_stopped(succ.pid);
    t_tell(att.chan, MSG_SWAP);
    T_HEAR_EQ(att.chan, T_MSG_DONE);
    T_SYS(kill(succ.pid, SIGCONT));

    /* The real owner, its listener and its state; not the attacker's. */
    T_EQ(t_hear(succ.chan, T_TIMEOUT), 2);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), port);
    T_NE(port, attacker_port);
    T_EQ(t_hear(succ.chan, T_TIMEOUT), (long long)strlen("victim's state"));
    T_HEAR_EQ(succ.chan, T_MSG_DONE);
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    T_OK(t_request(AF_INET, port, "ping", resp, sizeof(resp)));
    T_STREQ(resp, "gen2 ping");
    T_HEAR_EQ(succ.chan, T_MSG_SERVED);
    t_tell(att.chan, MSG_COUNT);
    T_EQ(t_hear(att.chan, T_TIMEOUT), 0);
    t_tell(succ.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&succ, T_TIMEOUT), 0);
    t_proc_kill(&att);

    foreign_socket_round();
    return t_done();
}
