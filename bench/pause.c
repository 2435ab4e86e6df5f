/* SPDX-License-Identifier: MIT */
/*
 * bench/pause: what a client of baton-echo sees through upgrades, and
 * where that time goes.
 *
 *   baton-bench-pause [--upgrades N] [--interval-us N] [--bin DIR] [--standby]
 *
 * Part 1, the client-visible pause: one unix-socket and one TCP loopback
 * connection to baton-echo, each sending a line every --interval-us
 * (default 500) once the previous one came back, through N upgrades
 * (default 20). Per upgrade and connection: the largest gap between two
 * replies and the longest wait for one reply.
 *
 * Part 2, trigger to the new process answering, with no connection open:
 * N upgrades while a probe opens a fresh connection every --probe-us
 * (default 500) and sends a line. Beside it, in the same run, two
 * baselines: a bare exec of the same binary (`baton-echo --help`, spawn
 * to exit) and a fresh start (baton-echo in an empty directory, spawn to
 * its first answer to the same probe).
 *
 * The triggers rotate through the three ways a successor comes to be: a
 * second copy started here, SIGHUP to the owner (its library starts the
 * successor) and `baton upgrade DIR`.
 *
 * With --standby, baton-echo runs with --standby (BATON_STANDBY): SIGHUP
 * and `baton upgrade` wake a successor parked before its main() instead
 * of starting one; before each such trigger this waits until the owner's
 * standby is parked (a child of it blocked in recvfrom(2), as
 * /proc/PID/syscall says). The copy started here is a fresh exec either
 * way.
 *
 * Where the time goes comes from the servers themselves: with
 * BATON_EXAMPLE_TRACE=FILE the example skeleton (examples/server.c)
 * appends "PID MICROSECONDS EVENT" lines at each step, on CLOCK_MONOTONIC,
 * the clock this program reads too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_EVENTS 65536
#define WAIT_US    (10 * 1000000LL) /* the longest any step may take */
#define SETTLE_US  (150 * 1000LL)   /* steady traffic between upgrades */

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Stops every child (every server is one: we are their subreaper) and
 * exits: a failed run leaves nothing behind. */
static void die(const char *what)
{
    char path[64];
    FILE *f;
    int pid;

    fprintf(stderr, "pause: %s\n", what);
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    f = fopen(path, "re");
    while (f && fscanf(f, "%d", &pid) == 1)
        kill(pid, SIGKILL);
    if (f)
        fclose(f);
    exit(1);
}

/* ---- the servers' trace ------------------------------------------------ */

struct event {
    int pid;
    int64_t us;
    char name[24];
};

static struct event *ev;
static size_t nev;
static int trace_fd = -1;
static char trace_buf[65536];
static size_t trace_len;

/* Reads what the servers appended since last time. */
static void trace_poll(void)
{
    ssize_t n;

    while ((n = read(trace_fd, trace_buf + trace_len, sizeof trace_buf - trace_len - 1)) > 0) {
        char *p = trace_buf, *nl;

        trace_len += n;
        trace_buf[trace_len] = 0;
        while ((nl = memchr(p, '\n', trace_buf + trace_len - p))) {
            struct event e;
            long long us;

            *nl = 0;
            if (nev < MAX_EVENTS && sscanf(p, "%d %lld %23s", &e.pid, &us, e.name) == 3) {
                e.us = us;
                ev[nev++] = e;
            }
            p = nl + 1;
        }
        trace_len -= p - trace_buf;
        memmove(trace_buf, p, trace_len);
    }
}

/* The first event name of pid (any pid if 0) at or after since; -1 if none. */
static int64_t trace_find(int pid, const char *name, int64_t since, int *ret_pid)
{
    for (size_t i = 0; i < nev; i++)
        if ((!pid || ev[i].pid == pid) && ev[i].us >= since && !strcmp(ev[i].name, name)) {
            if (ret_pid)
                *ret_pid = ev[i].pid;
            return ev[i].us;
        }
    return -1;
}

/* The longest time pid spent taking connections (from an "inbound" event
 * to its "inbound-done") since since: its event loop serves nothing
 * meanwhile. */
