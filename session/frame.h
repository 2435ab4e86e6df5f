/* SPDX-License-Identifier: MIT */
/*
 * The session protocol's frames: encoding and a decoder that allocates
 * nothing and trusts nothing (docs/session-protocol.md). libc only, so that
 * the fuzz target needs no crypto library.
 */
#ifndef BATON_SESSION_FRAME_H
#define BATON_SESSION_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "baton-session.h"

#define BATON__S_VERSION  1
#define BATON__S_HDR      8
#define BATON__S_ID_LEN   16
#define BATON__S_TOK_LEN  32
#define BATON__S_MAC_LEN  32
#define BATON__S_TEXT_MAX 512
/* Session ids per OFFER frame. */
#define BATON__S_OFFER_MAX 4096
/* The largest EXPORT payload: its fixed fields (id 16, three counters 24,
 * state_len 4, nmsg 4), the state, the queue. */
#define BATON__S_EXPORT_MAX                                                                        \
    (48 + BATON_SESSION_STATE_MAX + 4 * BATON_SESSION_QUEUE_MAX + BATON_SESSION_QUEUE_BYTES)
/* The largest frame of all (the receive buffer's bound). */
#define BATON__S_FRAME_MAX (BATON__S_HDR + BATON__S_EXPORT_MAX)

enum baton__s_type {
    /* Client link. */
    BATON__S_HELLO = 1,
    BATON__S_WELCOME = 2,
    BATON__S_DATA = 3,
    BATON__S_ACK = 4,
    BATON__S_MOVE = 5,
    BATON__S_RESUME = 6,
    BATON__S_RESUMED = 7,
    BATON__S_CLOSE = 8, /* both links: an error code and a text */
    BATON__S_STAY = 9,  /* the current server called the client's move off */
    BATON__S_PING = 10, /* c->s: keepalive, answered with PONG */
    BATON__S_PONG = 11, /* s->c: idle_ms u32, the server's idle limit */
    /* Peer link. */
    BATON__S_PHELLO = 16,
    BATON__S_PCHAL = 17,
    BATON__S_PAUTH = 18,
    BATON__S_OFFER = 19,
    BATON__S_OFFERED = 20,
    BATON__S_TAKE = 21,
    BATON__S_REFUSE = 22,
    BATON__S_EXPORT = 23,
    BATON__S_TAKEN = 24,
    BATON__S_DECLINE = 25, /* next->cur: not taken after all, keep it */
    /* Peer link: messages that follow a moved session, and the
     * application's own channel (docs/session-protocol.md, "Forwarding"). */
    BATON__S_FORWARD = 26, /* cur->next: a message for a session it took */
    BATON__S_FLUSH = 27,   /* cur->next: a marker that comes back to its sender */
    BATON__S_RELEASE = 28, /* cur->next: no more forwards for this session */
    BATON__S_GONE = 29,    /* next->cur: the session ended, or is not here */
    BATON__S_PMSG = 30,    /* cur->next: an application message between servers */
};

/* Error codes on the wire (CLOSE, REFUSE). */
enum baton__s_code {
    BATON__SC_OK = 0,        /* normal close */
    BATON__SC_PROTO = 1,     /* malformed or unexpected frame */
    BATON__SC_VERSION = 2,   /* unsupported version */
    BATON__SC_TOO_BIG = 3,   /* frame over its limit */
    BATON__SC_BAD_ACK = 4,   /* a counter acknowledges more than was sent */
    BATON__SC_TOKEN = 5,     /* resume token refused (forged, replayed, stale) */
    BATON__SC_UNKNOWN = 6,   /* no such session */
    BATON__SC_LOST = 7,      /* the session is lost */
    BATON__SC_AUTH = 8,      /* peer authentication failed */
    BATON__SC_SHUTDOWN = 9,  /* the server is going away */
    BATON__SC_REFUSED = 10,  /* the application refused the session */
    BATON__SC_OVERLOAD = 11, /* a queue is full */
    BATON__SC_FULL = 12,     /* the server holds as many sessions as it may */
    BATON__SC_TIMEOUT = 13,  /* a deadline or the idle limit passed */
    BATON__SC_RESET = 14,    /* the connection broke (GONE) */
};

/*
 * The frame types each end of a link may receive, by the link's state, as
 * masks of 1 << type. The decoder refuses any other type at its header, so
 * that a link can be made to buffer at most the largest frame it may carry
 * in its state (baton__sframe_bound()), not the largest of the protocol.
 */
#define BATON__S_BIT(t) (1u << (t))
/* A server, from a client before its HELLO or RESUME. */
#define BATON__S_RX_CLIENT_NEW                                                                     \
    (BATON__S_BIT(BATON__S_HELLO) | BATON__S_BIT(BATON__S_RESUME) | BATON__S_BIT(BATON__S_CLOSE))
/* A server, from a client whose RESUME is being answered. */
#define BATON__S_RX_CLIENT_RESUMING BATON__S_BIT(BATON__S_CLOSE)
/* A server, from a client with a session. */
#define BATON__S_RX_CLIENT                                                                         \
    (BATON__S_BIT(BATON__S_DATA) | BATON__S_BIT(BATON__S_ACK) | BATON__S_BIT(BATON__S_CLOSE) |     \
     BATON__S_BIT(BATON__S_PING))
