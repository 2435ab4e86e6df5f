/* SPDX-License-Identifier: MIT */
/*
 * TLS 1.3 on the session layer's links (OpenSSL's libssl), inside the
 * non-blocking event loops: a link carries an SSL object over its socket,
 * and baton__slink_read() and baton__slink_flush() go through it. Client
 * links authenticate the server by its certificate; peer links
 * authenticate both ends, by certificates from one authority or by a
 * pre-shared key derived from the peer key (TLS 1.3 external PSK).
 * docs/session-protocol.md, "Transport security", has the rules.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"

/* The PSK identity both ends use, and the label its key is derived with
 * from the peer key: HMAC-SHA-256(key, label). */
#define PSK_IDENTITY "baton-session-peer"
#define PSK_LABEL    "baton-session tls psk v1"
/* The keys that encrypt resumption tickets, the same on every server that
 * knows the peer key, so that a client a move sends to the next server
 * resumes its TLS session there instead of a full handshake. */
#define TICKET_LABEL "baton-session tls ticket v1"
/* TLS_AES_128_GCM_SHA256: the PSK's cipher suite (its hash must be
 * SHA-256, the hash the key was made for). */
static const unsigned char psk_suite[2] = {0x13, 0x01};

/* What a context keeps besides OpenSSL's own: its app data. */
struct keys {
    bool psk_set, ticket_set;
    /* the other end must prove the PSK: a certificate, any certificate,
     * is not the peer key */
    bool require_psk;
    uint8_t psk[BATON__S_PSK_LEN];
    /* ticket: the name tickets carry, an AES-256 key and an HMAC key */
    uint8_t name[16], aes[32], mac[32];
};

static int derive(const void *key, size_t len, const char *label, uint8_t *out, size_t n)
{
    uint8_t md[32];
    unsigned int got = 0;

    if (!HMAC(EVP_sha256(), key, (int)len, (const unsigned char *)label, strlen(label), md, &got) ||
        got != sizeof(md) || n > sizeof(md))
        return -EIO;
    memcpy(out, md, n);
    OPENSSL_cleanse(md, sizeof(md));
    return 0;
}

/* The derived PSK, as a session to offer or to accept. */
static SSL_SESSION *psk_session(SSL *ssl)
{
    const struct keys *k = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const SSL_CIPHER *c = SSL_CIPHER_find(ssl, psk_suite);
    SSL_SESSION *s;

    if (!k || !k->psk_set || !c || !(s = SSL_SESSION_new()))
        return NULL;
    if (!SSL_SESSION_set1_master_key(s, k->psk, BATON__S_PSK_LEN) ||
        !SSL_SESSION_set_cipher(s, c) || !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
        SSL_SESSION_free(s);
        return NULL;
    }
    return s;
}

static int psk_use(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
                   SSL_SESSION **sess)
{
    *sess = NULL;
    if (md && md != EVP_sha256())
        return 1; /* another hash: no PSK for it, the handshake fails */
    *id = (const unsigned char *)PSK_IDENTITY;
    *idlen = strlen(PSK_IDENTITY);
    *sess = psk_session(ssl);
    return *sess ? 1 : 0;
}

static int psk_find(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
    *sess = NULL;
    if (idlen != strlen(PSK_IDENTITY) || memcmp(id, PSK_IDENTITY, idlen) != 0)
        return 1; /* an identity we do not know: no PSK, refused */
    *sess = psk_session(ssl);
    return *sess ? 1 : 0;
}

/* Encrypt a new ticket (enc 1) or find the keys of one presented (enc 0):
 * RFC 5077's layout, as OpenSSL's own tickets; only the keys are ours. */
static int ticket_keys(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                       EVP_MAC_CTX *hctx, int enc)
{
    const struct keys *k = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    OSSL_PARAM params[3];

    if (!k || !k->ticket_set)
        return enc ? -1 : 0;
    if (enc) {
        if (baton__s_random(iv, 16) < 0)
            return -1;
        memcpy(name, k->name, 16);
    } else if (memcmp(name, k->name, 16) != 0) {
        return 0; /* another deployment's, or a rotated key: full handshake */
    }
    params[0] =
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->mac, sizeof(k->mac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_CTX_set_params(hctx, params) ||
        !EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv, enc))
        return -1;
    return 1;
}

