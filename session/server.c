/* SPDX-License-Identifier: MIT */
/*
 * The server handle: new and free, the dispatch, links, timers and ticks,
 * accept, settle, and refusals logged once per episode. What the files of
 * the server side hold is listed in server-internal.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "server-internal.h"

#define TICK_MS      50
#define HANDSHAKE_MS 10000
#define IDLE_MS      60000
/* A listener that cannot accept (no fds) rests this long, doubling. */
#define ACCEPT_REST_MIN_MS 100
#define ACCEPT_REST_MAX_MS 1000
/* An episode of refusals ends after this long without one. */
#define EPISODE_QUIET_MS 10000

void baton__srv_set_err(baton_session_server *srv, int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(srv->err, sizeof(srv->err), fmt, ap);
    va_end(ap);
    if (srv->o.log)
        srv->o.log(srv->o.ctx, level, srv->err);
}

/* Run the timer every ms (0: stop it). */
static void timer_set(baton_session_server *srv, int ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    struct itimerspec it = {t, t};

    if (srv->tick_ms == ms)
        return;
    if (timerfd_settime(srv->timerfd, 0, &it, NULL) == 0)
        srv->tick_ms = ms;
}

void baton__srv_arm_timer(baton_session_server *srv)
{
    timer_set(srv, TICK_MS);
}

/* The tick while only idle limits and episodes are watched: they need no
 * precision, and a server with nothing else to do should not wake 20
 * times a second for them. */
static int slow_tick_ms(const baton_session_server *srv)
{
    int ms = srv->o.idle_timeout_ms / 4;

    return ms < TICK_MS ? TICK_MS : ms > 1000 ? 1000 : ms;
}

const char *baton__srv_link_who(const struct slink *k, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (getpeername(k->l.fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
        }
    }
    if (port)
        baton__s_fmt(buf, cap, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    else
        baton__s_fmt(buf, cap, "on a local socket");
    return buf;
}

static const char *const ep_what[EP_N] = {
    [EP_ACCEPT] = "failed accepts",
    [EP_FULL] = "sessions refused because the server is full",
    [EP_DEADLINE] = "connections closed at their handshake deadline",
    [EP_IDLE] = "sessions closed at the idle limit",
    [EP_CLIENT] = "client connections refused for bad input",
    [EP_PEER] = "peer connections refused",
};

/* Refusals that a remote party can repeat at will (connections, bad
 * frames, exhausted fds) are logged once per episode, so that a flood
 * costs a line, not a line per connection: the first one says what was
 * refused and why, and when the episode ends (EPISODE_QUIET_MS without
 * one) a line counts them. last_error has each. */
void baton__srv_refuse_log(baton_session_server *srv, int ep, const char *fmt, ...)
{
    struct episode *e = &srv->ep[ep];
    int64_t now = baton__s_now_ms();
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(srv->err, sizeof(srv->err), fmt, ap);
    va_end(ap);
    e->last_ms = now;
    if (e->n++)
        return;
    e->first_ms = now;
    if (srv->o.log) {
        char line[ERR_MAX + 128];
        baton__s_fmt(line, sizeof(line),
                     "%s (further %s are counted, not logged, until %d s pass "
                     "without one)",
                     srv->err, ep_what[ep], EPISODE_QUIET_MS / 1000);
        srv->o.log(srv->o.ctx, BATON_SESSION_LOG_WARNING, line);
    }
    if (!srv->tick_ms)
        timer_set(srv, slow_tick_ms(srv));
}

/* End the episodes that have been quiet long enough: true if one is still
 * open. */
static bool episodes_tick(baton_session_server *srv, int64_t now)
{
    bool open = false;

    for (int i = 0; i < EP_N; i++) {
        struct episode *e = &srv->ep[i];
        if (!e->n)
            continue;
        if (now - e->last_ms < EPISODE_QUIET_MS) {
            open = true;
            continue;
        }
        if (e->n > 1 && srv->o.log) {
            char line[160];
            baton__s_fmt(line, sizeof(line), "%lu %s in %lld ms (the first was logged); none since",
                         e->n, ep_what[i], (long long)(e->last_ms - e->first_ms));
            srv->o.log(srv->o.ctx, BATON_SESSION_LOG_INFO, line);
        }
        e->n = 0;
    }
    return open;
}

/* ---- links ---- */

/* A new link may carry only its handshake's frames, so that until it is
 * a session or an authenticated peer it costs a page of buffer at most,
 * and only until its handshake deadline. */
struct slink *baton__srv_link_new(baton_session_server *srv, int fd, int kind)
{
    struct slink *k = calloc(1, sizeof(*k));
    uint32_t allow = kind == L_CLIENT    ? BATON__S_RX_CLIENT_NEW
                     : kind == L_PEER_IN ? BATON__S_RX_PEER_NEW
                                         : BATON__S_RX_NEXT_NEW;

    if (!k)
        return NULL;
    baton__slink_init(&k->l, fd, kind, allow);
    baton__list_init(&k->fnode);
    if (kind == L_CLIENT)
        k->l.wmax = BATON__S_WBUF_CLIENT_MAX;
    k->last_in_ms = baton__s_now_ms();
    k->deadline = k->last_in_ms + srv->o.handshake_timeout_ms;
    baton__list_add(&srv->links, &k->node);
    baton__srv_arm_timer(srv);
    return k;
}

void baton__srv_link_kill(baton_session_server *srv, struct slink *k)
{
    if (k->dead)
        return;
    k->dead = true;
    if (k->l.events)
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, k->l.fd, NULL);
    k->l.events = 0;
}

