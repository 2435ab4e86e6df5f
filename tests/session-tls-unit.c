/* SPDX-License-Identifier: MIT */
/*
 * The TLS links of libbaton-session, one link at a time (session/tls.c
 * through the internal link API), for what an adversarial review found:
 *
 *  1. A write to a connection the other end has reset returns -EPIPE or
 *     -ECONNRESET and raises no SIGPIPE (OpenSSL's socket BIO writes with
 *     write(2); the process here keeps SIGPIPE's default action, death).
 *  2. A connecting peer in PSK mode refuses a server that completes TLS
 *     with a certificate instead of the PSK (anyone can have a
 *     certificate; only the deployment has the key).
 *  3. A link that has not finished its handshake has no read buffer.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "../session/internal.h" /* the session library's, not libbaton's */
#include "session-util.h"

static SSL_CTX *ctx_new(const struct baton__tls_conf *c)
{
    SSL_CTX *ctx = NULL;
    char err[256];

    if (baton__tls_ctx_new(c, &ctx, err, sizeof(err)) < 0)
        t_fail(__FILE__, __LINE__, "context: %s", err);
    return ctx;
}

/* Drive both ends until both handshakes are over: 0, or the first error
 * (and which end had it in *who: 'c' or 's'). */
static int handshake(struct baton__slink *c, struct baton__slink *s, char *who)
{
    for (int i = 0; i < 1000; i++) {
        struct pollfd p[2] = {{c->fd, POLLIN, 0}, {s->fd, POLLIN, 0}};
        int r;
        if ((r = baton__tls_progress(c)) < 0)
            return *who = 'c', r;
        if ((r = baton__tls_progress(s)) < 0)
            return *who = 's', r;
        if (c->tls_done && s->tls_done)
            return 0;
        poll(p, 2, 100);
    }
    t_fail(__FILE__, __LINE__, "handshake did not end");
}

static void pair(struct baton__slink *c, struct baton__slink *s)
{
    int sv[2];

    T_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv));
    baton__slink_init(c, sv[0], 1, BATON__S_RX_SERVER);
    baton__slink_init(s, sv[1], 2, BATON__S_RX_CLIENT_NEW);
    c->connected = s->connected = true;
}

int main(int argc, char **argv)
{
    char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX], who = 0;
    struct baton__slink c, s;
    SSL_CTX *sctx, *cctx;
    int r;

    t_init(argc, argv);
    T_ASSERT(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    snprintf(cert, sizeof(cert), "%s/server.pem", ts_tls_dir());
    snprintf(key, sizeof(key), "%s/server.key", ts_tls_dir());
    snprintf(ca, sizeof(ca), "%s/ca.pem", ts_tls_dir());

    t_log("1. no SIGPIPE from a write to a reset connection");
    sctx = ctx_new(&(struct baton__tls_conf){.server = true, .cert = cert, .key = key});
    cctx = ctx_new(&(struct baton__tls_conf){.server = false, .verify = true, .ca = ca});
    pair(&c, &s);
    T_OK(baton__slink_tls(&c, cctx, false, "session.test", NULL));
    T_OK(baton__slink_tls(&s, sctx, true, NULL, NULL));
    /* 3: nothing read yet, and no read buffer for it */
    T_EQ(baton__slink_read(&s), 0);
    T_ASSERT(s.rbuf == NULL);
    T_EQ(handshake(&c, &s, &who), 0);
    baton__slink_release(&c); /* the other end is gone */
    for (int i = 0; i < 64 && (r = baton__slink_flush(&s)) == 0; i++)
        T_ASSERT(baton__slink_put(&s, BATON__S_PING, 0) != NULL);
    T_ASSERT(r == -EPIPE || r == -ECONNRESET);
    t_log("the write failed with %s, and we live", strerror(-r));
    baton__slink_release(&s);
    baton__tls_ctx_free(cctx);

    t_log("2. PSK mode refuses a server that answers with a certificate");
    cctx = ctx_new(&(struct baton__tls_conf){
        .server = false, .psk_key = TS_KEY, .psk_key_len = strlen(TS_KEY)});
    pair(&c, &s);
    T_OK(baton__slink_tls(&c, cctx, false, NULL, NULL));
    T_OK(baton__slink_tls(&s, sctx, true, NULL, NULL)); /* a certificate, no PSK */
    r = handshake(&c, &s, &who);
    T_EQ(r, -EACCES);
    T_EQ(who, 'c');
    t_log("refused: %s", c.tls_why);
    T_ASSERT(strstr(c.tls_why, "peer key"));
    baton__slink_release(&c);
    baton__slink_release(&s);
    baton__tls_ctx_free(cctx);
    baton__tls_ctx_free(sctx);

    /* ... and the PSK, both ends, is a handshake. */
    sctx = ctx_new(&(struct baton__tls_conf){
        .server = true, .psk_key = TS_KEY, .psk_key_len = strlen(TS_KEY)});
    cctx = ctx_new(&(struct baton__tls_conf){
        .server = false, .psk_key = TS_KEY, .psk_key_len = strlen(TS_KEY)});
    pair(&c, &s);
    T_OK(baton__slink_tls(&c, cctx, false, NULL, NULL));
    T_OK(baton__slink_tls(&s, sctx, true, NULL, NULL));
    T_EQ(handshake(&c, &s, &who), 0);
    baton__slink_release(&c);
    baton__slink_release(&s);
    baton__tls_ctx_free(cctx);
    baton__tls_ctx_free(sctx);
    return t_done();
}
