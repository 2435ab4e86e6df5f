/* SPDX-License-Identifier: MIT */
/*
 * TLS on the session layer's links, attacked.
 *
 *  1. A move with TLS on both links (certificates everywhere), verified by
 *     the address's IP: works, nothing lost.
 *  2. Clients that must refuse the server: an authority that did not sign
 *     its certificate, a name it is not valid for, an IP it is not valid
 *     for; a plain client at a TLS server and a TLS client at a plain one.
 *     Each ends with a clear error within its timeout, none hangs, the
 *     server holds no session for it.
 *  3. A next server whose certificate another authority signed: the move
 *     is refused (-EACCES), every session stays and works.
 *  4. A proxy that flips one byte of the server's stream after the
 *     handshake, on a client link: that link breaks, the client never
 *     sees a corrupted message, the other sessions are untouched.
 *  5. The same on the peer link during a move: the link breaks, and every
 *     session is at one server or the other, working, with nothing lost,
 *     repeated or reordered.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "session-util.h"

#define N 8

static struct ts_server a, b;
static struct ts_server *srvs[] = {&a, &b, NULL};
static struct ts_client cl[N];
static int ncl;

static bool answered(void *arg)
{
    for (int i = 0; i < ncl; i++)
        if (cl[i].c && !cl[i].lost && (cl[i].got < cl[i].sent || cl[i].got == 0))
            return false;
    return true;
}

static bool client_over(void *arg)
{
    struct ts_client *c = arg;

    return c->lost != 0;
}

static bool one_copy_each(void *arg)
{
    return baton_session_server_count(a.srv) + baton_session_server_count(b.srv) == N;
}

static bool a_closed(void *arg)
{
    return a.closed > 0;
}

static bool moves_over(void *arg)
{
    return a.moved + a.move_failed >= *(int *)arg;
}

static void send_all(int rounds)
{
    for (int k = 0; k < rounds; k++)
        for (int i = 0; i < ncl; i++)
            if (cl[i].c && !cl[i].lost)
                ts_client_send(&cl[i]);
}

static void clients_start(const char *addr, int n)
{
    ncl = n;
    for (int i = 0; i < n; i++) {
        ts_client_start(&cl[i], addr);
        ts_client_send(&cl[i]);
    }
    T_ASSERT(ts_pump_until(srvs, cl, ncl, answered, NULL, T_TIMEOUT));
}

static void clients_stop(void)
{
    for (int i = 0; i < ncl; i++)
        ts_client_stop(&cl[i]);
    ncl = 0;
}

/* One client that must fail to open: its error, after at most its
 * timeout. */
static int refused_client(const char *addr)
{
    struct ts_client c;

    ts_client_timeout_ms = 2000;
    ts_client_start(&c, addr);
    T_ASSERT(ts_pump_until(srvs, &c, 1, client_over, &c, T_TIMEOUT));
    T_EQ(c.got, 0);
    t_log("refused as it should be: %s (%s)", baton_session_strerror(c.lost_err),
          baton_session_client_last_error(c.c));
    ts_client_stop(&c);
    ts_client_timeout_ms = 0;
    return c.lost_err;
}

static void servers_start(void)
{
    ts_server_start(&a, "A", TS_KEY);
    ts_server_start(&b, "B", TS_KEY);
    ts_server_peer(&a, "b", &b);
    ts_server_peer(&b, "a", &a);
}

static void servers_stop(void)
{
    ts_server_stop(&a);
    ts_server_stop(&b);
}

/* ---- a byte-flipping proxy, in a child process ---- */

struct flip {
    int port;   /* the proxy connects to 127.0.0.1:port */
    int to_cli; /* flip in the stream towards the connecting side (1) or
                 * towards the listening side (0) */
    long after; /* the offset of the byte flipped, in that stream */
};

static int flip_listen(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    int fd = T_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));

    T_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    T_SYS(listen(fd, 8));
    return fd;
}

/* Listen on a port of its own (told first), forward between the first
 * connection and the target until either side ends, and flip one byte;
 * then tell whether it did. */