static void link_free(struct slink *k)
{
    baton__list_del(&k->node);
    baton__list_del(&k->fnode);
    baton__slink_release(&k->l);
    free(k);
}

void baton__srv_link_flush(baton_session_server *srv, struct slink *k)
{
    int r;

    if (k->dead || !k->l.connected)
        return;
    r = baton__slink_flush(&k->l);
    if (r < 0) {
        k->l.eof = true;
        k->l.err = r;
        return;
    }
    if (k->l.events && baton__slink_watch(&k->l, srv->epfd, k) < 0)
        k->l.eof = true;
}

void baton__srv_link_refuse(baton_session_server *srv, struct slink *k, int err, const char *text)
{
    baton__slink_put_close(&k->l, baton__s_err_code(err), text);
    (void)baton__slink_flush(&k->l);
    baton__srv_link_kill(srv, k);
}

/* ---- the event loop ---- */

/* What a link is, in its state, for a log line. */
static const char *link_state(const struct slink *k)
{
    if (k->l.kind == L_CLIENT)
        return k->s         ? "a client link"
               : k->pending ? "a client link while its RESUME is answered"
                            : "a client link before HELLO or RESUME";
    if (k->pstate != P_READY)
        return "a peer link before authentication";
    return "a peer link";
}

/* A frame the decoder refused: say which, how long, and why. */
static void bad_frame(baton_session_server *srv, struct slink *k, int err,
                      const struct baton__sframe *f)
{
    char what[200];

    if (err == -EPROTONOSUPPORT)
        baton__s_fmt(what, sizeof(what), "a frame of another protocol version on %s",
                     link_state(k));
    else
        baton__s_fmt(what, sizeof(what), "%s frame (type %u, %u bytes) on %s: %s",
                     baton__sframe_name(f->type), f->type, f->len, link_state(k),
                     f->why ? f->why : "refused");
    if (k->l.kind == L_CLIENT)
        baton__srv_client_error(srv, k, err, EP_CLIENT, what);
    else
        baton__srv_peer_error(srv, k, err, what);
}

/* TLS ended the link: a handshake that failed (k->l.err: -EACCES, or
 * -EPROTO for a peer that does not speak TLS), or a record that failed its
 * integrity check (-ECONNRESET). Say so, with OpenSSL's reason. */
