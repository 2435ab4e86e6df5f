/* SPDX-License-Identifier: MIT */
/*
 * run-listen-fds-server - a small HTTP/1.1 server for `baton run
 * --listen-fds` tests, built with -static and without libsystemd: it takes
 * its listeners as systemd passes them (LISTEN_FDS from fd 3, LISTEN_PID
 * naming this process, LISTEN_FDNAMES) and says READY=1 on NOTIFY_SOCKET
 * by itself. Every response body is "pid P generation G" (G from
 * BATON_GENERATION), as baton-load counts them.
 *
 *   run-listen-fds-server [--die STATUS | --never-ready | --notify]
 *
 * --die STATUS   exit with STATUS before saying READY=1
 * --never-ready  serve, but never say READY=1
 * --notify       only send READY=1 to $NOTIFY_SOCKET and exit (a stranger's
 *                notification, which the supervisor must ignore)
 *
 * On SIGTERM it stops accepting and drains: each connection's next
 * response says "Connection: close" and ends it; a connection idle for
 * DRAIN_IDLE_MS is closed; it exits 0 when none is left. Poll and
 * non-blocking accept: the listeners are shared with other copies.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTEN    8
#define MAX_CONNS     1000
#define BUF_MAX       8192
#define DRAIN_IDLE_MS 10000

struct conn {
    int fd;
    size_t in_len, out_len, out_off;
    bool close_after; /* the response being written ends the connection */
    long long last_ms;
    char in[BUF_MAX], out[512];
};

static volatile sig_atomic_t stopping;
static struct conn conns[MAX_CONNS];
static int nconns;
static char body[96];

static void on_term(int sig)
{
    stopping = 1;
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void __attribute__((format(printf, 1, 2), noreturn)) die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "run-listen-fds-server: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* The listeners systemd's way; refuses anything that is not meant for us. */
static int take_listeners(int *fds)
{
    const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    int count;

    if (!pid || !n || atol(pid) != (long)getpid())
        die("LISTEN_PID is %s, not our pid", pid ? pid : "unset");
    count = atoi(n);
    if (count < 1 || count > MAX_LISTEN)
        die("LISTEN_FDS=%s", n);
    if (!names || strncmp(names, "web", 3) != 0 || (names[3] && names[3] != ':'))
        die("LISTEN_FDNAMES=%s does not start with web", names ? names : "(unset)");
    for (int i = 0; i < count; i++) {
        int fd = 3 + i, acc = 0;
        socklen_t l = sizeof(acc);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) < 0 || !acc)
            die("fd %d is not a listening socket", fd);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        fds[i] = fd;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return count;
}

/* READY=1 to $NOTIFY_SOCKET (a path or "@abstract"). */
static void notify_ready(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    int fd;

    if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
        die("NOTIFY_SOCKET=%s", path ? path : "(unset)");
    memcpy(sa.sun_path, path, strlen(path));
    if (path[0] == '@')
        sa.sun_path[0] = 0;
    len = offsetof(struct sockaddr_un, sun_path) + strlen(path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, "READY=1", 7, MSG_NOSIGNAL, (struct sockaddr *)&sa, len) != 7)
        die("sendto(NOTIFY_SOCKET): %s", strerror(errno));
    close(fd);
}

static void conn_close(int i)
{
    close(conns[i].fd);
    conns[i] = conns[--nconns];
}

/* Answer every whole request in the buffer; false when the connection
 * is to be closed now. */
static bool conn_requests(struct conn *c)
{
    char *end;

    while (c->out_len == 0 && (end = memmem(c->in, c->in_len, "\r\n\r\n", 4))) {
        size_t used = (size_t)(end - c->in) + 4;
        bool close_req = memmem(c->in, used, "Connection: close", 17) != NULL;
        c->close_after = close_req || stopping;
        c->out_len =
            (size_t)snprintf(c->out, sizeof(c->out),
                             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: %zu\r\n%s\r\n%s",
                             strlen(body), c->close_after ? "Connection: close\r\n" : "", body);
        c->out_off = 0;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
    return c->in_len < sizeof(c->in);
}

/* Read and write what we can; false when the connection is done. */
static bool conn_io(struct conn *c, short revents)
{
    if (revents & POLLIN) {
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return false;
        if (n > 0) {
            c->in_len += (size_t)n;
            c->last_ms = now_ms();
        }
    }
    if (!conn_requests(c))
        return false;
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR;
        c->out_off += (size_t)n;
    }
    if (c->out_len && c->close_after)
        return false;
    c->out_len = c->out_off = 0;
    return conn_requests(c);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (nconns == MAX_CONNS) {
            close(fd);
            continue;
        }
        conns[nconns] = (struct conn){.fd = fd, .last_ms = now_ms()};
        nconns++;
    }
}

/* SIGTERM is blocked but while ppoll() waits, so that one that arrives
 * between our look at `stopping` and the wait still ends the wait. */
static void serve(int *lfds, int nl, const sigset_t *waitmask)
{
    static struct pollfd p[MAX_LISTEN + MAX_CONNS];
    struct timespec tick = {.tv_nsec = 100 * 1000000};
    bool drained = false;

    for (;;) {
        int np = 0;
        if (stopping && !drained) {
            /* Stop accepting: our copies go; the socket lives on in the
             * supervisor and the new program. */
            for (int i = 0; i < nl; i++)
                close(lfds[i]);
            nl = 0;
            drained = true;
            for (int i = 0; i < nconns;)
                if (!conn_io(&conns[i], 0))
                    conn_close(i);
                else
                    i++;
        }
        if (stopping && nconns == 0)
            exit(0);
        for (int i = 0; i < nl; i++)
            p[np++] = (struct pollfd){.fd = lfds[i], .events = POLLIN};
        for (int i = 0; i < nconns; i++)
            p[np++] =
                (struct pollfd){.fd = conns[i].fd, .events = conns[i].out_len ? POLLOUT : POLLIN};
        if (ppoll(p, (nfds_t)np, stopping ? &tick : NULL, waitmask) < 0)
            continue;
        for (int i = 0; i < nl; i++)
            if (p[i].revents)
                accept_all(lfds[i]);
        /* Connections from the end, so that closing one (which moves the
         * last into its slot) leaves the ones still to visit in place. */
        for (int i = np - nl - 1; i >= 0; i--) {
            short re = p[nl + i].revents;
            if (i >= nconns || conns[i].fd != p[nl + i].fd)
                continue;
            if ((re && !conn_io(&conns[i], re)) ||
                (stopping && now_ms() - conns[i].last_ms > DRAIN_IDLE_MS))
                conn_close(i);
        }
    }
}

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_term};
    const char *gen = getenv("BATON_GENERATION");
    sigset_t term, waitmask;
    int lfds[MAX_LISTEN], nl;

    if (argc == 2 && !strcmp(argv[1], "--notify")) {
        notify_ready();
        return 0;
    }
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    nl = take_listeners(lfds);
    if (argc == 3 && !strcmp(argv[1], "--die"))
        return atoi(argv[2]);
    snprintf(body, sizeof(body), "pid %d generation %s\n", (int)getpid(), gen ? gen : "0");
    if (argc == 1)
        notify_ready();
    else if (argc != 2 || strcmp(argv[1], "--never-ready"))
        die("usage: [--die STATUS | --never-ready | --notify]");
    serve(lfds, nl, &waitmask);
    return 0;
}