/* A client link's new session (a ticket, after the handshake): kept where
 * baton__slink_tls() was told, for the next server's handshake. */
static int session_new(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_app_data(ssl);

    if (!slot)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* we keep the reference */
}

/* OpenSSL's socket BIO writes with write(2), which raises SIGPIPE when the
 * other end has gone; a library must not make its application ignore
 * SIGPIPE. Ours is the socket BIO with send(MSG_NOSIGNAL) for writes. */
static BIO_METHOD *nosig_method;
static pthread_once_t nosig_once = PTHREAD_ONCE_INIT;

static int nosig_write(BIO *b, const char *buf, int len)
{
    int fd = -1;
    ssize_t n;

    BIO_get_fd(b, &fd);
    do
        n = send(fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    BIO_clear_retry_flags(b);
    if (n < 0 && errno == EAGAIN)
        BIO_set_retry_write(b);
    return (int)n;
}

static void nosig_init(void)
{
    const BIO_METHOD *s = BIO_s_socket();
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "baton socket");

    if (!m || !BIO_meth_set_write(m, nosig_write) || !BIO_meth_set_read(m, BIO_meth_get_read(s)) ||
        !BIO_meth_set_puts(m, BIO_meth_get_puts(s)) ||
        !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(s)) ||
        !BIO_meth_set_create(m, BIO_meth_get_create(s)) ||
        !BIO_meth_set_destroy(m, BIO_meth_get_destroy(s))) {
        BIO_meth_free(m);
        return;
    }
    nosig_method = m;
}

/* The text of the first queued OpenSSL error, or what. */
static void ssl_why(char *err, size_t cap, const char *what, const char *file)
{
    unsigned long e, last = 0, sys = 0;
    const char *r;

    /* A file that cannot be opened is a system error somewhere in the
     * queue ("No such file or directory"), which says more than the
     * reason OpenSSL adds on top of it ("system lib"). */
    while ((e = ERR_get_error())) {
        if (ERR_GET_LIB(e) == ERR_LIB_SYS && !sys)
            sys = e;
        last = e;
    }
    r = sys ? strerror(ERR_GET_REASON(sys)) : last ? ERR_reason_error_string(last) : NULL;

    baton__s_fmt(err, cap, "%s%s%s: %s", what, file ? " " : "", file ? file : "", r ? r : "failed");
    ERR_clear_error();
}