static void tls_ended(baton_session_server *srv, struct slink *k)
{
    char who[64], what[160];
    int err = k->l.err ? k->l.err : -ECONNRESET;

    if (k->l.kind == L_CLIENT) {
        baton__srv_refuse_log(srv, EP_CLIENT, "client link from %s%s closed: TLS: %s",
                              baton__srv_link_who(k, who, sizeof(who)), k->s ? " (a session)" : "",
                              k->l.tls_why);
        baton__srv_client_eof(srv, k);
        return;
    }
    if (err == -ECONNRESET) {
        /* It broke (a record changed on the path): as any broken link. */
        baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING, "peer link %s %s broke: TLS: %s",
                           k->l.kind == L_PEER_IN ? "from" : "to",
                           k->l.kind == L_PEER_IN ? baton__srv_link_who(k, who, sizeof(who))
                           : k->peer              ? k->peer->name
                                                  : "?",
                           k->l.tls_why);
        baton__srv_peer_error(srv, k, err, NULL);
        return;
    }
    /* The peer key is what a PSK handshake fails on. */
    baton__s_fmt(what, sizeof(what), "TLS: %s%s", k->l.tls_why,
                 err == -EACCES && !srv->o.tls_ca_file ? ": wrong key" : "");
    baton__srv_peer_error(srv, k, err, what);
}

static void handle_link(baton_session_server *srv, struct slink *k, uint32_t ev)
{
    struct baton__sframe f;
    int r;

    /* The session was exported in this dispatch (TAKE came first): what
     * its client sent since is the next server's to handle, and handling
     * it here too would run it twice. Leave it unread; if the move is
     * called off, the link is watched again and it is read then. */
    if (k->l.kind == L_CLIENT && k->s && k->s->state == S_FROZEN)
        return;
    if (!k->l.connected && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) &&
        baton__srv_peer_connected(srv, k) < 0)
        return;
    if (ev & EPOLLOUT)
        baton__srv_link_flush(srv, k);
    if (baton__slink_readable(&k->l, ev) && baton__slink_read(&k->l) > 0)
        k->last_in_ms = baton__s_now_ms();
    while (!k->dead && (r = baton__slink_next(&k->l, &f)) != 0) {
        if (r < 0) {
            bad_frame(srv, k, r, &f);
            return;
        }
        if (k->l.kind == L_CLIENT) {
            baton__srv_on_client_frame(srv, k, &f);
        } else if ((r = baton__srv_on_peer_frame(srv, k, &f)) < 0) {
            baton__srv_peer_error(srv, k, r, NULL);
            return;
        }
    }
    if (k->dead)
        return;
    if (k->l.kind != L_CLIENT)
        baton__srv_link_flush(srv, k);
    if (k->l.eof) {
        if (k->l.tls_why)
            tls_ended(srv, k);
        else if (k->l.kind == L_CLIENT)
            baton__srv_client_eof(srv, k);
        else
            baton__srv_peer_error(srv, k, -ECONNRESET, NULL);
        return;
    }
    if (k->l.kind == L_CLIENT && !k->s)
        baton__srv_link_flush(srv, k);
    else if (k->l.ssl && k->l.events && baton__slink_watch(&k->l, srv->epfd, k) < 0)
        k->l.eof = true; /* what TLS waits for changed (EPOLLOUT or not) */
}

/* A listener that cannot accept (the process is out of fds, or the system
 * of memory) leaves epoll for a rest: level-triggered, it would be ready
 * again at once for the same connection, and the loop would spin and log
 * at full speed (as libuv and nginx found). The connections wait in the
 * listen backlog. It is watched again when the rest is over (100 ms,
 * doubling to 1 s while accept keeps failing) or as soon as a link of
 * ours closes and frees an fd (baton__srv_settle()). */
