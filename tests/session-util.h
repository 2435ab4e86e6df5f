/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the session layer's tests: in-process session servers whose
 * application checks order and state, clients that check what they get, a
 * pump that dispatches everything, and raw frames for hostile peers.
 *
 * Every message carries a counter: the client sends "c <n>" (n = 1, 2, ...)
 * and the server answers each with "s <m>", its own counter for the
 * session, which travels in the session's state. Each side counts every
 * gap, repeat or reordering it sees in errors.
 */
#ifndef BATON_TEST_SESSION_UTIL_H
#define BATON_TEST_SESSION_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "baton-session.h"
#include "harness.h"

#define TS_KEY  "0123456789abcdef-test-key"
#define TS_KEY2 "fedcba9876543210-other-key"

struct ts_server {
    baton_session_server *srv;
    int lfd, pfd;
    char addr[64], paddr[64];
    const char *name;
    long long errors, messages, opened, closed, moved, move_failed, imported, exported;
    /* on_move_done: calls, and the sums of what they reported; an outcome
     * counted (moved + move_failed + closed while moving) before it is
     * reported is checked there, and a mismatch is an error. */
    long long done_calls, done_moved, done_failed;
    char done_peer[64];
    int last_move_err, last_close_err;
    /* Lines the library logged, and those that contain ts_log_match. */
    long long log_lines, log_matched;
};

struct ts_client {
    baton_session_client *c;
    uint64_t sent, got; /* our counter, the last server counter seen */
    long long errors, moves, move_failed;
    int last_move_err;  /* of the last move called off */
    int lost, lost_err; /* lost: on_lost was called */
    uint64_t max_pause_us;
    uint64_t pauses[8]; /* the first moves' pauses, in microseconds */
    int npauses;
};

/* Options of the servers started next (0: 3000 ms, the library's window). */
extern int ts_move_window, ts_move_timeout_ms;
/* More options of the servers started next (0: the library's defaults). */
extern int ts_max_sessions, ts_handshake_timeout_ms, ts_idle_timeout_ms;
/* What the export callback of the servers returns (0: it exports). */
extern int ts_export_err;
/* Servers count the log lines that contain this (NULL: none), and clients
 * too, all together, in ts_client_log_matched. */
extern const char *ts_log_match;
extern long long ts_client_log_matched;
/* The timeout of the clients started next (0: 3000 ms). */
extern int ts_client_timeout_ms;

/* TLS of the servers and clients started next: TS_PLAIN (the insecure
 * option), TS_PSK (certificates on client links, a PSK from the peer key
 * on peer links) or TS_CERT (certificates on both). The default comes from
 * the environment, TS_TLS=plain|psk|cert, else plain. Certificates are
 * made once per test by scripts/session-certs.sh: an authority and a
 * server certificate for "session.test", 127.0.0.1 and ::1. */
enum { TS_PLAIN, TS_PSK, TS_CERT };
extern int ts_tls;
/* What servers present and clients and servers verify, if set (else the
 * test's own files), and the name verified (NULL: the address's IP; the
 * default is "session.test", valid on any address). */
extern const char *ts_tls_cert, *ts_tls_key, *ts_tls_ca, *ts_tls_name;
/* ts_tls, or the environment's choice. */
int ts_tls_mode(void);
/* The directory of the test's own authority and certificate, made at the
 * first call (make it before forking processes that start servers or
 * clients, so that they share it): DIR/ca.pem, DIR/server.pem,
 * DIR/server.key. */
const char *ts_tls_dir(void);
/* Make another certificate signed by the test's authority (NAME.pem and
 * NAME.key in ts_tls_dir()), valid for the names and IPs in sans (spaces
 * between). */
void ts_tls_make(const char *name, const char *sans);
/* The same, from a new authority of its own in subdir of ts_tls_dir(). */
void ts_tls_make_foreign(const char *subdir, const char *sans);

/* Called with the options of each server (client) started next, just
 * before it is created: a test may set options and its own callbacks (ctx
 * is the struct ts_server or ts_client). NULL: none. */
extern void (*ts_server_opts_hook)(struct baton_session_server_options *o);
extern void (*ts_client_opts_hook)(struct baton_session_client_options *o);

