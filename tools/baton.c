/* SPDX-License-Identifier: MIT */
/*
 * baton - inspect and upgrade services that use libbaton.
 *
 *   baton status DIR [--json] [--watch]
 *   baton wait DIR --generation N [--timeout S]
 *   baton upgrade DIR [--timeout S]
 *   baton run [--dir DIR] [--drain-timeout S] [--stop-signal SIG] [--log FILE]
 *             [--pidfile FILE] -- PROGRAM ARGS...
 *   baton run --listen-fds --listen NAME=ADDRESS... [--ready-timeout S] [--ready-after MS]
 *             [--dir DIR] [--drain-timeout S] [--stop-signal SIG] [--log FILE] -- PROGRAM ARGS...
 *
 * Exit status: 0 success, 1 failure, 2 usage, 3 no owner serves DIR.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "run.h"

enum { EXIT_USAGE = 2, EXIT_NO_OWNER = 3 };

static const char *prog = "baton";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s status DIR [--json] [--watch]\n"
            "       %s wait DIR --generation N [--final] [--timeout S]\n"
            "       %s upgrade DIR [--timeout S]\n"
            "       %s run [--dir DIR] [--drain-timeout S] [--stop-signal SIG] [--log FILE]\n"
            "           [--pidfile FILE] [--probation S] [--max-generations N]\n"
            "           [--udp-steer [--udp-idle S]] [--standby] -- PROGRAM [ARGS...]\n"
            "       %s run --listen-fds --listen NAME=ADDRESS... [--ready-timeout S]\n"
            "           [--ready-after MS] [--dir DIR] [--drain-timeout S] [--stop-signal SIG]\n"
            "           [--log FILE] [--probation S] [--max-generations N] -- PROGRAM [ARGS...]\n"
            "       %s --version\n"
            "\n"
            "status   show the process serving DIR: pid, generation, since when, named fds;\n"
            "         every live generation (serving, draining) and the last takeover, timed\n"
            "wait     exit 0 once generation N or later serves DIR (default timeout 30 s);\n"
            "         --final: and has passed its probation (exit 1 if it was rolled back)\n"
            "upgrade  ask the owner of DIR to start its successor; exit 0 once it serves\n"
            "         (default timeout 30 s), or once it passed its probation; on failure,\n"
            "         or a rollback, the old owner serves on\n"
            "run      run an unmodified server with libbaton-preload.so; running the same\n"
            "         command again takes over its listeners (man baton-run); with\n"
            "         --listen-fds, a supervisor passes them the systemd way (LISTEN_FDS)\n"
            "         and waits for READY=1: for Go servers and static binaries;\n"
            "         --probation S: the old copy takes the service back if the new one\n"
            "         dies within S seconds; --max-generations N: at most N copies alive\n"
            "         at once, draining ones too (default 8); --udp-steer: a UDP datagram\n"
            "         goes to the copy that has seen its peer within --udp-idle S (default\n"
            "         30; 0.5 allowed), new peers to the newest copy (man baton-run: UDP);\n"
            "         --standby: a copy waits parked before main() for the next upgrade\n"
            "\n"
            "Exit status: 0 success, 1 failure, 2 usage error, 3 nobody serves DIR.\n",
            prog, prog, prog, prog, prog, prog);
}

/* DIR, checked once and from then on reached only through its fd, so
 * that a rename of DIR or of an ancestor cannot put another's socket or
 * record in our way. */
struct cdir {
    const char *path;
    int fd;
    bool by_fd;
    uid_t uid; /* its owner: whoever serves there runs as this uid */
};

/* 0, -ENOENT (or another open error) when DIR cannot be opened, or -EPERM,
 * said on stderr, when it is writable by others. */
static int cdir_open(const char *path, struct cdir *d)
{
    char why[600];
    struct stat st;
    int r;

    d->path = path;
    d->fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (d->fd < 0) {
        /* No directory: nobody serves there. Anything else (not ours to
         * read, not a directory) is said, and is not "nobody serves". */
        r = -errno;
        if (r != -ENOENT)
            fprintf(stderr, "%s: cannot open %s: %s\n", prog, path, strerror(-r));
        return r;
    }
    r = baton__dir_check(d->fd, path, false, &d->by_fd, why, sizeof(why));
    if (r == 0 && fstat(d->fd, &st) < 0)
        r = -errno;
    if (r < 0) {
        fprintf(stderr, "%s: refusing %s\n", prog, why);
        close(d->fd);
        d->fd = -1;
        return r;
    }
    d->uid = st.st_uid;
    return 0;
}

static void cdir_close(struct cdir *d)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
}

/* Parse DIR/owner; 0 ok, -ENOENT when there is none, -EPROTO if garbled. */
static int record_read(const struct cdir *d, struct baton__record *rec)
{
    memset(rec, 0, sizeof(*rec));
    return baton__record_read(d->fd, rec);
}

/* Connect to DIR's control socket. The process behind it must run as
 * DIR's owner (or root): -EPERM, said on stderr, for anyone else. */