static void listener_pause(baton_session_server *srv, struct slink *lk, int err)
{
    int64_t now = baton__s_now_ms();

    lk->rest_ms = lk->rest_ms ? lk->rest_ms * 2 : ACCEPT_REST_MIN_MS;
    if (lk->rest_ms > ACCEPT_REST_MAX_MS)
        lk->rest_ms = ACCEPT_REST_MAX_MS;
    lk->deadline = now + lk->rest_ms;
    if (!lk->paused && epoll_ctl(srv->epfd, EPOLL_CTL_DEL, lk->l.fd, NULL) == 0)
        lk->paused = true;
    baton__srv_refuse_log(srv, EP_ACCEPT,
                          "%s listener: accept: %s: new connections wait in the backlog; "
                          "accepting again in %d ms, or when a connection of ours closes",
                          lk->l.kind == L_LISTEN ? "client" : "peer", strerror(-err), lk->rest_ms);
    baton__srv_arm_timer(srv);
}

static void listener_resume(baton_session_server *srv, struct slink *lk)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = lk};

    if (!lk->paused)
        return;
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, lk->l.fd, &e) < 0) {
        lk->deadline = baton__s_now_ms() + lk->rest_ms; /* try again later */
        return;
    }
    lk->paused = false;
    lk->deadline = 0;
}

/* accept(2): "Linux passes already-pending network errors on the new socket
 * as an error code from accept()"; those concern one connection only. */
static bool accept_error_is_one_connection(int e)
{
    switch (e) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return true;
    }
    return false;
}

