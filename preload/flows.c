/* SPDX-License-Identifier: MIT */
/*
 * The UDP flow table behind `baton run`'s steering (udp.c), pure but for
 * the file it lives in: unit-tested under the sanitizers and across
 * processes by tests/run-flows.c. See flows.h for what it is.
 */
#include <errno.h>
#include <sched.h>
#include <time.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flows.h"

#define FLOWS_MAGIC 0x62746e75646631ULL /* "btnudf1" */
#define PROBE_MAX   128
#define KEY_LEN     32
#define TIME_MASK   ((1ULL << 48) - 1)
#define AHEAD_MS    10000

struct flow {
    _Atomic uint32_t seq; /* 0 never used, odd while the key is written */
    _Atomic uint32_t hash;
    _Atomic uint64_t own; /* owner generation << 48 | last seen, ms */
    _Atomic uint64_t key[KEY_LEN / 8];
};

struct flows {
    uint64_t magic;
    uint64_t k[2]; /* the hash key */
    uint64_t slots;
    uint8_t pad[32];
    struct flow f[];
};

#define FLOWS_SIZE (sizeof(struct flows) + FLOWS_SLOTS * sizeof(struct flow))

/* ---- SipHash-2-4, for the table's keyed hash ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

/* Over the four words of a key (32 bytes: a multiple of 8, so no tail). */
static uint64_t siphash32(const uint64_t w[4], uint64_t k0, uint64_t k1)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)KEY_LEN << 56;

    for (int i = 0; i < 4; i++) {
        v3 ^= w[i];
        SIPROUND;
        SIPROUND;
        v0 ^= w[i];
    }
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* A peer's address as a table key: family, port, address and scope; 0 if
 * it is not an IP address. */
int baton_run__flow_key(const struct sockaddr *sa, socklen_t len, uint64_t key[4])
{
    uint8_t *k = (uint8_t *)key;

    memset(key, 0, KEY_LEN);
    if (sa && len >= (socklen_t)sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)sa;
        k[0] = AF_INET;
        memcpy(k + 2, &s->sin_port, 2);
        memcpy(k + 4, &s->sin_addr, 4);
        return 1;
    }
    if (sa && len >= (socklen_t)sizeof(struct sockaddr_in6) && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)sa;
        k[0] = AF_INET6;
        memcpy(k + 2, &s->sin6_port, 2);
        memcpy(k + 4, &s->sin6_scope_id, 4);
        memcpy(k + 8, &s->sin6_addr, 16);
        return 1;
    }
    return 0;
}

static uint64_t own_word(unsigned gen, uint64_t now)
{
    return (uint64_t)(gen & 0xffff) << 48 | (now & TIME_MASK);
}

static bool own_live(uint64_t o, uint64_t now, unsigned idle_ms)
{
    uint64_t t = o & TIME_MASK;
    /* A little ahead of ours: another process wrote it after we read the
     * clock, and it is live. Far ahead: from before a reboot (a directory
     * that outlives one), and not. */
    return t <= now ? now - t <= idle_ms : t - now <= AHEAD_MS;
}

/* Does slot f hold key (read consistently)? */
static bool slot_is(struct flow *f, uint32_t seq, uint32_t hash, const uint64_t key[4])
{
    uint64_t k[4];

    if (atomic_load_explicit(&f->hash, memory_order_relaxed) != hash)
        return false;
    for (int i = 0; i < 4; i++)
        k[i] = atomic_load_explicit(&f->key[i], memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&f->seq, memory_order_relaxed) == seq && !memcmp(k, key, KEY_LEN);
}

/* Write key into f, whose sequence word we hold odd at seq + 1. */
static void slot_fill(struct flow *f, uint32_t seq, uint32_t hash, const uint64_t key[4],
                      uint64_t own)
{
    atomic_store_explicit(&f->hash, hash, memory_order_relaxed);
    for (int i = 0; i < 4; i++)
        atomic_store_explicit(&f->key[i], key[i], memory_order_relaxed);
    atomic_store_explicit(&f->own, own, memory_order_relaxed);
    atomic_store_explicit(&f->seq, seq + 2, memory_order_release);
}

