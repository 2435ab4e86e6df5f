/* SPDX-License-Identifier: MIT */
/*
 * The control protocol's messages. Every message travels as one
 * SOCK_SEQPACKET record: a 16-byte header, then at most BATON__PAYLOAD_MAX
 * bytes of payload, all integers little-endian. The header's magic and
 * version are checked before any length, field or received fd is trusted.
 */
#ifndef BATON_WIRE_H
#define BATON_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define BATON__MAGIC       0x4e544142u /* "BATN" */
#define BATON__PROTO       1
#define BATON__HDR_LEN     16
#define BATON__PAYLOAD_MAX 65536
#define BATON__MSG_MAX     (BATON__HDR_LEN + BATON__PAYLOAD_MAX)
/* The kernel's limit on fds in one SCM_RIGHTS message (SCM_MAX_FD). */
#define BATON__BATCH_MAX 253
#define BATON__TEXT_MAX  255

enum baton__msg_type {
    BATON__MSG_REQ = 1,        /* -> owner: what the peer wants */
    BATON__MSG_HELLO = 2,      /* owner ->: generation, pid, counts */
    BATON__MSG_FDS = 3,        /* owner ->: a batch of named fds */
    BATON__MSG_STATE = 4,      /* owner ->: state length, with its memfd */
    BATON__MSG_END = 5,        /* owner ->: nothing more follows */
    BATON__MSG_READY = 6,      /* -> owner: the successor serves */
    BATON__MSG_COMMIT = 7,     /* owner ->: publish, I step down */
    BATON__MSG_PUBLISHED = 8,  /* -> owner: control socket is ours */
    BATON__MSG_RESULT = 9,     /* owner -> tool: outcome of an upgrade */
    BATON__MSG_ERROR = 10,     /* either way: why the peer is dropped */
    BATON__MSG_CONN = 11,      /* old owner -> successor: connections */
    BATON__MSG_ACK = 12,       /* successor -> old owner: taken */
    BATON__MSG_DONE = 13,      /* old owner -> successor: no more */
    BATON__MSG_RELEASED = 14,  /* owner -> successor: PUBLISHED heard */
    BATON__MSG_PROBATION = 15, /* owner -> tool: the successor serves, on probation */
    BATON__MSG_TYPE_MAX = 15,
};

/* READY flags */
#define BATON__READY_TAKES_CONNS 1u
/* Ids in one ACK: as many as fit the payload. */
#define BATON__ACK_MAX ((BATON__PAYLOAD_MAX - 4) / 4)

enum baton__req_kind {
    BATON__REQ_TAKEOVER = 1,
    BATON__REQ_UPGRADE = 2,
};

struct baton__wire_entry {
    uint8_t kind;
    uint8_t name_len;
    uint8_t addr_len;
    const char *name; /* not NUL-terminated; points into the message */
    const char *addr;
};

struct baton__msg {
    uint16_t type;
    union {
        struct {
            uint32_t kind, timeout_ms, pid;
            uint64_t job; /* the job token of a successor we started, 0 none */
        } req;
        struct {
            uint32_t generation, pid, nfds;
            uint64_t state_len, since_ms;
        } hello;
        struct {
            uint32_t count;
            struct baton__wire_entry entries[BATON__BATCH_MAX];
        } fds;
        struct {
            uint64_t len;
        } state;
        struct {
            uint32_t pid, flags;
        } ready;
        struct {
            uint32_t count;
            struct baton__wire_conn {
                uint32_t id, len;
                const uint8_t *state; /* points into the message */
            } conns[BATON__BATCH_MAX];
        } conn;
        struct {
            uint32_t count;
            const uint8_t *ids; /* count little-endian u32, in the message */
        } ack;
        struct {
            int32_t err;
            uint32_t generation, pid;
            uint16_t text_len;
            const char *text; /* not NUL-terminated */
        } result;             /* also ERROR, PROBATION (err: its ms) */
    } u;
};

/* Decode one received message of len bytes. Returns 0, or -EPROTO for a
 * wrong magic or version, an unknown type, a length that does not match or
 * a field out of range. Never reads outside buf[0..len). */
int baton__msg_decode(const void *buf, size_t len, struct baton__msg *ret);

/* Encoding helpers: each writes into buf (BATON__MSG_MAX bytes) and
 * returns the message length. */
size_t baton__msg_header(void *buf, int type, size_t payload_len);
size_t baton__enc_req(void *buf, uint32_t kind, uint32_t timeout_ms, uint32_t pid);
size_t baton__enc_req_job(void *buf, uint32_t kind, uint32_t timeout_ms, uint32_t pid,
                          uint64_t job);
size_t baton__enc_hello(void *buf, uint32_t generation, uint32_t pid, uint32_t nfds,
                        uint64_t state_len, uint64_t since_ms);
size_t baton__enc_state(void *buf, uint64_t len);
size_t baton__enc_ready(void *buf, uint32_t pid, uint32_t flags);
uint32_t baton__get32(const void *p);

/* CONN: begin, add entries while they fit (-ENOSPC), end. ACK likewise. */
size_t baton__conn_begin(void);
int baton__conn_add(void *buf, size_t *len, uint32_t id, const void *state, uint32_t slen);
void baton__conn_end(void *buf, size_t len, uint32_t count);
size_t baton__enc_ack(void *buf, const uint32_t *ids, uint32_t count);
size_t baton__enc_result(void *buf, int type, int32_t err, uint32_t generation, uint32_t pid,
                         const char *text);
size_t baton__enc_empty(void *buf, int type);

/* Append one entry to an FDS message being built in buf whose payload is
 * *len bytes so far (start with baton__fds_begin). Returns 0, or -ENOSPC
 * when the entry does not fit (send the batch, then begin another). */
size_t baton__fds_begin(void *buf);
int baton__fds_add(void *buf, size_t *len, uint8_t kind, const char *name, const char *addr);
void baton__fds_end(void *buf, size_t len, uint32_t count);

#endif