static int flip_main(int chan, void *arg)
{
    const struct flip *f = arg;
    int lfd = flip_listen(), c;

    long seen[2] = {0, 0}; /* [0] towards the server, [1] towards the client */
    bool flipped = false;
    char buf[16384];
    int one = 1, s;

    t_tell(chan, t_port(lfd));
    c = T_SYS(accept(lfd, NULL, NULL));
    s = (int)T_OK(t_tcp_connect(AF_INET, f->port, T_TIMEOUT));
    /* Forward each piece as it comes, as a router would, not as Nagle
     * would. */
    T_SYS(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
    T_SYS(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));

    for (;;) {
        struct pollfd p[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
        if (poll(p, 2, 30000) <= 0)
            break;
        for (int i = 0; i < 2; i++) {
            int from = i == 0 ? c : s, to = i == 0 ? s : c, dir = i;
            ssize_t n;
            if (!p[i].revents)
                continue;
            n = read(from, buf, sizeof(buf));
            if (n <= 0)
                goto out;
            if (!flipped && dir == f->to_cli && seen[dir] + n > f->after) {
                buf[f->after - seen[dir]] ^= 0x20;
                flipped = true;
            }
            seen[dir] += n;
            if (t_write_all(to, buf, (size_t)n) < 0)
                goto out;
        }
    }
out:
    t_tell(chan, flipped);
    close(c);
    close(s);
    return 0;
}

/* ---- the cases ---- */

static void case_move(void)
{
    int want = N;

    t_log("1. a move with certificates on both links, verified by IP");
    ts_tls = TS_CERT;
    ts_tls_name = NULL;
    servers_start();
    clients_start(a.addr, N);
    /* Each client's session with A left it a ticket, which B (the same
     * deployment: the same peer key) takes: no certificates the second
     * time. */
    ts_log_match = "TLS session resumed";
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), N);
    T_ASSERT(ts_pump_until(srvs, cl, ncl, moves_over, &want, T_TIMEOUT));
    T_EQ(a.moved, N);
    T_EQ(ts_client_log_matched, N);
    ts_log_match = NULL;
    send_all(5);
    T_ASSERT(ts_pump_until(srvs, cl, ncl, answered, NULL, T_TIMEOUT));
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].errors, 0);
        T_EQ(cl[i].lost, 0);
        T_EQ(cl[i].moves, 1);
        T_ASSERT(!strcmp(baton_session_client_address(cl[i].c), b.addr));
    }
    T_EQ(a.errors + b.errors, 0);
    clients_stop();
    servers_stop();
}

static void case_client_refuses(void)
{
    char foreign[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
    int e;

    t_log("2. clients refuse servers they cannot verify");
    ts_tls = TS_PSK;
    ts_tls_name = NULL;
    servers_start();

    /* Another authority. */
    ts_tls_make_foreign("foreign", "session.test 127.0.0.1");
    snprintf(foreign, sizeof(foreign), "%s/foreign/ca.pem", ts_tls_dir());
    ts_tls_ca = foreign;
    T_EQ(refused_client(a.addr), -EACCES);
    ts_tls_ca = NULL;

    /* A name the certificate is not valid for. */
    ts_tls_name = "elsewhere.test";
    T_EQ(refused_client(a.addr), -EACCES);
    ts_tls_name = NULL;
    servers_stop();

    /* An IP the certificate is not valid for: servers presenting one
     * made for a name only. */
    ts_tls_make("nameonly", "session.test");
    snprintf(cert, sizeof(cert), "%s/nameonly.pem", ts_tls_dir());
    snprintf(key, sizeof(key), "%s/nameonly.key", ts_tls_dir());
    ts_tls_cert = cert;
    ts_tls_key = key;
    servers_start();
    T_EQ(refused_client(a.addr), -EACCES);
    /* ... which the deployment's name verifies. */
    ts_tls_name = "session.test";
    clients_start(a.addr, 1);
    T_EQ(cl[0].lost, 0);
    clients_stop();
    ts_tls_cert = ts_tls_key = NULL;

    /* Plain at TLS. */
    ts_tls = TS_PLAIN;
    e = refused_client(a.addr);
    T_ASSERT(e == -ECONNRESET || e == -EPROTO || e == -ECONNABORTED);
    servers_stop();

    /* TLS at plain. */
    servers_start();
    ts_tls = TS_PSK;
    e = refused_client(a.addr);
    T_ASSERT(e == -EPROTO || e == -ECONNRESET);
    servers_stop();
    /* Both servers of each pair ended with no session left behind. */
    T_EQ(a.opened, 0);
}

static void case_peer_refused(void)
{
    char cert[PATH_MAX], key[PATH_MAX];

    t_log("3. a next server with a certificate of another authority");
    ts_tls = TS_CERT;
    ts_tls_name = "session.test";
    ts_server_start(&a, "A", TS_KEY);
    snprintf(cert, sizeof(cert), "%s/foreign/server.pem", ts_tls_dir());
    snprintf(key, sizeof(key), "%s/foreign/server.key", ts_tls_dir());
    ts_tls_cert = cert;
    ts_tls_key = key;
    ts_server_start(&b, "B", TS_KEY);
    ts_tls_cert = ts_tls_key = NULL;
    ts_server_peer(&a, "b", &b);
    clients_start(a.addr, N);
    T_EQ(baton_session_move(a.srv, "b", NULL, 0), N);
    T_ASSERT(ts_pump_until(srvs, cl, ncl, moves_over, &(int){N}, T_TIMEOUT));
    T_EQ(a.moved, 0);
    T_EQ(a.last_move_err, -EACCES);
    t_log("A: %s", baton_session_server_last_error(a.srv));
    T_ASSERT(strstr(baton_session_server_last_error(a.srv), "TLS"));
    T_EQ(baton_session_server_count(a.srv), N);
    T_EQ(baton_session_server_count(b.srv), 0);
    send_all(5);
    T_ASSERT(ts_pump_until(srvs, cl, ncl, answered, NULL, T_TIMEOUT));
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].errors, 0);
        T_EQ(cl[i].lost, 0);
    }
    clients_stop();
    servers_stop();
}