/* A slot being written: wait for its key (a few stores), lest the same
 * peer go into two slots. Its writer may have lost its core in between,
 * so after a short spin this yields, for up to WRITER_WAIT_MS; a writer
 * that died there leaves the slot odd for ever, and it is passed over. */
#define WRITER_WAIT_MS 50
static uint32_t wait_written(struct flow *f, uint32_t seq)
{
    struct timespec t0, t;

    for (unsigned spin = 0; (seq & 1) && spin < 1000; spin++)
        seq = atomic_load_explicit(&f->seq, memory_order_acquire);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (seq & 1) {
        sched_yield();
        seq = atomic_load_explicit(&f->seq, memory_order_acquire);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > WRITER_WAIT_MS)
            break;
    }
    return seq;
}

/* Take over an idle slot for key: its sequence word first (so that no
 * reader matches it while we write), then its owner word from the idle
 * value we saw, which fails if the slot's peer came back meanwhile (its
 * refresh changed the word): then the slot is left as it was. */
static bool take_idle(struct flow *f, uint32_t seq, uint64_t seen, uint32_t hash,
                      const uint64_t key[4], uint64_t own)
{
    uint32_t s = seq;

    if (!atomic_compare_exchange_strong(&f->seq, &s, seq + 1))
        return false;
    if (!atomic_compare_exchange_strong(&f->own, &seen, own)) {
        atomic_store_explicit(&f->seq, seq, memory_order_release);
        return false;
    }
    slot_fill(f, seq, hash, key, own);
    return true;
}

int baton_run__flow_claim(struct flows *t, const uint64_t key[4], unsigned me, uint64_t now,
                          unsigned idle_ms, enum baton_run__flow_how how)
{
    uint64_t h = siphash32(key, t->k[0], t->k[1]);
    uint32_t hash = (uint32_t)(h >> 32);
    struct flow *idle;
    uint32_t idle_seq;
    uint64_t idle_own;
    unsigned i;

    me &= 0xffff;
again:
    idle = NULL;
    idle_seq = 0;
    idle_own = 0;
    for (i = 0; i < PROBE_MAX; i++) {
        struct flow *f = &t->f[(h + i) & (FLOWS_SLOTS - 1)];
        uint32_t seq = atomic_load_explicit(&f->seq, memory_order_acquire);
        uint64_t o;

        if (seq == 0) {
            /* The end of the chain: the peer is new. Into an idle slot
             * seen on the way, or this empty one. */
            uint32_t s = 0;
            if (idle) {
                if (take_idle(idle, idle_seq, idle_own, hash, key, own_word(me, now)))
                    return (int)me;
                goto again; /* taken, or alive again: look again */
            }
            if (!atomic_compare_exchange_strong(&f->seq, &s, 1))
                goto again; /* someone wrote here meanwhile */
            slot_fill(f, 0, hash, key, own_word(me, now));
            return (int)me;
        }
        if (seq & 1)
            seq = wait_written(f, seq);
        if (seq & 1)
            continue;
        if (!slot_is(f, seq, hash, key)) {
            o = atomic_load_explicit(&f->own, memory_order_relaxed);
            if (!idle && !own_live(o, now, idle_ms)) {
                idle = f;
                idle_seq = seq;
                idle_own = o;
            }
            continue;
        }
        for (o = atomic_load_explicit(&f->own, memory_order_relaxed);;) {
            unsigned owner = (unsigned)(o >> 48);
            uint64_t n;
            uint64_t at = o & TIME_MASK, when = at > now && at - now <= AHEAD_MS ? at : now;
            if (owner == me || how == FLOW_TAKE || !own_live(o, now, idle_ms))
                n = own_word(me, when);
            else if (how == FLOW_READ)
                n = own_word(owner, when);
            else
                return (int)owner; /* another's, and a send of ours keeps it not */
            /* The slot may have been taken over for another peer since
             * we matched it. */
            if (atomic_load_explicit(&f->seq, memory_order_acquire) != seq)
                goto again;
            if (atomic_compare_exchange_weak(&f->own, &o, n))
                return (int)(n >> 48);
        }
    }
    /* A long chain (or a full table): into an idle slot on it, or
     * unrecorded (whoever reads it). */
    if (idle && take_idle(idle, idle_seq, idle_own, hash, key, own_word(me, now)))
        return (int)me;
    return -1;
}