static int64_t taking_max(int pid, int64_t since)
{
    int64_t max = -1, begin = -1;

    for (size_t i = 0; i < nev; i++) {
        if (ev[i].pid != pid || ev[i].us < since)
            continue;
        if (!strcmp(ev[i].name, "inbound"))
            begin = ev[i].us;
        else if (!strcmp(ev[i].name, "inbound-done") && begin >= 0) {
            if (ev[i].us - begin > max)
                max = ev[i].us - begin;
            begin = -1;
        }
    }
    return max;
}

/* ---- processes --------------------------------------------------------- */

static char bin[PATH_MAX / 2], top[64], dir[80], sock[100];
static bool standby; /* --standby */

static pid_t spawn(char *const argv[], const char *log)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int r;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return r == 0 ? pid : -1;
}

static pid_t start_echo(const char *d, bool tcp)
{
    char path[PATH_MAX], log[256], unix_addr[256];
    char *argv[10] = {path, "--dir", (char *)d, "--listen", unix_addr};
    int n = 5;

    snprintf(path, sizeof path, "%s/baton-echo", bin);
    snprintf(log, sizeof log, "%s/echo.log", top);
    snprintf(unix_addr, sizeof unix_addr, "unix:%s/echo.sock", d);
    if (tcp) {
        argv[n++] = "--listen";
        argv[n++] = "tcp://127.0.0.1:0";
    }
    if (standby)
        argv[n++] = "--standby";
    argv[n] = NULL;
    return spawn(argv, log);
}

/* Children of ours, and orphans handed to us as the subreaper. */
static void reap(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static bool pid_alive(pid_t pid)
{
    reap();
    return kill(pid, 0) == 0;
}

/* ---- clients ----------------------------------------------------------- */

struct client {
    const char *kind;
    int fd;
    uint64_t seq;      /* of the line waiting for its reply; 0: none */
    int64_t sent;      /* when it was sent */
    int64_t next_send; /* not before */
    int64_t last_reply;
    bool waiting; /* for the reply to line seq */
    char in[64];
    size_t in_len;
    /* Over the current window. */
    int64_t max_gap, max_wait, wait_sent;
    bool broken;
};

static struct client cl[2];
static int ncl;
static int64_t interval_us = 500, probe_us = 500;
static bool verbose, keep;

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_tcp(int port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* The TCP port baton-echo got, from the owner record. */
static int echo_port(void)
{
    char path[256], line[512];
    int port = -1;
    FILE *f;

    snprintf(path, sizeof path, "%s/owner", dir);
    f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        char *c = strrchr(line, ':');
        if (!strncmp(line, "fd echo1 tcp ", 13) && c)
            port = atoi(c + 1);
    }
    fclose(f);
    return port;
}

static void client_window_reset(void)
{
    for (int i = 0; i < ncl; i++)
        cl[i].max_gap = cl[i].max_wait = cl[i].wait_sent = 0;
}

static void client_send(struct client *c, int64_t now)
{
    char line[32];
    int n = snprintf(line, sizeof line, "%llu\n", (unsigned long long)++c->seq);

    if (send(c->fd, line, n, MSG_NOSIGNAL) != n) {
        c->broken = true;
        return;
    }
    c->sent = now;
    c->waiting = true;
}

static void client_read(struct client *c)
{
    ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, MSG_DONTWAIT);
    int64_t now = now_us();
    char *nl;

    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            c->broken = true;
        return;
    }
    c->in_len += n;
    while ((nl = memchr(c->in, '\n', c->in_len))) {
        unsigned long long got = strtoull(c->in, NULL, 10);

        if (!c->waiting || got != c->seq) {
            fprintf(stderr, "pause: %s: reply %llu to line %llu\n", c->kind, got,
                    (unsigned long long)c->seq);
            c->broken = true;
        }
        if (c->last_reply && now - c->last_reply > c->max_gap)
            c->max_gap = now - c->last_reply;
        if (now - c->sent > c->max_wait) {
            c->max_wait = now - c->sent;
            c->wait_sent = c->sent;
        }
        c->last_reply = now;
        c->waiting = false;
        c->next_send = c->sent + interval_us;
        c->in_len -= nl + 1 - c->in;
        memmove(c->in, nl + 1, c->in_len);
    }
}

/* ---- the probe: a fresh connection every probe_us ---------------------- */