static int ctl_connect(const struct cdir *d, int *ret_fd)
{
    struct sockaddr_un sa;
    struct ucred cr;
    socklen_t l = sizeof(cr);
    int fd;

    if (baton__dir_name(d->fd, d->by_fd, d->path, "control.sock", &sa) < 0)
        return -ENAMETOOLONG;
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0 || (cr.uid != d->uid && cr.uid != 0)) {
        fprintf(stderr,
                "%s: refusing the control socket of %s: pid %d runs as uid %u, not as "
                "the directory's owner (uid %u)\n",
                prog, d->path, (int)cr.pid, (unsigned)cr.uid, (unsigned)d->uid);
        close(fd);
        return -EPERM;
    }
    *ret_fd = fd;
    return 0;
}

/* Does the recorded owner still serve? Its pid lives and its control
 * socket accepts (a connect that is then closed costs the owner nothing).
 * 1 yes, 0 no, -errno (said on stderr) when we may not even ask. */
static int owner_alive(const struct cdir *d, const struct baton__record *rec)
{
    int fd, r;

    if (kill(rec->pid, 0) < 0 && errno == ESRCH)
        return 0;
    r = ctl_connect(d, &fd);
    if (r == -EACCES) {
        fprintf(stderr, "%s: cannot connect to %s/control.sock: %s\n", prog, d->path, strerror(-r));
        return r;
    }
    if (r == -EPERM)
        return r;
    if (r < 0)
        return 0;
    close(fd);
    return 1;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        putchar(*s);
    }
    putchar('"');
}

static const char *const phase_names[6] = {"spawned", "connected", "fds sent",
                                           "ready",   "committed", "serving"};

/* "spawned 0.0, connected 1.2, ... ms": the steps reached, from the first. */
static void print_timeline(FILE *f, const struct baton__upgrade *u)
{
    bool first = true;

    for (int i = 0; i < 6; i++) {
        if (u->us[i] < 0)
            continue;
        fprintf(f, "%s%s %lld.%lld", first ? "" : ", ", phase_names[i], u->us[i] / 1000,
                u->us[i] % 1000 / 100);
        first = false;
    }
    fprintf(f, first ? "no step reached" : " ms");
}

static void print_when(unsigned long long ms)
{
    time_t t = (time_t)(ms / 1000);
    char when[64];

    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
    printf("%s (%llu s)", when, (unsigned long long)(time(NULL) - t));
}

/* "16:20:31 (in 3 s)" */
static void print_until(unsigned long long ms)
{
    time_t t = (time_t)(ms / 1000), now = time(NULL);
    char when[32];

    strftime(when, sizeof(when), "%H:%M:%S", localtime(&t));
    printf("%s (in %lld s)", when, t > now ? (long long)(t - now) : 0LL);
}

/* The generations and the last takeover, after the owner's fields. Their
 * keys are never "pid" or "generation": a script that picks the owner's
 * pid with a plain sed pattern on "pid": still finds it. */
static const char *gen_state(const struct baton__gen *g)
{
    return g->rolling_back ? "rolling-back" : g->draining ? "draining" : "serving";
}

/* What became of an upgrade: a successor that died on probation is undone
 * (EOWNERDEAD), which is not an error of its own. */
static const char *upgrade_outcome(const struct baton__upgrade *u)
{
    return u->result == 0             ? "ok"
           : u->result == -EOWNERDEAD ? "rolled back"
                                      : baton_strerror(u->result);
}

static void status_json_tail(const struct baton__gen *g, int ng, const struct baton__upgrade *u)
{
    printf(",\"generations\":[");
    for (int i = 0; i < ng; i++) {
        printf("%s{\"gen\":%d,\"gen_pid\":%d,\"state\":\"%s\",\"since\":%llu.%03llu", i ? "," : "",
               g[i].generation, g[i].pid, gen_state(&g[i]), g[i].since_ms / 1000,
               g[i].since_ms % 1000);
        if (g[i].draining)
            printf(",\"draining_since\":%llu.%03llu", g[i].draining_since_ms / 1000,
                   g[i].draining_since_ms % 1000);
        if (g[i].probation_until)
            printf(",\"successor_probation_until\":%llu.%03llu", g[i].probation_until / 1000,
                   g[i].probation_until % 1000);
        if (g[i].drain_until)
            printf(",\"drain_until\":%llu.%03llu", g[i].drain_until / 1000,
                   g[i].drain_until % 1000);
        if (g[i].conns >= 0)
            printf(",\"connections\":%d", g[i].conns);
        if (g[i].standby_pid)
            printf(",\"standby_pid\":%d", g[i].standby_pid);
        putchar('}');
    }
    printf("],\"last_upgrade\":");
    if (!u) {
        printf("null}\n");
        return;
    }
    printf("{\"result\":%d,\"kind\":\"%s\",\"from_gen\":%d,\"from_pid\":%d,\"to_gen\":%d,"
           "\"to_pid\":%d,\"at\":%llu.%03llu,\"text\":",
           u->result, u->job ? "upgrade" : "takeover", u->from_gen, u->from_pid, u->to_gen,
           u->to_pid, u->at_ms / 1000, u->at_ms % 1000);
    json_str(u->text);
    printf(",\"outcome\":\"%s\"", upgrade_outcome(u));
    printf(",\"ms\":{");
    for (int i = 0, n = 0; i < 6; i++)
        if (u->us[i] >= 0)
            printf("%s\"%s\":%lld.%03lld", n++ ? "," : "", i == 2 ? "fds_sent" : phase_names[i],
                   u->us[i] / 1000, u->us[i] % 1000);
    printf("}}}\n");
}

