/* SPDX-License-Identifier: MIT */
/*
 * The skeleton the example servers share (baton-echo, baton-httpd): the
 * command line, one epoll loop over non-blocking sockets, connections with
 * input and output buffers, the upgrade (SIGHUP, a second copy, `baton
 * upgrade`), handing connections to the successor and taking them from the
 * predecessor, and the drain. A program fills in a struct server_ops with
 * what is particular to it (what a connection does with its input, when it
 * can move and what travels with it) and calls server_main().
 *
 * Words: a superseded process hands its connections off; its successor
 * takes them; the whole exchange is the handoff. Draining is the fallback
 * for what was not handed off.
 */
#ifndef BATON_EXAMPLES_SERVER_H
#define BATON_EXAMPLES_SERVER_H

#include <baton.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SERVER_MAX_LISTENERS 16

struct config {
    const char *dir;
    const char *listen[SERVER_MAX_LISTENERS];
    int nlisten;
    int drain_timeout_ms;
    int ready_delay_ms;
    int probation_ms;    /* --probation: the old copy may take the service back */
    int max_generations; /* --max-generations; 0: the library's default */
    bool no_handoff;     /* --no-handoff: drain every connection instead */
    bool standby;        /* --standby: keep a successor parked before main() */
    bool verbose;
    char default_listen[BATON_ADDR_MAX + 1];
};

/* Everything in the epoll set starts with a watch; epoll data points to it. */
enum watch_kind { W_LISTENER, W_CONN, W_SIGNAL, W_UPGRADE, W_INBOUND };

struct watch {
    enum watch_kind kind;
    int fd;
};

enum conn_state {
    C_OPEN,    /* reading and answering */
    C_CLOSING, /* the last output is queued; half-close once it is written */
    C_LINGER,  /* written and half-closed; dropping input until EOF */
};

/* A program's connection starts with this (see server_ops.conn_size). */
struct conn {
    struct watch w; /* first: epoll data points here */
    struct conn *prev, *next;
    enum conn_state state;
    bool peer_eof;   /* the client will send nothing more */
    bool failed;     /* out of memory: close without answering */
    uint32_t events; /* what the epoll set watches for now */
    int64_t linger_until;
    char *out;
    size_t out_len, out_off, out_cap;
    char *in; /* server_ops.in_cap bytes, allocated with the connection */
    size_t in_len;
};

struct server;

struct server_ops {
    const char *prog;           /* for messages: "baton-httpd" */
    const char *fd_name;        /* listeners are named fd_name0, fd_name1, ... */
    const char *default_listen; /* with --listen absent; "%s" stands for --dir */
    void (*usage)(FILE *f);
    size_t conn_size; /* of the program's connection, which starts with struct conn */
    size_t in_cap;    /* input buffer per connection */
    size_t out_high;  /* no reading while this much output waits */
    bool nodelay;     /* TCP_NODELAY on accepted connections */
    /* Input arrived (or output drained) on an open connection: answer it. */
    void (*process)(struct server *s, struct conn *c);
    /* Can c move to the successor now, and what travels with it? state()
     * copies the state to dst unless NULL and returns its length, at most
     * BATON_CONN_STATE_MAX. */
    bool (*movable)(const struct conn *c);
    size_t (*state)(const struct conn *c, char *dst);
    /* A connection taken from the predecessor: state is what its state()
     * gave. */
    void (*feed)(struct server *s, struct conn *c, const char *state, size_t len);
    /* After the burst at the upgrade, those left behind are busy ones that
     * may become movable later (logged as such). */
    bool hand_later;
};

struct server {
    const struct server_ops *ops;
    const struct config *cfg;
    baton *b;
    int epfd;
    struct watch listeners[SERVER_MAX_LISTENERS];
    int nlisteners;
    bool accepting;        /* the listeners are in the epoll set */
    int64_t accept_resume; /* nonzero: accepting paused (EMFILE) until then */
    struct watch sig;      /* signalfd: SIGHUP, SIGTERM, SIGINT */
    struct watch upgrade;  /* baton_upgrade_fd(): a successor took over */
    struct watch inbound;  /* baton_conn_fd(): connections from our predecessor */
    bool inbound_open;     /* inbound is watched: more may come */
    bool superseded;       /* a successor took over */
    bool handing;          /* ... and takes our connections */
    bool handoff_ended;    /* baton_handoff_done() was called */
    bool upgrade_fired;    /* in this epoll batch: acted on after it */
    bool inbound_ready;    /* likewise */
    bool up_running;       /* baton_upgrade_start() succeeded, no outcome yet */
    struct conn *conns;
    size_t nconns, nlinger;
    bool draining;
    bool stopping;          /* by a signal: no successor to wait for */
    bool released;          /* the successor is final: exit once drained */
    int64_t drain_deadline; /* connections still ours are closed then */
};

/* Parses the command line, serves until superseded or stopped, and returns
 * the exit status: 0, 1 when the server could not start, 2 on a usage
 * error. Prints "ready pid=P generation=G" on stdout once it serves; ready
 * is called just before, with the baton handle open and readied. */
int server_main(int argc, char **argv, const struct server_ops *ops,
                void (*ready)(struct server *s));

/* One line on stderr, prefixed with the program's name and pid. */
void server_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

size_t conn_out_pending(const struct conn *c);
/* Queues output; on out of memory marks the connection failed. */
void conn_out_append(struct conn *c, const char *data, size_t len);

#endif