static void do_accept(baton_session_server *srv, struct slink *lk, int kind)
{
    for (int i = 0; i < 64; i++) {
        int one = 1, fd = accept4(lk->l.fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        struct slink *k;
        if (fd < 0) {
            if (errno == EAGAIN) {
                lk->rest_ms = 0; /* the backlog is empty: all is well */
                return;
            }
            if (accept_error_is_one_connection(errno))
                continue;
            listener_pause(srv, lk, -errno);
            return;
        }
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        k = baton__srv_link_new(srv, fd, kind);
        if (!k) {
            close(fd);
            listener_pause(srv, lk, -ENOMEM);
            return;
        }
        k->l.connected = true;
        k->pstate = P_WAIT_HELLO;
        if (kind == L_PEER_IN && !srv->key) {
            baton__srv_link_refuse(srv, k, -EACCES, "this server has no peer key");
            continue;
        }
        if (srv->tls_client &&
            baton__slink_tls(&k->l, kind == L_CLIENT ? srv->tls_client : srv->tls_peer_in, true,
                             kind == L_PEER_IN && srv->o.tls_ca_file ? srv->o.tls_peer_name : NULL,
                             NULL) < 0) {
            baton__srv_link_kill(srv, k);
            listener_pause(srv, lk, -ENOMEM);
            return;
        }
        if (baton__slink_watch(&k->l, srv->epfd, k) < 0)
            baton__srv_link_kill(srv, k);
    }
}

/* Deadlines of links: a connection past its handshake deadline, a session
 * whose client has been silent for the idle limit (a client that pings
 * is never silent that long). Returns true if a handshake is under way. */
static bool links_tick(baton_session_server *srv, int64_t now)
{
    struct slink *k;
    bool busy = false;
    char what[96];

    baton__list_foreach(k, &srv->links, node)
    {
        if (k->dead)
            continue;
        if (k->deadline) {
            busy = true;
            if (now < k->deadline)
                continue;
            if (k->l.kind != L_CLIENT) {
                baton__srv_peer_error(srv, k, -ETIMEDOUT, NULL);
                continue;
            }
            baton__s_fmt(what, sizeof(what), "no session within the handshake deadline (%d ms)",
                         srv->o.handshake_timeout_ms);
            baton__srv_client_error(srv, k, -ETIMEDOUT, EP_DEADLINE, what);
        } else if (k->l.kind == L_CLIENT && k->pings && k->s && k->s->state == S_ACTIVE &&
                   now - k->last_in_ms >= srv->o.idle_timeout_ms) {
            baton__s_fmt(what, sizeof(what), "nothing received for %lld ms (the idle limit)",
                         (long long)(now - k->last_in_ms));
            baton__srv_client_error(srv, k, -ETIMEDOUT, EP_IDLE, what);
        }
    }
    return busy;
}

static bool listeners_tick(baton_session_server *srv, int64_t now)
{
    struct slink *lk[] = {&srv->lsn, &srv->plsn};
    bool busy = false;

    for (int i = 0; i < 2; i++) {
        if (!lk[i]->paused)
            continue;
        if (now >= lk[i]->deadline)
            listener_resume(srv, lk[i]);
        busy |= lk[i]->paused;
    }
    return busy;
}

static void on_tick(baton_session_server *srv)
{
    int64_t now = baton__s_now_ms();
    bool busy, watch;
    uint64_t x;

    while (read(srv->timerfd, &x, sizeof(x)) > 0)
        ;
    busy = links_tick(srv, now);
    busy |= listeners_tick(srv, now);
    busy |= baton__srv_moves_tick(srv, now);
    busy |= baton__srv_expects_tick(srv, now);
    /* Sessions need the idle limit watched, and open episodes their end
     * logged: a slow tick will do. */
    watch = episodes_tick(srv, now) || srv->count > 0;
    timer_set(srv, busy ? TICK_MS : watch ? slow_tick_ms(srv) : 0);
}

/* Flush dirty sessions, then free what died during this dispatch. */
void baton__srv_settle(baton_session_server *srv)
{
    struct slink *k, *kn;
    baton_session *s, *sn;
    bool freed = false;

    /* Moves that ended in this dispatch made room in their windows. */
    baton__srv_moves_offer(srv);
    while (!baton__list_empty(&srv->dirty)) {
        s = baton__list_first(&srv->dirty, baton_session, dnode);
        baton__list_del(&s->dnode);
        baton__srv_session_flush(s);
    }
    /* Peer links that forwards or the servers' messages were put on. */
    while (!baton__list_empty(&srv->pflush)) {
        k = baton__list_first(&srv->pflush, struct slink, fnode);
        baton__list_del(&k->fnode);
        baton__srv_link_flush(srv, k);
    }
    baton__list_foreach_safe(k, kn, &srv->links, node)
    {
        if (k->dead) {
            link_free(k);
            freed = true;
        }
    }
    /* An fd came free: a listener that ran out of them may accept again. */
    if (freed) {
        listener_resume(srv, &srv->lsn);
        listener_resume(srv, &srv->plsn);
    }
    baton__list_foreach_safe(s, sn, &srv->sessions, node)
    {
        if (s->state == S_DEAD)
            baton__srv_session_free(srv, s);
    }
}

BATON_SESSION_EXPORT int baton_session_server_dispatch(baton_session_server *srv)
{
    struct epoll_event ev[128];
    int n;

    if (!srv)
        return -EINVAL;
    if (srv->in_dispatch)
        return -EBUSY;
    n = epoll_wait(srv->epfd, ev, 128, 0);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    srv->in_dispatch = true;
    for (int i = 0; i < n; i++) {
        struct slink *k = ev[i].data.ptr;
        if (k->dead)
            continue;
        if (k->l.kind == L_LISTEN)
            do_accept(srv, k, L_CLIENT);
        else if (k->l.kind == L_PEERLISTEN)
            do_accept(srv, k, L_PEER_IN);
        else if (k->l.kind == L_TIMER)
            on_tick(srv);
        else
            handle_link(srv, k, ev[i].events);
    }
    baton__srv_settle(srv);
    srv->in_dispatch = false;
    return 0;
}

/* ---- the handle ---- */

static int watch_fd(baton_session_server *srv, struct slink *k, int fd, int kind)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = k};

    baton__slink_init(&k->l, fd, kind, 0);
    if (kind != L_TIMER) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return -errno;
    }
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        return -errno;
    return 0;
}

/* Half the fd limit: each session holds an fd, and a flood of sessions
 * must leave fds for the application, the peer links and connections
 * still in their handshake. */