static void status_text_tail(const struct baton__gen *g, int ng, const struct baton__upgrade *u)
{
    if (ng > 0)
        printf("generations:\n");
    for (int i = 0; i < ng; i++) {
        printf("  %-4d pid %-8d %-8s since ", g[i].generation, g[i].pid, gen_state(&g[i]));
        print_when(g[i].draining ? g[i].draining_since_ms : g[i].since_ms);
        if (g[i].conns >= 0)
            printf(", %d connection%s", g[i].conns, g[i].conns == 1 ? "" : "s");
        if (g[i].probation_until) {
            printf(", successor on probation until ");
            print_until(g[i].probation_until);
        }
        if (g[i].drain_until) {
            printf(", drain bound ends ");
            print_until(g[i].drain_until);
        }
        if (g[i].standby_pid)
            printf(", standby pid %d", g[i].standby_pid);
        putchar('\n');
    }
    if (u) {
        printf("last %s: generation %d (pid %d) -> %d (pid %d): %s, ",
               u->job ? "upgrade" : "takeover", u->from_gen, u->from_pid, u->to_gen, u->to_pid,
               upgrade_outcome(u));
        print_when(u->at_ms);
        printf("%s%s\n  ", u->result && u->text[0] ? ": " : "", u->result ? u->text : "");
        print_timeline(stdout, u);
        putchar('\n');
    }
}

static int cmd_status(const char *dir, bool json)
{
    struct baton__upgrade up, *u = NULL;
    struct baton__gen *g = NULL;
    struct baton__record rec;
    struct cdir d;
    int r = cdir_open(dir, &d), ng = 0;
    bool alive = false;

    if (r < 0 && r != -ENOENT)
        return 1;
    if (r == 0) {
        int a;
        r = record_read(&d, &rec);
        a = r == 0 ? owner_alive(&d, &rec) : 0;
        if (a < 0) {
            baton__record_free(&rec);
            cdir_close(&d);
            return 1;
        }
        alive = a > 0;
        ng = baton__gens_read(d.fd, &g);
        if (ng < 0)
            ng = 0;
        if (baton__upgrade_read(d.fd, &up) == 0)
            u = &up;
    }
    cdir_close(&d);

    if (!alive) {
        if (json) {
            printf("{\"serving\":false");
            status_json_tail(g, ng, u);
        } else {
            const struct baton__gen *back = NULL;
            for (int i = 0; i < ng && !back; i++)
                if (g[i].rolling_back)
                    back = &g[i];
            if (back)
                fprintf(stderr,
                        "%s: nobody owns %s this moment: generation %d (pid %d) is taking it "
                        "back (its successor died on probation)\n",
                        prog, dir, back->generation, back->pid);
            else
                fprintf(stderr, "%s: nobody serves %s%s%s\n", prog, dir,
                        r == -EPROTO ? " (garbled owner record)" : "",
                        r == 0 ? " (stale owner record)" : "");
            status_text_tail(g, ng, u);
        }
        if (r == 0)
            baton__record_free(&rec);
        free(g);
        return EXIT_NO_OWNER;
    }
    if (json) {
        printf("{\"serving\":true,\"pid\":%d,\"generation\":%d,\"since\":%llu.%03llu,\"fds\":[",
               rec.pid, rec.generation, rec.since_ms / 1000, rec.since_ms % 1000);
        for (size_t i = 0; i < rec.nfds; i++) {
            printf("%s{\"name\":", i ? "," : "");
            json_str(rec.fds[i].name);
            printf(",\"kind\":\"%s\",\"address\":", rec.fds[i].kind);
            json_str(strcmp(rec.fds[i].addr, "-") ? rec.fds[i].addr : "");
            printf(",\"local\":");
            json_str(strcmp(rec.fds[i].local, "-") ? rec.fds[i].local : "");
            putchar('}');
        }
        putchar(']');
        status_json_tail(g, ng, u);
    } else {
        printf("%s: pid %d, generation %d, serving since ", dir, rec.pid, rec.generation);
        print_when(rec.since_ms);
        putchar('\n');
        for (size_t i = 0; i < rec.nfds; i++)
            printf("  %-16s %-4s %s%s%s\n", rec.fds[i].name, rec.fds[i].kind,
                   strcmp(rec.fds[i].addr, "-") ? rec.fds[i].addr : "",
                   strcmp(rec.fds[i].local, "-") ? "  bound " : "",
                   strcmp(rec.fds[i].local, "-") ? rec.fds[i].local : "");
        status_text_tail(g, ng, u);
    }
    baton__record_free(&rec);
    free(g);
    return 0;
}

