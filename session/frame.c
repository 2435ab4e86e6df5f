/* SPDX-License-Identifier: MIT */
/*
 * Frame decoding. The order of checks is part of the protocol: version
 * first, then the type and reserved bits, then the length against the
 * type's limits, then whether the link may carry the type in its state, and
 * only then the payload. All of the header's checks come before waiting for
 * the payload, so that a peer cannot make us buffer more than the largest
 * frame its link may carry in its state.
 */
#include <errno.h>
#include <string.h>

#include "frame.h"

void baton__s_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

void baton__s_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

void baton__s_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

uint16_t baton__s_get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

uint32_t baton__s_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

uint64_t baton__s_get64(const uint8_t *p)
{
    return ((uint64_t)baton__s_get32(p) << 32) | baton__s_get32(p + 4);
}

void baton__s_hdr(uint8_t *p, uint8_t type, uint32_t len)
{
    p[0] = BATON__S_VERSION;
    p[1] = type;
    p[2] = p[3] = 0;
    baton__s_put32(p + 4, len);
}

/* Each type's name and payload length limits; no name: an unknown type. */
static const struct {
    const char *name;
    uint32_t min, max;
} types[] = {
    [BATON__S_HELLO] = {"HELLO", 0, 0},
    [BATON__S_WELCOME] = {"WELCOME", 16, 16},
    [BATON__S_DATA] = {"DATA", 16, 16 + BATON_SESSION_MSG_MAX},
    [BATON__S_ACK] = {"ACK", 8, 8},
    [BATON__S_MOVE] = {"MOVE", 34, 34 + BATON_SESSION_ADDR_MAX},
    [BATON__S_RESUME] = {"RESUME", 56, 56},
    [BATON__S_RESUMED] = {"RESUMED", 8, 8},
    [BATON__S_CLOSE] = {"CLOSE", 6, 6 + BATON__S_TEXT_MAX},
    [BATON__S_STAY] = {"STAY", 0, 0},
    [BATON__S_PING] = {"PING", 0, 0},
    [BATON__S_PONG] = {"PONG", 4, 4},
    [BATON__S_PHELLO] = {"PHELLO", 32, 32},
    [BATON__S_PCHAL] = {"PCHAL", 64, 64},
    [BATON__S_PAUTH] = {"PAUTH", 32, 32},
    [BATON__S_OFFER] = {"OFFER", 8, 8 + 16 * BATON__S_OFFER_MAX},
    [BATON__S_OFFERED] = {"OFFERED", 8, 8},
    [BATON__S_TAKE] = {"TAKE", 48, 48},
    [BATON__S_REFUSE] = {"REFUSE", 20, 20},
    [BATON__S_EXPORT] = {"EXPORT", 48, BATON__S_EXPORT_MAX},
    [BATON__S_TAKEN] = {"TAKEN", 16, 16},
    [BATON__S_DECLINE] = {"DECLINE", 16, 16},
    [BATON__S_FORWARD] = {"FORWARD", 16, 16 + BATON_SESSION_MSG_MAX},
    [BATON__S_FLUSH] = {"FLUSH", 16, 16},
    [BATON__S_RELEASE] = {"RELEASE", 16, 16},
    [BATON__S_GONE] = {"GONE", 20, 20},
    [BATON__S_PMSG] = {"PMSG", 0, BATON_SESSION_MSG_MAX},
};
#define NTYPES (sizeof(types) / sizeof(types[0]))

const char *baton__sframe_name(uint8_t type)
{
    return type < NTYPES && types[type].name ? types[type].name : "unknown";
}

size_t baton__sframe_bound(uint32_t allow)
{
    uint32_t max = 0;

    for (unsigned t = 0; t < NTYPES; t++)
        if (types[t].name && (allow & BATON__S_BIT(t)) && types[t].max > max)
            max = types[t].max;
    return BATON__S_HDR + max;
}

