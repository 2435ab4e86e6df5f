/* SPDX-License-Identifier: MIT */
/* Internals shared by the server and the client side of libbaton-session. */
#ifndef BATON_SESSION_INTERNAL_H
#define BATON_SESSION_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "baton-session.h"
#include "frame.h"

#define BATON_SESSION_EXPORT __attribute__((visibility("default")))

/* Stop encoding queued messages into a write buffer beyond this size. */
#define BATON__S_WBUF_SOFT (256u * 1024)
/* What a server lets pile up unsent on a client link: data stops at the
 * soft limit, so only answers to what the client sends (PONG, ACK) could
 * grow past it, and only if the client never reads. Past this, the link
 * is closed: the client is not reading. */
#define BATON__S_WBUF_CLIENT_MAX (1024u * 1024)
/* Bytes read from one link per dispatch before others get their turn. */
#define BATON__S_READ_BUDGET (1u << 20)

/* A stream connection with its buffers; the owner decides what it means. */
struct baton__slink {
    int fd;
    int kind;
    uint32_t events; /* registered epoll events */
    uint32_t allow;  /* the frame types it may carry now (BATON__S_RX_*) */
    uint8_t *rbuf;
    size_t rlen, roff, rcap, rmax; /* rmax: the largest frame allow admits */
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    size_t wmax;    /* the most that may wait unsent (0: no bound) */
    bool pong;      /* a PONG waits unsent: another PING adds none */
    bool eof;       /* the peer closed or the connection broke */
    bool connected; /* a non-blocking connect() completed */
    int err;        /* why it ended (-errno) */
    /* TLS (session/tls.c): the connection's SSL object, or NULL for plain
     * TCP; whether its handshake is done; what its last call that could
     * not finish waits for (SSL_ERROR_WANT_READ/WRITE, 0 nothing); why it
     * failed (a static string). */
    struct ssl_st *ssl;
    bool tls_done;
    bool tls_resumed; /* the handshake resumed a ticket */
    int tls_want;
    int tls_err; /* the failure, once TLS failed: every later call returns it */
    const char *tls_why;
};

/* A parsed numeric address. */
struct baton__saddr {
    struct sockaddr_storage sa;
    socklen_t len;
};

int baton__saddr_parse(const char *text, struct baton__saddr *ret);
/* The address's host as text (no brackets, no port). */
void baton__saddr_host(const struct baton__saddr *a, char *buf, size_t cap);

/* A non-blocking, close-on-exec TCP connect to a: the fd or -errno. */
int baton__s_connect(const struct baton__saddr *a);

/* A link that may carry the frame types in allow (0 for an fd that carries
 * no frames: a listener, a timer). */
void baton__slink_init(struct baton__slink *l, int fd, int kind, uint32_t allow);
/* The link's state changed: from now on it may carry the types in allow. */
void baton__slink_allow(struct baton__slink *l, uint32_t allow);
void baton__slink_release(struct baton__slink *l);
/* Read what is there, up to the budget and to what the read buffer may
 * hold (a page for a link of small frames, else one largest frame and 64
 * KiB): 1 bytes came, 0 none, -errno (and l->eof) at end of stream. */
int baton__slink_read(struct baton__slink *l);
/* The next complete frame: > 0 taken, 0 none yet, -errno bad input. */
int baton__slink_next(struct baton__slink *l, struct baton__sframe *f);
/* Room for a frame of type with a payload of len bytes, the header already
 * written: a pointer to the payload, or NULL when out of memory. */
uint8_t *baton__slink_put(struct baton__slink *l, uint8_t type, uint32_t len);
/* A CLOSE frame with code and text. */
void baton__slink_put_close(struct baton__slink *l, uint32_t code, const char *text);
/* Write what is buffered: 0 (all or EAGAIN), -errno. */
int baton__slink_flush(struct baton__slink *l);
/* Register or update the link in epoll with EPOLLIN and, when output is
 * pending, EPOLLOUT. */
int baton__slink_watch(struct baton__slink *l, int epfd, void *ptr);

/* TLS. A context for one role: a server (client links, or peer links
 * accepted) or a client (the client library, or peer links we open). */