/* `baton status --watch`: the status again every second, until a signal. */
static int cmd_watch(const char *dir, bool json)
{
    for (;;) {
        struct timespec ts = {1, 0};
        time_t now = time(NULL);
        char when[32];

        strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
        if (!json)
            printf("--- %s\n", when);
        if (cmd_status(dir, json) == 1)
            return 1;
        fflush(stdout);
        fflush(stderr);
        nanosleep(&ts, NULL);
    }
}

/* Wait for DIR's owner record to change, by inotify, up to deadline. */
static void wait_change(int ino, uint64_t deadline)
{
    uint64_t now = baton__now_ms();
    char buf[4096];
    struct pollfd p = {.fd = ino, .events = POLLIN};
    /* A dying owner changes nothing in DIR: look again at least every
     * 200 ms so that a generation whose record came first is not missed. */
    int wait = now >= deadline ? 0 : (int)(deadline - now < 200 ? deadline - now : 200);

    if (poll(&p, ino >= 0 ? 1 : 0, wait) > 0)
        while (read(ino, buf, sizeof(buf)) > 0)
            ;
}

/* --final: no live generation has a successor on probation (0: none), or
 * one rolled back from generation >= N since we started (-1), or neither
 * yet (1). */
static int probation_state(struct cdir *d, int generation, unsigned long long since_ms)
{
    struct baton__gen *g = NULL;
    struct baton__upgrade u;
    int n = baton__gens_read(d->fd, &g), pending = 0;

    for (int i = 0; i < n; i++)
        pending |= g[i].probation_until != 0 || g[i].rolling_back;
    free(g);
    if (baton__upgrade_read(d->fd, &u) == 0 && u.result == -EOWNERDEAD && u.to_gen >= generation &&
        u.at_ms + 1000 >= since_ms)
        return -1;
    return pending;
}

static int cmd_wait(const char *dir, int generation, int timeout_s, bool final)
{
    uint64_t deadline = baton__now_ms() + (uint64_t)timeout_s * 1000;
    unsigned long long since_ms = baton__realtime_ms();
    int ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK), last = 0;
    struct cdir d = {.fd = -1};

    for (;;) {
        struct baton__record rec;
        int r = d.fd >= 0 ? 0 : cdir_open(dir, &d);

        if (r < 0 && r != -ENOENT) {
            if (ino >= 0)
                close(ino);
            return 1;
        }
        if (r == 0 && ino >= 0 && d.by_fd) {
            /* Watch the directory we checked (once: a watch of the same
             * inode again only updates it). */
            char path[64];
            snprintf(path, sizeof(path), "/proc/self/fd/%d", d.fd);
            inotify_add_watch(ino, path, IN_MOVED_TO | IN_CREATE | IN_DELETE);
        }
        if (r == 0 && final && probation_state(&d, generation, since_ms) < 0) {
            fprintf(stderr, "%s: generation %d of %s died on probation: rolled back\n", prog,
                    generation, dir);
            if (ino >= 0)
                close(ino);
            cdir_close(&d);
            return 1;
        }
        if (r == 0 && record_read(&d, &rec) == 0) {
            int a = rec.generation >= generation ? owner_alive(&d, &rec) : 0;
            bool ok = a > 0 && (!final || probation_state(&d, generation, since_ms) == 0);
            last = rec.generation;
            baton__record_free(&rec);
            if (a < 0) {
                if (ino >= 0)
                    close(ino);
                cdir_close(&d);
                return 1;
            }
            if (ok) {
                printf("%s: generation %d serves%s\n", dir, last, final ? " for good" : "");
                if (ino >= 0)
                    close(ino);
                cdir_close(&d);
                return 0;
            }
        }
        if (baton__now_ms() >= deadline)
            break;
        wait_change(ino, deadline);
    }
    if (ino >= 0)
        close(ino);
    if (d.fd >= 0 || baton__now_ms() >= deadline)
        fprintf(stderr, "%s: timed out after %d s waiting for generation %d of %s%s (now: %d)\n",
                prog, timeout_s, generation, dir, final ? " to pass its probation" : "", last);
    cdir_close(&d);
    return 1;
}