struct probe {
    bool on;
    char path[108];
    int fd;
    int64_t next, sent;
    int64_t first_after; /* first reply at or after this time */
    int64_t first_reply;
};

static struct probe pr = {.fd = -1};

static void probe_step(int64_t now)
{
    char buf[16];

    if (!pr.on || pr.fd >= 0 || now < pr.next)
        return;
    pr.next = now + probe_us;
    pr.fd = connect_unix(pr.path);
    if (pr.fd < 0)
        return;
    if (send(pr.fd, "p\n", 2, MSG_NOSIGNAL) != 2) {
        close(pr.fd);
        pr.fd = -1;
    }
    pr.sent = now;
    (void)buf;
}

static void probe_read(void)
{
    char buf[16];
    ssize_t n = recv(pr.fd, buf, sizeof buf, MSG_DONTWAIT);

    if (n < 0 && errno == EAGAIN)
        return;
    if (n > 0 && pr.first_reply < 0 && pr.sent >= 0)
        pr.first_reply = now_us();
    close(pr.fd);
    pr.fd = -1;
}

/* ---- the loop ---------------------------------------------------------- */

/* Serves the clients and the probe until done() or the deadline. */
static bool run_until(bool (*done)(void *), void *arg, int64_t deadline)
{
    for (;;) {
        struct pollfd p[3];
        int64_t now = now_us(), wake = now + 1000;
        int n = 0;

        trace_poll();
        reap();
        if (done && done(arg))
            return true;
        if (now >= deadline)
            return false;
        for (int i = 0; i < ncl; i++) {
            struct client *c = &cl[i];
            if (c->broken)
                die("a client connection broke");
            if (!c->waiting && now >= c->next_send)
                client_send(c, now);
            if (c->waiting)
                p[n++] = (struct pollfd){.fd = c->fd, .events = POLLIN};
            else if (c->next_send < wake)
                wake = c->next_send;
        }
        probe_step(now);
        if (pr.fd >= 0)
            p[n++] = (struct pollfd){.fd = pr.fd, .events = POLLIN};
        else if (pr.on && pr.next < wake)
            wake = pr.next;
        if (deadline < wake)
            wake = deadline;
        {
            int64_t d = wake > now ? wake - now : 0;
            struct timespec ts = {d / 1000000, (d % 1000000) * 1000};
            ppoll(p, n, &ts, NULL);
        }
        for (int i = 0, k = 0; i < ncl; i++)
            if (cl[i].waiting && (p[k++].revents & (POLLIN | POLLHUP | POLLERR)))
                client_read(&cl[i]);
        if (pr.fd >= 0 && n > 0 && (p[n - 1].revents & (POLLIN | POLLHUP | POLLERR)))
            probe_read();
    }
}

struct wait_ev {
    int pid;
    const char *name;
    int64_t since;
};

static bool ev_seen(void *arg)
{
    struct wait_ev *w = arg;
    return trace_find(w->pid, w->name, w->since, NULL) >= 0;
}

static bool pid_gone(void *arg)
{
    return !pid_alive(*(pid_t *)arg);
}

/* Is one of pid's children blocked in recvfrom(2)? */
static bool child_parked(const char *children)
{
    char path[64], sc[64];
    const char *p = children;
    char *end;

    for (;; p = end) {
        long child = strtol(p, &end, 10);
        ssize_t n;
        int fd;
        if (end == p)
            return false;
        snprintf(path, sizeof path, "/proc/%ld/syscall", child);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        n = read(fd, sc, sizeof sc - 1);
        close(fd);
        sc[n > 0 ? n : 0] = 0;
        if (n > 0 && strtol(sc, NULL, 10) == SYS_recvfrom)
            return true;
    }
}

/* The owner's standby is parked: a child of it (of any of its threads:
 * the library's starts it) blocked in recvfrom(2), the libbaton
 * constructor's wait for a job. */
static bool standby_parked(void *arg)
{
    pid_t owner = *(pid_t *)arg;
    char path[320], buf[256];
    struct dirent *e;
    bool found = false;
    DIR *d;

    snprintf(path, sizeof path, "/proc/%d/task", (int)owner);
    d = opendir(path);
    while (d && !found && (e = readdir(d))) {
        ssize_t n;
        int fd;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/children", (int)owner, e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        found = child_parked(buf);
    }
    if (d)
        closedir(d);
    return found;
}

