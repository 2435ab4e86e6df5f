/* SPDX-License-Identifier: MIT */
/*
 * libbaton-preload.so - zero-downtime restarts for unmodified servers,
 * loaded by `baton run` through LD_PRELOAD. This file holds its state, the
 * real functions underneath its wrappers and its log; shim.h lists the
 * others.
 *
 * Who is active. The process `baton run` executes (BATON_RUN_PID is its
 * pid) and the successors libbaton starts for `baton upgrade` (the same
 * command line: BATON_RUN_CMD is its hash) open the coordination directory
 * BATON_RUN_DIR in a constructor and become "the holder" (manager.c).
 * Processes the holder forks share its state (and are "children");
 * anything the program executes (CGI scripts, helpers) finds neither and
 * stays inert: every wrapper is then a plain call through.
 *
 * Listeners (listeners.c). bind() of a TCP, UDP or unix stream socket looks
 * for an inherited listener under the same name (keys.h: the address as
 * bound, e.g. "tcp://[::]:80/v6only"); if there is one, it is dup3()'d onto
 * the fd number the program's socket() returned, so the program's fd
 * numbering and close-on-exec flag stay as they were, and bind() returns 0.
 * listen() on a fresh socket passes a duplicate to libbaton under that
 * name. The names are also the handle's state (a manifest) so that a
 * successor knows how many listeners it should claim.
 *
 * Readiness (manager.c). The shim calls baton_ready() when the program
 * first waits for work (accept, accept4, epoll_wait and friends, poll,
 * ppoll, select, pselect) after it has a listener, in any of its processes,
 * and either it has claimed every inherited listener or 2 s have passed
 * since that first wait; inherited listeners it never claimed are then
 * closed by libbaton. A program that never waits in one of those calls is
 * readied 10 s after start (BATON_RUN_READY_MS), if it has a listener by
 * then. A holder that gives up root's uid is readied just before.
 *
 * Takeover (listeners.c). Once a successor serves, the holder (and each
 * child, at its next accept) retires its listener fds: for every epoll
 * registration of such an fd the shim saw (epoll_ctl), it first deletes
 * the registration, then dup3()s a socket that never becomes readable (a
 * TCP listener nothing can reach, or an unbound UDP socket) onto the fd
 * number, then registers that fd again with the same events and data. The
 * order matters: an epoll registration belongs to (fd number, open file),
 * and the listener's open file lives on in the successor and in libbaton,
 * so a dup2() alone would leave the old registration firing for ever, and
 * it could no longer be deleted through the fd. poll() and select() look
 * the fd up on every pass and simply stop seeing the listener. accept()
 * then blocks for ever (blocking socket) or fails with EAGAIN. A blocking
 * accept() that is already waiting when the successor takes over is woken
 * by the shim (it waits on the listener and libbaton's upgrade fd too).
 *
 * Draining (stop.c, drain.c). The holder's manager thread then looks every
 * 100 ms for connections accepted on the listeners' ports or paths that
 * its process tree still holds (proctree.c), leaving out the subtree of
 * the new owner, and for accept calls still waiting on a live listener
 * (counted per process in shared memory; a process that died inside one,
 * zombie or gone, no longer counts); idle keep-alive connections are ended
 * gracefully; once there are none, or after BATON_RUN_DRAIN_MS, it sends
 * the program BATON_RUN_STOP_SIGNAL (default SIGTERM), and SIGKILL to its
 * tree 10 s later.
 *
 * Threads. The shim uses libbaton with BATON_NO_THREAD and drives it from
 * its own single manager thread (all signals blocked, like libbaton's
 * thread), which it needs anyway for the readiness and drain timers: one
 * extra thread in the program instead of two.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "shim.h"

struct baton_run__state baton_run__s = {
    .mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP,
    .ready_mu = PTHREAD_MUTEX_INITIALIZER,
    .ready_cv = PTHREAD_COND_INITIALIZER,
    .ready_efd = -1,
    .retire_efd = -1,
    .upgrade_fd = -1,
    .lib_upgrade_fd = -1,
    .ctl_fd = -1,
    .log_fd = -1,
    .err_fd = -1,
    .lock_fd = -1,
    .fork_lock_fd = -1,
    .steer_mu = PTHREAD_MUTEX_INITIALIZER,
};

_Atomic unsigned char baton_run__fdmap[FDMAP];

struct baton_run__real baton_run__real;

void baton_run__resolve(void)
{
    struct baton_run__real *r = &baton_run__real;

#define R(name, sym) r->name = dlsym(RTLD_NEXT, sym)
    R(bind, "bind");
    R(listen, "listen");
    R(accept, "accept");
    R(accept4, "accept4");
    R(epoll_ctl, "epoll_ctl");
    R(epoll_wait, "epoll_wait");
    R(epoll_pwait, "epoll_pwait");
    R(epoll_pwait2, "epoll_pwait2");
    R(poll, "poll");
    R(poll_chk, "__poll_chk");
    R(ppoll, "ppoll");
    R(select, "select");
    R(pselect, "pselect");
    R(close, "close");
    R(dup, "dup");
    R(dup2, "dup2");
    R(dup3, "dup3");
    R(fcntl, "fcntl");
    R(fcntl64, "fcntl64");
    R(unlink, "unlink");
    R(unlinkat, "unlinkat");
    R(getsockname, "getsockname");
    R(setuid, "setuid");
    R(seteuid, "seteuid");
    R(setreuid, "setreuid");
    R(setresuid, "setresuid");
    R(setfsuid, "setfsuid");
    R(recv, "recv");
    R(recvfrom, "recvfrom");
    R(recvmsg, "recvmsg");
    R(recvmmsg, "recvmmsg");
    R(send, "send");
    R(sendto, "sendto");
    R(sendmsg, "sendmsg");
    R(sendmmsg, "sendmmsg");
    R(setsockopt, "setsockopt");
    R(getsockopt, "getsockopt");
    R(getpeername, "getpeername");
    R(connect, "connect");
    R(ioctl, "ioctl");
    R(read, "read");
    R(write, "write");
#undef R
    if (!r->fcntl64) /* glibc before 2.28: nobody calls it */
        r->fcntl64 = r->fcntl;
}

void baton_run__say(const char *fmt, ...)
{
    char buf[700];
    int e = errno, n;
    va_list ap;

    if (S.log_fd < 0)
        return;
    n = snprintf(buf, sizeof(buf), "baton-preload[%d]: ", (int)getpid());
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    if (write(S.log_fd, buf, (size_t)n) < 0) {
        /* Nowhere else to say it. */
    }
    errno = e;
}

void baton_run__complain(const char *fmt, ...)
{
    char buf[1024];
    int e = errno, n;
    va_list ap;

    n = snprintf(buf, sizeof(buf), "baton run: %s[%d]: ", program_invocation_short_name,
                 (int)getpid());
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    say("%.*s", n, buf);
    buf[n++] = '\n';
    if (write(S.err_fd >= 0 ? S.err_fd : 2, buf, (size_t)n) < 0) {
        /* Nowhere else to say it. */
    }
    errno = e;
}
