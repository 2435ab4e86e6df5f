/* SPDX-License-Identifier: MIT */
/* Links, addresses, queues and the crypto primitives (from libcrypto). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include "internal.h"

void baton__s_fmt(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

int baton__saddr_parse(const char *text, struct baton__saddr *ret)
{
    char host[64];
    const char *p, *colon;
    char *end;
    unsigned long port;
    size_t hl;

    if (!text || strncmp(text, "tcp://", 6) != 0 || strlen(text) > BATON_SESSION_ADDR_MAX)
        return -EINVAL;
    p = text + 6;
    colon = strrchr(p, ':');
    if (!colon)
        return -EINVAL;
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port > 65535)
        return -EINVAL;
    memset(ret, 0, sizeof(*ret));
    if (p[0] == '[') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ret->sa;
        hl = (size_t)(colon - p);
        if (hl < 3 || p[hl - 1] != ']' || hl - 2 >= sizeof(host))
            return -EINVAL;
        memcpy(host, p + 1, hl - 2);
        host[hl - 2] = 0;
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return -EINVAL;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        ret->len = sizeof(*s6);
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ret->sa;
    hl = (size_t)(colon - p);
    if (hl == 0 || hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, p, hl);
    host[hl] = 0;
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return -EINVAL;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    ret->len = sizeof(*s4);
    return 0;
}

void baton__saddr_host(const struct baton__saddr *a, char *buf, size_t cap)
{
    const void *p = a->sa.ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)&a->sa)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)&a->sa)->sin_addr;

    if (!inet_ntop(a->sa.ss_family, p, buf, (socklen_t)cap))
        baton__s_fmt(buf, cap, "?");
}

int baton__s_connect(const struct baton__saddr *a)
{
    int one = 1;
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return -errno;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&a->sa, a->len) < 0 && errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

void baton__slink_init(struct baton__slink *l, int fd, int kind, uint32_t allow)
{
    memset(l, 0, sizeof(*l));
    l->fd = fd;
    l->kind = kind;
    baton__slink_allow(l, allow);
}

void baton__slink_allow(struct baton__slink *l, uint32_t allow)
{
    l->allow = allow;
    l->rmax = allow ? baton__sframe_bound(allow) : 0;
}

void baton__slink_release(struct baton__slink *l)
{
    baton__tls_release(l);
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    free(l->rbuf);
    free(l->wbuf);
    l->rbuf = l->wbuf = NULL;
    l->rlen = l->roff = l->rcap = l->wlen = l->woff = l->wcap = 0;
}

/* Grow *buf to hold need bytes, doubling, but past max only to need. */
static int grow(uint8_t **buf, size_t *cap, size_t need, size_t max)
{
    size_t n = *cap ? *cap : 4096;
    uint8_t *p;

    while (n < need)
        n *= 2;
    if (n > max)
        n = need > max ? need : max;
    if (n <= *cap)
        return 0;
    p = realloc(*buf, n);
    if (!p)
        return -ENOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

/* A TLS record holds at most this much. A TLS link reads only into room
 * for a whole record, so that nothing decrypted waits inside the SSL
 * object where epoll cannot see it: what was not read stays in the socket,
 * and the link is readable again. */
#define TLS_ROOM 16384

/* What the read buffer may hold. A link that carries only small frames
 * (a client before HELLO, a peer before authentication) gets a page: a
 * thousand idle connections then cost 4 MiB, not 64. */
static size_t rbuf_bound(const struct baton__slink *l)
{
    return (l->rmax <= 2048 ? 4096 : l->rmax + 65536) + (l->ssl ? TLS_ROOM : 0);
}

/* Read from the link's socket, or through TLS: bytes, 0 at the end,
 * -EAGAIN or -errno. */
static ssize_t link_recv(struct baton__slink *l, void *buf, size_t n)
{
    ssize_t r;

    if (l->ssl)
        return baton__tls_recv(l, buf, n);
    do
        r = read(l->fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int baton__slink_read(struct baton__slink *l)
{
    size_t total = 0, bound = rbuf_bound(l), room = l->ssl ? TLS_ROOM : 1;
    int got = 0;

    /* The handshake first, with no read buffer: a connection that never
     * completes one costs its SSL object only. */
    if (l->ssl && !l->tls_done) {
        int r = baton__tls_progress(l);
        if (r < 0) {
            l->eof = true;
            l->err = r;
            return r;
        }
        if (!l->tls_done)
            return 0;
    }

    if (l->roff > 0 && l->roff == l->rlen)
        l->roff = l->rlen = 0;
    while (total < BATON__S_READ_BUDGET) {
        ssize_t n;
        /* Compact before growing: the buffer never holds more than one
         * partial frame beyond what is being decoded. */
        if (l->roff > 0) {
            memmove(l->rbuf, l->rbuf + l->roff, l->rlen - l->roff);
            l->rlen -= l->roff;
            l->roff = 0;
        }
        if (l->rcap - l->rlen < 16384 && l->rcap < bound &&
            grow(&l->rbuf, &l->rcap, l->rlen + 65536 < bound ? l->rlen + 65536 : bound, bound) < 0)
            return -ENOMEM;
        /* Full: decode before reading more. A partial frame is at most
         * rmax, less than the bound, so a full buffer holds a whole frame
         * or an error, and the decoder makes room. */
        if (l->rcap - l->rlen < room)
            break;
        n = link_recv(l, l->rbuf + l->rlen, l->rcap - l->rlen);
        if (n > 0) {
            l->rlen += (size_t)n;
            total += (size_t)n;
            got = 1;
            if (l->rlen > l->rmax + 65536)
                break; /* decode before reading more */
            continue;
        }
        if (n == -EAGAIN)
            break;
        l->eof = true;
        l->err = n == 0 ? -ECONNRESET : (int)n;
        return got ? 1 : l->err;
    }
    /* A TLS handshake that finished here, or a record that let a blocked
     * write go on: write what waits. */
    if (l->ssl && l->woff < l->wlen && l->tls_want != SSL_ERROR_WANT_WRITE) {
        int r = baton__slink_flush(l);
        if (r < 0) {
            l->eof = true;
            l->err = r;
            return got ? 1 : r;
        }
    }
    return got;
}

int baton__slink_next(struct baton__slink *l, struct baton__sframe *f)
{
    int r;

    if (l->roff >= l->rlen)
        return 0; /* nothing read (rbuf may not exist yet) */
    r = baton__sframe_decode(l->rbuf + l->roff, l->rlen - l->roff, l->allow, f);
    if (r > 0)
        l->roff += (size_t)r;
    return r;
}

uint8_t *baton__slink_put(struct baton__slink *l, uint8_t type, uint32_t len)
{
    uint8_t *p;

    if (l->woff > 0 && l->woff == l->wlen)
        l->woff = l->wlen = 0;
    if (l->wmax && l->wlen - l->woff + BATON__S_HDR + len > l->wmax) {
        /* The other side does not read: end the link rather than hold
         * more for it. */
        l->eof = true;
        l->err = -ENOBUFS;
        return NULL;
    }
    if (grow(&l->wbuf, &l->wcap, l->wlen + BATON__S_HDR + len, SIZE_MAX) < 0)
        return NULL;
    p = l->wbuf + l->wlen;
    baton__s_hdr(p, type, len);
    l->wlen += BATON__S_HDR + len;
    return p + BATON__S_HDR;
}

void baton__slink_put_close(struct baton__slink *l, uint32_t code, const char *text)
{
    size_t n = strlen(text);
    uint8_t *p;

    if (n > BATON__S_TEXT_MAX)
        n = BATON__S_TEXT_MAX;
    p = baton__slink_put(l, BATON__S_CLOSE, (uint32_t)(6 + n));
    if (!p)
        return;
    baton__s_put32(p, code);
    baton__s_put16(p + 4, (uint16_t)n);
    memcpy(p + 6, text, n);
}

int baton__slink_flush(struct baton__slink *l)
{
    while (l->woff < l->wlen) {
        ssize_t n;
        if (l->ssl) {
            n = baton__tls_send(l, l->wbuf + l->woff, l->wlen - l->woff);
            if (n == -EAGAIN)
                return 0;
            if (n < 0)
                return (int)n;
        } else {
            n = send(l->fd, l->wbuf + l->woff, l->wlen - l->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN)
                    return 0;
                return -errno;
            }
        }
        l->woff += (size_t)n;
    }
    l->woff = l->wlen = 0;
    l->pong = false;
    /* Give back a large buffer once it drained (after an EXPORT). */
    if (l->wcap > (1u << 20)) {
        free(l->wbuf);
        l->wbuf = NULL;
        l->wcap = 0;
    }
    return 0;
}

int baton__slink_watch(struct baton__slink *l, int epfd, void *ptr)
{
    uint32_t ev = EPOLLIN | EPOLLRDHUP;
    struct epoll_event e;

    /* A TLS link waits for what its SSL object waits for: a handshake or
     * a write that needs the other side's answer must not spin on a
     * writable socket. */
    if (!l->connected ||
        (l->ssl ? l->tls_want == SSL_ERROR_WANT_WRITE ||
                      (l->woff < l->wlen && l->tls_done && l->tls_want != SSL_ERROR_WANT_READ)
                : l->woff < l->wlen))
        ev |= EPOLLOUT;
    if (ev == l->events)
        return 0;
    e.events = ev;
    e.data.ptr = ptr;
    if (epoll_ctl(epfd, l->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, l->fd, &e) < 0)
        return -errno;
    l->events = ev;
    return 0;
}

const char *baton__slink_why(const struct baton__slink *l)
{
    if (l->tls_why)
        return l->tls_why;
    return l->err ? strerror(-l->err) : "closed";
}

int baton__s_hmac(const void *key, size_t key_len, const char *label, const uint8_t *a,
                  const uint8_t *b, uint8_t *mac)
{
    uint8_t msg[16 + 64];
    size_t ll = strlen(label);
    unsigned int out = 0;

    if (ll > 16)
        return -EINVAL;
    memset(msg, 0, sizeof(msg));
    memcpy(msg, label, ll);
    memcpy(msg + 16, a, 32);
    memcpy(msg + 48, b, 32);
    if (!HMAC(EVP_sha256(), key, (int)key_len, msg, sizeof(msg), mac, &out) ||
        out != BATON__S_MAC_LEN)
        return -EIO;
    return 0;
}

int baton__s_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

int baton__s_random(void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

void baton__s_hex(const uint8_t *id, char *out)
{
    static const char d[] = "0123456789abcdef";

    for (int i = 0; i < BATON__S_ID_LEN; i++) {
        out[2 * i] = d[id[i] >> 4];
        out[2 * i + 1] = d[id[i] & 15];
    }
    out[2 * BATON__S_ID_LEN] = 0;
}

int64_t baton__s_now_ms(void)
{
    return (int64_t)(baton__s_now_us() / 1000);
}

uint64_t baton__s_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

int baton__squeue_room(const struct baton__squeue *q, size_t len)
{
    if (q->count >= BATON_SESSION_QUEUE_MAX || q->bytes + len > BATON_SESSION_QUEUE_BYTES)
        return -ENOBUFS;
    return 0;
}

int baton__squeue_push(struct baton__squeue *q, const void *data, uint32_t len)
{
    struct baton__smsg m;

    if (q->count == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 16;
        struct baton__smsg *n = malloc(ncap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        for (size_t i = 0; i < q->count; i++)
            n[i] = q->m[(q->head + i) % q->cap];
        free(q->m);
        q->m = n;
        q->head = 0;
        q->cap = ncap;
    }
    m.len = len;
    m.data = malloc(len ? len : 1);
    if (!m.data)
        return -ENOMEM;
    if (len) /* data may be NULL then, and memcpy() must not see it */
        memcpy(m.data, data, len);
    q->m[(q->head + q->count) % q->cap] = m;
    q->count++;
    q->bytes += len;
    return 0;
}

void baton__squeue_ack(struct baton__squeue *q, uint64_t upto)
{
    while (q->count > 0 && q->base < upto) {
        struct baton__smsg *m = &q->m[q->head];
        q->bytes -= m->len;
        free(m->data);
        q->head = (q->head + 1) % q->cap;
        q->count--;
        q->base++;
    }
    if (q->count == 0 && q->base < upto)
        q->base = upto;
}

const struct baton__smsg *baton__squeue_get(const struct baton__squeue *q, uint64_t seq)
{
    if (seq <= q->base || seq > q->base + q->count)
        return NULL;
    return &q->m[(q->head + (seq - q->base - 1)) % q->cap];
}

void baton__squeue_free(struct baton__squeue *q)
{
    baton__squeue_ack(q, q->base + q->count);
    free(q->m);
    q->m = NULL;
    q->cap = q->head = 0;
}

int baton__s_encode_data(struct baton__slink *l, const struct baton__squeue *q, uint64_t *sent,
                         uint64_t ack)
{
    while (*sent < q->base + q->count && l->wlen - l->woff < BATON__S_WBUF_SOFT) {
        const struct baton__smsg *m = baton__squeue_get(q, *sent + 1);
        uint8_t *p;
        if (!m)
            return -EPROTO;
        p = baton__slink_put(l, BATON__S_DATA, 16 + m->len);
        if (!p)
            return -ENOMEM;
        baton__s_put64(p, *sent + 1);
        baton__s_put64(p + 8, ack);
        memcpy(p + 16, m->data, m->len);
        (*sent)++;
    }
    return 0;
}