static void case_flip_client(void)
{
    struct flip f = {.to_cli = 1, .after = 3000};
    struct t_proc proxy;
    char addr[64];

    t_log("4. one byte flipped on a client link after the handshake");
    ts_tls = TS_PSK;
    ts_tls_name = "session.test";
    servers_start();
    clients_start(a.addr, N - 1);
    f.port = atoi(strrchr(a.addr, ':') + 1);
    t_spawn(&proxy, flip_main, &f);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%lld", t_hear(proxy.chan, T_TIMEOUT));
    /* The last client goes through the proxy; the handshake is well under
     * 3000 bytes of the server's stream, so the flip lands in a record of
     * session data, which the server sends plenty of. */
    ts_client_start(&cl[N - 1], addr);
    ncl = N;
    /* One message at a time on the tampered link, each answered before
     * the next, so that each answer is a record of its own. */
    for (int k = 0; k < 1000 && !cl[N - 1].lost; k++) {
        if (cl[N - 1].got == cl[N - 1].sent)
            send_all(1);
        ts_pump(srvs, cl, ncl, 5);
    }
    T_ASSERT(ts_pump_until(srvs, cl + N - 1, 1, client_over, &cl[N - 1], T_TIMEOUT));
    T_EQ(t_hear(proxy.chan, T_TIMEOUT), 1);
    T_EQ(t_proc_wait(&proxy, T_TIMEOUT), 0);
    t_log("the tampered link ended: %s (%s)", baton_session_strerror(cl[N - 1].lost_err),
          baton_session_client_last_error(cl[N - 1].c));
    T_ASSERT(strstr(baton_session_client_last_error(cl[N - 1].c), "TLS"));
    t_log("it had sent %llu and seen %llu replies (id %s)", (unsigned long long)cl[N - 1].sent,
          (unsigned long long)cl[N - 1].got, baton_session_client_id(cl[N - 1].c));
    /* It saw every message in order up to the break, and nothing else. */
    T_EQ(cl[N - 1].errors, 0);
    T_ASSERT(cl[N - 1].got > 0);
    /* The server ended that session; the others work on. */
    T_ASSERT(ts_pump_until(srvs, cl, 0, a_closed, NULL, T_TIMEOUT));
    T_EQ(a.closed, 1);
    T_EQ(a.last_close_err, -ECONNRESET);
    send_all(5);
    T_ASSERT(ts_pump_until(srvs, cl, ncl, answered, NULL, T_TIMEOUT));
    for (int i = 0; i < N - 1; i++) {
        T_EQ(cl[i].errors, 0);
        T_EQ(cl[i].lost, 0);
    }
    T_EQ(a.errors, 0);
    clients_stop();
    servers_stop();
}

