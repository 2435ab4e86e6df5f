/* SPDX-License-Identifier: MIT */
/*
 * The next server matches the current server's answers to its TAKEs. The
 * test plays the current server on a real, authenticated peer link to B,
 * and raw clients play the client:
 *
 * 1. k1 resumes at B (TAKE #1), goes away, and k2 resumes the same session
 *    (TAKE #2). The answer to #1 is a refusal, to #2 the session (EXPORT).
 *    B must not let the refusal of #1 turn k2 away: k2 gets RESUMED and
 *    the current server TAKEN. (B used to close k2 on the first answer,
 *    then confirm the export with nobody to serve it: the session lost.)
 * 2. k1 resumes (TAKE), goes away, and the session is exported anyway: B
 *    must DECLINE it, so that the current server keeps it (a TAKEN would
 *    end it there under a client that came back).
 */
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "session-util.h"

int baton__s_hmac(const void *key, size_t key_len, const char *label, const uint8_t *a,
                  const uint8_t *b, uint8_t *mac);

enum { T_TAKE = 21, T_REFUSE = 22, T_EXPORT = 23, T_TAKEN = 24, T_DECLINE = 25, T_GONE = 29 };

static struct ts_server b;
static struct ts_server *srvs[] = {&b, NULL};
static uint8_t buf[70000];

/* Connect to B's peer port and authenticate as a server knowing the key. */
static int peer_connect(void)
{
    uint8_t nc[32] = {1, 2, 3}, mac[32];
    uint32_t len;
    int fd = ts_raw_connect(b.paddr);

    ts_raw_frame(fd, TS_PHELLO, nc, 32);
    T_EQ(ts_raw_next(srvs, fd, buf, sizeof(buf), &len), TS_PCHAL);
    T_OK(baton__s_hmac(TS_KEY, strlen(TS_KEY), "baton-s-connect", nc, buf, mac));
    ts_raw_frame(fd, TS_PAUTH, mac, 32);
    return fd;
}

static void offer(int peer, const uint8_t *id)
{
    uint8_t f[8 + 16] = {0, 0, 0, 1, 0, 0, 0, 1};
    uint32_t len;

    memcpy(f + 8, id, 16);
    ts_raw_frame(peer, TS_OFFER, f, sizeof(f));
    T_EQ(ts_raw_next(srvs, peer, buf, sizeof(buf), &len), TS_OFFER + 1); /* OFFERED */
}

static int resume(const uint8_t *id)
{
    uint8_t f[56] = {0};
    int fd = ts_raw_connect(b.addr);

    memcpy(f, id, 16);
    memset(f + 16, 7, 32); /* the token: only the current server (us) checks it */
    ts_raw_frame(fd, TS_RESUME, f, 56);
    return fd;
}

static void expect_take(int peer)
{
    uint32_t len;

    T_EQ(ts_raw_next(srvs, peer, buf, sizeof(buf), &len), T_TAKE);
}

static void refuse(int peer, const uint8_t *id)
{
    uint8_t f[20] = {0};

    memcpy(f, id, 16);
    f[19] = TS_C_TOKEN;
    ts_raw_frame(peer, T_REFUSE, f, 20);
}

/* The session with nothing handled and nothing queued, and the test
 * application's 16 bytes of state. */
static void export(int peer, const uint8_t *id)
{
    uint8_t f[16 + 24 + 4 + 16 + 4] = {0};

    memcpy(f, id, 16);
    f[43] = 16; /* state_len */
    ts_raw_frame(peer, T_EXPORT, f, sizeof(f));
}

/* Let B handle what is pending (a client's EOF, say): pump it while its
 * fd is readable. */
static void settle(void)
{
    for (int i = 0; i < 1000; i++) {
        struct pollfd p = {baton_session_server_fd(b.srv), POLLIN, 0};
        if (poll(&p, 1, 0) <= 0)
            return;
        ts_pump(srvs, NULL, 0, 0);
    }
}

static void stale_refusal(int peer)
{
    uint8_t id[16];
    uint32_t len;
    int k1, k2;

    memset(id, 0x11, 16);
    offer(peer, id);
    k1 = resume(id);
    expect_take(peer);
    close(k1);
    settle();
    k2 = resume(id);
    expect_take(peer);
    refuse(peer, id); /* answers TAKE #1 */
    export(peer, id); /* answers TAKE #2 */
    T_EQ(ts_raw_next(srvs, k2, buf, sizeof(buf), &len), TS_RESUMED);
    T_EQ(ts_raw_next(srvs, peer, buf, sizeof(buf), &len), T_TAKEN);
    T_ASSERT(memcmp(buf, id, 16) == 0);
    T_EQ(b.imported, 1);
    T_EQ(baton_session_server_count(b.srv), 1);
    close(k2);
    /* The session ends at B, which tells the server it came from. */
    T_EQ(ts_raw_next(srvs, peer, buf, sizeof(buf), &len), T_GONE);
    T_ASSERT(memcmp(buf, id, 16) == 0);
}

static void export_nobody_waits(int peer)
{
    uint8_t id[16];
    uint32_t len;
    int k1;

    memset(id, 0x22, 16);
    offer(peer, id);
    k1 = resume(id);
    expect_take(peer);
    close(k1);
    settle();
    export(peer, id);
    T_EQ(ts_raw_next(srvs, peer, buf, sizeof(buf), &len), T_DECLINE);
    T_ASSERT(memcmp(buf, id, 16) == 0);
    T_EQ(b.imported, 1); /* only the first test's */
}

int main(int argc, char **argv)
{
    int peer;

    t_init(argc, argv);
    ts_server_start(&b, "B", TS_KEY);
    peer = peer_connect();
    stale_refusal(peer);
    export_nobody_waits(peer);
    close(peer);
    ts_server_stop(&b);
    return t_done();
}
