/* SPDX-License-Identifier: MIT */
/*
 * baton-quic - an HTTP/3 server whose QUIC connections live through an
 * upgrade. Every request, whatever its method and path, is answered
 * "generation N" by the process that accepted its connection.
 *
 *   baton-quic --dir DIR --listen udp://127.0.0.1:4433 --cert FILE --key FILE
 *
 * SIGHUP starts a new copy that takes over the UDP socket. A QUIC
 * connection cannot move to another process (its keys and state live in
 * this one), so it stays where it was accepted: every connection ID this
 * process chooses names its generation (baton_quic_cid_make()), and the
 * newest generation, which reads the shared socket, forwards each datagram
 * of an older generation's connection to that generation's process
 * (baton_steer_route()). Once superseded, this process stops reading the
 * socket, answers what is forwarded to it on its own copy of the socket,
 * and exits when its last connection has closed or the drain timeout has
 * passed. --no-steer turns the forwarding off, to show what it prevents:
 * the new process drops the old connections' datagrams as unknown, and
 * those connections die.
 *
 * QUIC v1 and TLS 1.3 come from ngtcp2 with GnuTLS (ngtcp2_crypto_gnutls),
 * HTTP/3 from nghttp3, as Debian 12 ships them (ngtcp2 0.12, nghttp3 0.8):
 * later versions changed these APIs. One thread serves everything through
 * epoll; a second exists only while a SIGHUP upgrade runs, because
 * baton_upgrade() blocks until the successor is ready.
 */
#include <baton.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The length of every connection ID we choose, and what
 * baton_quic_packet_generation() is told to expect: room for
 * baton_quic_cid_make()'s marker, generation and check byte, and 14
 * random bytes. */
#define CID_LEN      18
#define DGRAM_MAX    65536
#define TX_MAX       NGTCP2_MAX_PMTUD_UDP_PAYLOAD_SIZE
#define RX_BATCH     64
#define MAX_EVENTS   16
#define IDLE_TIMEOUT (30 * NGTCP2_SECONDS)
/* QUIC forbids TLS 1.3's middlebox compatibility mode (RFC 9001, 8.4). */
#define TLS_PRIORITY                                                                               \
    "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:"           \
    "+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"      \
    "+GROUP-SECP384R1:+GROUP-SECP521R1"
/* TLS alert no_application_protocol: the client did not offer "h3". */
#define ALERT_NO_ALPN 120

/* What an epoll event is about (its data.u32). */
enum { W_UDP, W_STEER, W_UPGRADE, W_SIGNAL, W_UP_DONE };

struct qconn {
    struct qconn *prev, *next;
    ngtcp2_conn *conn;
    nghttp3_conn *h3; /* once the 1-RTT keys are in */
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref ref;        /* ngtcp2_crypto finds conn through the session's ptr */
    ngtcp2_connection_close_error err; /* why we close; set by whoever fails first */
    bool err_set;
    /* Nonzero: closing (we sent closepkt) or draining (the peer closed)
     * until then, when it is freed (RFC 9000, 10.2). */
    ngtcp2_tstamp gone_at;
    uint8_t closepkt[TX_MAX];
    size_t closelen;
    unsigned requests;
    char name[12]; /* a few random bytes of our first connection ID, in hex */
};

/* A connection ID of ours, or the client's first one, and its connection. */
struct cid_entry {
    ngtcp2_cid cid;
    struct qconn *c;
};

/* The process's state. Global because ngtcp2's and nghttp3's callbacks
 * reach it only through a connection. */
static struct {
    const char *dir, *listen, *cert, *key;
    int drain_timeout_ms;
    unsigned long long steered_out, steered_in; /* datagrams forwarded, taken */
    bool steer, trace;
    baton *b;
    int gen;
    int epfd, udp_fd, steer_fd, sig_fd, up_done_fd;
    struct sockaddr_storage bound; /* the UDP socket's address */
    socklen_t boundlen;
    bool wildcard; /* bound to 0.0.0.0 or ::, so IP_PKTINFO says where to */
    bool reading;  /* the UDP fd is in the epoll set: we are the newest */
    bool superseded, released, stopping;
    ngtcp2_tstamp drain_deadline;
    gnutls_certificate_credentials_t cred;
    struct qconn *conns;
    size_t nconns;
    struct cid_entry *cids;
    size_t ncids, cidcap;
    char body[32], body_len[8];
    pthread_t up_thread;
    bool up_running;
    int up_result; /* written by the upgrade thread, read after the join */
    uint8_t rx[DGRAM_MAX], tx[TX_MAX];
} app = {.drain_timeout_ms = 30000, .steer = true, .epfd = -1, .sig_fd = -1, .up_done_fd = -1};

/* One write(2) per line: a successor shares our stderr. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    char buf[512];
    int n = app.gen ? snprintf(buf, sizeof buf, "baton-quic[%d] gen %d: ", (int)getpid(), app.gen)
                    : snprintf(buf, sizeof buf, "baton-quic[%d]: ", (int)getpid());
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    n = (int)strlen(buf);
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, n) < 0) {
        /* Nowhere left to report it. */
    }
}

static void on_baton_log(void *ctx, int level, const char *msg)
{
    if (level < BATON_LOG_DEBUG)
        say("baton: %s", msg);
}

static ngtcp2_tstamp now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

static int fill_random(void *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = getrandom((uint8_t *)buf + got, len - got, 0);

        if (n < 0 && errno != EINTR)
            return -1;
        if (n > 0)
            got += (size_t)n;
    }
    return 0;
}

static const char *addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    const void *a = sa->sa_family == AF_INET6
                        ? (const void *)&((struct sockaddr_in6 *)sa)->sin6_addr
                        : (const void *)&((struct sockaddr_in *)sa)->sin_addr;
    unsigned port = ntohs(sa->sa_family == AF_INET6 ? ((struct sockaddr_in6 *)sa)->sin6_port
                                                    : ((struct sockaddr_in *)sa)->sin_port);
    char host[INET6_ADDRSTRLEN] = "?";

    inet_ntop(sa->sa_family, a, host, sizeof host);
    snprintf(buf, len, "%s:%u", host, port);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Connection IDs: a linear table is plenty for an example. */