static void wait_for(int pid, const char *name, int64_t since)
{
    struct wait_ev w = {pid, name, since};

    if (!run_until(ev_seen, &w, now_us() + WAIT_US)) {
        fprintf(stderr, "pause: no \"%s\" from pid %d in time (see %s/echo.log)\n", name, pid, top);
        die("giving up");
    }
}

static void settle(int64_t us)
{
    run_until(NULL, NULL, now_us() + us);
}

/* ---- upgrades ---------------------------------------------------------- */

static const char *const kinds[] = {"copy", "sighup", "tool"};

struct trigger {
    int kind;
    pid_t owner;
    int64_t t0;
};

/* On a thread of its own: posix_spawn() stops the calling thread until
 * the child has called execve(), which would stall the clients (and count
 * as the server's pause). */
static void *trigger_main(void *arg)
{
    struct trigger *t = arg;
    char path[PATH_MAX], log[256];

    snprintf(log, sizeof log, "%s/echo.log", top);
    t->t0 = now_us();
    if (t->kind == 0) {
        if (start_echo(dir, true) < 0)
            die("starting a second copy");
    } else if (t->kind == 1) {
        if (kill(t->owner, SIGHUP) < 0)
            die("SIGHUP");
    } else {
        char *argv[] = {path, "upgrade", dir, "--timeout", "10", NULL};
        snprintf(path, sizeof path, "%s/baton", bin);
        if (spawn(argv, log) < 0)
            die("starting baton upgrade");
    }
    return NULL;
}

/* Triggers an upgrade of owner and follows it until the old process is
 * gone. Returns the new owner's pid and the trigger time. */
static pid_t upgrade(int kind, pid_t owner, int64_t *ret_t0)
{
    struct trigger t = {kind, owner, 0};
    int64_t since;
    pthread_t th;
    int pid = 0;

    if (standby && kind != 0 && !run_until(standby_parked, &owner, now_us() + WAIT_US))
        die("the owner's standby did not park in time");
    since = now_us();

    if (pthread_create(&th, NULL, trigger_main, &t) != 0)
        die("pthread_create");
    for (;;) {
        struct wait_ev w = {0, "ready", since};
        if (!run_until(ev_seen, &w, since + WAIT_US))
            die("no successor got ready in time");
        trace_find(0, "ready", since, &pid);
        if (pid != owner)
            break;
    }
    wait_for(pid, "serving", since);
    if (!run_until(pid_gone, &owner, now_us() + WAIT_US))
        die("the old owner did not exit");
    pthread_join(th, NULL);
    *ret_t0 = t.t0;
    return pid;
}

/* ---- figures ----------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median and maximum of the n >= 1 values that are >= 0, in ms. */
static void stats(const int64_t *v, int n, char *buf, size_t len)
{
    int64_t s[n];
    int k = 0;

    for (int i = 0; i < n; i++)
        if (v[i] >= 0)
            s[k++] = v[i];
    if (!k) {
        snprintf(buf, len, "%8s %8s", "-", "-");
        return;
    }
    qsort(s, k, sizeof *s, cmp_i64);
    snprintf(buf, len, "%8.2f %8.2f", (k % 2 ? s[k / 2] : (s[k / 2 - 1] + s[k / 2]) / 2) / 1e3,
             s[k - 1] / 1e3);
}

static void row(const char *label, const int64_t *v, int n)
{
    char b[64];

    stats(v, n, b, sizeof b);
    printf("  %-46s %s\n", label, b);
}

/* b - a, or -1 when either is missing. */
static int64_t span(int64_t a, int64_t b)
{
    return a >= 0 && b >= 0 ? b - a : -1;
}

/* Everything under top: two directories of plain files and sockets. */
static void remove_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    char sub[512];

    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        if (e->d_type == DT_DIR)
            remove_dir(sub);
        else
            unlink(sub);
    }
    if (d)
        closedir(d);
    rmdir(path);
}

static void stop(pid_t pid)
{
    if (pid > 0 && kill(pid, SIGTERM) == 0)
        run_until(pid_gone, &pid, now_us() + WAIT_US);
}

