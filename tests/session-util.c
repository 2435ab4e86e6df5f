/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session-util.h"

int ts_move_window, ts_move_timeout_ms, ts_client_timeout_ms;
int ts_max_sessions, ts_handshake_timeout_ms, ts_idle_timeout_ms;
int ts_export_err;
const char *ts_log_match;
long long ts_client_log_matched;
int ts_tls = -1;
const char *ts_tls_cert, *ts_tls_key, *ts_tls_ca, *ts_tls_name = "session.test";

int ts_tls_mode(void)
{
    const char *e = getenv("TS_TLS");

    if (ts_tls >= 0)
        return ts_tls;
    if (!e || !*e || !strcmp(e, "plain"))
        return ts_tls = TS_PLAIN;
    if (!strcmp(e, "psk"))
        return ts_tls = TS_PSK;
    if (!strcmp(e, "cert"))
        return ts_tls = TS_CERT;
    t_fail(__FILE__, __LINE__, "TS_TLS=%s: want plain, psk or cert", e);
}

static void certs(const char *dir, const char *name, const char *sans)
{
    char cmd[1024];
    int r;

    snprintf(cmd, sizeof(cmd), "BATON_CERT_NAME=%s bash %s/scripts/session-certs.sh %s %s", name,
             BATON_SOURCE_DIR, dir, sans);
    r = system(cmd);
    if (r != 0)
        t_fail(__FILE__, __LINE__, "%s: exit %d", cmd, r);
}

const char *ts_tls_dir(void)
{
    static char dir[512];

    if (!dir[0]) {
        char path[PATH_MAX];
        t_path(path, "tls");
        T_ASSERT(strlen(path) < sizeof(dir));
        strcpy(dir, path);
        certs(dir, "server", "session.test 127.0.0.1 ::1");
    }
    return dir;
}

void ts_tls_make(const char *name, const char *sans)
{
    certs(ts_tls_dir(), name, sans);
}

void ts_tls_make_foreign(const char *subdir, const char *sans)
{
    char dir[1024];

    snprintf(dir, sizeof(dir), "%s/%s", ts_tls_dir(), subdir);
    certs(dir, "server", sans);
}

/* Deadlines the tests do not set themselves: with TLS every client of a
 * move does a handshake with the next server, all of them in this one
 * process, which a loaded machine under the sanitizers can take seconds
 * over. */
static int default_timeout_ms(void)
{
    return ts_tls_mode() == TS_PLAIN ? 3000 : 10000;
}

static const char *tls_file(const char *set, const char *leaf, char *buf)
{
    if (set)
        return set;
    snprintf(buf, PATH_MAX, "%s/%s", ts_tls_dir(), leaf);
    return buf;
}

/* The server application's per-session state; it travels with the
 * session. */
struct app {
    uint64_t last_c, next_s;
};

static void srv_log(void *ctx, int level, const char *msg)
{
    struct ts_server *t = ctx;

    t->log_lines++;
    if (ts_log_match && strstr(msg, ts_log_match))
        t->log_matched++;
    if (getenv("TS_VERBOSE") || level <= BATON_SESSION_LOG_ERR)
        t_log("%s: %s", t->name, msg);
}

static void srv_open(void *ctx, baton_session *s)
{
    struct ts_server *t = ctx;

    baton_session_set_data(s, calloc(1, sizeof(struct app)));
    t->opened++;
}

static void srv_message(void *ctx, baton_session *s, const void *data, size_t len)
{
    struct ts_server *t = ctx;
    struct app *a = baton_session_data(s);
    char buf[64], out[64];
    unsigned long long n;
    int r;

    t->messages++;
    if (!a || len >= sizeof(buf)) {
        t->errors++;
        return;
    }
    memcpy(buf, data, len);
    buf[len] = 0;
    if (sscanf(buf, "c %llu", &n) != 1 || n != a->last_c + 1) {
        t_log("%s: session %s: got \"%s\" after c %llu", t->name, baton_session_id(s), buf,
              (unsigned long long)a->last_c);
        t->errors++;
    }
    a->last_c = n;
    r = snprintf(out, sizeof(out), "s %llu", (unsigned long long)++a->next_s);
    if ((r = baton_session_send(s, out, (size_t)r)) < 0) {
        t_log("%s: send: %d", t->name, r);
        t->errors++;
    }
}