/* A server on 127.0.0.1 (port 0) with the given key (NULL: none), named
 * name in logs. */
void ts_server_start(struct ts_server *t, const char *name, const char *key);
/* The same on ip:port and ip:peer_port (0: any port). */
void ts_server_start_at(struct ts_server *t, const char *name, const char *key, const char *ip,
                        int port, int peer_port);
void ts_server_stop(struct ts_server *t);
/* Make peer known to t as "name". */
void ts_server_peer(struct ts_server *t, const char *name, const struct ts_server *peer);

void ts_client_start(struct ts_client *c, const char *addr);
void ts_client_stop(struct ts_client *c);
/* Send the next "c <n>". */
void ts_client_send(struct ts_client *c);

/* Dispatch every server and client that is ready, waiting up to ms for the
 * first event. NULL-terminated arrays; entries with a NULL handle are
 * skipped. */
void ts_pump(struct ts_server **srvs, struct ts_client *clients, int n, int ms);
/* Pump until cond(arg) or the timeout: true if cond held. */
bool ts_pump_until(struct ts_server **srvs, struct ts_client *clients, int n,
                   bool (*cond)(void *arg), void *arg, int timeout_ms);

/* A session server in a child process, so that its CPU time, RSS and fds
 * are its own: started with the options above and key (NULL: none, no peer
 * listener) after lowering its RLIMIT_NOFILE to nofile (0: as is). It
 * dispatches until ts_proc_stop(). */
struct ts_proc {
    struct t_proc p;
    char addr[64], paddr[64];
};
struct ts_proc_stats {
    long long cpu_us; /* user and system time so far */
    long long log_lines, log_matched, opened, closed, count;
};
void ts_proc_start(struct ts_proc *sp, const char *key, int nofile);
void ts_proc_stats(struct ts_proc *sp, struct ts_proc_stats *ret);
/* A field of /proc/PID/status in KiB: "VmRSS" (its resident set now),
 * "VmHWM" (the most it has been since the last ts_proc_reset_peak()). */
long ts_proc_status_kb(const struct ts_proc *sp, const char *field);
void ts_proc_reset_peak(const struct ts_proc *sp);
/* Stop it; fails the test unless it exits 0. */
void ts_proc_stop(struct ts_proc *sp);

/* A raw TCP connection to a "tcp://127.0.0.1:PORT" address (blocking). */
int ts_raw_connect(const char *addr);
/* Write a frame; read the next frame into buf (payload into *ret_plen):
 * its type, or -errno. */
void ts_raw_frame(int fd, uint8_t type, const void *payload, uint32_t len);
int ts_raw_read(int fd, uint8_t *buf, size_t cap, uint32_t *ret_plen, int timeout_ms);

/* Pump the servers until fd is readable, then ts_raw_read(). */
int ts_raw_next(struct ts_server **srvs, int fd, uint8_t *buf, size_t cap, uint32_t *ret_plen);
uint32_t ts_get32(const uint8_t *p);
void ts_put64(uint8_t *p, uint64_t v);

/* Frame types and codes of docs/session-protocol.md. */
enum {
    TS_HELLO = 1,
    TS_WELCOME,
    TS_DATA,
    TS_ACK,
    TS_MOVE,
    TS_RESUME,
    TS_RESUMED,
    TS_CLOSE,
    TS_STAY,
    TS_PING,
    TS_PONG,
    TS_PHELLO = 16,
    TS_PCHAL,
    TS_PAUTH,
    TS_OFFER,
    TS_OFFERED,
    TS_TAKE,
    TS_REFUSE,
    TS_EXPORT,
};
enum {
    TS_C_OK,
    TS_C_PROTO,
    TS_C_VERSION,
    TS_C_TOO_BIG,
    TS_C_BAD_ACK,
    TS_C_TOKEN,
    TS_C_UNKNOWN,
    TS_C_LOST,
    TS_C_AUTH,
    TS_C_SHUTDOWN,
    TS_C_REFUSED,
    TS_C_OVERLOAD,
    TS_C_FULL,
    TS_C_TIMEOUT,
};

#endif
