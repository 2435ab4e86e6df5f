/* SPDX-License-Identifier: MIT */
/*
 * The test harness: asserts that print both values, temporary directories
 * removed at exit, an open-fd count checked at the end, child processes
 * driven over socketpairs (never synchronised by sleeping) and loopback
 * TCP helpers.
 *
 * A test's main() calls t_init() first and ends with `return t_done();`.
 * Every wait is bounded: a test fails instead of hanging.
 */
#ifndef BATON_TEST_HARNESS_H
#define BATON_TEST_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "baton.h"

#define T_SKIP 77
/* The default bound of every wait in a test, in milliseconds. */
#define T_TIMEOUT 10000

/* Fail the test (from any of its processes) with a message; never returns. */
void t_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
/* Skip the test (exit 77) with the reason; never returns. */
void t_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Move the test into a mount namespace of its own whose mounts stay there
 * (unshare(CLONE_NEWNS), then / made recursively private). Skips (77)
 * without the privilege, and in a chroot whose / is not a mount point (its
 * mounts cannot be made private); any other failure fails the test. */
void t_private_mounts(void);
/* Print a progress line (to stderr, with the pid). */
void t_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "-22 (EINVAL)" for negative errno values, else the number. */
const char *t_fmt(long long v, char *buf, size_t len);
void t_fail_cmp(const char *file, int line, const char *ea, const char *op, const char *eb,
                long long a, long long b) __attribute__((noreturn));