static void srv_close(void *ctx, baton_session *s, int err)
{
    struct ts_server *t = ctx;

    free(baton_session_data(s));
    t->closed++;
    t->last_close_err = err;
}

static int srv_export(void *ctx, baton_session *s, void *buf, size_t cap, size_t *ret_len)
{
    struct ts_server *t = ctx;

    if (ts_export_err)
        return ts_export_err;
    t->exported++;
    memcpy(buf, baton_session_data(s), sizeof(struct app));
    *ret_len = sizeof(struct app);
    return 0;
}

static int srv_import(void *ctx, baton_session *s, const void *data, size_t len)
{
    struct ts_server *t = ctx;
    struct app *a;

    if (len != sizeof(*a))
        return -EINVAL;
    a = malloc(sizeof(*a));
    memcpy(a, data, sizeof(*a));
    baton_session_set_data(s, a);
    t->imported++;
    return 0;
}

static void srv_move_done(void *ctx, const char *peer, size_t moved, size_t failed)
{
    struct ts_server *t = ctx;

    t->done_calls++;
    t->done_moved += (long long)moved;
    t->done_failed += (long long)failed;
    snprintf(t->done_peer, sizeof(t->done_peer), "%s", peer);
    /* It comes after the last outcome it counts. */
    if (t->done_moved > t->moved) {
        t_log("%s: on_move_done reported %lld moved, on_moved said %lld", t->name, t->done_moved,
              t->moved);
        t->errors++;
    }
}

static void srv_moved(void *ctx, baton_session *s, int err)
{
    struct ts_server *t = ctx;

    if (err == 0) {
        free(baton_session_data(s));
        t->moved++;
    } else {
        t->move_failed++;
        t->last_move_err = err;
    }
}

static int listen_at(const char *ip, int port, char *addr)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t sl = sizeof(sa);
    int one = 1, fd = T_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));

    T_ASSERT(inet_pton(AF_INET, ip, &sa.sin_addr) == 1);
    T_SYS(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
    T_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    T_SYS(listen(fd, 4096));
    T_SYS(getsockname(fd, (struct sockaddr *)&sa, &sl));
    sprintf(addr, "tcp://%s:%d", ip, ntohs(sa.sin_port));
    return fd;
}

void (*ts_server_opts_hook)(struct baton_session_server_options *o);
void (*ts_client_opts_hook)(struct baton_session_client_options *o);

void ts_server_start(struct ts_server *t, const char *name, const char *key)
{
    ts_server_start_at(t, name, key, "127.0.0.1", 0, 0);
}

