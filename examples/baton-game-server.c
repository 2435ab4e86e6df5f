/* SPDX-License-Identifier: MIT */
/*
 * baton-game-server: players move on a grid; every move is acknowledged
 * with the player's new position and the new world version. Player
 * sessions move to another server (SIGUSR1: all of them, to the peer named
 * "next") with their state, and the players do not notice.
 *
 *   baton-game-server --listen tcp://IP:PORT --peer-listen tcp://IP:PORT
 *                     --key-file FILE [--next PEER_ADDR,CLIENT_ADDR]
 *                     (--tls-cert FILE --tls-key FILE [--tls-ca FILE]
 *                      [--tls-peer-name NAME] | --insecure)
 *
 * TLS: clients verify --tls-cert; peer links use certificates too with
 * --tls-ca (the authority of the other servers' certificates), else a
 * pre-shared key derived from --key-file. --insecure: plain TCP.
 *
 * Protocol (text, one message each): the client sends "M <req> <dx> <dy>",
 * the server answers "A <req> <x> <y> <moves> <version>". Prints one line
 * per completed move round: "moved N failed F ms T".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <baton-session.h>

#define GRID 1000

struct player {
    int x, y;
    uint64_t moves;
};

struct game {
    uint64_t version;
    struct timespec move_start;
};

static double ms_since(const struct timespec *t)
{
    struct timespec n;

    clock_gettime(CLOCK_MONOTONIC, &n);
    return (double)(n.tv_sec - t->tv_sec) * 1e3 + (double)(n.tv_nsec - t->tv_nsec) / 1e6;
}

static void on_open(void *ctx, baton_session *s)
{
    struct player *p = calloc(1, sizeof(*p));

    if (p) {
        p->x = p->y = GRID / 2;
        baton_session_set_data(s, p);
    }
}

static void on_message(void *ctx, baton_session *s, const void *data, size_t len)
{
    struct game *g = ctx;
    struct player *p = baton_session_data(s);
    char buf[128], out[128];
    unsigned long long req;
    int dx, dy, n;

    if (!p || len >= sizeof(buf))
        return;
    memcpy(buf, data, len);
    buf[len] = 0;
    if (sscanf(buf, "M %llu %d %d", &req, &dx, &dy) != 3)
        return;
    p->x = (p->x + dx + GRID) % GRID;
    p->y = (p->y + dy + GRID) % GRID;
    p->moves++;
    g->version++;
    n = snprintf(out, sizeof(out), "A %llu %d %d %" PRIu64 " %" PRIu64, req, p->x, p->y, p->moves,
                 g->version);
    if (baton_session_send(s, out, (size_t)n) < 0)
        baton_session_close(s);
}

static void on_close(void *ctx, baton_session *s, int err)
{
    free(baton_session_data(s));
}

/* The state that travels: position, move count and the world version (so
 * that versions only grow for a player, whichever server holds it). */
static int export_state(void *ctx, baton_session *s, void *buf, size_t cap, size_t *ret_len)
{
    struct game *g = ctx;
    struct player *p = baton_session_data(s);
    int n;

    if (!p)
        return -EINVAL;
    n = snprintf(buf, cap, "%d %d %" PRIu64 " %" PRIu64, p->x, p->y, p->moves, g->version);
    *ret_len = (size_t)n;
    return 0;
}

static int import_state(void *ctx, baton_session *s, const void *data, size_t len)
{
    struct game *g = ctx;
    struct player *p = calloc(1, sizeof(*p));
    char buf[128];
    uint64_t ver;

    if (!p || len >= sizeof(buf)) {
        free(p);
        return -EINVAL;
    }
    memcpy(buf, data, len);
    buf[len] = 0;
    if (sscanf(buf, "%d %d %" SCNu64 " %" SCNu64, &p->x, &p->y, &p->moves, &ver) != 4) {
        free(p);
        return -EINVAL;
    }
    if (ver > g->version)
        g->version = ver;
    baton_session_set_data(s, p);
    return 0;
}

/* The session is the next server's now (err 0): its player is freed here,
 * as on_moved(0) ends a session as on_close() does. A move called off
 * leaves it here. */
static void on_moved(void *ctx, baton_session *s, int err)
{
    if (err == 0)
        free(baton_session_data(s));
}

/* Every session of the round has its outcome. */
static void on_move_done(void *ctx, const char *peer, size_t moved, size_t failed)
{
    struct game *g = ctx;

    printf("moved %zu failed %zu ms %.1f\n", moved, failed, ms_since(&g->move_start));
}

static void on_log(void *ctx, int level, const char *msg)
{
    if (level <= BATON_SESSION_LOG_WARNING)
        fprintf(stderr, "baton-game-server: %s\n", msg);
}