int baton__tls_ctx_new(const struct baton__tls_conf *conf, SSL_CTX **ret, char *err, size_t cap)
{
    SSL_CTX *ctx;
    struct keys *k;

    ERR_clear_error();
    ctx = SSL_CTX_new(conf->server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        ssl_why(err, cap, "SSL_CTX_new", NULL);
        return -ENOMEM;
    }
    /* TLS 1.3 only: every link is ours on both ends, so nothing older
     * need be spoken, and 1.3 is what the external PSK needs. */
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION))
        goto ssl_fail;
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* A connection that ends without close_notify ends like a TCP one: the
     * frames say what was complete. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    k = calloc(1, sizeof(*k));
    if (!k) {
        SSL_CTX_free(ctx);
        return -ENOMEM;
    }
    SSL_CTX_set_app_data(ctx, k);
    if (conf->server && conf->ticket_key) {
        /* One ticket per connection, in keys every server of the
         * deployment derives from the peer key. */
        if (derive(conf->ticket_key, conf->ticket_key_len, TICKET_LABEL " name", k->name, 16) < 0 ||
            derive(conf->ticket_key, conf->ticket_key_len, TICKET_LABEL " aes", k->aes, 32) < 0 ||
            derive(conf->ticket_key, conf->ticket_key_len, TICKET_LABEL " mac", k->mac, 32) < 0)
            goto ssl_fail;
        k->ticket_set = true;
        SSL_CTX_set_num_tickets(ctx, 1);
        if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_keys) != 1)
            goto ssl_fail;
    } else if (conf->server) {
        /* Links that last (peer links), or a server that shares no key
         * with others: no tickets, one secret fewer. */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    if (!conf->server && conf->resume) {
        /* Keep each connection's ticket (session_new()) to offer to the
         * server a move sends us to; nothing in OpenSSL's own cache. */
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, session_new);
    }
    if (conf->cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, conf->cert) != 1) {
            ssl_why(err, cap, "TLS certificate", conf->cert);
            baton__tls_ctx_free(ctx);
            return -EINVAL;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, conf->key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            ssl_why(err, cap, "TLS private key", conf->key);
            baton__tls_ctx_free(ctx);
            return -EINVAL;
        }
    }
    if (conf->verify) {
        int r = conf->ca ? SSL_CTX_load_verify_locations(ctx, conf->ca, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
        if (r != 1) {
            ssl_why(err, cap, "TLS CA file", conf->ca ? conf->ca : "(system default)");
            baton__tls_ctx_free(ctx);
            return -EINVAL;
        }
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | (conf->server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    }
    if (conf->psk_key) {
        if (derive(conf->psk_key, conf->psk_key_len, PSK_LABEL, k->psk, BATON__S_PSK_LEN) < 0)
            goto ssl_fail;
        k->psk_set = true;
        k->require_psk = true;
        if (conf->server)
            SSL_CTX_set_psk_find_session_callback(ctx, psk_find);
        else
            SSL_CTX_set_psk_use_session_callback(ctx, psk_use);
        /* Only the suite the key was derived for. */
        if (!SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256"))
            goto ssl_fail;
    }
    *ret = ctx;
    return 0;
ssl_fail:
    ssl_why(err, cap, "TLS context", NULL);
    baton__tls_ctx_free(ctx);
    return -EINVAL;
}

void baton__tls_ctx_free(SSL_CTX *ctx)
{
    struct keys *k;

    if (!ctx)
        return;
    k = SSL_CTX_get_app_data(ctx);
    if (k) {
        OPENSSL_cleanse(k, sizeof(*k));
        free(k);
    }
    SSL_CTX_free(ctx);
}

int baton__slink_tls(struct baton__slink *l, SSL_CTX *ctx, bool server, const char *name,
                     SSL_SESSION **resume)
{
    SSL *ssl;
    BIO *bio;

    ERR_clear_error();
    pthread_once(&nosig_once, nosig_init);
    if (!nosig_method)
        return -ENOMEM;
    ssl = SSL_new(ctx);
    bio = BIO_new(nosig_method);
    if (!ssl || !bio) {
        SSL_free(ssl);
        BIO_free(bio);
        ERR_clear_error();
        return -ENOMEM;
    }
    BIO_set_fd(bio, l->fd, BIO_NOCLOSE);
    SSL_set_bio(ssl, bio, bio);
    if (server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    if (name && *name) {
        unsigned char ip[16];
        bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        /* Verify the other end's certificate for the name the application
         * gave, else for the address it connects to (a client); or, for a
         * server that verifies its clients (peer links by certificates),
         * for the deployment's peer name. */
        if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name)
                   : X509_VERIFY_PARAM_set1_host(vp, name, 0)) != 1 ||
            (!server && !is_ip && SSL_set_tlsext_host_name(ssl, name) != 1)) {
            SSL_free(ssl);
            ERR_clear_error();
            return -EINVAL;
        }
    }
    if (resume) {
        /* Offer the last server's ticket: a server of the same deployment
         * takes it (it proves the deployment's ticket key) and the
         * handshake skips the certificates; any other does a full one. */
        SSL_set_app_data(ssl, resume);
        if (*resume && SSL_set_session(ssl, *resume) != 1)
            ERR_clear_error(); /* offer none: a full handshake */
    }
    l->ssl = ssl;
    l->tls_done = false;
    l->tls_want = 0;
    return 0;
}