void ts_server_start_at(struct ts_server *t, const char *name, const char *key, const char *ip,
                        int port, int peer_port)
{
    struct baton_session_server_options o = {
        .key = key,
        .key_len = key ? strlen(key) : 0,
        .move_timeout_ms = ts_move_timeout_ms ? ts_move_timeout_ms : default_timeout_ms(),
        .move_window = ts_move_window,
        .max_sessions = ts_max_sessions,
        .handshake_timeout_ms = ts_handshake_timeout_ms,
        .idle_timeout_ms = ts_idle_timeout_ms,
        .ctx = t,
        .on_open = srv_open,
        .on_message = srv_message,
        .on_close = srv_close,
        .export_state = srv_export,
        .import_state = srv_import,
        .on_moved = srv_moved,
        .on_move_done = srv_move_done,
        .log = srv_log,
    };

    static char cert[PATH_MAX], ckey[PATH_MAX], ca[PATH_MAX];

    if (ts_tls_mode() == TS_PLAIN) {
        o.insecure = 1;
    } else {
        o.tls_cert_file = tls_file(ts_tls_cert, "server.pem", cert);
        o.tls_key_file = tls_file(ts_tls_key, "server.key", ckey);
        if (ts_tls_mode() == TS_CERT)
            o.tls_ca_file = tls_file(ts_tls_ca, "ca.pem", ca);
        o.tls_peer_name = ts_tls_name;
    }
    if (ts_server_opts_hook)
        ts_server_opts_hook(&o);
    memset(t, 0, sizeof(*t));
    t->name = name;
    t->lfd = listen_at(ip, port, t->addr);
    t->pfd = key ? listen_at(ip, peer_port, t->paddr) : -1;
    T_OK(baton_session_server_new(&o, t->lfd, t->pfd, &t->srv));
}

void ts_server_stop(struct ts_server *t)
{
    baton_session_server_free(t->srv);
    t->srv = NULL;
    if (t->lfd >= 0)
        close(t->lfd);
    if (t->pfd >= 0)
        close(t->pfd);
    t->lfd = t->pfd = -1;
}

void ts_server_peer(struct ts_server *t, const char *name, const struct ts_server *peer)
{
    T_OK(baton_session_server_add_peer(t->srv, name, peer->paddr, peer->addr));
}

static void cli_message(void *ctx, baton_session_client *c, const void *data, size_t len)
{
    struct ts_client *tc = ctx;
    char buf[64];
    unsigned long long n;

    if (len >= sizeof(buf)) {
        tc->errors++;
        return;
    }
    memcpy(buf, data, len);
    buf[len] = 0;
    if (sscanf(buf, "s %llu", &n) != 1 || n != tc->got + 1) {
        t_log("client %s: got \"%s\" after s %llu", baton_session_client_id(c), buf,
              (unsigned long long)tc->got);
        tc->errors++;
    }
    tc->got = n;
}

static void cli_moved(void *ctx, baton_session_client *c, const char *addr, int err,
                      uint64_t pause_us)
{
    struct ts_client *tc = ctx;

    if (err == 0) {
        tc->moves++;
        if (tc->npauses < 8)
            tc->pauses[tc->npauses++] = pause_us;
    } else {
        tc->move_failed++;
        tc->last_move_err = err;
    }
    if (pause_us > tc->max_pause_us)
        tc->max_pause_us = pause_us;
}

static void cli_log(void *ctx, int level, const char *msg)
{
    if (ts_log_match && strstr(msg, ts_log_match))
        ts_client_log_matched++;
    if (getenv("TS_VERBOSE"))
        t_log("client: %s", msg);
}

static void cli_lost(void *ctx, baton_session_client *c, int err)
{
    struct ts_client *tc = ctx;

    tc->lost = 1;
    tc->lost_err = err;
    if (getenv("TS_VERBOSE"))
        t_log("client lost: %s", baton_session_client_last_error(c));
}

void ts_client_start(struct ts_client *c, const char *addr)
{
    struct baton_session_client_options o = {
        .timeout_ms = ts_client_timeout_ms ? ts_client_timeout_ms : default_timeout_ms(),
        .ctx = c,
        .on_message = cli_message,
        .on_moved = cli_moved,
        .on_lost = cli_lost,
        .log = cli_log,
    };

    static char ca[PATH_MAX];

    if (ts_tls_mode() == TS_PLAIN) {
        o.insecure = 1;
    } else {
        o.tls_ca_file = tls_file(ts_tls_ca, "ca.pem", ca);
        o.tls_server_name = ts_tls_name;
    }
    if (ts_client_opts_hook)
        ts_client_opts_hook(&o);
    memset(c, 0, sizeof(*c));
    T_OK(baton_session_client_connect(&o, addr, &c->c));
}