static int default_max_sessions(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur / 2 > INT_MAX)
        return INT_MAX;
    return rl.rlim_cur >= 2 ? (int)(rl.rlim_cur / 2) : 1;
}

/* A bad option says why through the log callback: the caller has no
 * handle to ask. */
static int opts_fail(const struct baton_session_server_options *o, const char *why)
{
    if (o->log)
        o->log(o->ctx, BATON_SESSION_LOG_ERR, why);
    return -EINVAL;
}

/* TLS unless insecure, and not both: a server that meant one and got the
 * other would be worse than one that does not start. */
static int tls_check(const struct baton_session_server_options *o)
{
    bool any = o->tls_cert_file || o->tls_key_file || o->tls_ca_file || o->tls_peer_name;

    if (o->insecure && any)
        return opts_fail(o, "baton_session_server_new: insecure set together with TLS files");
    if (o->insecure)
        return 0;
    if (!o->tls_cert_file || !o->tls_key_file)
        return opts_fail(o, "baton_session_server_new: TLS needs tls_cert_file and tls_key_file "
                            "(or set insecure for plain TCP)");
    return 0;
}

static void tls_free(baton_session_server *srv)
{
    baton__tls_ctx_free(srv->tls_client);
    baton__tls_ctx_free(srv->tls_peer_in);
    baton__tls_ctx_free(srv->tls_peer_out);
    srv->tls_client = srv->tls_peer_in = srv->tls_peer_out = NULL;
}

/* The three contexts: client links (our certificate), and peer links
 * both ways, by certificates (a CA file) or by a PSK from the key. */
static int tls_setup(baton_session_server *srv)
{
    const struct baton_session_server_options *o = &srv->o;
    bool certs = o->tls_ca_file != NULL;
    /* Tickets on client links in keys from the peer key: a client a move
     * sends here resumes its TLS session (any server of the deployment
     * issued it) instead of a full handshake with certificates. */
    struct baton__tls_conf client = {.server = true,
                                     .cert = o->tls_cert_file,
                                     .key = o->tls_key_file,
                                     .ticket_key = srv->key,
                                     .ticket_key_len = o->key_len};
    struct baton__tls_conf in = {.server = true}, out = {.server = false};
    int r;

    if (certs) {
        in = (struct baton__tls_conf){.server = true,
                                      .cert = o->tls_cert_file,
                                      .key = o->tls_key_file,
                                      .verify = true,
                                      .ca = o->tls_ca_file};
        out = in;
        out.server = false;
    } else {
        in.psk_key = out.psk_key = srv->key;
        in.psk_key_len = out.psk_key_len = o->key_len;
    }
    if ((r = baton__tls_ctx_new(&client, &srv->tls_client, srv->err, sizeof(srv->err))) < 0 ||
        ((certs || srv->key) &&
         ((r = baton__tls_ctx_new(&in, &srv->tls_peer_in, srv->err, sizeof(srv->err))) < 0 ||
          (r = baton__tls_ctx_new(&out, &srv->tls_peer_out, srv->err, sizeof(srv->err))) < 0))) {
        opts_fail(o, srv->err);
        return r;
    }
    return 0;
}