static int cid_add(const ngtcp2_cid *cid, struct qconn *c)
{
    if (app.ncids == app.cidcap) {
        size_t cap = app.cidcap ? app.cidcap * 2 : 64;
        struct cid_entry *p = realloc(app.cids, cap * sizeof *p);

        if (!p)
            return -1;
        app.cids = p;
        app.cidcap = cap;
    }
    app.cids[app.ncids++] = (struct cid_entry){*cid, c};
    return 0;
}

static void cid_del(const ngtcp2_cid *cid)
{
    for (size_t i = 0; i < app.ncids; i++)
        if (ngtcp2_cid_eq(&app.cids[i].cid, cid)) {
            app.cids[i] = app.cids[--app.ncids];
            return;
        }
}

static void cid_del_conn(const struct qconn *c)
{
    for (size_t i = 0; i < app.ncids;)
        if (app.cids[i].c == c)
            app.cids[i] = app.cids[--app.ncids];
        else
            i++;
}

static struct qconn *cid_find(const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < app.ncids; i++)
        if (app.cids[i].cid.datalen == len && memcmp(app.cids[i].cid.data, data, len) == 0)
            return app.cids[i].c;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Datagrams out */

/* Sets the source address of a datagram sent on a wildcard socket, so that
 * the answer leaves from the address the client wrote to. */
static void set_source(struct msghdr *m, char *ctl, const struct sockaddr *local)
{
    struct cmsghdr *cm;

    m->msg_control = ctl;
    if (local->sa_family == AF_INET) {
        struct in_pktinfo pi = {.ipi_spec_dst = ((const struct sockaddr_in *)local)->sin_addr};

        m->msg_controllen = CMSG_SPACE(sizeof pi);
        cm = CMSG_FIRSTHDR(m);
        cm->cmsg_level = IPPROTO_IP;
        cm->cmsg_type = IP_PKTINFO;
        cm->cmsg_len = CMSG_LEN(sizeof pi);
        memcpy(CMSG_DATA(cm), &pi, sizeof pi);
    } else {
        struct in6_pktinfo pi = {.ipi6_addr = ((const struct sockaddr_in6 *)local)->sin6_addr};

        m->msg_controllen = CMSG_SPACE(sizeof pi);
        cm = CMSG_FIRSTHDR(m);
        cm->cmsg_level = IPPROTO_IPV6;
        cm->cmsg_type = IPV6_PKTINFO;
        cm->cmsg_len = CMSG_LEN(sizeof pi);
        memcpy(CMSG_DATA(cm), &pi, sizeof pi);
    }
}

/* One datagram on the shared socket, which a superseded process still
 * sends on. A full send buffer drops it, as the network would: QUIC's loss
 * recovery sends its content again. */
