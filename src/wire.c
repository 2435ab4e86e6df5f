/* SPDX-License-Identifier: MIT */
/* Encoding and decoding of control messages: bounds first, then fields. */
#include <errno.h>
#include <string.h>

#include "internal.h"

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = v;
    p[1] = v >> 8;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = v >> (8 * i);
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = v >> (8 * i);
}

static uint16_t get16(const uint8_t *p)
{
    return p[0] | (uint16_t)p[1] << 8;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

size_t baton__msg_header(void *buf, int type, size_t payload_len)
{
    uint8_t *p = buf;
    put32(p, BATON__MAGIC);
    put16(p + 4, BATON__PROTO);
    put16(p + 6, type);
    put32(p + 8, payload_len);
    put32(p + 12, 0);
    return BATON__HDR_LEN + payload_len;
}

size_t baton__enc_req(void *buf, uint32_t kind, uint32_t timeout_ms, uint32_t pid)
{
    return baton__enc_req_job(buf, kind, timeout_ms, pid, 0);
}

/* With a job token (not 0) the payload grows by it: an owner of before
 * job tokens never starts a successor with one, so it never receives
 * the longer form. */
size_t baton__enc_req_job(void *buf, uint32_t kind, uint32_t timeout_ms, uint32_t pid, uint64_t job)
{
    uint8_t *p = (uint8_t *)buf + BATON__HDR_LEN;
    put32(p, kind);
    put32(p + 4, timeout_ms);
    put32(p + 8, pid);
    if (!job)
        return baton__msg_header(buf, BATON__MSG_REQ, 12);
    put64(p + 12, job);
    return baton__msg_header(buf, BATON__MSG_REQ, 20);
}

size_t baton__enc_hello(void *buf, uint32_t generation, uint32_t pid, uint32_t nfds,
                        uint64_t state_len, uint64_t since_ms)
{
    uint8_t *p = (uint8_t *)buf + BATON__HDR_LEN;
    put32(p, generation);
    put32(p + 4, pid);
    put32(p + 8, nfds);
    put64(p + 12, state_len);
    put64(p + 20, since_ms);
    return baton__msg_header(buf, BATON__MSG_HELLO, 28);
}

size_t baton__enc_state(void *buf, uint64_t len)
{
    put64((uint8_t *)buf + BATON__HDR_LEN, len);
    return baton__msg_header(buf, BATON__MSG_STATE, 8);
}

size_t baton__enc_ready(void *buf, uint32_t pid, uint32_t flags)
{
    put32((uint8_t *)buf + BATON__HDR_LEN, pid);
    put32((uint8_t *)buf + BATON__HDR_LEN + 4, flags);
    return baton__msg_header(buf, BATON__MSG_READY, 8);
}

uint32_t baton__get32(const void *p)
{
    return get32(p);
}

size_t baton__conn_begin(void)
{
    return 4;
}

int baton__conn_add(void *buf, size_t *len, uint32_t id, const void *state, uint32_t slen)
{
    uint8_t *p = (uint8_t *)buf + BATON__HDR_LEN + *len;

    if (slen > BATON_CONN_STATE_MAX)
        return -EMSGSIZE;
    if (*len + 8 + slen > BATON__PAYLOAD_MAX)
        return -ENOSPC;
    put32(p, id);
    put32(p + 4, slen);
    if (slen)
        memcpy(p + 8, state, slen);
    *len += 8 + slen;
    return 0;
}

void baton__conn_end(void *buf, size_t len, uint32_t count)
{
    put32((uint8_t *)buf + BATON__HDR_LEN, count);
    baton__msg_header(buf, BATON__MSG_CONN, len);
}

size_t baton__enc_ack(void *buf, const uint32_t *ids, uint32_t count)
{
    uint8_t *p = (uint8_t *)buf + BATON__HDR_LEN;

    put32(p, count);
    for (uint32_t i = 0; i < count; i++)
        put32(p + 4 + 4 * i, ids[i]);
    return baton__msg_header(buf, BATON__MSG_ACK, 4 + 4 * count);
}

size_t baton__enc_result(void *buf, int type, int32_t err, uint32_t generation, uint32_t pid,
                         const char *text)
{
    uint8_t *p = (uint8_t *)buf + BATON__HDR_LEN;
    size_t tl = text ? strnlen(text, BATON__TEXT_MAX) : 0;
    put32(p, (uint32_t)err);
    put32(p + 4, generation);
    put32(p + 8, pid);
    put16(p + 12, tl);
    memcpy(p + 14, text ? text : "", tl);
    return baton__msg_header(buf, type, 14 + tl);
}

size_t baton__enc_empty(void *buf, int type)
{
    return baton__msg_header(buf, type, 0);
}

size_t baton__fds_begin(void *buf)
{
    return 4; /* the count, filled in by baton__fds_end */
}

int baton__fds_add(void *buf, size_t *len, uint8_t kind, const char *name, const char *addr)
{
    size_t nl = strlen(name), al = strlen(addr);
    uint8_t *p = (uint8_t *)buf + BATON__HDR_LEN + *len;

    if (nl > BATON_NAME_MAX || al > BATON_ADDR_MAX)
        return -ENAMETOOLONG;
    if (*len + 3 + nl + al > BATON__PAYLOAD_MAX)
        return -ENOSPC;
    p[0] = kind;
    p[1] = nl;
    p[2] = al;
    memcpy(p + 3, name, nl);
    memcpy(p + 3 + nl, addr, al);
    *len += 3 + nl + al;
    return 0;
}

void baton__fds_end(void *buf, size_t len, uint32_t count)
{
    put32((uint8_t *)buf + BATON__HDR_LEN, count);
    baton__msg_header(buf, BATON__MSG_FDS, len);
}

static int decode_fds(const uint8_t *p, size_t len, struct baton__msg *m)
{
    size_t off = 4;

    if (len < 4)
        return -EPROTO;
    m->u.fds.count = get32(p);
    if (m->u.fds.count == 0 || m->u.fds.count > BATON__BATCH_MAX)
        return -EPROTO;
    for (uint32_t i = 0; i < m->u.fds.count; i++) {
        struct baton__wire_entry *e = &m->u.fds.entries[i];
        if (len - off < 3)
            return -EPROTO;
        e->kind = p[off];
        e->name_len = p[off + 1];
        e->addr_len = p[off + 2];
        off += 3;
        if (e->kind > BATON__KIND_MAX || e->name_len == 0 || e->name_len > BATON_NAME_MAX)
            return -EPROTO;
        if (len - off < (size_t)e->name_len + e->addr_len)
            return -EPROTO;
        e->name = (const char *)p + off;
        e->addr = (const char *)p + off + e->name_len;
        off += e->name_len + e->addr_len;
        if (memchr(e->name, 0, e->name_len) || memchr(e->addr, 0, e->addr_len))
            return -EPROTO;
    }
    return off == len ? 0 : -EPROTO;
}

static int decode_conn(const uint8_t *p, size_t len, struct baton__msg *m)
{
    size_t off = 4;

    if (len < 4)
        return -EPROTO;
    m->u.conn.count = get32(p);
    if (m->u.conn.count == 0 || m->u.conn.count > BATON__BATCH_MAX)
        return -EPROTO;
    for (uint32_t i = 0; i < m->u.conn.count; i++) {
        struct baton__wire_conn *c = &m->u.conn.conns[i];
        if (len - off < 8)
            return -EPROTO;
        c->id = get32(p + off);
        c->len = get32(p + off + 4);
        off += 8;
        if (c->len > BATON_CONN_STATE_MAX || len - off < c->len)
            return -EPROTO;
        c->state = p + off;
        off += c->len;
    }
    return off == len ? 0 : -EPROTO;
}

/* One case per message type: the whole table of bounds reads best in one
 * place, so this function is longer than most. */
int baton__msg_decode(const void *buf, size_t len, struct baton__msg *m)
{
    const uint8_t *p = buf;
    size_t plen;

    if (len < BATON__HDR_LEN || get32(p) != BATON__MAGIC || get16(p + 4) != BATON__PROTO)
        return -EPROTO;
    m->type = get16(p + 6);
    plen = get32(p + 8);
    if (plen > BATON__PAYLOAD_MAX || plen != len - BATON__HDR_LEN || get32(p + 12) != 0)
        return -EPROTO;
    p += BATON__HDR_LEN;

    switch (m->type) {
    case BATON__MSG_REQ:
        if (plen != 12 && plen != 20)
            return -EPROTO;
        m->u.req.kind = get32(p);
        m->u.req.timeout_ms = get32(p + 4);
        m->u.req.pid = get32(p + 8);
        m->u.req.job = plen == 20 ? get64(p + 12) : 0;
        return plen == 20 && !m->u.req.job ? -EPROTO : 0;
    case BATON__MSG_HELLO:
        if (plen != 28)
            return -EPROTO;
        m->u.hello.generation = get32(p);
        m->u.hello.pid = get32(p + 4);
        m->u.hello.nfds = get32(p + 8);
        m->u.hello.state_len = get64(p + 12);
        m->u.hello.since_ms = get64(p + 20);
        if (m->u.hello.generation == 0 || m->u.hello.generation >= INT32_MAX)
            return -EPROTO;
        return 0;
    case BATON__MSG_FDS:
        return decode_fds(p, plen, m);
    case BATON__MSG_STATE:
        if (plen != 8)
            return -EPROTO;
        m->u.state.len = get64(p);
        return 0;
    case BATON__MSG_READY:
        if (plen != 8)
            return -EPROTO;
        m->u.ready.pid = get32(p);
        m->u.ready.flags = get32(p + 4);
        return 0;
    case BATON__MSG_CONN:
        return decode_conn(p, plen, m);
    case BATON__MSG_ACK:
        if (plen < 4)
            return -EPROTO;
        m->u.ack.count = get32(p);
        m->u.ack.ids = p + 4;
        if (m->u.ack.count == 0 || m->u.ack.count > BATON__ACK_MAX ||
            plen != 4 + 4 * (size_t)m->u.ack.count)
            return -EPROTO;
        return 0;
    case BATON__MSG_END:
    case BATON__MSG_DONE:
    case BATON__MSG_RELEASED:
    case BATON__MSG_COMMIT:
    case BATON__MSG_PUBLISHED:
        return plen == 0 ? 0 : -EPROTO;
    case BATON__MSG_RESULT:
    case BATON__MSG_ERROR:
    case BATON__MSG_PROBATION:
        if (plen < 14)
            return -EPROTO;
        m->u.result.err = (int32_t)get32(p);
        m->u.result.generation = get32(p + 4);
        m->u.result.pid = get32(p + 8);
        m->u.result.text_len = get16(p + 12);
        m->u.result.text = (const char *)p + 14;
        if (m->u.result.text_len > BATON__TEXT_MAX || m->u.result.text_len != plen - 14)
            return -EPROTO;
        return 0;
    default:
        return -EPROTO;
    }
}