static void case_flip_peer(void)
{
    struct flip f = {.to_cli = 0};
    struct t_proc proxy;
    char paddr[64];
    int moved;

    t_log("5. one byte flipped on the peer link during a move");
    ts_tls = TS_CERT;
    ts_tls_name = "session.test";
    servers_start();
    /* A reaches B's peer listener through the proxy: flip a byte of what A
     * sends, past the TLS handshake (about 1,100 bytes), in the offer or
     * the exports (a clean move of these sessions sends about 2,200). */
    f.port = atoi(strrchr(b.paddr, ':') + 1);
    f.after = 2000;
    t_spawn(&proxy, flip_main, &f);
    snprintf(paddr, sizeof(paddr), "tcp://127.0.0.1:%lld", t_hear(proxy.chan, T_TIMEOUT));
    T_OK(baton_session_server_add_peer(a.srv, "bp", paddr, b.addr));
    clients_start(a.addr, N);
    send_all(20);
    T_ASSERT(ts_pump_until(srvs, cl, ncl, answered, NULL, T_TIMEOUT));
    T_EQ(baton_session_move(a.srv, "bp", NULL, 0), N);
    T_ASSERT(ts_pump_until(srvs, cl, ncl, moves_over, &(int){N}, T_TIMEOUT));
    T_EQ(t_hear(proxy.chan, T_TIMEOUT), 1);
    T_EQ(t_proc_wait(&proxy, T_TIMEOUT), 0);
    moved = (int)a.moved;
    t_log("moved %d of %d before the link broke; A: %s; B: %s", moved, N,
          baton_session_server_last_error(a.srv), baton_session_server_last_error(b.srv));
    /* Every session is at one server or the other and works. A session
     * whose EXPORT got through before the break may have gone to B (its
     * client got RESUMED there) while A, with no TAKEN, called its move
     * off: A lets go of it when its client closes the old link. */
    T_ASSERT(ts_pump_until(srvs, cl, ncl, one_copy_each, NULL, T_TIMEOUT));
    T_EQ((int)(baton_session_server_count(a.srv) + baton_session_server_count(b.srv)), N);
    send_all(10);
    T_ASSERT(ts_pump_until(srvs, cl, ncl, answered, NULL, T_TIMEOUT));
    for (int i = 0; i < N; i++) {
        T_EQ(cl[i].errors, 0);
        T_EQ(cl[i].lost, 0);
    }
    T_EQ(a.errors + b.errors, 0);
    clients_stop();
    servers_stop();
}

/* A certificate chain of about 38 KB, and a client whose socket takes 4 KB
 * at a time: the server's handshake must wait to write, many times, and go
 * on each time the socket is writable (it stalled there, spinning on
 * EPOLLOUT, until the handshake deadline). The client is OpenSSL itself,
 * on a socket with a small receive buffer. */
static void case_big_chain(void)
{
    char chain[PATH_MAX], cmd[3 * PATH_MAX];
    int small = 4096, fd, r = 0;
    SSL_CTX *ctx;
    SSL *ssl;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};

    t_log("6. a server handshake that must wait to write: a 38 KB chain, a slow reader");
    snprintf(chain, sizeof(chain), "%s/bigchain.pem", ts_tls_dir());
    snprintf(cmd, sizeof(cmd),
             "cp %s/server.pem %s && for i in $(seq 60); do cat %s/ca.pem >> %s; done",
             ts_tls_dir(), chain, ts_tls_dir(), chain);
    T_EQ(system(cmd), 0);
    ts_tls = TS_PSK;
    ts_tls_cert = chain;
    ts_handshake_timeout_ms = 60000; /* the deadline must not be what ends it */
    ts_server_start(&a, "A", TS_KEY);
    ts_tls_cert = NULL;
    ts_handshake_timeout_ms = 0;
    /* The connections it accepts send 4 KB at a time too. */
    T_SYS(setsockopt(a.lfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)));

    fd = T_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    T_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)));
    sa.sin_port = htons((uint16_t)atoi(strrchr(a.addr, ':') + 1));
    T_SYS(connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
    T_SYS(fcntl(fd, F_SETFL, O_NONBLOCK));
    ctx = SSL_CTX_new(TLS_client_method());
    T_ASSERT(ctx);
    ssl = SSL_new(ctx);
    T_ASSERT(ssl && SSL_set_fd(ssl, fd) == 1);
    SSL_set_connect_state(ssl);
    /* Read a little at a time, letting the server run between reads. */
    for (int i = 0; i < 20000; i++) {
        r = SSL_do_handshake(ssl);
        if (r == 1)
            break;
        T_ASSERT(SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ);
        ts_pump(srvs, NULL, 0, 1);
    }
    T_EQ(r, 1);
    t_log("handshake done through a %d-byte window", small);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    ts_server_stop(&a);
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    case_big_chain();
    case_move();
    case_client_refuses();
    case_peer_refused();
    case_flip_client();
    case_flip_peer();
    return t_done();
}