static int decode_export(const uint8_t *p, uint32_t len, struct baton__sframe *f)
{
    uint32_t off, slen, nmsg;

    f->u.exp.id = p;
    f->u.exp.in_handled = baton__s_get64(p + 16);
    f->u.exp.out_acked = baton__s_get64(p + 24);
    f->u.exp.out_seq = baton__s_get64(p + 32);
    slen = baton__s_get32(p + 40);
    if (slen > BATON_SESSION_STATE_MAX || slen > len - 48)
        return -EPROTO;
    f->u.exp.state = p + 44;
    f->u.exp.state_len = slen;
    off = 44 + slen;
    nmsg = baton__s_get32(p + off);
    off += 4;
    if (nmsg > BATON_SESSION_QUEUE_MAX || f->u.exp.out_acked > f->u.exp.out_seq ||
        f->u.exp.out_seq - f->u.exp.out_acked != nmsg)
        return -EPROTO;
    f->u.exp.nmsg = nmsg;
    f->u.exp.msgs = p + off;
    f->u.exp.msgs_len = len - off;
    /* Walk the queue once so that users may trust every length. */
    for (uint32_t i = 0; i < nmsg; i++) {
        uint32_t ml;
        if (len - off < 4)
            return -EPROTO;
        ml = baton__s_get32(p + off);
        off += 4;
        if (ml > BATON_SESSION_MSG_MAX || ml > len - off)
            return -EPROTO;
        off += ml;
    }
    return off == len ? 0 : -EPROTO;
}

static int decode_payload(const uint8_t *p, uint32_t len, struct baton__sframe *f)
{
    switch (f->type) {
    case BATON__S_HELLO:
    case BATON__S_STAY:
    case BATON__S_PING:
        return 0;
    case BATON__S_PONG:
        f->u.pong.idle_ms = baton__s_get32(p);
        return 0;
    case BATON__S_WELCOME:
    case BATON__S_TAKEN:
    case BATON__S_DECLINE:
        f->u.welcome.id = p;
        return 0;
    case BATON__S_DATA:
        f->u.data.seq = baton__s_get64(p);
        f->u.data.ack = baton__s_get64(p + 8);
        f->u.data.data = p + 16;
        f->u.data.len = len - 16;
        return f->u.data.seq == 0 ? -EPROTO : 0;
    case BATON__S_ACK:
    case BATON__S_RESUMED:
        f->u.ack.count = baton__s_get64(p);
        return 0;
    case BATON__S_MOVE:
        f->u.move.token = p;
        f->u.move.addr_len = baton__s_get16(p + 32);
        f->u.move.addr = (const char *)p + 34;
        if (f->u.move.addr_len == 0 || f->u.move.addr_len != len - 34 ||
            memchr(f->u.move.addr, 0, f->u.move.addr_len))
            return -EPROTO;
        return 0;
    case BATON__S_RESUME:
        f->u.resume.id = p;
        f->u.resume.token = p + 16;
        f->u.resume.handled = baton__s_get64(p + 48);
        return 0;
    case BATON__S_CLOSE:
        f->u.close.code = baton__s_get32(p);
        f->u.close.text_len = baton__s_get16(p + 4);
        f->u.close.text = (const char *)p + 6;
        return f->u.close.text_len == len - 6 ? 0 : -EPROTO;
    case BATON__S_PHELLO:
        f->u.auth.nonce = p;
        f->u.auth.mac = NULL;
        return 0;
    case BATON__S_PCHAL:
        f->u.auth.nonce = p;
        f->u.auth.mac = p + 32;
        return 0;
    case BATON__S_PAUTH:
        f->u.auth.nonce = NULL;
        f->u.auth.mac = p;
        return 0;
    case BATON__S_OFFER:
    case BATON__S_OFFERED:
        f->u.offer.batch = baton__s_get32(p);
        f->u.offer.n = baton__s_get32(p + 4);
        f->u.offer.ids = p + 8;
        if (f->type == BATON__S_OFFER)
            return (uint64_t)f->u.offer.n * 16 == len - 8 ? 0 : -EPROTO;
        return f->u.offer.n <= BATON__S_OFFER_MAX ? 0 : -EPROTO;
    case BATON__S_TAKE:
        f->u.take.id = p;
        f->u.take.token = p + 16;
        return 0;
    case BATON__S_FORWARD:
    case BATON__S_FLUSH:
    case BATON__S_RELEASE:
        f->u.fwd.id = p;
        f->u.fwd.data = p + 16;
        f->u.fwd.len = len - 16;
        return 0;
    case BATON__S_PMSG:
        f->u.fwd.id = NULL;
        f->u.fwd.data = p;
        f->u.fwd.len = len;
        return 0;
    case BATON__S_REFUSE:
    case BATON__S_GONE:
        f->u.refuse.id = p;
        f->u.refuse.code = baton__s_get32(p + 16);
        return 0;
    case BATON__S_EXPORT:
        return decode_export(p, len, f);
    }
    return -EPROTO;
}