/* Part 1: the pause on open connections. */
static pid_t part_pause(pid_t owner, int n)
{
    int64_t gap[2][n], wait[2][n], p_stop[n], p_cross[n], p_accept[n], p_read[n], p_reply[n],
        p_confirm[n], p_wake[n], p_taking[n], kwait[3][n];
    int port = echo_port(), cnt[3] = {0, 0, 0};

    if (port <= 0)
        die("no TCP port in the owner record");
    cl[0] = (struct client){.kind = "unix", .fd = connect_unix(sock)};
    cl[1] = (struct client){.kind = "tcp", .fd = connect_tcp(port)};
    if (cl[0].fd < 0 || cl[1].fd < 0)
        die("connecting to baton-echo");
    ncl = 2;
    settle(SETTLE_US);
    for (int u = 0; u < n; u++) {
        int64_t t0, last, start, confirmed, inbound, adopted, first_read, first_reply;
        pid_t old = owner;

        client_window_reset();
        owner = upgrade(u % 3, owner, &t0);
        settle(SETTLE_US); /* the replies around the switch */
        for (int i = 0; i < 2; i++) {
            gap[i][u] = cl[i].max_gap;
            wait[i][u] = cl[i].max_wait;
        }
        kwait[u % 3][cnt[u % 3]++] =
            cl[0].max_wait > cl[1].max_wait ? cl[0].max_wait : cl[1].max_wait;
        last = trace_find(old, "last-read", t0, NULL);
        start = trace_find(old, "handoff-start", t0, NULL);
        confirmed = trace_find(old, "handoff-confirmed", t0, NULL);
        inbound = trace_find(owner, "inbound", t0, NULL);
        adopted = trace_find(owner, "adopted", t0, NULL);
        first_read = trace_find(owner, "first-read", t0, NULL);
        first_reply = trace_find(owner, "first-reply", t0, NULL);
        if (verbose) {
            int64_t b = start;
            printf("  upgrade %d (%s): unix wait %.2f ms sent at %+.2f; tcp wait %.2f ms sent at "
                   "%+.2f; last-read %+.2f ready %+.2f inbound %+.2f adopted %+.2f first-read "
                   "%+.2f reply %+.2f confirmed %+.2f (ms from the old owner's handoff-start)\n",
                   u, kinds[u % 3], cl[0].max_wait / 1e3, (cl[0].wait_sent - b) / 1e3,
                   cl[1].max_wait / 1e3, (cl[1].wait_sent - b) / 1e3, (last - b) / 1e3,
                   (trace_find(owner, "ready", t0, NULL) - b) / 1e3, (inbound - b) / 1e3,
                   (adopted - b) / 1e3, (first_read - b) / 1e3, (first_reply - b) / 1e3,
                   (confirmed - b) / 1e3);
        }
        p_wake[u] = span(trace_find(owner, "ready", t0, NULL), start);
        p_stop[u] = span(start, inbound);
        p_cross[u] = span(inbound, adopted);
        p_accept[u] = span(adopted, first_read);
        p_read[u] = span(first_read, first_reply);
        p_confirm[u] = span(adopted, confirmed);
        p_reply[u] = span(start, first_reply);
        p_taking[u] = taking_max(owner, t0);
    }
    printf("pause: one unix-socket and one TCP connection to baton-echo, a line every %lld us "
           "after the last reply, %d upgrades (copy, SIGHUP, baton upgrade in turn)\n",
           (long long)interval_us, n);
    printf("  %-46s %8s %8s\n", "(milliseconds)", "median", "max");
    row("largest gap between replies, unix", gap[0], n);
    row("largest gap between replies, tcp", gap[1], n);
    row("longest wait for a reply, unix", wait[0], n);
    row("longest wait for a reply, tcp", wait[1], n);
    for (int k = 0; k < 3; k++) {
        char label[64];
        snprintf(label, sizeof label, "longest wait for a reply, %s", kinds[k]);
        row(label, kwait[k], cnt[k]);
    }
    printf("  where it goes (server stamps, BATON_EXAMPLE_TRACE):\n");
    row("successor ready -> old owner stops reading", p_wake, n);
    row("old stops reading -> successor's inbound event", p_stop, n);
    row("inbound event -> connection adopted (confirmed)", p_cross, n);
    row("adopted -> successor's first read", p_accept, n);
    row("first read -> first reply written", p_read, n);
    row("old stops reading -> first reply written", p_reply, n);
    row("(adopted -> old owner has the confirmation)", p_confirm, n);
    row("longest in baton_conn_accept() calls, successor", p_taking, n);
    for (int i = 0; i < 2; i++)
        close(cl[i].fd);
    ncl = 0;
    return owner;
}

