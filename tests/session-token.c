/* SPDX-License-Identifier: MIT */
/*
 * Resume tokens: random, one use, bound to their session. Two raw clients
 * R and S move A->B; then at B:
 *   - a forged token (random) for R is refused (CLOSE TOKEN), and R's real
 *     move still succeeds afterwards;
 *   - S's token presented with R's session id is refused (bound);
 *   - the real token resumes (RESUMED); the same token again is refused
 *     (replayed);
 * and after R moved on B->A, its first token presented at A is refused
 * (stale), while the new one works.
 */
#include <string.h>
#include <unistd.h>

#include "session-util.h"

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static uint8_t buf[70000];

struct raw {
    int fd;
    uint8_t id[16], token[32];
};

static void open_raw(struct raw *r, const char *addr)
{
    uint32_t len;

    r->fd = ts_raw_connect(addr);
    ts_raw_frame(r->fd, TS_HELLO, NULL, 0);
    T_EQ(ts_raw_next(srvs, r->fd, buf, sizeof(buf), &len), TS_WELCOME);
    memcpy(r->id, buf, 16);
}

static void get_move(struct raw *r)
{
    uint32_t len;

    T_EQ(ts_raw_next(srvs, r->fd, buf, sizeof(buf), &len), TS_MOVE);
    memcpy(r->token, buf, 32);
}

/* RESUME(id, token, 0) on a new connection to addr: the answer's type and,
 * for CLOSE, its code in *code. Returns the fd. */
static int resume(const char *addr, const uint8_t *id, const uint8_t *token, int *type,
                  uint32_t *code)
{
    uint8_t f[56] = {0};
    uint32_t len;
    int fd = ts_raw_connect(addr);

    memcpy(f, id, 16);
    memcpy(f + 16, token, 32);
    ts_raw_frame(fd, TS_RESUME, f, 56);
    *type = ts_raw_next(srvs, fd, buf, sizeof(buf), &len);
    *code = *type == TS_CLOSE ? ts_get32(buf) : 0;
    if (*type == TS_CLOSE)
        t_log("refused as expected: %.*s", (int)(len - 6), buf + 6);
    return fd;
}

int main(int argc, char **argv)
{
    struct raw r, s;
    uint8_t forged[32], old[32];
    uint32_t code;
    int type, fd, rfd;

    t_init(argc, argv);
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_server_peer(&b, "a", &a);
    open_raw(&r, a.addr);
    open_raw(&s, a.addr);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), 2);
    get_move(&r);
    get_move(&s);
    T_ASSERT(memcmp(r.token, s.token, 32) != 0);

    /* Forged. */
    for (int i = 0; i < 32; i++)
        forged[i] = (uint8_t)(r.token[i] ^ (0x5a + i));
    fd = resume(b.addr, r.id, forged, &type, &code);
    T_EQ(type, TS_CLOSE);
    T_EQ(code, TS_C_TOKEN);
    close(fd);
    /* Bound to its session: S's token with R's id. */
    fd = resume(b.addr, r.id, s.token, &type, &code);
    T_EQ(type, TS_CLOSE);
    T_EQ(code, TS_C_TOKEN);
    close(fd);
    /* The real one. */
    rfd = resume(b.addr, r.id, r.token, &type, &code);
    T_EQ(type, TS_RESUMED);
    /* Replayed. */
    fd = resume(b.addr, r.id, r.token, &type, &code);
    T_EQ(type, TS_CLOSE);
    T_EQ(code, TS_C_TOKEN);
    close(fd);
    close(r.fd);

    /* Stale: R moves on B->A; its first token no longer works anywhere. */
    r.fd = rfd;
    memcpy(old, r.token, 32);
    T_EQ(baton_session_move(b.srv, "a", NULL, 0), 1);
    get_move(&r);
    fd = resume(a.addr, r.id, old, &type, &code);
    T_EQ(type, TS_CLOSE);
    T_EQ(code, TS_C_TOKEN);
    close(fd);
    fd = resume(a.addr, r.id, r.token, &type, &code);
    T_EQ(type, TS_RESUMED);
    close(fd);
    close(r.fd);
    close(s.fd);
    /* A RESUME for a session nobody announced. */
    memset(forged, 7, sizeof(forged));
    fd = resume(b.addr, forged, forged, &type, &code);
    T_EQ(type, TS_CLOSE);
    T_EQ(code, TS_C_UNKNOWN);
    close(fd);
    ts_server_stop(&a);
    ts_server_stop(&b);
    return t_done();
}