void ts_client_stop(struct ts_client *c)
{
    baton_session_client_free(c->c);
    c->c = NULL;
}

void ts_client_send(struct ts_client *c)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "c %llu", (unsigned long long)c->sent + 1);

    T_OK(baton_session_client_send(c->c, buf, (size_t)n));
    c->sent++;
}

void ts_pump(struct ts_server **srvs, struct ts_client *clients, int n, int ms)
{
    struct pollfd p[4096];
    int who[4096]; /* the client of each entry, -1 for a server */
    int np = 0;

    for (int i = 0; srvs && srvs[i]; i++)
        if (srvs[i]->srv) {
            who[np] = -1;
            p[np++] = (struct pollfd){baton_session_server_fd(srvs[i]->srv), POLLIN, 0};
        }
    for (int i = 0; i < n && np < 4096; i++)
        if (clients[i].c) {
            who[np] = i;
            p[np++] = (struct pollfd){baton_session_client_fd(clients[i].c), POLLIN, 0};
        }
    if (poll(p, (nfds_t)np, ms) <= 0)
        return;
    /* Servers every time (a test may act on them between pumps); clients
     * only when ready, as an application would: with a thousand clients in
     * one process, dispatching the idle ones costs more than the work. */
    for (int i = 0; srvs && srvs[i]; i++)
        if (srvs[i]->srv)
            T_OK(baton_session_server_dispatch(srvs[i]->srv));
    for (int j = 0; j < np; j++)
        if (who[j] >= 0 && p[j].revents && clients[who[j]].c)
            T_OK(baton_session_client_dispatch(clients[who[j]].c));
}

bool ts_pump_until(struct ts_server **srvs, struct ts_client *clients, int n,
                   bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 5) {
        if (cond(arg))
            return true;
        ts_pump(srvs, clients, n, 5);
    }
    return cond(arg);
}

enum { PROC_STATS = 1, PROC_STOP };

struct proc_arg {
    const char *key;
    int nofile;
};

static void proc_tell_stats(int chan, const struct ts_server *t)
{
    struct rusage ru;

    T_SYS(getrusage(RUSAGE_SELF, &ru));
    t_tell(chan, (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
                     ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    t_tell(chan, t->log_lines);
    t_tell(chan, t->log_matched);
    t_tell(chan, t->opened);
    t_tell(chan, t->closed);
    t_tell(chan, (long long)baton_session_server_count(t->srv));
}

static int proc_main(int chan, void *arg)
{
    const struct proc_arg *a = arg;
    struct ts_server t;
    long long cmd;

    if (a->nofile > 0) {
        struct rlimit rl;
        T_SYS(getrlimit(RLIMIT_NOFILE, &rl));
        rl.rlim_cur = (rlim_t)a->nofile;
        T_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    }
    ts_server_start(&t, "S", a->key);
    t_tell(chan, atoi(strrchr(t.addr, ':') + 1));
    t_tell(chan, a->key ? atoi(strrchr(t.paddr, ':') + 1) : 0);
    for (;;) {
        struct pollfd p[2] = {{baton_session_server_fd(t.srv), POLLIN, 0}, {chan, POLLIN, 0}};
        if (poll(p, 2, 1000) < 0)
            continue;
        if (p[0].revents)
            T_OK(baton_session_server_dispatch(t.srv));
        if (!p[1].revents)
            continue;
        cmd = t_hear(chan, T_TIMEOUT);
        if (cmd == PROC_STOP)
            break;
        proc_tell_stats(chan, &t);
    }
    ts_server_stop(&t);
    return 0;
}

void ts_proc_start(struct ts_proc *sp, const char *key, int nofile)
{
    struct proc_arg a = {key, nofile};

    /* The child's server and our clients trust one authority. */
    if (ts_tls_mode() != TS_PLAIN)
        ts_tls_dir();
    memset(sp, 0, sizeof(*sp));
    t_spawn(&sp->p, proc_main, &a);
    sprintf(sp->addr, "tcp://127.0.0.1:%lld", t_hear(sp->p.chan, T_TIMEOUT));
    sprintf(sp->paddr, "tcp://127.0.0.1:%lld", t_hear(sp->p.chan, T_TIMEOUT));
}

void ts_proc_stats(struct ts_proc *sp, struct ts_proc_stats *ret)
{
    t_tell(sp->p.chan, PROC_STATS);
    ret->cpu_us = t_hear(sp->p.chan, T_TIMEOUT);
    ret->log_lines = t_hear(sp->p.chan, T_TIMEOUT);
    ret->log_matched = t_hear(sp->p.chan, T_TIMEOUT);
    ret->opened = t_hear(sp->p.chan, T_TIMEOUT);
    ret->closed = t_hear(sp->p.chan, T_TIMEOUT);
    ret->count = t_hear(sp->p.chan, T_TIMEOUT);
}

long ts_proc_status_kb(const struct ts_proc *sp, const char *field)
{
    char path[64], line[256];
    size_t fl = strlen(field);
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)sp->p.pid);
    f = fopen(path, "r");
    T_ASSERT(f);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':' &&
            sscanf(line + fl + 1, "%ld kB", &kb) == 1)
            break;
    fclose(f);
    T_ASSERT(kb >= 0);
    return kb;
}