/* Part 2: trigger to the new process answering, no connection open. */
static pid_t part_trigger(pid_t owner, int n)
{
    int64_t answer[3][n], serving[n], any[n], start[n], opened[n], ready[n], served[n], replied[n];
    int64_t kstart[3][n], kopened[3][n], kready[3][n], kserving[3][n];
    int64_t bare[n], fresh[n], fresh_serving[n];
    int cnt[3] = {0, 0, 0};
    char path[PATH_MAX], fresh_dir[80];

    snprintf(fresh_dir, sizeof fresh_dir, "%s/fresh", top);
    for (int u = 0; u < n; u++) {
        char *argv[] = {path, "--help", NULL};
        int64_t t0, t;
        pid_t pid;
        int k = u % 3;

        /* The bare exec: the same binary, spawn to exit. */
        snprintf(path, sizeof path, "%s/baton-echo", bin);
        t = now_us();
        pid = spawn(argv, "/dev/null");
        if (pid < 0 || waitpid(pid, NULL, 0) != pid)
            die("bare exec");
        bare[u] = now_us() - t;

        /* A fresh start, first answer to the probe. */
        snprintf(pr.path, sizeof pr.path, "%s/echo.sock", fresh_dir);
        pr.on = true;
        pr.first_reply = -1;
        pr.next = 0;
        t = now_us();
        pid = start_echo(fresh_dir, false);
        {
            struct wait_ev w = {pid, "first-reply", t};
            if (pid < 0 || !run_until(ev_seen, &w, t + WAIT_US))
                die("a fresh start did not answer");
        }
        fresh[u] = trace_find(pid, "first-reply", t, NULL) - t;
        fresh_serving[u] = trace_find(pid, "serving", t, NULL) - t;
        pr.on = false;
        if (pr.fd >= 0)
            close(pr.fd);
        pr.fd = -1;
        stop(pid);

        /* The upgrade, the probe on the service's socket. */
        snprintf(pr.path, sizeof pr.path, "%s", sock);
        pr.on = true;
        pr.next = 0;
        settle(20000);
        {
            pid_t old = owner;
            owner = upgrade(k, owner, &t0);
            (void)old;
        }
        {
            struct wait_ev w = {owner, "first-reply", t0};
            if (!run_until(ev_seen, &w, now_us() + WAIT_US))
                die("the new owner did not answer the probe");
        }
        pr.on = false;
        if (pr.fd >= 0)
            close(pr.fd);
        pr.fd = -1;
        t = trace_find(owner, "first-reply", t0, NULL);
        answer[k][cnt[k]++] = t - t0;
        any[u] = t - t0;
        serving[u] = trace_find(owner, "serving", t0, NULL) - t0;
        start[u] = span(t0, trace_find(owner, "start", t0, NULL));
        opened[u] =
            span(trace_find(owner, "start", t0, NULL), trace_find(owner, "opened", t0, NULL));
        ready[u] =
            span(trace_find(owner, "opened", t0, NULL), trace_find(owner, "ready", t0, NULL));
        served[u] =
            span(trace_find(owner, "ready", t0, NULL), trace_find(owner, "serving", t0, NULL));
        replied[u] = span(trace_find(owner, "serving", t0, NULL), t);
        kstart[k][cnt[k] - 1] = start[u];
        kopened[k][cnt[k] - 1] = opened[u];
        kready[k][cnt[k] - 1] = ready[u];
        kserving[k][cnt[k] - 1] = serving[u];
        settle(SETTLE_US);
    }
    printf("trigger to the new process answering, no load (a fresh connection every %lld us), "
           "%d upgrades\n",
           (long long)probe_us, n);
    printf("  %-46s %8s %8s\n", "(milliseconds)", "median", "max");
    row("bare exec of baton-echo (--help: spawn to exit)", bare, n);
    row("fresh start (empty dir): spawn to serving", fresh_serving, n);
    row("fresh start (empty dir): spawn to first answer", fresh, n);
    row("trigger to serving, all", serving, n);
    row("trigger to first answer, all", any, n);
    for (int k = 0; k < 3; k++) {
        char label[64];
        snprintf(label, sizeof label, "trigger to first answer, %s", kinds[k]);
        row(label, answer[k], cnt[k]);
    }
    for (int k = 0; k < 3; k++) {
        char label[64];
        snprintf(label, sizeof label, "trigger to serving, %s", kinds[k]);
        row(label, kserving[k], cnt[k]);
    }
    printf("  where it goes (server stamps, BATON_EXAMPLE_TRACE):\n");
    row("trigger -> successor's main()", start, n);
    row("main() -> baton_open() returned (fds taken)", opened, n);
    row("baton_open() -> baton_ready() returned", ready, n);
    row("baton_ready() -> event loop", served, n);
    row("event loop -> first answer (probe spacing)", replied, n);
    for (int k = 0; k < 3; k++) {
        char label[3][64];
        snprintf(label[0], sizeof label[0], "trigger -> successor's main(), %s", kinds[k]);
        snprintf(label[1], sizeof label[1], "main() -> baton_open() returned, %s", kinds[k]);
        snprintf(label[2], sizeof label[2], "baton_open() -> baton_ready(), %s", kinds[k]);
        row(label[0], kstart[k], cnt[k]);
        row(label[1], kopened[k], cnt[k]);
        row(label[2], kready[k], cnt[k]);
    }
    return owner;
}