struct baton__tls_conf {
    bool server;
    const char *cert, *key; /* PEM files: our certificate chain and key */
    bool verify;            /* verify the other end's certificate ... */
    const char *ca;         /* ... against this PEM file (NULL: system's) */
    const void *psk_key;    /* derive a TLS 1.3 PSK from this key (peers) */
    size_t psk_key_len;
    /* a server: issue tickets in keys derived from this key (the peer
     * key: every server of the deployment takes every other's tickets) */
    const void *ticket_key;
    size_t ticket_key_len;
    bool resume; /* a client: keep tickets (baton__slink_tls()'s resume) */
};
#define BATON__S_PSK_LEN 32
struct ssl_ctx_st;
/* 0 and the context in *ret, or -errno with a message in err. */
int baton__tls_ctx_new(const struct baton__tls_conf *conf, struct ssl_ctx_st **ret, char *err,
                       size_t cap);
void baton__tls_ctx_free(struct ssl_ctx_st *ctx);
/* Put TLS on a link: server is our role; name is what a client verifies
 * the server's certificate for (a DNS name or an IP address; NULL: only
 * the chain); resume, for a client, where its tickets are kept (offered if
 * one is there, replaced by each new one; NULL: none). 0 or -errno. */
struct ssl_session_st;
int baton__slink_tls(struct baton__slink *l, struct ssl_ctx_st *ctx, bool server, const char *name,
                     struct ssl_session_st **resume);
/* What read() and send() are to a plain link: bytes, 0 at the end,
 * -EAGAIN, or -errno (-EACCES: authentication failed in the handshake,
 * -EPROTO: the other end does not speak TLS, -ECONNRESET: the connection
 * broke or a record failed its integrity check; l->tls_why says). */
ssize_t baton__tls_recv(struct baton__slink *l, void *buf, size_t n);
/* Drive the handshake if it is not done: 0 (see l->tls_done) or -errno. */
int baton__tls_progress(struct baton__slink *l);
/* Should the link be read on these epoll events? A TLS link is also on
 * EPOLLOUT: its handshake, or a read that had to write, goes on then. */
static inline bool baton__slink_readable(const struct baton__slink *l, uint32_t ev)
{
    return (ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) || (l->ssl && (ev & EPOLLOUT));
}
ssize_t baton__tls_send(struct baton__slink *l, const void *buf, size_t n);
void baton__tls_release(struct baton__slink *l);
/* Why the link ended, for a log line: the TLS reason or the errno text. */
const char *baton__slink_why(const struct baton__slink *l);

/* HMAC-SHA-256 of (label, a, b) under key into mac. */
int baton__s_hmac(const void *key, size_t key_len, const char *label, const uint8_t *a,
                  const uint8_t *b, uint8_t *mac);
/* Constant-time comparison: 1 equal. */
int baton__s_equal(const uint8_t *a, const uint8_t *b, size_t n);
/* n random bytes (getrandom): 0 or -errno. */
int baton__s_random(void *buf, size_t n);
void baton__s_hex(const uint8_t *id, char *out);

/* Monotonic milliseconds and microseconds. */
int64_t baton__s_now_ms(void);
uint64_t baton__s_now_us(void);

/* A queue of messages numbered base+1 .. base+count. */
struct baton__smsg {
    uint8_t *data;
    uint32_t len;
};
struct baton__squeue {
    struct baton__smsg *m;
    size_t head, count, cap, bytes;
    uint64_t base; /* the number of the message before the first */
};
int baton__squeue_push(struct baton__squeue *q, const void *data, uint32_t len);
/* Drop messages up to and including number upto. */
void baton__squeue_ack(struct baton__squeue *q, uint64_t upto);
const struct baton__smsg *baton__squeue_get(const struct baton__squeue *q, uint64_t seq);
void baton__squeue_free(struct baton__squeue *q);
/* -ENOBUFS when another message of len bytes would not fit. */
int baton__squeue_room(const struct baton__squeue *q, size_t len);

/* Encode DATA frames for numbers *sent+1 .. q->base+q->count into l while
 * its write buffer is below the soft limit; acks ride along. */
int baton__s_encode_data(struct baton__slink *l, const struct baton__squeue *q, uint64_t *sent,
                         uint64_t ack);

/* Are all len bytes of an options struct's reserved room zero? */
static inline bool baton__resv_zero(const void *resv, size_t len)
{
    const unsigned char *p = resv;

    for (size_t i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

/* Formats into buf (cap bytes). */
void baton__s_fmt(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
