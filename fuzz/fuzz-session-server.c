/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the session server's state machine, not just its
 * decoder: two servers A and B that share a key and know each other as
 * peers, and a script of hostile clients. The input is a list of steps:
 *
 *   0 c        open client connection c (to A if c is even, else B)
 *   1 c n ...  client c writes the next n bytes
 *   2 c        client c closes (reset)
 *   3 c        client c shuts its writing side
 *   4 d        move every session of A to B (d even) or of B to A
 *   5 k        the application closes the k-th session it knows
 *   6 k n ...  the application sends n bytes on the k-th session
 *   7 x        dispatch both servers a few times
 *   8 k        move only the k-th session to the other server
 *   9 c        client c follows its last MOVE: a new connection to the
 *              other server (client c+1's slot) sends RESUME with the
 *              session id and token client c read
 *
 * (each taken modulo the counts). Both servers must survive anything, and
 * ASan/UBSan/LSan check what they do; the servers are freed at the end of
 * every input. Each holds at most SESSIONS_MAX sessions, fewer than the
 * clients, so that HELLOs and RESUMEs over the cap (CLOSE(FULL)) are
 * reached; a client may send PING, and any frame type on any link. Client links are AF_UNIX (no
 * ports used up); the peer link is TCP on 127.0.0.1 (the library's addresses are TCP).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "baton-session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CLIENTS  16
#define SESSIONS 64
/* The servers' max_sessions: below CLIENTS, so the cap is reached. */
#define SESSIONS_MAX 6

static const char key[] = "fuzz-session-server-key";

struct srv {
    baton_session_server *s;
    int lfd, pfd;
    char paddr[64];
    baton_session *known[SESSIONS]; /* sessions the application holds */
};

static struct srv A, B;

/* What a client read: frames parsed as they come, keeping the session id
 * (WELCOME) and the last token (MOVE); other payloads are skipped. */
struct reader {
    uint8_t hdr[8], head[32];
    size_t hlen, plen, pgot;
    uint8_t id[16], token[32];
    bool have_id, have_token;
};

static void reader_feed(struct reader *r, const uint8_t *p, size_t n)
{
    while (n) {
        if (r->hlen < 8) {
            r->hdr[r->hlen++] = *p++;
            n--;
            if (r->hlen == 8) {
                r->plen = ((size_t)r->hdr[4] << 24) | ((size_t)r->hdr[5] << 16) |
                          ((size_t)r->hdr[6] << 8) | r->hdr[7];
                r->pgot = 0;
            }
        } else {
            if (r->pgot < sizeof(r->head))
                r->head[r->pgot] = *p;
            r->pgot++;
            p++;
            n--;
        }
        if (r->hlen == 8 && r->pgot == r->plen) {
            if (r->hdr[1] == 2 && r->plen == 16) { /* WELCOME */
                memcpy(r->id, r->head, 16);
                r->have_id = true;
            } else if (r->hdr[1] == 5 && r->plen >= 34) { /* MOVE */
                memcpy(r->token, r->head, 32);
                r->have_token = true;
            }
            r->hlen = 0;
        }
    }
}

static void reader_pull(struct reader *r, int fd)
{
    uint8_t buf[4096];
    ssize_t n;

    while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        reader_feed(r, buf, (size_t)n);
}

static void forget(struct srv *t, baton_session *s)
{
    for (int i = 0; i < SESSIONS; i++)
        if (t->known[i] == s)
            t->known[i] = NULL;
}

static void remember(struct srv *t, baton_session *s)
{
    for (int i = 0; i < SESSIONS; i++)
        if (!t->known[i]) {
            t->known[i] = s;
            return;
        }
}

static void on_open(void *ctx, baton_session *s)
{
    remember(ctx, s);
}

static void on_message(void *ctx, baton_session *s, const void *d, size_t len)
{
    /* Echo, as an application would answer: exercises the send paths. */
    (void)baton_session_send(s, d, len > 64 ? 64 : len);
}

static void on_close(void *ctx, baton_session *s, int err)
{
    forget(ctx, s);
}

static int export_state(void *ctx, baton_session *s, void *buf, size_t cap, size_t *ret_len)
{
    memcpy(buf, "state", 5);
    *ret_len = 5;
    return 0;
}

static int import_state(void *ctx, baton_session *s, const void *d, size_t len)
{
    if (len != 5 || memcmp(d, "state", 5) != 0)
        abort(); /* the state must arrive as it left */
    remember(ctx, s);
    return 0;
}

static void on_moved(void *ctx, baton_session *s, int err)
{
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "%s: moved %s: %d\n", ctx == &A ? "A" : "B", baton_session_id(s), err);
    if (err == 0)
        forget(ctx, s);
}

static void on_log(void *ctx, int level, const char *msg)
{
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "%s: %s\n", ctx == &A ? "A" : "B", msg);
}

static int listen_unix(char *name, size_t cap)
{
    static unsigned seq;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    /* An abstract name: nothing on disk. */
    snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "baton-fuzz-%d-%u", (int)getpid(), seq++);
    snprintf(name, cap, "%s", sa.sun_path + 1);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0)
        abort();
    return fd;
}

