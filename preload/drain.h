/* SPDX-License-Identifier: MIT */
/*
 * The drain's decisions, pure: which connections a superseded copy still
 * holds, which of them it may end, whether a process is gone, and what to
 * do next while it drains. No state and no system calls, so that they are
 * unit-tested under the sanitizers (tests/run-drain.c), like keys.c; the
 * drain itself (stop.c) gathers the facts from /proc and TCP_INFO.
 */
#ifndef BATON_RUN_DRAIN_H
#define BATON_RUN_DRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Is a connection whose local address is sa (len bytes, as getsockname()
 * gives it) one accepted on the listener named key (keys.h): a TCP
 * connection on the key's port (any address: a dual-stack or wildcard
 * listener accepts on several), or a unix one on the key's path? */
bool baton_run__conn_of(const char *key, const struct sockaddr *sa, socklen_t len);

/* What the drain knows of a TCP connection (TCP_INFO, SIOCINQ, SIOCOUTQ). */
struct baton_run__tcp {
    unsigned state;          /* 1: established */
    int inq, outq;           /* bytes unread by the program, unacknowledged */
    unsigned last_recv_ms;   /* since data last came */
    unsigned last_sent_ms;   /* since data last went */
    uint64_t bytes_received; /* data bytes, each way */
    uint64_t bytes_sent;
};

/* Is the connection an idle keep-alive one that the drain may end: state
 * established, nothing unread and nothing unacknowledged, quiet both ways
 * for idle_ms, and either never asked anything or answered after it was
 * last asked. The kernel stamps data in ticks (1 to 10 ms), so an answer
 * and the next request within one tick look answered: such a request is
 * taken for idle if it is worked on for longer than idle_ms. */
bool baton_run__conn_idle(const struct baton_run__tcp *t, unsigned idle_ms);

/* From the text of /proc/PID/stat: is the process a zombie or dead (it
 * holds nothing and accepts nothing)? The command name in parentheses may
 * hold anything, spaces and parentheses too. A text that does not parse
 * counts as alive: the drain then waits rather than cut. */
bool baton_run__stat_gone(const char *stat);

/* Where a drain stands, and what to do now (baton_run__drain_next). */
struct baton_run__drain {
    uint64_t start_ms;   /* when the copy stopped accepting */
    unsigned drain_ms;   /* how long its connections may take */
    unsigned kill_ms;    /* from the stop signal to SIGKILL */
    uint64_t stopped_ms; /* when the stop signal went; 0 before */
};

enum baton_run__drain_step {
    BATON_RUN_DRAIN_WAIT, /* look again in a while */
    BATON_RUN_DRAIN_STOP, /* send the stop signal (and note when) */
    BATON_RUN_DRAIN_KILL, /* the program outlived its stop signal: SIGKILL */
};

/* conns: the connections and live accept calls the copy holds now. The
 * stop signal goes once there are none, or at the drain timeout; SIGKILL
 * kill_ms after it, whatever the copy holds then. */
enum baton_run__drain_step baton_run__drain_next(const struct baton_run__drain *d, uint64_t now_ms,
                                                 int conns);

#endif