void ts_proc_reset_peak(const struct ts_proc *sp)
{
    char path[64];
    FILE *f;

    /* proc(5): writing 5 to clear_refs resets the peak resident set. */
    snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)sp->p.pid);
    f = fopen(path, "w");
    T_ASSERT(f);
    T_ASSERT(fputs("5", f) >= 0);
    T_EQ(fclose(f), 0);
}

void ts_proc_stop(struct ts_proc *sp)
{
    t_tell(sp->p.chan, PROC_STOP);
    T_EQ(t_proc_wait(&sp->p, T_TIMEOUT), 0);
    close(sp->p.chan);
}

int ts_raw_connect(const char *addr)
{
    int one = 1, port = atoi(strrchr(addr, ':') + 1);
    int fd = (int)T_OK(t_tcp_connect(AF_INET, port, T_TIMEOUT));

    /* A frame goes out as two writes: without this, Nagle holds the second
     * until the first is acknowledged, and a test that times what arrives
     * together would see half a frame. */
    T_SYS(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
    return fd;
}

void ts_raw_frame(int fd, uint8_t type, const void *payload, uint32_t len)
{
    uint8_t h[8] = {
        1,           type, 0, 0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
        (uint8_t)len};

    T_OK(t_write_all(fd, h, 8));
    if (len)
        T_OK(t_write_all(fd, payload, len));
}

int ts_raw_read(int fd, uint8_t *buf, size_t cap, uint32_t *ret_plen, int timeout_ms)
{
    uint8_t h[8];
    uint32_t len;
    int r = t_read_full(fd, h, 8, timeout_ms);

    if (r < 0)
        return r;
    len = ((uint32_t)h[4] << 24) | ((uint32_t)h[5] << 16) | ((uint32_t)h[6] << 8) | h[7];
    if (len > cap)
        return -EMSGSIZE;
    if ((r = t_read_full(fd, buf, len, timeout_ms)) < 0)
        return r;
    *ret_plen = len;
    return h[1];
}

int ts_raw_next(struct ts_server **srvs, int fd, uint8_t *buf, size_t cap, uint32_t *ret_plen)
{
    for (int waited = 0; waited < T_TIMEOUT; waited += 5) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 0) > 0)
            return ts_raw_read(fd, buf, cap, ret_plen, T_TIMEOUT);
        ts_pump(srvs, NULL, 0, 5);
    }
    return -ETIMEDOUT;
}

uint32_t ts_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void ts_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}