int main(int argc, char **argv)
{
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    int n = 20;
    char path[256];
    pid_t owner;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "--keep") ||
            !strcmp(argv[i], "--standby")) {
            *(argv[i][2] == 'v' ? &verbose : argv[i][2] == 'k' ? &keep : &standby) = true;
            memmove(&argv[i], &argv[i + 1], (argc-- - i) * sizeof *argv);
            i--;
        }
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--upgrades"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--interval-us"))
            interval_us = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--probe-us"))
            probe_us = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--bin"))
            snprintf(bin, sizeof bin, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--tmp"))
            tmp = argv[i + 1];
    }
    if (n < 1 || interval_us < 0 || probe_us < 100) {
        fprintf(stderr,
                "usage: %s [--upgrades N] [--interval-us N] [--probe-us N>=100] "
                "[--bin DIR] [--tmp DIR] [--standby]\n",
                argv[0]);
        return 2;
    }
    if (!bin[0]) {
        ssize_t l = readlink("/proc/self/exe", bin, sizeof bin - 1);
        char *slash;
        bin[l > 0 ? l : 0] = 0;
        slash = strrchr(bin, '/');
        if (!slash)
            die("cannot tell where the programs are (--bin)");
        *slash = 0;
    }
    /* Every server, orphaned by an upgrade or not, becomes our child. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    ev = calloc(MAX_EVENTS, sizeof *ev);
    /* tmpfs by default, as /run is in production (see takeover.c). */
    snprintf(top, sizeof top, "%s/baton-pause-XXXXXX", tmp);
    if (!ev || !mkdtemp(top))
        die("setting up");
    snprintf(dir, sizeof dir, "%s/coord", top);
    snprintf(sock, sizeof sock, "%s/echo.sock", dir);
    snprintf(path, sizeof path, "%s/trace", top);
    trace_fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
    if (trace_fd < 0 || setenv("BATON_EXAMPLE_TRACE", path, 1) < 0)
        die("trace file");
    printf("pause: coordination dir in %s\n", top);
    printf("pause: successors %s\n",
           standby ? "parked ahead (baton-echo --standby): SIGHUP and baton upgrade wake one"
                   : "started at the trigger (baton-echo without --standby)");
    fflush(stdout);

    owner = start_echo(dir, true);
    if (owner < 0)
        die("starting baton-echo");
    wait_for(owner, "serving", 0);
    owner = part_pause(owner, n);
    fflush(stdout);
    owner = part_trigger(owner, n);
    stop(owner);
    reap();
    if (keep)
        printf("pause: the servers' trace and log are in %s\n", top);
    else
        remove_dir(top);
    return 0;
}