int main(int argc, char **argv)
{
    const char *listen_addr = NULL, *peer_addr = NULL, *key_file = NULL, *next = NULL;
    struct game g = {0};
    struct baton_session_server_options o = {
        .ctx = &g,
        .on_open = on_open,
        .on_message = on_message,
        .on_close = on_close,
        .export_state = export_state,
        .import_state = import_state,
        .on_moved = on_moved,
        .on_move_done = on_move_done,
        .log = on_log,
    };
    baton_session_server *srv;
    char key[256];
    sigset_t ss;
    size_t klen;
    int lfd, pfd, sfd, r;

    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--insecure")) {
            o.insecure = 1;
            continue;
        }
        if (!v)
            goto usage;
        if (!strcmp(argv[i], "--listen"))
            listen_addr = v;
        else if (!strcmp(argv[i], "--peer-listen"))
            peer_addr = v;
        else if (!strcmp(argv[i], "--key-file"))
            key_file = v;
        else if (!strcmp(argv[i], "--next"))
            next = v;
        else if (!strcmp(argv[i], "--tls-cert"))
            o.tls_cert_file = v;
        else if (!strcmp(argv[i], "--tls-key"))
            o.tls_key_file = v;
        else if (!strcmp(argv[i], "--tls-ca"))
            o.tls_ca_file = v;
        else if (!strcmp(argv[i], "--tls-peer-name"))
            o.tls_peer_name = v;
        else
            goto usage;
        i++;
    }
    if (!listen_addr || !peer_addr || !key_file ||
        (!o.insecure && (!o.tls_cert_file || !o.tls_key_file)) ||
        (o.insecure && (o.tls_cert_file || o.tls_key_file || o.tls_ca_file))) {
    usage:
        fprintf(stderr,
                "usage: %s --listen tcp://IP:PORT --peer-listen tcp://IP:PORT "
                "--key-file FILE [--next PEER_ADDR,CLIENT_ADDR]\n"
                "       (--tls-cert FILE --tls-key FILE [--tls-ca FILE] [--tls-peer-name NAME] "
                "| --insecure)\n",
                argv[0]);
        return 2;
    }
    if ((r = baton_session_load_key(key_file, key, sizeof(key), &klen)) < 0) {
        fprintf(stderr, "baton-game-server: key file %s: %s%s\n", key_file, strerror(-r),
                r == -EACCES   ? " (others may read or write it: chmod 600)"
                : r == -EINVAL ? " (shorter than 16 bytes, or longer than 256)"
                               : "");
        return 1;
    }
    if ((lfd = baton_session_listen(listen_addr, 0)) < 0 ||
        (pfd = baton_session_listen(peer_addr, 0)) < 0) {
        fprintf(stderr, "baton-game-server: listen on %s: %s\n", lfd < 0 ? listen_addr : peer_addr,
                strerror(-(lfd < 0 ? lfd : pfd)));
        return 1;
    }
    o.key = key;
    o.key_len = klen;
    if ((r = baton_session_server_new(&o, lfd, pfd, &srv)) < 0) {
        /* The reason, for bad options, went to on_log(). */
        fprintf(stderr, "baton-game-server: cannot start: %s\n", baton_session_strerror(r));
        return 1;
    }
    if (next) {
        char pa[256];
        const char *comma = strchr(next, ',');
        if (!comma || (size_t)(comma - next) >= sizeof(pa))
            return fprintf(stderr, "baton-game-server: --next PEER_ADDR,CLIENT_ADDR\n"), 2;
        memcpy(pa, next, (size_t)(comma - next));
        pa[comma - next] = 0;
        if (baton_session_server_add_peer(srv, "next", pa, comma + 1) < 0)
            return fprintf(stderr, "baton-game-server: %s\n", baton_session_server_last_error(srv)),
                   2;
    }
    sigemptyset(&ss);
    sigaddset(&ss, SIGUSR1);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigprocmask(SIG_BLOCK, &ss, NULL);
    sfd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    for (;;) {
        struct pollfd p[2] = {{baton_session_server_fd(srv), POLLIN, 0}, {sfd, POLLIN, 0}};
        struct signalfd_siginfo si;
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            baton_session_server_dispatch(srv);
        if (!p[1].revents || read(sfd, &si, sizeof(si)) != sizeof(si))
            continue;
        if (si.ssi_signo != SIGUSR1)
            break;
        clock_gettime(CLOCK_MONOTONIC, &g.move_start);
        r = baton_session_move(srv, "next", NULL, 0);
        if (r < 0)
            fprintf(stderr, "baton-game-server: move: %s\n", baton_session_server_last_error(srv));
        else if (r == 0)
            printf("moved 0 failed 0 ms 0\n");
    }
    baton_session_server_free(srv);
    close(lfd);
    close(pfd);
    close(sfd);
    return 0;
}