static int cmd_upgrade(const char *dir, int timeout_s)
{
    unsigned long long asked_ms = baton__realtime_ms();
    struct baton__upgrade up;
    bool have_up;
    char buf[BATON__MSG_MAX];
    uint64_t deadline = baton__now_ms() + (uint64_t)timeout_s * 1000 + 2000;
    struct baton__msg m;
    struct cdir d;
    size_t len, nfds;
    int fd, fds[BATON__BATCH_MAX], r;
    bool probation = false;
    unsigned succ_gen = 0, succ_pid = 0;

    r = cdir_open(dir, &d);
    if (r < 0 && r != -ENOENT)
        return 1; /* said */
    if (r == 0)
        r = ctl_connect(&d, &fd);
    cdir_close(&d);
    if (r == -EPERM)
        return 1;
    if (r < 0 && r != -ENOENT && r != -ECONNREFUSED) {
        fprintf(stderr, "%s: cannot connect to %s/control.sock: %s\n", prog, dir, strerror(-r));
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "%s: nobody serves %s: connect(%s/control.sock): %s\n", prog, dir, dir,
                strerror(-r));
        return EXIT_NO_OWNER;
    }
    r = baton__send(fd, buf, baton__enc_req(buf, BATON__REQ_UPGRADE, timeout_s * 1000, getpid()),
                    NULL, 0);
    for (;;) {
        while (r == 0) {
            r = baton__wait_fd(fd, POLLIN, deadline);
            if (r == 0)
                r = baton__recv(fd, buf, sizeof(buf), fds, BATON__BATCH_MAX, &len, &nfds);
            if (r == -EAGAIN) {
                r = 0;
                continue;
            }
            break;
        }
        if (r == 0 && nfds) {
            baton__close_fds(fds, nfds);
            r = -EPROTO;
        }
        if (r == 0)
            r = baton__msg_decode(buf, len, &m);
        if (r < 0 || m.type != BATON__MSG_PROBATION || probation)
            break;
        /* The successor serves; the old owner may still take the service
         * back if it dies within its probation: the outcome comes then. */
        probation = true;
        succ_gen = m.u.result.generation;
        succ_pid = m.u.result.pid;
        printf("%s: generation %u serves (pid %u), on probation for %d ms\n", dir,
               m.u.result.generation, m.u.result.pid, (int)m.u.result.err);
        fflush(stdout);
        deadline = baton__now_ms() + (uint64_t)(uint32_t)m.u.result.err + 5000;
    }
    close(fd);
    if (r == 0 && m.type == BATON__MSG_PROBATION)
        r = -EPROTO;
    if (r == -ECONNRESET && probation) {
        /* The old owner went away during the probation: nobody can roll
         * back any more. What serves now is what counts. */
        struct baton__record rec;
        int alive = 0;
        if (cdir_open(dir, &d) == 0) {
            if (record_read(&d, &rec) == 0) {
                alive = owner_alive(&d, &rec) > 0 ? rec.pid : 0;
                baton__record_free(&rec);
            }
            cdir_close(&d);
        }
        if (alive && alive == (int)succ_pid) {
            printf("%s: the old owner went away during the probation; generation %u (pid %u) "
                   "serves\n",
                   dir, succ_gen, succ_pid);
            return 0;
        }
    }
    if (r < 0) {
        fprintf(stderr, "%s: upgrade of %s: %s\n", prog, dir,
                r == -ECONNRESET ? "the owner hung up" : baton_strerror(r));
        return 1;
    }
    have_up = cdir_open(dir, &d) == 0 && baton__upgrade_read(d.fd, &up) == 0 &&
              up.at_ms + 1000 >= asked_ms;
    cdir_close(&d);
    if (m.type == BATON__MSG_RESULT && m.u.result.err == 0) {
        if (probation)
            printf("%s: generation %u (pid %u): %.*s\n", dir, m.u.result.generation, m.u.result.pid,
                   (int)m.u.result.text_len, m.u.result.text);
        else
            printf("%s: generation %u serves (pid %u)\n", dir, m.u.result.generation,
                   m.u.result.pid);
        if (have_up && up.result == 0 && up.to_pid == (int)m.u.result.pid) {
            printf("  ");
            print_timeline(stdout, &up);
            putchar('\n');
        }
        return 0;
    }
    if (probation)
        fprintf(stderr, "%s: upgrade of %s rolled back: %.*s; the old owner serves again\n", prog,
                dir, (int)m.u.result.text_len, m.u.result.text);
    else
        fprintf(stderr, "%s: upgrade of %s failed: %.*s (%s); the old owner serves on\n", prog, dir,
                (int)m.u.result.text_len, m.u.result.text,
                baton_strerror(m.u.result.err ? m.u.result.err : -EPROTO));
    if (have_up && up.result != 0) {
        fprintf(stderr, "  ");
        print_timeline(stderr, &up);
        fputc('\n', stderr);
    }
    return 1;
}

static int parse_int(const char *s, int min, int *ret)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min || v > 1000000)
        return -1;
    *ret = (int)v;
    return 0;
}

/* --- baton run: an unmodified server under libbaton-preload.so. --------- */

static int run_signal(const char *s)
{
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"TERM", SIGTERM},
                {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"WINCH", SIGWINCH}, {"KILL", SIGKILL}};
    int n;

    if (!strncmp(s, "SIG", 3))
        s += 3;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (!strcasecmp(s, sigs[i].name))
            return sigs[i].sig;
    return !parse_int(s, 1, &n) && n < 65 ? n : -1;
}

/*
 * A directory per command line: BASE/run-HASH, where BASE is
 * $XDG_RUNTIME_DIR/baton, /run/baton (root) or $TMPDIR/baton-UID (TMPDIR
 * defaults to /tmp). BASE is on a path others may write to: another user
 * could have made it first, to swap our directory for one of theirs. So it
 * must be ours and writable by nobody else, or we stop and say so.
 */