BATON_SESSION_EXPORT int baton_session_server_new(const struct baton_session_server_options *opts,
                                                  int listen_fd, int peer_fd,
                                                  baton_session_server **ret)
{
    baton_session_server *srv;
    int r;

    if (!opts || !ret || !opts->on_message || listen_fd < 0 ||
        (opts->key_len && opts->key_len < BATON_SESSION_KEY_MIN) || (opts->key_len && !opts->key) ||
        (peer_fd >= 0 && !opts->key_len) || opts->move_timeout_ms < 0 || opts->move_window < 0 ||
        opts->max_sessions < 0 || opts->handshake_timeout_ms < 0 || opts->idle_timeout_ms < 0 ||
        !baton__resv_zero(opts->resv, sizeof(opts->resv)))
        return -EINVAL;
    if ((r = tls_check(opts)) < 0)
        return r;
    srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    baton__list_init(&srv->links);
    baton__list_init(&srv->sessions);
    baton__list_init(&srv->dirty);
    baton__list_init(&srv->expects);
    baton__list_init(&srv->peers);
    baton__list_init(&srv->pflush);
    srv->o = *opts;
    if (!srv->o.move_timeout_ms)
        srv->o.move_timeout_ms = 10000;
    if (!srv->o.move_window)
        srv->o.move_window = BATON_SESSION_MOVE_WINDOW;
    if (!srv->o.max_sessions)
        srv->o.max_sessions = default_max_sessions();
    if (!srv->o.handshake_timeout_ms)
        srv->o.handshake_timeout_ms = HANDSHAKE_MS;
    if (!srv->o.idle_timeout_ms)
        srv->o.idle_timeout_ms = IDLE_MS;
    srv->epfd = srv->timerfd = -1;
    srv->scratch = malloc(BATON_SESSION_STATE_MAX);
    if (opts->key_len) {
        srv->key = malloc(opts->key_len);
        if (srv->key)
            memcpy(srv->key, opts->key, opts->key_len);
    }
    r = -ENOMEM;
    if (!srv->scratch || (opts->key_len && !srv->key))
        goto fail;
    if (!opts->insecure && (r = tls_setup(srv)) < 0)
        goto fail;
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->epfd < 0) {
        r = -errno;
        goto fail;
    }
    srv->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (srv->timerfd < 0) {
        r = -errno;
        goto fail;
    }
    if ((r = watch_fd(srv, &srv->lsn, listen_fd, L_LISTEN)) < 0 ||
        (r = watch_fd(srv, &srv->tmr, srv->timerfd, L_TIMER)) < 0 ||
        (peer_fd >= 0 && (r = watch_fd(srv, &srv->plsn, peer_fd, L_PEERLISTEN)) < 0))
        goto fail;
    *ret = srv;
    return 0;
fail:
    tls_free(srv);
    if (srv->timerfd >= 0)
        close(srv->timerfd);
    if (srv->epfd >= 0)
        close(srv->epfd);
    free(srv->scratch);
    free(srv->key);
    free(srv);
    return r;
}

BATON_SESSION_EXPORT void baton_session_server_free(baton_session_server *srv)
{
    if (!srv)
        return;
    /* Callbacks below may call public functions (a send to, or a release
     * of, another session): they must not settle, which would free a
     * session this loop frees after. */
    srv->in_dispatch = true;
    while (!baton__list_empty(&srv->sessions)) {
        baton_session *s = baton__list_first(&srv->sessions, baton_session, node);
        /* The application frees what it keeps with the session. */
        baton__srv_session_close(s, -ESHUTDOWN);
        baton__srv_session_free(srv, s);
    }
    while (!baton__list_empty(&srv->expects))
        baton__srv_expect_free(srv, baton__list_first(&srv->expects, struct expect, node));
    while (!baton__list_empty(&srv->links))
        link_free(baton__list_first(&srv->links, struct slink, node));
    while (!baton__list_empty(&srv->peers)) {
        struct peer *p = baton__list_first(&srv->peers, struct peer, node);
        baton__list_del(&p->node);
        baton__squeue_free(&p->pmsgs);
        free(p);
    }
    tls_free(srv);
    close(srv->timerfd);
    close(srv->epfd);
    if (srv->key)
        memset(srv->key, 0, srv->o.key_len);
    free(srv->key);
    free(srv->scratch);
    free(srv);
}

BATON_SESSION_EXPORT int baton_session_server_fd(const baton_session_server *srv)
{
    return srv ? srv->epfd : -EINVAL;
}

BATON_SESSION_EXPORT size_t baton_session_server_count(const baton_session_server *srv)
{
    return srv ? srv->count : 0;
}

BATON_SESSION_EXPORT const char *baton_session_server_last_error(const baton_session_server *srv)
{
    return srv ? srv->err : "";
}