int baton_run__flow_owner(struct flows *t, const uint64_t key[4], uint64_t now, unsigned idle_ms)
{
    uint64_t h = siphash32(key, t->k[0], t->k[1]);
    uint32_t hash = (uint32_t)(h >> 32);

    for (unsigned i = 0; i < PROBE_MAX; i++) {
        struct flow *f = &t->f[(h + i) & (FLOWS_SLOTS - 1)];
        uint32_t seq = atomic_load_explicit(&f->seq, memory_order_acquire);
        if (seq == 0)
            return -1;
        if (!(seq & 1) && slot_is(f, seq, hash, key)) {
            uint64_t o = atomic_load_explicit(&f->own, memory_order_relaxed);
            return own_live(o, now, idle_ms) ? (int)(o >> 48) : -1;
        }
    }
    return -1;
}

unsigned baton_run__flows_live(struct flows *t, unsigned gen, uint64_t now, unsigned idle_ms)
{
    unsigned n = 0;

    for (unsigned i = 0; i < FLOWS_SLOTS; i++) {
        uint32_t seq = atomic_load_explicit(&t->f[i].seq, memory_order_acquire);
        uint64_t o;
        if (seq == 0 || (seq & 1))
            continue;
        o = atomic_load_explicit(&t->f[i].own, memory_order_relaxed);
        n += (unsigned)(o >> 48) == (gen & 0xffff) && own_live(o, now, idle_ms);
    }
    return n;
}

struct flows *baton_run__flows_map(int dirfd, char *why, size_t whylen)
{
    struct flows *t;
    struct stat st;
    int fd =
        openat(dirfd, FLOWS_LEAF, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);

    if (fd < 0) {
        snprintf(why, whylen, "%s: %s", FLOWS_LEAF, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077)) {
        snprintf(why, whylen, "%s is not a private file of ours", FLOWS_LEAF);
        close(fd);
        return NULL;
    }
    /* The first to come makes it, under the lock; the others wait. */
    if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0) {
        snprintf(why, whylen, "%s: %s", FLOWS_LEAF, strerror(errno));
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) {
        struct flows h = {.magic = FLOWS_MAGIC, .slots = FLOWS_SLOTS};
        if (getrandom(h.k, sizeof(h.k), 0) != (ssize_t)sizeof(h.k) ||
            ftruncate(fd, (off_t)FLOWS_SIZE) < 0 ||
            pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
            snprintf(why, whylen, "making %s: %s", FLOWS_LEAF, strerror(errno));
            if (ftruncate(fd, 0) < 0) {
                /* It stays as it is: the next one refuses its size. */
            }
            close(fd);
            return NULL;
        }
        st.st_size = (off_t)FLOWS_SIZE;
    }
    if (st.st_size != (off_t)FLOWS_SIZE) {
        snprintf(why, whylen, "%s is %lld bytes, not %zu", FLOWS_LEAF, (long long)st.st_size,
                 FLOWS_SIZE);
        close(fd);
        return NULL;
    }
    t = mmap(NULL, FLOWS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    /* Unlocked by hand: the mapping holds the open file, and the lock
     * with it, past close(). */
    flock(fd, LOCK_UN);
    close(fd);
    if (t == MAP_FAILED) {
        snprintf(why, whylen, "mmap %s: %s", FLOWS_LEAF, strerror(errno));
        return NULL;
    }
    if (t->magic != FLOWS_MAGIC || t->slots != FLOWS_SLOTS) {
        snprintf(why, whylen, "%s is not a flow table", FLOWS_LEAF);
        munmap(t, FLOWS_SIZE);
        return NULL;
    }
    return t;
}

void baton_run__flows_unmap(struct flows *t)
{
    if (t)
        munmap(t, FLOWS_SIZE);
}