/* Why a handshake failed, as an errno value: -EACCES when authentication
 * failed on either side (a certificate or a key), -EPROTO when the other
 * side does not speak TLS, -ECONNRESET when the connection broke. */
static int handshake_err(struct baton__slink *l, int ssl_err)
{
    long v = SSL_get_verify_result(l->ssl);
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);

    if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN || !e) {
        l->tls_why = "connection closed during the TLS handshake";
        ERR_clear_error();
        return -ECONNRESET;
    }
    if (v != X509_V_OK) {
        l->tls_why = X509_verify_cert_error_string(v);
        ERR_clear_error();
        return -EACCES;
    }
    l->tls_why = ERR_reason_error_string(e);
    if (!l->tls_why)
        l->tls_why = "TLS handshake failed";
    ERR_clear_error();
    switch (reason) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
        return -EPROTO;
    }
    return -EACCES;
}

/* TLS failed on the link: remember it, so that no later call asks the
 * SSL object again (and gets another, vaguer answer). */
static int failed(struct baton__slink *l, int err)
{
    l->tls_err = err;
    return err;
}

/* Drive the handshake: 0 (done or under way: see l->tls_done), -errno. */
static int handshake(struct baton__slink *l)
{
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(l->ssl);
    if (r == 1) {
        const struct keys *k = SSL_CTX_get_app_data(SSL_get_SSL_CTX(l->ssl));
        l->tls_resumed = SSL_session_reused(l->ssl) == 1;
        if (k && k->require_psk && !l->tls_resumed) {
            /* Finished by a certificate instead of the PSK: whoever it is,
             * it did not prove the peer key. */
            l->tls_why = "the other end did not use the peer key (PSK)";
            return failed(l, -EACCES);
        }
        l->tls_done = true;
        l->tls_want = 0;
        return 0;
    }
    e = SSL_get_error(l->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        l->tls_want = e;
        return 0;
    }
    return failed(l, handshake_err(l, e));
}

int baton__tls_progress(struct baton__slink *l)
{
    if (l->tls_err)
        return l->tls_err;
    return l->tls_done ? 0 : handshake(l);
}

/* One SSL_read (buf) or SSL_write (out), after the handshake: bytes, 0 at
 * the end (reading), -EAGAIN, or -errno. */
static ssize_t tls_io(struct baton__slink *l, void *buf, const void *out, size_t n)
{
    int r, e, len = n > INT_MAX ? INT_MAX : (int)n;

    if ((r = baton__tls_progress(l)) < 0)
        return r;
    if (!l->tls_done)
        return -EAGAIN;
    ERR_clear_error();
    r = buf ? SSL_read(l->ssl, buf, len) : SSL_write(l->ssl, out, len);
    if (r > 0) {
        l->tls_want = 0;
        return r;
    }
    e = SSL_get_error(l->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        l->tls_want = e;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN: /* the other end closed: the end of reading, no writing */
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (e == SSL_ERROR_SYSCALL && errno)
            return -errno;
        return buf ? 0 : -EPIPE;
    }
    /* A record that fails its integrity check, or any other breach of
     * the protocol: the link is over, and nothing of the record reached
     * the frames. */
    l->tls_why = ERR_reason_error_string(ERR_peek_last_error());
    if (!l->tls_why)
        l->tls_why = "TLS error";
    ERR_clear_error();
    return failed(l, -ECONNRESET);
}

ssize_t baton__tls_recv(struct baton__slink *l, void *buf, size_t n)
{
    return tls_io(l, buf, NULL, n);
}

ssize_t baton__tls_send(struct baton__slink *l, const void *buf, size_t n)
{
    return tls_io(l, NULL, buf, n);
}

void baton__tls_release(struct baton__slink *l)
{
    if (!l->ssl)
        return;
    SSL_free(l->ssl);
    l->ssl = NULL;
    l->tls_done = false;
}