static int run_default_dir(char **argv, bool listen_fds, char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR"), *tmp = getenv("TMPDIR");
    unsigned long long h = 0xcbf29ce484222325ull;
    char base[PATH_MAX];
    struct stat st;
    int fd;

    /* The two modes of one program hand on different things: each has its
     * own directory. (The preload mode's hash stays what it always was.) */
    for (const char *p = listen_fds ? "--listen-fds" : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    for (char **a = argv; *a; a++)
        for (const char *p = *a;; p++) {
            h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
            if (!*p)
                break;
        }
    if (xdg && xdg[0] == '/')
        snprintf(base, sizeof(base), "%s/baton", xdg);
    else if (geteuid() == 0)
        snprintf(base, sizeof(base), "/run/baton");
    else
        snprintf(base, sizeof(base), "%s/baton-%u", tmp && tmp[0] == '/' ? tmp : "/tmp",
                 (unsigned)geteuid());
    if (mkdir(base, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "%s run: mkdir(%s): %s\n", prog, base, strerror(errno));
        return -1;
    }
    fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "%s run: %s: %s\n", prog, base, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    if (st.st_uid != geteuid() || (st.st_mode & 022)) {
        fprintf(stderr,
                "%s run: refusing %s: it is owned by uid %u with mode %03o; it must be ours "
                "(uid %u) and writable by nobody else (remove it, or pass --dir)\n",
                prog, base, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
                (unsigned)geteuid());
        return -1;
    }
    if (snprintf(buf, len, "%s/run-%016llx", base, h) >= (int)len) {
        fprintf(stderr, "%s run: %s: path too long\n", prog, base);
        return -1;
    }
    return 0;
}

/* The shim: $BATON_PRELOAD, else beside our binary (BIN/../lib), else
 * where it is installed. */
static int run_preload(char *buf, size_t len)
{
    const char *env = getenv("BATON_PRELOAD");
    char exe[PATH_MAX];
    ssize_t n;

    if (env && *env)
        return snprintf(buf, len, "%s", env) < (int)len && access(buf, R_OK) == 0 ? 0 : -ENOENT;
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        char *slash;
        exe[n] = 0;
        slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            if (snprintf(buf, len, "%s/../lib/libbaton-preload.so", exe) < (int)len &&
                access(buf, R_OK) == 0)
                return 0;
        }
    }
#ifdef BATON_PRELOAD_INSTALLED
    if (snprintf(buf, len, "%s", BATON_PRELOAD_INSTALLED) < (int)len && access(buf, R_OK) == 0)
        return 0;
#endif
    return -ENOENT;
}

/* One --listen NAME=ADDRESS into o (listen has room for every argument). */
static int run_parse_listen(const char *v, struct run_opts *o, struct run_listen *listen)
{
    struct run_listen *l = &listen[o->nlisten];
    const char *eq = strchr(v, '=');

    if (!eq || !eq[1] || eq - v >= (ptrdiff_t)sizeof(l->name))
        return -1;
    memcpy(l->name, v, (size_t)(eq - v));
    l->name[eq - v] = 0;
    if (!run_name_ok(l->name)) {
        fprintf(stderr, "%s run: --listen %s: not a name LISTEN_FDNAMES can carry\n", prog,
                l->name);
        return -1;
    }
    l->addr = eq + 1;
    o->nlisten++;
    return 0;
}

/* --pidfile FILE: the preload shim keeps the program's pid file FILE naming
 * the serving copy (man baton-run). It learns the file from the
 * environment, as an absolute path. 0, or -1 if the path is too long. */
static int run_pidfile(const char *file)
{
    char cwd[PATH_MAX], abs[PATH_MAX];

    if (file[0] == '/')
        return setenv("BATON_RUN_PIDFILE", file, 1);
    if (!getcwd(cwd, sizeof(cwd)) ||
        snprintf(abs, sizeof(abs), "%s/%s", cwd, file) >= (int)sizeof(abs))
        return -1;
    return setenv("BATON_RUN_PIDFILE", abs, 1);
}

/* "2", "0.5", "1.25" seconds into ms, at most max_ms: 0, or -1. */
static int parse_seconds_ms(const char *s, int max_ms, int *ret)
{
    long long ms = 0;
    int frac = 0;
    const char *p = s;

    if (!*p)
        return -1;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((ms = ms * 10 + (*p - '0') * 1000) > max_ms)
            return -1;
    if (*p == '.')
        for (int scale = 100; *++p; scale /= 10, frac++) {
            if (*p < '0' || *p > '9' || !scale)
                return -1;
            ms += (*p - '0') * scale;
        }
    if (*p || p == s || (p == s + 1 && *s == '.') || ms > max_ms)
        return -1;
    *ret = (int)ms;
    return 0;
}

/* `baton run`'s options into o (o->argv: PROGRAM ARGS...): 0, or
 * EXIT_USAGE after saying why. */