/* A client, from a server. */
#define BATON__S_RX_SERVER                                                                         \
    (BATON__S_BIT(BATON__S_WELCOME) | BATON__S_BIT(BATON__S_DATA) | BATON__S_BIT(BATON__S_ACK) |   \
     BATON__S_BIT(BATON__S_MOVE) | BATON__S_BIT(BATON__S_RESUMED) | BATON__S_BIT(BATON__S_CLOSE) | \
     BATON__S_BIT(BATON__S_STAY) | BATON__S_BIT(BATON__S_PONG))
/* The next server, from a current server not yet authenticated, and after. */
#define BATON__S_RX_PEER_NEW                                                                       \
    (BATON__S_BIT(BATON__S_PHELLO) | BATON__S_BIT(BATON__S_PAUTH) | BATON__S_BIT(BATON__S_CLOSE))
#define BATON__S_RX_PEER                                                                           \
    (BATON__S_BIT(BATON__S_OFFER) | BATON__S_BIT(BATON__S_EXPORT) |                                \
     BATON__S_BIT(BATON__S_REFUSE) | BATON__S_BIT(BATON__S_CLOSE) |                                \
     BATON__S_BIT(BATON__S_FORWARD) | BATON__S_BIT(BATON__S_FLUSH) |                               \
     BATON__S_BIT(BATON__S_RELEASE) | BATON__S_BIT(BATON__S_PMSG))
/* The current server, from the next server before authentication, and after. */
#define BATON__S_RX_NEXT_NEW (BATON__S_BIT(BATON__S_PCHAL) | BATON__S_BIT(BATON__S_CLOSE))
#define BATON__S_RX_NEXT                                                                           \
    (BATON__S_BIT(BATON__S_OFFERED) | BATON__S_BIT(BATON__S_TAKE) | BATON__S_BIT(BATON__S_TAKEN) | \
     BATON__S_BIT(BATON__S_DECLINE) | BATON__S_BIT(BATON__S_CLOSE) | BATON__S_BIT(BATON__S_GONE))
/* Every type (the fuzz target's view of the decoder). */
#define BATON__S_RX_ANY 0xffffffffu

struct baton__sframe {
    uint8_t type;
    uint32_t len;    /* payload length */
    const char *why; /* on a decoding error, what was wrong (static) */
    union {
        struct {
            const uint8_t *id;
        } welcome, taken; /* also TAKEN */
        struct {
            uint64_t seq, ack;
            const uint8_t *data;
            uint32_t len;
        } data;
        struct {
            uint64_t count;
        } ack; /* ACK, RESUMED */
        struct {
            uint32_t idle_ms;
        } pong;
        struct {
            const uint8_t *token;
            const char *addr;
            uint16_t addr_len;
        } move;
        struct {
            const uint8_t *id, *token;
            uint64_t handled;
        } resume;
        struct {
            uint32_t code;
            const char *text;
            uint16_t text_len;
        } close;
        struct {
            const uint8_t *nonce, *mac; /* PHELLO: nonce; PCHAL: both; PAUTH: mac */
        } auth;
        struct {
            uint32_t batch, n;
            const uint8_t *ids; /* n * 16 bytes (OFFER only) */
        } offer;
        struct {
            const uint8_t *id, *token;
        } take;
        struct {
            const uint8_t *id;
            uint32_t code;
        } refuse; /* also GONE */
        struct {
            const uint8_t *id; /* FORWARD, FLUSH, RELEASE; NULL for PMSG */
            const uint8_t *data;
            uint32_t len;
        } fwd; /* FORWARD, FLUSH, RELEASE, PMSG */
        struct {
            const uint8_t *id;
            uint64_t in_handled, out_acked, out_seq;
            const uint8_t *state;
            uint32_t state_len;
            uint32_t nmsg;
            const uint8_t *msgs; /* nmsg * (u32 length, bytes), validated */
            size_t msgs_len;
        } exp;
    } u;
};

/*
 * Decode one frame from buf[0..len), accepting only the types in allow (a
 * BATON__S_RX_* mask). Returns the bytes it took (> 0), 0 when more bytes
 * are needed (a header that passed the checks was seen, or fewer than a
 * header), or -errno: -EPROTONOSUPPORT (version, checked first), -EPROTO
 * (unknown type, reserved bits, a type not in allow, malformed payload),
 * -EMSGSIZE (length over the type's limit). Every check of the header comes
 * before waiting for the payload. Pointers in *f point into buf; on an
 * error after the header f->type and f->len are the header's, and f->why
 * says what was wrong.
 */
int baton__sframe_decode(const uint8_t *buf, size_t len, uint32_t allow, struct baton__sframe *f);

/* The largest frame (header included) of any type in allow. */
size_t baton__sframe_bound(uint32_t allow);

/* The type's name ("EXPORT"), or "unknown". */
const char *baton__sframe_name(uint8_t type);

/* The next queued message of a decoded EXPORT: advances *p. */
const uint8_t *baton__sframe_export_next(const uint8_t **p, uint32_t *ret_len);

/* Encoding helpers: a header, big-endian integers. */
void baton__s_hdr(uint8_t *p, uint8_t type, uint32_t len);
void baton__s_put16(uint8_t *p, uint16_t v);
void baton__s_put32(uint8_t *p, uint32_t v);
void baton__s_put64(uint8_t *p, uint64_t v);
uint16_t baton__s_get16(const uint8_t *p);
uint32_t baton__s_get32(const uint8_t *p);
uint64_t baton__s_get64(const uint8_t *p);

/* -errno for a wire code, and back. */
int baton__s_code_err(uint32_t code);
uint32_t baton__s_err_code(int err);

#endif