int baton__sframe_decode(const uint8_t *buf, size_t len, uint32_t allow, struct baton__sframe *f)
{
    uint32_t plen;
    uint8_t type;
    int r;

    memset(f, 0, sizeof(*f));
    if (len < 1)
        return 0;
    f->why = "another protocol version";
    if (buf[0] != BATON__S_VERSION)
        return -EPROTONOSUPPORT;
    if (len < BATON__S_HDR)
        return 0;
    type = buf[1];
    plen = baton__s_get32(buf + 4);
    f->type = type;
    f->len = plen;
    f->why = "unknown type";
    if (type >= NTYPES || !types[type].name)
        return -EPROTO;
    f->why = "reserved bits set";
    if (buf[2] || buf[3])
        return -EPROTO;
    f->why = "longer than its type allows";
    if (plen > types[type].max)
        return -EMSGSIZE;
    f->why = "shorter than its type needs";
    if (plen < types[type].min)
        return -EPROTO;
    /* The type's own limit came first, so that an oversized frame is
     * TOO_BIG wherever it arrives; either way no payload is waited for. */
    f->why = "a type not allowed on this link in its state";
    if (type >= 32 || !(allow & BATON__S_BIT(type)))
        return -EPROTO;
    f->why = NULL;
    if (len - BATON__S_HDR < plen)
        return 0;
    f->why = "malformed payload";
    r = decode_payload(buf + BATON__S_HDR, plen, f);
    if (r < 0)
        return r;
    f->why = NULL;
    return (int)(BATON__S_HDR + plen);
}

const uint8_t *baton__sframe_export_next(const uint8_t **p, uint32_t *ret_len)
{
    const uint8_t *m = *p + 4;

    *ret_len = baton__s_get32(*p);
    *p = m + *ret_len;
    return m;
}

int baton__s_code_err(uint32_t code)
{
    switch (code) {
    case BATON__SC_OK:
        return 0;
    case BATON__SC_VERSION:
        return -EPROTONOSUPPORT;
    case BATON__SC_TOO_BIG:
        return -EMSGSIZE;
    case BATON__SC_BAD_ACK:
        return -EBADMSG;
    case BATON__SC_TOKEN:
    case BATON__SC_AUTH:
        return -EACCES;
    case BATON__SC_UNKNOWN:
        return -ENOENT;
    case BATON__SC_LOST:
        return -ECONNABORTED;
    case BATON__SC_REFUSED:
        return -ECANCELED;
    case BATON__SC_SHUTDOWN:
        return -ESHUTDOWN;
    case BATON__SC_OVERLOAD:
        return -ENOBUFS;
    case BATON__SC_FULL:
        return -EUSERS;
    case BATON__SC_TIMEOUT:
        return -ETIMEDOUT;
    case BATON__SC_RESET:
        return -ECONNRESET;
    }
    return -EPROTO;
}

uint32_t baton__s_err_code(int err)
{
    switch (err) {
    case 0:
        return BATON__SC_OK;
    case -EPROTONOSUPPORT:
        return BATON__SC_VERSION;
    case -EMSGSIZE:
        return BATON__SC_TOO_BIG;
    case -EBADMSG:
        return BATON__SC_BAD_ACK;
    case -EACCES:
        return BATON__SC_TOKEN;
    case -ENOENT:
        return BATON__SC_UNKNOWN;
    case -ECONNABORTED:
        return BATON__SC_LOST;
    case -ECANCELED:
        return BATON__SC_REFUSED;
    case -ESHUTDOWN:
        return BATON__SC_SHUTDOWN;
    case -ENOBUFS:
        return BATON__SC_OVERLOAD;
    case -EUSERS:
        return BATON__SC_FULL;
    case -ETIMEDOUT:
        return BATON__SC_TIMEOUT;
    case -ECONNRESET:
        return BATON__SC_RESET;
    }
    return BATON__SC_PROTO;
}