static void send_dgram(const ngtcp2_path *path, const uint8_t *data, size_t len)
{
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        struct cmsghdr align;
    } ctl = {{0}};
    struct iovec iov = {(void *)data, len};
    struct msghdr m = {.msg_name = path->remote.addr,
                       .msg_namelen = path->remote.addrlen,
                       .msg_iov = &iov,
                       .msg_iovlen = 1};

    if (app.wildcard)
        set_source(&m, ctl.buf, path->local.addr);
    while (sendmsg(app.udp_fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------------ */
/* HTTP/3 */

static nghttp3_ssize h3_read_body(nghttp3_conn *h3, int64_t sid, nghttp3_vec *vec, size_t veccnt,
                                  uint32_t *pflags, void *user, void *stream_user)
{
    vec[0].base = (uint8_t *)app.body;
    vec[0].len = strlen(app.body);
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    return 1;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP3_NV_FLAG_NONE             \
    }

/* The whole request is in, whatever its method and path: answer it. */
static int h3_end_stream(nghttp3_conn *h3, int64_t sid, void *user, void *stream_user)
{
    struct qconn *c = user;
    nghttp3_nv nva[] = {
        NV(":status", "200"),
        NV("content-type", "text/plain"),
        NV("content-length", app.body_len),
    };
    nghttp3_data_reader dr = {.read_data = h3_read_body};
    int rv = nghttp3_conn_submit_response(h3, sid, nva, sizeof nva / sizeof nva[0], &dr);

    if (rv != 0) {
        say("conn %s: nghttp3_conn_submit_response: %s", c->name, nghttp3_strerror(rv));
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    }
    c->requests++;
    if (app.trace)
        say("conn %s: stream %" PRId64 " answered by generation %d", c->name, sid, app.gen);
    return 0;
}

/* Request bodies are read and dropped: give the flow control credit back. */
static int h3_consumed(nghttp3_conn *h3, int64_t sid, size_t n, void *user, void *stream_user)
{
    struct qconn *c = user;

    ngtcp2_conn_extend_max_stream_offset(c->conn, sid, n);
    ngtcp2_conn_extend_max_offset(c->conn, n);
    return 0;
}

static int h3_recv_data(nghttp3_conn *h3, int64_t sid, const uint8_t *data, size_t len, void *user,
                        void *stream_user)
{
    return h3_consumed(h3, sid, len, user, stream_user);
}

static int h3_stream_close(nghttp3_conn *h3, int64_t sid, uint64_t code, void *user,
                           void *stream_user)
{
    struct qconn *c = user;

    if (ngtcp2_is_bidi_stream(sid))
        ngtcp2_conn_extend_max_streams_bidi(c->conn, 1);
    return 0;
}

static int h3_stop_sending(nghttp3_conn *h3, int64_t sid, uint64_t code, void *user,
                           void *stream_user)
{
    struct qconn *c = user;

    return ngtcp2_conn_shutdown_stream_read(c->conn, sid, code) ? NGHTTP3_ERR_CALLBACK_FAILURE : 0;
}

static int h3_reset_stream(nghttp3_conn *h3, int64_t sid, uint64_t code, void *user,
                           void *stream_user)
{
    struct qconn *c = user;

    return ngtcp2_conn_shutdown_stream_write(c->conn, sid, code) ? NGHTTP3_ERR_CALLBACK_FAILURE : 0;
}

/* With the 1-RTT keys: HTTP/3's control and QPACK streams. */
static int h3_open(struct qconn *c)
{
    static const nghttp3_callbacks cb = {
        .stream_close = h3_stream_close,
        .recv_data = h3_recv_data,
        .deferred_consume = h3_consumed,
        .stop_sending = h3_stop_sending,
        .end_stream = h3_end_stream,
        .reset_stream = h3_reset_stream,
    };
    nghttp3_settings st;
    int64_t ctrl, qenc, qdec;
    int rv;

    if (ngtcp2_conn_get_max_local_streams_uni(c->conn) < 3) {
        say("conn %s: the client allows fewer than 3 unidirectional streams", c->name);
        return -1;
    }
    nghttp3_settings_default(&st);
    rv = nghttp3_conn_server_new(&c->h3, &cb, &st, NULL, c);
    if (rv != 0) {
        say("nghttp3_conn_server_new: %s", nghttp3_strerror(rv));
        return -1;
    }
    nghttp3_conn_set_max_client_streams_bidi(
        c->h3, ngtcp2_conn_get_local_transport_params(c->conn)->initial_max_streams_bidi);
    if (ngtcp2_conn_open_uni_stream(c->conn, &ctrl, NULL) != 0 ||
        nghttp3_conn_bind_control_stream(c->h3, ctrl) != 0 ||
        ngtcp2_conn_open_uni_stream(c->conn, &qenc, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(c->conn, &qdec, NULL) != 0 ||
        nghttp3_conn_bind_qpack_streams(c->h3, qenc, qdec) != 0) {
        say("conn %s: cannot open the HTTP/3 control streams", c->name);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* QUIC callbacks */

static void conn_set_error(struct qconn *c, bool app_error, uint64_t code, int liberr)
{
    if (c->err_set)
        return;
    c->err_set = true;
    if (app_error)
        ngtcp2_connection_close_error_set_application_error(&c->err, code, NULL, 0);
    else if (liberr == NGTCP2_ERR_CRYPTO)
        ngtcp2_connection_close_error_set_transport_error_tls_alert(
            &c->err, ngtcp2_conn_get_tls_alert(c->conn), NULL, 0);
    else
        ngtcp2_connection_close_error_set_transport_error_liberr(&c->err, liberr, NULL, 0);
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    return ((struct qconn *)ref->user_data)->conn;
}

static void on_rand(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx)
{
    if (fill_random(dest, destlen) < 0)
        memset(dest, 0, destlen); /* getrandom(2) without flags does not fail */
}

static int on_handshake_completed(ngtcp2_conn *conn, void *user)
{
    struct qconn *c = user;
    gnutls_datum_t alpn;

    if (gnutls_alpn_get_selected_protocol(c->tls, &alpn) != 0 || alpn.size != 2 ||
        memcmp(alpn.data, "h3", 2) != 0) {
        ngtcp2_connection_close_error_set_transport_error_tls_alert(&c->err, ALERT_NO_ALPN, NULL,
                                                                    0);
        c->err_set = true;
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_recv_tx_key(ngtcp2_conn *conn, ngtcp2_crypto_level level, void *user)
{
    if (level != NGTCP2_CRYPTO_LEVEL_APPLICATION)
        return 0;
    return h3_open(user) < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_recv_stream_data(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t len, void *user, void *stream_user)
{
    struct qconn *c = user;
    nghttp3_ssize n;

    if (!c->h3)
        return 0;
    n = nghttp3_conn_read_stream(c->h3, sid, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    if (n < 0) {
        conn_set_error(c, true, nghttp3_err_infer_quic_app_error_code((int)n), 0);
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    ngtcp2_conn_extend_max_stream_offset(conn, sid, (uint64_t)n);
    ngtcp2_conn_extend_max_offset(conn, (uint64_t)n);
    return 0;
}

static int on_acked_stream_data(ngtcp2_conn *conn, int64_t sid, uint64_t offset, uint64_t len,
                                void *user, void *stream_user)
{
    struct qconn *c = user;

    return c->h3 && nghttp3_conn_add_ack_offset(c->h3, sid, len) != 0 ? NGTCP2_ERR_CALLBACK_FAILURE
                                                                      : 0;
}

static int on_stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t code,
                           void *user, void *stream_user)
{
    struct qconn *c = user;
    int rv;

    if (!c->h3)
        return 0;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        code = NGHTTP3_H3_NO_ERROR;
    rv = nghttp3_conn_close_stream(c->h3, sid, code);
    if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
        /* A stream HTTP/3 never saw still counts against the limit. */
        if (ngtcp2_is_bidi_stream(sid))
            ngtcp2_conn_extend_max_streams_bidi(conn, 1);
        return 0;
    }
    if (rv != 0) {
        conn_set_error(c, true, nghttp3_err_infer_quic_app_error_code(rv), 0);
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* The client reset its request or asked us to stop sending: the rest of
 * what it sends on the stream is of no use. */
static int on_stream_abort(ngtcp2_conn *conn, int64_t sid, uint64_t code, void *user,
                           void *stream_user)
{
    struct qconn *c = user;

    return c->h3 && nghttp3_conn_shutdown_stream_read(c->h3, sid) != 0 ? NGTCP2_ERR_CALLBACK_FAILURE
                                                                       : 0;
}

static int on_stream_reset(ngtcp2_conn *conn, int64_t sid, uint64_t final_size, uint64_t code,
                           void *user, void *stream_user)
{
    return on_stream_abort(conn, sid, code, user, stream_user);
}

static int on_extend_max_remote_streams_bidi(ngtcp2_conn *conn, uint64_t max, void *user)
{
    struct qconn *c = user;

    if (c->h3)
        nghttp3_conn_set_max_client_streams_bidi(c->h3, max);
    return 0;
}

static int on_extend_max_stream_data(ngtcp2_conn *conn, int64_t sid, uint64_t max, void *user,
                                     void *stream_user)
{
    struct qconn *c = user;

    return c->h3 && nghttp3_conn_unblock_stream(c->h3, sid) != 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

/* Every connection ID we hand out names our generation: the newest
 * generation routes the client's datagrams here by it. The stateless reset
 * token is random: no other process could reset the connection anyway. */
static int on_new_cid(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *user)
{
    if (baton_quic_cid_make(app.gen, cid->data, cidlen) < 0 ||
        fill_random(token, NGTCP2_STATELESS_RESET_TOKENLEN) < 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    cid->datalen = cidlen;
    return cid_add(cid, user) < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_remove_cid(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *user)
{
    cid_del(cid);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Connections */

static void conn_free(struct qconn *c, const char *why)
{
    if (app.trace)
        say("conn %s: closed (%s) after %u request(s), generation %d", c->name, why, c->requests,
            app.gen);
    if (c->prev)
        c->prev->next = c->next;
    else
        app.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    app.nconns--;
    cid_del_conn(c);
    if (c->h3)
        nghttp3_conn_del(c->h3);
    ngtcp2_conn_del(c->conn);
    if (c->tls)
        gnutls_deinit(c->tls);
    free(c);
}

/* Writes our CONNECTION_CLOSE (c->err) and sends it. -1: nothing to send
 * (the connection idled out, or cannot even say goodbye). */
static int conn_send_close(struct qconn *c)
{
    ngtcp2_path_storage ps;
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n;

    if (c->err.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT_IDLE_CLOSE)
        return -1;
    ngtcp2_path_storage_zero(&ps);
    n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, c->closepkt, sizeof c->closepkt,
                                           &c->err, now_ns());
    if (n <= 0)
        return -1;
    c->closelen = (size_t)n;
    send_dgram(&ps.path, c->closepkt, c->closelen);
    return 0;
}

/* Enters the closing period: our CONNECTION_CLOSE goes out now, and again
 * in answer to what the client still sends, for three PTOs; then the
 * connection is freed. With nothing to send it is freed at once. */
static void conn_close(struct qconn *c, const char *why)
{
    if (c->gone_at)
        return;
    if (conn_send_close(c) < 0) {
        conn_free(c, why);
        return;
    }
    c->gone_at = now_ns() + 3 * ngtcp2_conn_get_pto(c->conn);
    if (app.trace)
        say("conn %s: closing (%s)", c->name, why);
}

/* Writes every packet the connection has ready: HTTP/3's stream data, and
 * whatever QUIC itself owes (handshake, ACKs, retransmissions). */
static void conn_write(struct qconn *c)
{
    ngtcp2_tstamp now = now_ns();
    size_t max = ngtcp2_conn_get_max_tx_udp_payload_size(c->conn);
    ngtcp2_path_storage ps;

    if (c->gone_at)
        return;
    ngtcp2_path_storage_zero(&ps);
    for (;;) {
        nghttp3_vec vec[16];
        nghttp3_ssize nvec = 0;
        int64_t sid = -1;
        int fin = 0;
        ngtcp2_ssize n, ndata = -1;
        ngtcp2_pkt_info pi;

        if (c->h3 && ngtcp2_conn_get_max_data_left(c->conn)) {
            nvec = nghttp3_conn_writev_stream(c->h3, &sid, &fin, vec, 16);
            if (nvec < 0) {
                conn_set_error(c, true, nghttp3_err_infer_quic_app_error_code((int)nvec), 0);
                conn_close(c, nghttp3_strerror((int)nvec));
                return;
            }
        }
        n = ngtcp2_conn_writev_stream(
            c->conn, &ps.path, &pi, app.tx, max < sizeof app.tx ? max : sizeof app.tx, &ndata,
            NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0), sid,
            (const ngtcp2_vec *)vec, (size_t)nvec, now);
        if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
            nghttp3_conn_block_stream(c->h3, sid);
            continue;
        }
        if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
            nghttp3_conn_shutdown_stream_write(c->h3, sid);
            continue;
        }
        if (ndata >= 0 && c->h3 && nghttp3_conn_add_write_offset(c->h3, sid, (size_t)ndata) != 0) {
            conn_set_error(c, true, NGHTTP3_H3_INTERNAL_ERROR, 0);
            conn_close(c, "nghttp3_conn_add_write_offset failed");
            return;
        }
        if (n == NGTCP2_ERR_WRITE_MORE)
            continue; /* room for more stream data in this packet */
        if (n < 0) {
            conn_set_error(c, false, 0, (int)n);
            conn_close(c, ngtcp2_strerror((int)n));
            return;
        }
        if (n == 0)
            break; /* nothing more, or congestion or pacing says wait */
        send_dgram(&ps.path, app.tx, (size_t)n);
    }
    ngtcp2_conn_update_pkt_tx_time(c->conn, now);
}

/* One datagram of this connection; c may be freed on return. */
static void conn_read(struct qconn *c, const ngtcp2_path *path, const uint8_t *buf, size_t len)
{
    ngtcp2_pkt_info pi = {0};
    int rv;

    if (c->gone_at) {
        if (c->closelen)
            send_dgram(ngtcp2_conn_get_path(c->conn), c->closepkt, c->closelen);
        return;
    }
    rv = ngtcp2_conn_read_pkt(c->conn, path, &pi, buf, len, now_ns());
    switch (rv) {
    case 0:
        conn_write(c);
        return;
    case NGTCP2_ERR_DRAINING: /* the client closed: stay quiet for three PTOs */
        c->gone_at = now_ns() + 3 * ngtcp2_conn_get_pto(c->conn);
        return;
    case NGTCP2_ERR_DROP_CONN:
    case NGTCP2_ERR_RETRY:
        conn_free(c, ngtcp2_strerror(rv));
        return;
    default:
        conn_set_error(c, false, 0, rv);
        conn_close(c, ngtcp2_strerror(rv));
    }
}

static int tls_open(struct qconn *c)
{
    gnutls_datum_t alpn = {(unsigned char *)"h3", 2};
    int rv = gnutls_init(&c->tls, GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET);

    if (rv == 0)
        rv = gnutls_priority_set_direct(c->tls, TLS_PRIORITY, NULL);
    if (rv == 0)
        rv = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, app.cred);
    if (rv == 0)
        rv = gnutls_alpn_set_protocols(c->tls, &alpn, 1,
                                       GNUTLS_ALPN_MANDATORY | GNUTLS_ALPN_SERVER_PRECEDENCE);
    if (rv != 0) {
        say("gnutls: %s", gnutls_strerror(rv));
        return -1;
    }
    if (ngtcp2_crypto_gnutls_configure_server_session(c->tls) != 0) {
        say("ngtcp2_crypto_gnutls_configure_server_session failed");
        return -1;
    }
    gnutls_session_set_ptr(c->tls, &c->ref);
    ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
    return 0;
}

static ngtcp2_conn *conn_quic_new(struct qconn *c, const ngtcp2_pkt_hd *hd, const ngtcp2_path *path,
                                  const ngtcp2_cid *scid)
{
    static const ngtcp2_callbacks cb = {
        .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
        .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
        .handshake_completed = on_handshake_completed,
        .encrypt = ngtcp2_crypto_encrypt_cb,
        .decrypt = ngtcp2_crypto_decrypt_cb,
        .hp_mask = ngtcp2_crypto_hp_mask_cb,
        .recv_stream_data = on_recv_stream_data,
        .acked_stream_data_offset = on_acked_stream_data,
        .stream_close = on_stream_close,
        .rand = on_rand,
        .get_new_connection_id = on_new_cid,
        .remove_connection_id = on_remove_cid,
        .update_key = ngtcp2_crypto_update_key_cb,
        .stream_reset = on_stream_reset,
        .extend_max_remote_streams_bidi = on_extend_max_remote_streams_bidi,
        .extend_max_stream_data = on_extend_max_stream_data,
        .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
        .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
        .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
        .stream_stop_sending = on_stream_abort,
        .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
        .recv_tx_key = on_recv_tx_key,
    };
    ngtcp2_settings st;
    ngtcp2_transport_params tp;
    ngtcp2_conn *conn;
    int rv;

    ngtcp2_settings_default(&st);
    st.initial_ts = now_ns();
    ngtcp2_transport_params_default(&tp);
    tp.initial_max_stream_data_bidi_local = 256 * 1024;
    tp.initial_max_stream_data_bidi_remote = 256 * 1024;
    tp.initial_max_stream_data_uni = 256 * 1024;
    tp.initial_max_data = 1024 * 1024;
    tp.initial_max_streams_bidi = 100;
    tp.initial_max_streams_uni = 3;
    tp.max_idle_timeout = IDLE_TIMEOUT;
    tp.active_connection_id_limit = 7;
    tp.original_dcid = hd->dcid;
    tp.stateless_reset_token_present = 1;
    if (fill_random(tp.stateless_reset_token, sizeof tp.stateless_reset_token) < 0)
        return NULL;
    rv = ngtcp2_conn_server_new(&conn, &hd->scid, scid, path, hd->version, &cb, &st, &tp, NULL, c);
    if (rv != 0) {
        say("ngtcp2_conn_server_new: %s", ngtcp2_strerror(rv));
        return NULL;
    }
    return conn;
}

/* A client's first Initial: a new connection, with our first connection ID
 * (which names our generation) and the one the client chose, under which
 * its next Initials may still come. */
static struct qconn *conn_new(const ngtcp2_pkt_hd *hd, const ngtcp2_path *path)
{
    struct qconn *c = calloc(1, sizeof *c);
    ngtcp2_cid scid = {.datalen = CID_LEN};
    char from[64];

    if (!c || baton_quic_cid_make(app.gen, scid.data, CID_LEN) < 0)
        goto fail;
    ngtcp2_connection_close_error_default(&c->err);
    c->ref = (ngtcp2_crypto_conn_ref){.get_conn = get_conn, .user_data = c};
    snprintf(c->name, sizeof c->name, "%02x%02x%02x%02x", scid.data[3], scid.data[4], scid.data[5],
             scid.data[6]);
    c->conn = conn_quic_new(c, hd, path, &scid);
    if (!c->conn || tls_open(c) < 0 || cid_add(&scid, c) < 0 || cid_add(&hd->dcid, c) < 0)
        goto fail;
    c->next = app.conns;
    if (app.conns)
        app.conns->prev = c;
    app.conns = c;
    app.nconns++;
    if (app.trace)
        say("conn %s: open from %s, generation %d", c->name,
            addr_str(path->remote.addr, from, sizeof from), app.gen);
    return c;
fail:
    say("dropping a new connection: out of resources");
    if (c) {
        cid_del_conn(c);
        if (c->conn)
            ngtcp2_conn_del(c->conn);
        if (c->tls)
            gnutls_deinit(c->tls);
        free(c);
    }
    return NULL;
}

/* Timers: ngtcp2's (loss detection, ACK delay, idle timeout, pacing) and
 * the end of each closing or draining period. */
static void conns_expire(void)
{
    ngtcp2_tstamp now = now_ns();
    struct qconn *c, *next;

    for (c = app.conns; c; c = next) {
        int rv;

        next = c->next;
        if (c->gone_at) {
            if (now >= c->gone_at)
                conn_free(c, c->closelen ? "closed by us" : "closed by the client");
            continue;
        }
        if (ngtcp2_conn_get_expiry(c->conn) > now)
            continue;
        rv = ngtcp2_conn_handle_expiry(c->conn, now);
        if (rv == 0) {
            conn_write(c);
        } else if (rv == NGTCP2_ERR_IDLE_CLOSE) {
            conn_free(c, "idle");
        } else {
            conn_set_error(c, false, 0, rv);
            conn_close(c, ngtcp2_strerror(rv));
        }
    }
}

/* Milliseconds until the next timer, rounded up; -1: none. */
static int next_timeout_ms(void)
{
    ngtcp2_tstamp now = now_ns(), t = UINT64_MAX;

    for (struct qconn *c = app.conns; c; c = c->next) {
        ngtcp2_tstamp e = c->gone_at ? c->gone_at : ngtcp2_conn_get_expiry(c->conn);

        t = e < t ? e : t;
    }
    if (app.superseded && app.drain_deadline < t)
        t = app.drain_deadline;
    if (t == UINT64_MAX)
        return -1;
    if (t <= now)
        return 0;
    t = (t - now + NGTCP2_MILLISECONDS - 1) / NGTCP2_MILLISECONDS;
    return t > INT_MAX ? INT_MAX : (int)t;
}

/* Sends CONNECTION_CLOSE on every connection and frees it: the process is
 * stopping (a signal, or the end of the drain). */
static void conns_close_all(void)
{
    while (app.conns) {
        struct qconn *c = app.conns;

        conn_set_error(c, true, NGHTTP3_H3_NO_ERROR, 0);
        if (!c->gone_at)
            (void)conn_send_close(c);
        conn_free(c, "stopping");
    }
}

/* ------------------------------------------------------------------------ */
/* Datagrams in */

/*
 * The newest generation reads the socket; a datagram of an older one's
 * connection goes to that generation's process. True when it is not ours
 * to handle: forwarded, or dropped because that process's queue is full.
 * A generation with no process left (-ESRCH) leaves it to us, as a
 * datagram of no connection we know.
 */
static bool route_away(const uint8_t *buf, size_t len, const struct sockaddr *from,
                       socklen_t fromlen)
{
    int g = baton_quic_packet_generation(buf, len, CID_LEN);
    int r;

    if (!app.steer || g < 0 || (g & 0xffff) == (app.gen & 0xffff))
        return false;
    r = baton_steer_route(app.b, g, buf, len, from, fromlen);
    if (r < 0 && r != -ESRCH && r != -EAGAIN && app.trace)
        say("baton_steer_route(generation %d): %s", g, baton_strerror(r));
    if (r == 1)
        app.steered_out++;
    return r == 1 || r == -EAGAIN;
}

/* A version we do not speak: tell the client which we do, unless the
 * datagram is too small to be a client's first (no amplification). */
static void send_version_negotiation(const ngtcp2_version_cid *vc, const ngtcp2_path *path,
                                     size_t len)
{
    const uint32_t versions[] = {NGTCP2_PROTO_VER_V1};
    uint8_t r = 0;
    ngtcp2_ssize n;

    if (len < NGTCP2_MAX_UDP_PAYLOAD_SIZE)
        return;
    (void)fill_random(&r, 1);
    n = ngtcp2_pkt_write_version_negotiation(app.tx, sizeof app.tx, r, vc->scid, vc->scidlen,
                                             vc->dcid, vc->dcidlen, versions, 1);
    if (n > 0)
        send_dgram(path, app.tx, (size_t)n);
}

/*
 * Every datagram, read from the socket or forwarded by the newest
 * generation, goes through here. local is NULL for a forwarded one: the
 * steering header carries only the sender's address, so the connection's
 * own path says where the client sent it. Only a datagram read from the
 * socket may start a new connection.
 */
static void on_dgram(const uint8_t *buf, size_t len, const struct sockaddr *local,
                     socklen_t locallen, const struct sockaddr *from, socklen_t fromlen)
{
    bool forwarded = local == NULL;
    struct sockaddr_storage here;
    ngtcp2_path path = {.local = {(struct sockaddr *)local, locallen},
                        .remote = {(struct sockaddr *)from, fromlen}};
    ngtcp2_version_cid vc;
    ngtcp2_pkt_hd hd;
    struct qconn *c;
    int rv;

    if (!forwarded && route_away(buf, len, from, fromlen))
        return;
    rv = ngtcp2_pkt_decode_version_cid(&vc, buf, len, CID_LEN);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION && !forwarded)
        send_version_negotiation(&vc, &path, len);
    if (rv != 0)
        return;
    c = cid_find(vc.dcid, vc.dcidlen);
    if (c && forwarded) {
        const ngtcp2_addr *at = &ngtcp2_conn_get_path(c->conn)->local;

        memcpy(&here, at->addr, at->addrlen);
        path.local = (ngtcp2_addr){(struct sockaddr *)&here, at->addrlen};
    }
    if (c) {
        conn_read(c, &path, buf, len);
        return;
    }
    /* Not a client's first Initial (a connection we closed, one of a
     * generation gone, or noise): dropped. */
    if (forwarded || !app.reading || ngtcp2_accept(&hd, buf, len) != 0)
        return;
    c = conn_new(&hd, &path);
    if (c)
        conn_read(c, &path, buf, len);
}

/* The address a datagram was sent to: the socket's own, or on a wildcard
 * socket the one IP_PKTINFO names. */
static void dest_addr(struct msghdr *m, struct sockaddr_storage *ret)
{
    *ret = app.bound;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
        if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO &&
            ret->ss_family == AF_INET) {
            struct in_pktinfo pi;

            memcpy(&pi, CMSG_DATA(cm), sizeof pi);
            ((struct sockaddr_in *)ret)->sin_addr = pi.ipi_addr;
        } else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO &&
                   ret->ss_family == AF_INET6) {
            struct in6_pktinfo pi;

            memcpy(&pi, CMSG_DATA(cm), sizeof pi);
            ((struct sockaddr_in6 *)ret)->sin6_addr = pi.ipi6_addr;
        }
    }
}

static void read_socket(void)
{
    for (int i = 0; i < RX_BATCH; i++) {
        union {
            char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
            struct cmsghdr align;
        } ctl;
        struct sockaddr_storage from, to;
        struct iovec iov = {app.rx, sizeof app.rx};
        struct msghdr m = {.msg_name = &from,
                           .msg_namelen = sizeof from,
                           .msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = ctl.buf,
                           .msg_controllen = sizeof ctl.buf};
        ssize_t n = recvmsg(app.udp_fd, &m, MSG_DONTWAIT);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno != EAGAIN)
                say("recvmsg: %s", strerror(errno));
            return;
        }
        if (m.msg_flags & MSG_TRUNC)
            continue;
        dest_addr(&m, &to);
        on_dgram(app.rx, (size_t)n, (struct sockaddr *)&to, app.boundlen, (struct sockaddr *)&from,
                 m.msg_namelen);
    }
}

/* Datagrams of our connections that the newest generation read. */
static void read_steer(void)
{
    for (int i = 0; i < RX_BATCH; i++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n =
            baton_steer_recv(app.b, app.rx, sizeof app.rx, (struct sockaddr *)&from, &fromlen);

        if (n == -EMSGSIZE || n == -EINTR)
            continue;
        if (n < 0) {
            if (n != -EAGAIN)
                say("baton_steer_recv: %s", baton_strerror((int)n));
            return;
        }
        app.steered_in++;
        on_dgram(app.rx, (size_t)n, NULL, 0, (struct sockaddr *)&from, fromlen);
    }
}

/* ------------------------------------------------------------------------ */
/* Upgrades and signals */

static void set_reading(bool on)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = W_UDP};

    if (on == app.reading)
        return;
    if (epoll_ctl(app.epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, app.udp_fd, &ev) < 0) {
        say("epoll_ctl(UDP socket): %s", strerror(errno));
        return;
    }
    app.reading = on;
}

/* A successor serves: it reads the socket from now on and forwards our
 * connections' datagrams. We serve those until they close or the drain
 * timeout passes. If it dies on probation, the socket is ours again. */
static void on_upgrade_events(void)
{
    struct baton_event ev;

    while (baton_upgrade_event(app.b, &ev) > 0) {
        switch (ev.type) {
        case BATON_EVENT_STEP_DOWN:
            if (app.superseded)
                break;
            app.superseded = true;
            set_reading(false);
            app.drain_deadline =
                now_ns() + (ngtcp2_tstamp)app.drain_timeout_ms * NGTCP2_MILLISECONDS;
            say("generation %d (pid %d) serves: no longer reading the socket; %zu connection(s) "
                "stay here",
                ev.generation, (int)ev.pid, app.nconns);
            break;
        case BATON_EVENT_RELEASED:
            app.released = true;
            break;
        case BATON_EVENT_RESUME:
            say("generation %d (pid %d) died on probation: serving again", ev.generation,
                (int)ev.pid);
            app.superseded = app.released = false;
            set_reading(true);
            break;
        }
    }
}

static void *upgrade_main(void *arg)
{
    app.up_result = baton_upgrade(app.b, NULL);
    eventfd_write(app.up_done_fd, 1);
    return NULL;
}

static void join_upgrade(void)
{
    pthread_join(app.up_thread, NULL);
    app.up_running = false;
    if (app.up_result == 0)
        say("upgrade: the successor is ready");
    else
        say("upgrade failed: %s (%s)", baton_strerror(app.up_result), baton_last_error(app.b));
}

/* baton_upgrade() blocks until the successor is ready: it runs aside, so
 * that this thread goes on serving meanwhile. */
static void start_upgrade(void)
{
    int err;

    if (app.up_running || app.superseded) {
        say("SIGHUP: %s; ignored", app.up_running ? "an upgrade is running" : "superseded");
        return;
    }
    say("SIGHUP: starting a successor");
    err = pthread_create(&app.up_thread, NULL, upgrade_main, NULL);
    if (err)
        say("pthread_create: %s", strerror(err));
    else
        app.up_running = true;
}

static void on_signal(void)
{
    struct signalfd_siginfo si;

    while (read(app.sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP)
            start_upgrade();
        else
            app.stopping = true;
    }
}

/* ------------------------------------------------------------------------ */
/* Start, loop, stop */

static void usage(FILE *f)
{
    fprintf(f, "usage: baton-quic --dir DIR --listen udp://HOST:PORT --cert FILE --key FILE\n"
               "                  [--no-steer] [--drain-timeout MS] [--trace]\n"
               "\n"
               "  --dir DIR           coordination directory shared by every copy (required)\n"
               "  --listen ADDR       the UDP address to serve HTTP/3 on (required)\n"
               "  --cert, --key FILE  the TLS certificate and its private key, PEM (required)\n"
               "  --no-steer          do not forward older generations' datagrams to them\n"
               "                      (to show what breaks without it)\n"
               "  --drain-timeout MS  once replaced, serve our connections at most MS\n"
               "                      (default 30000)\n"
               "  --trace             a line per connection opened, answered and closed\n"
               "\n"
               "SIGHUP starts a new copy of this program that takes over; SIGTERM and\n"
               "SIGINT close every connection and exit.\n");
}

static int parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"listen", required_argument, NULL, 'l'},
        {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"no-steer", no_argument, NULL, 'n'},
        {"drain-timeout", required_argument, NULL, 't'},
        {"trace", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char *end;
    long v;
    int opt;

    while ((opt = getopt_long(argc, argv, "d:l:c:k:nt:vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            app.dir = optarg;
            break;
        case 'l':
            app.listen = optarg;
            break;
        case 'c':
            app.cert = optarg;
            break;
        case 'k':
            app.key = optarg;
            break;
        case 'n':
            app.steer = false;
            break;
        case 't':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 0 || v > BATON_PROBATION_MAX_MS) {
                fprintf(stderr, "baton-quic: --drain-timeout: not a number of ms: %s\n", optarg);
                return -1;
            }
            app.drain_timeout_ms = (int)v;
            break;
        case 'v':
            app.trace = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (!app.dir || !app.listen || !app.cert || !app.key || optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int watch(int fd, uint32_t what)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = what};

    if (epoll_ctl(app.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        say("epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Signals are blocked before baton_open() starts the library's thread, so
 * that all of them arrive through the signalfd. */
static int setup_loop(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    app.sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    app.up_done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    app.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (app.sig_fd < 0 || app.up_done_fd < 0 || app.epfd < 0) {
        say("setting up the event loop: %s", strerror(errno));
        return -1;
    }
    return watch(app.sig_fd, W_SIGNAL) < 0 || watch(app.up_done_fd, W_UP_DONE) < 0 ? -1 : 0;
}

static int load_cert(void)
{
    int rv = gnutls_certificate_allocate_credentials(&app.cred);

    if (rv == 0)
        rv = gnutls_certificate_set_x509_key_file(app.cred, app.cert, app.key, GNUTLS_X509_FMT_PEM);
    if (rv < 0) {
        say("%s, %s: %s", app.cert, app.key, gnutls_strerror(rv));
        return -1;
    }
    return 0;
}

/* The shared UDP socket, non-blocking (its file status flags are shared
 * with every generation, which all want that), and where it is bound. */
static int open_socket(void)
{
    int one = 1, fl;

    app.udp_fd = baton_listen(app.b, "quic", app.listen, 0);
    if (app.udp_fd < 0) {
        say("listen on %s: %s (%s)", app.listen, baton_strerror(app.udp_fd),
            baton_last_error(app.b));
        return -1;
    }
    fl = fcntl(app.udp_fd, F_GETFL);
    app.boundlen = sizeof app.bound;
    if (fl < 0 || fcntl(app.udp_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        getsockname(app.udp_fd, (struct sockaddr *)&app.bound, &app.boundlen) < 0) {
        say("%s: %s", app.listen, strerror(errno));
        return -1;
    }
    if (app.bound.ss_family == AF_INET)
        app.wildcard = ((struct sockaddr_in *)&app.bound)->sin_addr.s_addr == htonl(INADDR_ANY);
    else
        app.wildcard = IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&app.bound)->sin6_addr);
    if (app.wildcard &&
        (app.bound.ss_family == AF_INET
             ? setsockopt(app.udp_fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one)
             : setsockopt(app.udp_fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one)) < 0) {
        say("setsockopt(PKTINFO): %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int start(void)
{
    /* The library's bound backs ours up: a copy wedged past its drain is
     * ended by the owner of the day. */
    long bound = app.drain_timeout_ms ? app.drain_timeout_ms + 5000L : 0;
    struct baton_options o = {
        .dir = app.dir,
        .allowed_uid = (uid_t)-1,
        .log = on_baton_log,
        .drain_timeout_ms = bound > BATON_PROBATION_MAX_MS ? BATON_PROBATION_MAX_MS : (int)bound,
    };
    int r;

    if (setup_loop() < 0 || load_cert() < 0)
        return -1;
    r = baton_open(&o, &app.b);
    if (r < 0) {
        say("baton_open(%s): %s (%s)", app.dir, baton_strerror(r), baton_last_error(NULL));
        return -1;
    }
    app.gen = baton_generation(app.b);
    snprintf(app.body, sizeof app.body, "generation %d\n", app.gen);
    snprintf(app.body_len, sizeof app.body_len, "%zu", strlen(app.body));
    if (open_socket() < 0)
        return -1;
    /* Before baton_ready(): from then on our predecessor may forward. */
    app.steer_fd = baton_steer_open(app.b);
    if (app.steer_fd < 0) {
        say("baton_steer_open: %s (%s)", baton_strerror(app.steer_fd), baton_last_error(app.b));
        return -1;
    }
    r = baton_ready(app.b);
    if (r < 0) {
        say("baton_ready: %s (%s)", baton_strerror(r), baton_last_error(app.b));
        return -1;
    }
    if (watch(app.steer_fd, W_STEER) < 0 || watch(baton_upgrade_fd(app.b), W_UPGRADE) < 0)
        return -1;
    set_reading(true);
    if (!app.reading)
        return -1;
    printf("ready pid=%d generation=%d port=%u\n", (int)getpid(), app.gen,
           ntohs(app.bound.ss_family == AF_INET ? ((struct sockaddr_in *)&app.bound)->sin_port
                                                : ((struct sockaddr_in6 *)&app.bound)->sin6_port));
    fflush(stdout);
    say("serving HTTP/3 on %s%s", app.listen, app.steer ? "" : " (no steering)");
    return 0;
}

/* Until a signal stops us, or, superseded, until our last connection has
 * gone (and the successor is final) or the drain timeout has passed. */
static void run(void)
{
    struct epoll_event evs[MAX_EVENTS];
    size_t reported = (size_t)-1;

    while (!app.stopping) {
        int n, timeout;

        if (app.superseded && app.nconns == 0 && app.released)
            break;
        if (app.superseded && now_ns() >= app.drain_deadline) {
            say("drain timeout: closing %zu connection(s)", app.nconns);
            break;
        }
        if (app.superseded && reported != app.nconns)
            baton_set_conns(app.b, (int)(reported = app.nconns)); /* for `baton status` */
        timeout = next_timeout_ms();
        n = epoll_wait(app.epfd, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            say("epoll_wait: %s", strerror(errno));
            return;
        }
        for (int i = 0; i < n; i++) {
            switch (evs[i].data.u32) {
            case W_UDP:
                if (app.reading)
                    read_socket();
                break;
            case W_STEER:
                read_steer();
                break;
            case W_UPGRADE:
                on_upgrade_events();
                break;
            case W_SIGNAL:
                on_signal();
                break;
            case W_UP_DONE: {
                eventfd_t v;

                if (eventfd_read(app.up_done_fd, &v) == 0 && app.up_running)
                    join_upgrade();
                break;
            }
            }
        }
        conns_expire();
    }
}

int main(int argc, char **argv)
{
    int status = 0;

    if (parse_args(argc, argv) < 0)
        return 2;
    if (start() < 0)
        status = 1;
    else
        run();
    conns_close_all();
    if (app.up_running) {
        say("waiting for the running upgrade to finish");
        join_upgrade();
    }
    baton_free(app.b);
    if (app.cred)
        gnutls_certificate_free_credentials(app.cred);
    free(app.cids);
    if (app.epfd >= 0)
        close(app.epfd);
    if (app.sig_fd >= 0)
        close(app.sig_fd);
    if (app.up_done_fd >= 0)
        close(app.up_done_fd);
    if (status == 0)
        say("exiting: %llu datagram(s) forwarded to older generations, %llu taken from newer",
            app.steered_out, app.steered_in);
    return status;
}