static int connect_unix(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "%s", name);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int listen_tcp(char *addr, size_t cap)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        abort();
    snprintf(addr, cap, "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
    return fd;
}

static void start(struct srv *t, char *name, size_t cap)
{
    struct baton_session_server_options o = {
        .key = key,
        .key_len = sizeof(key) - 1,
        .move_window = 2, /* small: queued moves are exercised too */
        .max_sessions = SESSIONS_MAX,
        .ctx = t,
        .on_open = on_open,
        .on_message = on_message,
        .on_close = on_close,
        .export_state = export_state,
        .import_state = import_state,
        .on_moved = on_moved,
        .log = on_log,
        /* The fuzzer speaks frames: TLS would only hide them. */
        .insecure = 1,
    };

    memset(t->known, 0, sizeof(t->known));
    t->lfd = listen_unix(name, cap);
    t->pfd = listen_tcp(t->paddr, sizeof(t->paddr));
    if (baton_session_server_new(&o, t->lfd, t->pfd, &t->s) < 0)
        abort();
}

static void stop(struct srv *t)
{
    baton_session_server_free(t->s);
    close(t->lfd);
    close(t->pfd);
}

static void dispatch(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        if (baton_session_server_dispatch(A.s) < 0 || baton_session_server_dispatch(B.s) < 0)
            abort();
    }
}

static baton_session *pick(struct srv *t, unsigned k)
{
    for (int i = 0; i < SESSIONS; i++) {
        baton_session *s = t->known[(k + (unsigned)i) % SESSIONS];
        if (s)
            return s;
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char na[108], nb[108];
    int cl[CLIENTS];
    static struct reader rd[CLIENTS];
    size_t i = 0;

    memset(rd, 0, sizeof(rd));
    for (int c = 0; c < CLIENTS; c++)
        cl[c] = -1;
    start(&A, na, sizeof(na));
    start(&B, nb, sizeof(nb));
    /* The client addresses in MOVE are never dialled here. */
    if (baton_session_server_add_peer(A.s, "b", B.paddr, "tcp://127.0.0.1:1") < 0 ||
        baton_session_server_add_peer(B.s, "a", A.paddr, "tcp://127.0.0.1:2") < 0)
        abort();
    while (i + 1 < size) {
        uint8_t op = data[i++] % 10, arg = data[i++];
        int c = arg % CLIENTS;
        struct srv *t = arg & 1 ? &B : &A;
        baton_session *s;
        size_t n;
        switch (op) {
        case 0:
            if (cl[c] < 0) {
                cl[c] = connect_unix(c % 2 ? nb : na);
                memset(&rd[c], 0, sizeof(rd[c]));
            }
            break;
        case 1:
            n = i < size ? data[i++] : 0;
            if (n > size - i)
                n = size - i;
            if (cl[c] >= 0)
                (void)!send(cl[c], data + i, n, MSG_NOSIGNAL);
            i += n;
            break;
        case 2:
            if (cl[c] >= 0)
                close(cl[c]);
            cl[c] = -1;
            break;
        case 9: {
            int d = (c + 1) % CLIENTS;
            uint8_t f[8 + 56] = {1, 6, 0, 0, 0, 0, 0, 56};
            if (cl[c] < 0)
                break;
            reader_pull(&rd[c], cl[c]);
            if (!rd[c].have_id || !rd[c].have_token)
                break;
            if (cl[d] >= 0)
                close(cl[d]);
            cl[d] = connect_unix(d % 2 ? nb : na);
            memset(&rd[d], 0, sizeof(rd[d]));
            if (cl[d] < 0)
                break;
            memcpy(f + 8, rd[c].id, 16);
            memcpy(f + 24, rd[c].token, 32); /* handled: 0 */
            (void)!send(cl[d], f, sizeof(f), MSG_NOSIGNAL);
            break;
        }
        case 3:
            if (cl[c] >= 0)
                shutdown(cl[c], SHUT_WR);
            break;
        case 4:
            (void)baton_session_move(t->s, t == &A ? "b" : "a", NULL, 0);
            break;
        case 5:
            if ((s = pick(&A, arg)))
                (void)baton_session_close(s);
            break;
        case 6:
            n = i < size ? data[i++] : 0;
            if (n > size - i)
                n = size - i;
            if ((s = pick(t, arg >> 1)))
                (void)baton_session_send(s, data + i, n);
            i += n;
            break;
        case 7:
            dispatch(1 + arg % 8);
            break;
        case 8:
            if ((s = pick(t, arg >> 1)))
                (void)baton_session_move(t->s, t == &A ? "b" : "a", &s, 1);
            break;
        }
    }
    dispatch(8);
    for (int c = 0; c < CLIENTS; c++)
        if (cl[c] >= 0)
            close(cl[c]);
    dispatch(2);
    stop(&A);
    stop(&B);
    return 0;
}