#define T_ASSERT(e)                                                                                \
    do {                                                                                           \
        if (!(e))                                                                                  \
            t_fail(__FILE__, __LINE__, "assertion failed: %s", #e);                                \
    } while (0)

#define T_CMP_(a, op, b)                                                                           \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (!(a_ op b_))                                                                           \
            t_fail_cmp(__FILE__, __LINE__, #a, #op, #b, a_, b_);                                   \
    } while (0)

#define T_EQ(a, b) T_CMP_(a, ==, b)
#define T_NE(a, b) T_CMP_(a, !=, b)
#define T_GE(a, b) T_CMP_(a, >=, b)
#define T_GT(a, b) T_CMP_(a, >, b)
#define T_LE(a, b) T_CMP_(a, <=, b)
#define T_LT(a, b) T_CMP_(a, <, b)

/* A call that returns >= 0 or -errno (a library call or a t_ helper). */
#define T_OK(e)                                                                                    \
    ({                                                                                             \
        long long r_ = (long long)(e);                                                             \
        if (r_ < 0)                                                                                \
            t_fail_cmp(__FILE__, __LINE__, #e, ">=", "0", r_, 0);                                  \
        r_;                                                                                        \
    })

/* A syscall that returns -1 and sets errno on failure. */
#define T_SYS(e)                                                                                   \
    ({                                                                                             \
        long long r_ = (long long)(e);                                                             \
        if (r_ < 0)                                                                                \
            t_fail(__FILE__, __LINE__, "%s failed: %m", #e);                                       \
        r_;                                                                                        \
    })

#define T_STREQ(a, b)                                                                              \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            t_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",   \
                   b_ ? b_ : "(null)");                                                            \
    } while (0)

/* Call first: fd baseline, child subreaper, SIGPIPE left at its default. */
void t_init(int argc, char **argv);
/* Fails when fds leaked since t_init(); returns 0 for main() to return. */
int t_done(void);
/* The number of open fds of this process. */
int t_fd_count(void);
/* Is fd open in this process? */
bool t_fd_open(int fd);

/* A private directory (mkdtemp, 0700), removed with its contents at exit. */
const char *t_tmpdir(void);
/* t_tmpdir()/leaf into buf (PATH_MAX bytes). */
char *t_path(char *buf, const char *leaf);
/* Options for a coordination directory dir with the given timeout. */
struct baton_options t_opts(const char *dir, int ready_timeout_ms, unsigned flags);

/* Child processes. A child runs fn(chan, arg) and exits with its result;
 * chan is its end of a socketpair with the parent. Every other fd the
 * parent had is closed in the child, and the child dies with the parent. */
struct t_proc {
    pid_t pid;
    int pidfd;
    int chan; /* the parent's end */
};
typedef int (*t_proc_fn)(int chan, void *arg);
void t_spawn(struct t_proc *p, t_proc_fn fn, void *arg);
/* Start a program (fds 0-2 shared, stdout into *ret_out if not NULL). */
void t_spawn_exec(struct t_proc *p, char *const argv[], int *ret_out);
/* Wait up to timeout_ms for the process to end: its exit code, or 128 +
 * the signal that killed it. Fails the test on timeout (after killing). */
int t_proc_wait(struct t_proc *p, int timeout_ms);
/* SIGKILL and reap. */
void t_proc_kill(struct t_proc *p);
/* Wait until the process has exited (without reaping it): 0, -ETIMEDOUT. */
int t_proc_exited(struct t_proc *p, int timeout_ms);
/* Run a program to completion within timeout_ms; its stdout (NUL-terminated,
 * truncated to cap) in out if not NULL. Returns as t_proc_wait(). */
int t_run(char *const argv[], int timeout_ms, char *out, size_t cap);

/* Messages over a channel: one 64-bit value each. */
void t_tell(int chan, long long v);
/* The next value, or fail the test on timeout or end of stream. */
long long t_hear(int chan, int timeout_ms);
/* The next value into *v: 0, -ETIMEDOUT, -EPIPE at end of stream. */
int t_try_hear(int chan, int timeout_ms, long long *v);
#define T_HEAR_EQ(chan, expect)                                                                    \
    do {                                                                                           \
        long long h_ = t_hear(chan, T_TIMEOUT);                                                    \
        T_EQ(h_, expect);                                                                          \
    } while (0)

/* Loopback sockets. family is AF_INET (127.0.0.1) or AF_INET6 (::1). */
bool t_have_ipv6(void);
int t_port(int fd);
/* A port that was free a moment ago (bound to port 0, then closed). */
int t_free_port(int family);
/* Connect within timeout_ms; a blocking, close-on-exec fd or -errno. */
int t_tcp_connect(int family, int port, int timeout_ms);
int t_unix_connect(const char *path, int timeout_ms);
/* A raw connection to dir/control.sock (SOCK_SEQPACKET): the fd or -errno. */
int t_ctl_connect(const char *dir);
int t_write_all(int fd, const void *buf, size_t len);
/* Read until '\n' (kept) or end of stream: the length or -errno. */
ssize_t t_read_line(int fd, char *buf, size_t cap, int timeout_ms);
/* Read exactly len bytes: 0 or -errno (-EPIPE at a short end). */
int t_read_full(int fd, void *buf, size_t len, int timeout_ms);
/* Send "req\n" on a connected fd and read the answer line into resp
 * (without '\n'): 0 or -errno. */
int t_ask(int fd, const char *req, char *resp, size_t cap, int timeout_ms);
/* Connect, ask, close: 0 or -errno. */
int t_request(int family, int port, const char *req, char *resp, size_t cap);

/* Serving. Accept one connection on lfd within timeout_ms, read a line,
 * answer "<tag> <line>" and close: 0 or -errno. */
int t_serve_one(int lfd, const char *tag, int timeout_ms);
/* Channel values of t_owner_loop(). */
enum {
    T_MSG_SERVED = 1001,     /* owner ->: answered a connection */
    T_MSG_SUPERSEDED = 1002, /* owner ->: upgrade fd readable, stepping down */
    T_MSG_STOP = 1003,       /* -> owner: stop serving and return */
    T_MSG_GO = 1004,         /* -> child: carry on */
    T_MSG_DONE = 1005,       /* child ->: finished */
};
/* Serve lfd (t_serve_one answers tagged tag) until baton_upgrade_fd(b)
 * turns readable (tells T_MSG_SUPERSEDED, returns 1) or the parent sends
 * T_MSG_STOP or hangs up (returns 0). Tells T_MSG_SERVED per connection.
 * With BATON_NO_THREAD, dispatches control events too. */
int t_owner_loop(baton *b, int lfd, int chan, const char *tag);

/* Reports from helper programs: one unix datagram each. */
int t_report_bind(const char *path);
/* The next report (NUL-terminated) into buf: 0, or fail the test on timeout. */
void t_report_recv(int fd, char *buf, size_t cap, int timeout_ms);
/* Send a report to path (best effort): 0 or -errno. */
int t_report_send(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Watch a process that is not (yet) our child, e.g. one a library started:
 * t_proc_wait() then returns its status once it is our child (we are a
 * child subreaper), or -1 when it is not. */
void t_proc_adopt(struct t_proc *p, pid_t pid);

/* How many of our fds refer to a non-regular file with inode ino (the
 * last of them in *ret_fd if not NULL). Looks through /proc/self/fd by
 * path, so that it touches no fd a library thread may be closing. */
int t_fds_with_ino(long long ino, int *ret_fd);

/* Wait until pred(arg) holds, woken by each change in directory dir (a
 * file created, renamed in, written or removed: inotify), or until dir
 * itself appears; checked at once and after every change. 0, or
 * -ETIMEDOUT after timeout_ms. */
int t_dir_wait(const char *dir, bool (*pred)(void *arg), void *arg, int timeout_ms);
/* The pid the owner record of the directory dirfd names (its generation
 * in *gen unless NULL): 0 when there is none or it is unreadable. */
int t_owner_pid(int dirfd, int *gen);
/* Wait (t_dir_wait()) until the owner record of dir names pid: 0, or
 * -ETIMEDOUT. */
int t_wait_owner(const char *dir, pid_t pid, int timeout_ms);

/* BATON_STANDBY: a child of one of owner's threads blocked in recvfrom(2)
 * (parked in libbaton's constructor): its pid, 0 none. */
pid_t t_standby_parked(pid_t owner);
/* The same, polled at 5 ms until T_TIMEOUT (a process blocking in a
 * system call sends no event to wait on); fails the test then. */
pid_t t_wait_standby(pid_t owner);

/* The st_ino of fd, for "the same open file" checks across processes. */
long long t_ino(int fd);

#endif
