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
    size_t moving, moved, failed;
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

static void on_moved(void *ctx, baton_session *s, int err)
{
    struct game *g = ctx;

    if (err == 0) {
        free(baton_session_data(s));
        g->moved++;
    } else {
        g->failed++;
    }
    if (g->moving && g->moved + g->failed == g->moving) {
        printf("moved %zu failed %zu ms %.1f\n", g->moved, g->failed, ms_since(&g->move_start));
        g->moving = 0;
    }
}

static void on_log(void *ctx, int level, const char *msg)
{
    if (level <= BATON_SESSION_LOG_WARNING)
        fprintf(stderr, "baton-game-server: %s\n", msg);
}

static int listen_on(const char *addr)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(addr, ':');
    int one = 1, fd;

    if (strncmp(addr, "tcp://", 6) != 0 || !colon || (size_t)(colon - addr - 6) >= sizeof(host))
        return -1;
    memcpy(host, addr + 6, (size_t)(colon - addr - 6));
    host[colon - addr - 6] = 0;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int read_key(const char *path, char *key, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -1;
    n = read(fd, key, cap);
    close(fd);
    while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r'))
        n--;
    return (int)n;
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
        .log = on_log,
    };
    baton_session_server *srv;
    char key[256];
    sigset_t ss;
    int lfd, pfd, sfd, r, klen;

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
    klen = read_key(key_file, key, sizeof(key));
    lfd = listen_on(listen_addr);
    pfd = listen_on(peer_addr);
    if (klen < BATON_SESSION_KEY_MIN || lfd < 0 || pfd < 0) {
        fprintf(stderr, "baton-game-server: bad key file or cannot listen: %s\n", strerror(errno));
        return 1;
    }
    o.key = key;
    o.key_len = (size_t)klen;
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
        g.moved = g.failed = 0;
        r = baton_session_move(srv, "next", NULL, 0);
        if (r < 0)
            fprintf(stderr, "baton-game-server: move: %s\n", baton_session_server_last_error(srv));
        else if (r == 0)
            printf("moved 0 failed 0 ms 0\n");
        g.moving = r > 0 ? (size_t)r : 0;
    }
    baton_session_server_free(srv);
    close(lfd);
    close(pfd);
    close(sfd);
    return 0;
}