static int run_parse(int argc, char **argv, struct run_opts *o, struct run_listen *listen,
                     bool *ret_listen_fds, const char **ret_dir)
{
    bool listen_fds = false, ready_opts = false;
    int i;

    for (i = 0; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        bool arg = i + 1 < argc;

        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (!strcmp(a, "--listen-fds"))
            listen_fds = true;
        else if (arg && !strcmp(a, "--dir"))
            *ret_dir = argv[++i];
        else if (arg && !strcmp(a, "--drain-timeout") && !parse_int(argv[i + 1], 0, &o->drain_s))
            i++;
        else if (arg && !strcmp(a, "--stop-signal") && (o->stop_sig = run_signal(argv[i + 1])) > 0)
            i++;
        else if (arg && !strcmp(a, "--log"))
            o->log = argv[++i];
        else if (arg && !strcmp(a, "--pidfile") && !run_pidfile(argv[i + 1]))
            i++;
        else if (arg && !strcmp(a, "--ready-timeout") &&
                 !parse_int(argv[i + 1], 1, &o->ready_timeout_s))
            i++, ready_opts = true;
        else if (arg && !strcmp(a, "--ready-after") &&
                 !parse_int(argv[i + 1], 1, &o->ready_after_ms))
            i++, ready_opts = true;
        else if (arg && !strcmp(a, "--listen") && !run_parse_listen(argv[i + 1], o, listen))
            i++;
        else if (arg && !strcmp(a, "--probation")) {
            if (parse_seconds_ms(argv[++i], BATON_PROBATION_MAX_MS, &o->probation_ms) < 0) {
                fprintf(stderr,
                        "%s run: --probation %s: not a number of seconds from 0 to %d "
                        "(a fraction allowed: 0.5)\n",
                        prog, argv[i], BATON_PROBATION_MAX_MS / 1000);
                return EXIT_USAGE;
            }
        } else if (arg && !strcmp(a, "--udp-idle")) {
            if (parse_seconds_ms(argv[++i], RUN_UDP_IDLE_MAX_MS, &o->udp_idle_ms) < 0 ||
                o->udp_idle_ms == 0) {
                fprintf(stderr,
                        "%s run: --udp-idle %s: not a number of seconds above 0, at most %d "
                        "(a fraction allowed: 0.5)\n",
                        prog, argv[i], RUN_UDP_IDLE_MAX_MS / 1000);
                return EXIT_USAGE;
            }
        } else if (!strcmp(a, "--udp-steer")) {
            o->udp_steer = true;
        } else if (!strcmp(a, "--standby")) {
            o->standby = true;
        } else if (arg && !strcmp(a, "--max-generations")) {
            if (parse_int(argv[++i], 0, &o->max_generations) < 0 || o->max_generations == 1 ||
                o->max_generations > BATON_MAX_GENERATIONS_MAX) {
                fprintf(stderr,
                        "%s run: --max-generations %s: not 0 (the default, %d) or a number "
                        "from 2 to %d\n",
                        prog, argv[i], BATON_MAX_GENERATIONS_DEFAULT, BATON_MAX_GENERATIONS_MAX);
                return EXIT_USAGE;
            }
        } else {
            fprintf(stderr, "%s run: bad argument '%s'\n", prog, a);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "%s run: no PROGRAM given\n", prog);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (listen_fds != (o->nlisten > 0) || (ready_opts && !listen_fds)) {
        fprintf(stderr, "%s run: %s\n", prog,
                listen_fds ? "--listen-fds needs at least one --listen NAME=ADDRESS"
                           : "--listen, --ready-timeout and --ready-after need --listen-fds");
        return EXIT_USAGE;
    }
    if (o->udp_idle_ms && !o->udp_steer) {
        fprintf(stderr, "%s run: --udp-idle needs --udp-steer\n", prog);
        return EXIT_USAGE;
    }
    if (listen_fds && (o->udp_steer || o->standby)) {
        fprintf(stderr, "%s run: --%s is for the preloaded shim, not --listen-fds\n", prog,
                o->udp_steer ? "udp-steer" : "standby");
        return EXIT_USAGE;
    }
    if (o->ready_after_ms >= o->ready_timeout_s * 1000) {
        fprintf(stderr, "%s run: --ready-after must be shorter than --ready-timeout (%d s)\n", prog,
                o->ready_timeout_s);
        return EXIT_USAGE;
    }
    o->argv = argv + i;
    *ret_listen_fds = listen_fds;
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    char dir[PATH_MAX], preload[PATH_MAX], num[32], *ld;
    const char *dir_opt = NULL, *old;
    struct run_listen *listen = calloc(argc ? argc : 1, sizeof(*listen));
    struct run_opts o = {
        .drain_s = RUN_DRAIN_S, .ready_timeout_s = RUN_READY_TIMEOUT_S, .listen = listen};
    bool listen_fds = false;
    int r;

    if (!listen)
        return 1;
    r = run_parse(argc, argv, &o, listen, &listen_fds, &dir_opt);
    if (r != 0) {
        free(listen);
        return r;
    }
    if (dir_opt && dir_opt[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)) ||
            snprintf(dir, sizeof(dir), "%s/%s", cwd, dir_opt) >= (int)sizeof(dir)) {
            fprintf(stderr, "%s run: %s: path too long\n", prog, dir_opt);
            free(listen);
            return 1;
        }
    } else if (dir_opt) {
        snprintf(dir, sizeof(dir), "%s", dir_opt);
    } else {
        if (run_default_dir(o.argv, listen_fds, dir, sizeof(dir)) < 0) {
            free(listen);
            return 1;
        }
        fprintf(stderr, "%s run: %s\n", prog, dir);
    }
    if (listen_fds) {
        o.dir = dir;
        if (!o.stop_sig)
            o.stop_sig = SIGTERM;
        r = run_supervise(&o);
        free(listen);
        return r;
    }
    free(listen);
    if (run_preload(preload, sizeof(preload)) < 0) {
        fprintf(stderr, "%s run: libbaton-preload.so not found (set BATON_PRELOAD)\n", prog);
        return 1;
    }
    old = getenv("LD_PRELOAD");
    if (asprintf(&ld, "%s%s%s", preload, old && *old ? ":" : "", old ? old : "") < 0)
        return 1;
    setenv("LD_PRELOAD", ld, 1);
    setenv("BATON_RUN_DIR", dir, 1);
    snprintf(num, sizeof(num), "%d", (int)getpid());
    setenv("BATON_RUN_PID", num, 1);
    unsetenv("BATON_RUN_CMD");
    snprintf(num, sizeof(num), "%lld", (long long)o.drain_s * 1000);
    setenv("BATON_RUN_DRAIN_MS", num, 1);
    snprintf(num, sizeof(num), "%d", o.probation_ms);
    setenv("BATON_RUN_PROBATION_MS", num, 1);
    snprintf(num, sizeof(num), "%d", o.max_generations);
    setenv("BATON_RUN_MAX_GENERATIONS", num, 1);
    setenv("BATON_RUN_UDP_STEER", o.udp_steer ? "1" : "0", 1);
    setenv("BATON_RUN_STANDBY", o.standby ? "1" : "0", 1);
    if (o.udp_idle_ms) {
        snprintf(num, sizeof(num), "%d", o.udp_idle_ms);
        setenv("BATON_RUN_UDP_IDLE_MS", num, 1);
    } else {
        unsetenv("BATON_RUN_UDP_IDLE_MS");
    }
    if (o.stop_sig > 0) {
        snprintf(num, sizeof(num), "%d", o.stop_sig);
        setenv("BATON_RUN_STOP_SIGNAL", num, 1);
    }
    if (o.log)
        setenv("BATON_RUN_LOG", o.log, 1);
    execvp(o.argv[0], o.argv);
    fprintf(stderr, "%s run: %s: %s\n", prog, o.argv[0], strerror(errno));
    free(ld);
    return 127;
}

