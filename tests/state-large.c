/* SPDX-License-Identifier: MIT */
/*
 * A 64 MiB state set with baton_set_state() arrives intact through
 * baton_state() (same length, same hash, every byte where it was), only
 * the last state set counts, and the mapping stays valid after
 * baton_ready() until baton_free().
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define STATE_LEN ((size_t)64 << 20)

static char dir[PATH_MAX];

/* A pattern that differs in every 8-byte word and from run to run of the
 * generator's seed, so a shifted or stale page is seen. */
static void fill(uint64_t *w, size_t words, uint64_t seed)
{
    uint64_t x = seed;

    for (size_t i = 0; i < words; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x ^ i;
    }
}

/* FNV-1a over 64-bit words (len is a multiple of 8). */
static uint64_t hash(const void *data, size_t len)
{
    const uint64_t *w = data;
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len / 8; i++)
        h = (h ^ w[i]) * 0x100000001b3ull;
    return h;
}

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 10000, 0);
    uint64_t seed = (uint64_t)getpid() * 2654435761u + 1;
    uint64_t *data = malloc(STATE_LEN);
    baton *b;

    T_ASSERT(data);
    T_OK(baton_open(&o, &b));
    T_OK(baton_set_state(b, "an earlier state", 16));
    fill(data, STATE_LEN / 8, seed);
    T_OK(baton_set_state(b, data, STATE_LEN));
    T_OK(baton_ready(b));
    t_tell(chan, (long long)seed);
    t_tell(chan, (long long)hash(data, STATE_LEN));
    free(data);
    T_EQ(baton_wait_upgrade(b, T_TIMEOUT), 1);
    t_tell(chan, T_MSG_SUPERSEDED);
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct baton_options o;
    struct t_proc owner;
    const void *state;
    uint64_t seed, digest, *expect;
    size_t len;
    baton *b;

    t_init(argc, argv);
    t_path(dir, "run");
    t_spawn(&owner, owner_main, NULL);
    seed = (uint64_t)t_hear(owner.chan, 30000);
    digest = (uint64_t)t_hear(owner.chan, T_TIMEOUT);

    o = t_opts(dir, 10000, 0);
    T_OK(baton_open(&o, &b));
    T_OK(baton_state(b, &state, &len));
    T_EQ(len, STATE_LEN);
    T_ASSERT(state != NULL);
    T_EQ(hash(state, len), digest);
    expect = malloc(STATE_LEN);
    T_ASSERT(expect);
    fill(expect, STATE_LEN / 8, seed);
    if (memcmp(state, expect, STATE_LEN) != 0)
        t_fail(__FILE__, __LINE__, "the state differs from what the owner set");

    T_OK(baton_ready(b));
    T_HEAR_EQ(owner.chan, T_MSG_SUPERSEDED);
    T_EQ(t_proc_wait(&owner, T_TIMEOUT), 0);
    /* Still mapped, still the same, after ready and the owner's exit. */
    T_OK(baton_state(b, &state, &len));
    T_EQ(len, STATE_LEN);
    T_ASSERT(memcmp(state, expect, STATE_LEN) == 0);
    free(expect);
    baton_free(b);
    return t_done();
}