int main(int argc, char **argv)
{
    const char *cmd, *dir;
    int generation = -1, timeout = 30;
    bool json = false, watch = false, final = false;

    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "--version")) {
        printf("baton %s\n", baton_version());
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "run"))
        return cmd_run(argc - 2, argv + 2);
    if (argc < 3) {
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[1];
    dir = NULL;
    /* Options may come before or after DIR, as with most tools; "--" ends
     * them, so a directory whose name starts with "-" can still be given.
     * An option another command takes is a usage error here, not ignored. */
    for (int i = 2; i < argc; i++) {
        bool status = !strcmp(cmd, "status"), wait = !strcmp(cmd, "wait");

        if (!strcmp(argv[i], "--") && i + 2 == argc && !dir)
            dir = argv[++i];
        else if (status && !strcmp(argv[i], "--json"))
            json = true;
        else if (status && !strcmp(argv[i], "--watch"))
            watch = true;
        else if (wait && !strcmp(argv[i], "--final"))
            final = true;
        else if (wait && !strcmp(argv[i], "--generation") && i + 1 < argc &&
                 !parse_int(argv[i + 1], 1, &generation))
            i++;
        else if (!status && !strcmp(argv[i], "--timeout") && i + 1 < argc &&
                 !parse_int(argv[i + 1], 0, &timeout))
            i++;
        else if (!dir && argv[i][0] != '-')
            dir = argv[i];
        else {
            fprintf(stderr, "%s %s: bad argument '%s'\n", prog, cmd, argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!dir) {
        fprintf(stderr, "%s %s: DIR is missing\n", prog, cmd);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(cmd, "status"))
        return watch ? cmd_watch(dir, json) : cmd_status(dir, json);
    if (!strcmp(cmd, "wait")) {
        if (generation < 1) {
            fprintf(stderr, "%s wait: --generation N is required\n", prog);
            return EXIT_USAGE;
        }
        return cmd_wait(dir, generation, timeout, final);
    }
    if (!strcmp(cmd, "upgrade"))
        return cmd_upgrade(dir, timeout);
    fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
    usage(stderr);
    return EXIT_USAGE;
}
