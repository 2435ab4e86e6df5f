/* SPDX-License-Identifier: MIT */
/*
 * baton run --listen-fds: a small supervisor for programs that take their
 * listeners the systemd way (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) and
 * say READY=1 on NOTIFY_SOCKET. LD_PRELOAD cannot reach Go servers or
 * static binaries; socket activation needs nothing from the program's
 * C library.
 *
 * The supervisor is a libbaton owner (BATON_NO_THREAD: one thread, so that
 * the child it forks may run ordinary code before exec): it holds the
 * listeners, and its program is its child. A second supervisor started on
 * the same directory takes the listeners over, starts its own program with
 * them and waits for that program's READY=1; only then does it call
 * baton_ready(), which fires the old supervisor's upgrade fd, and the old
 * supervisor stops its program and exits.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "run.h"

extern char **environ;

/* The supervisor's phases: the program starts, serves, or is being stopped. */
enum sup_phase { SUP_STARTING, SUP_SERVING, SUP_STOPPING };

/* A descendant's READY=1 is traced to our child through at most this many
 * parents. */
#define SUP_DEPTH_MAX 64
/* A notification datagram is at most this long (systemd's own bound is
 * the same order); longer ones are ignored. */
#define SUP_NOTIFY_MAX 4096
/* Room for any pid in LISTEN_PID's value. */
#define SUP_PID_LEN 20
/* The variables we give the program: LISTEN_PID, LISTEN_FDS,
 * LISTEN_FDNAMES, NOTIFY_SOCKET, BATON_GENERATION. */
#define SUP_ENV_OWN 5

struct sup {
    const struct run_opts *o;
    baton *b;
    FILE *log; /* --log, or NULL */
    int sigfd;
    int notifyfd;
    int dirfd;
    bool dir_by_fd;
    char notify_leaf[64];
    char notify_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char exe[PATH_MAX]; /* PROGRAM, found on PATH before anything else */
    int *fds;           /* the listeners in --listen order; owned by b */
    char **envp;        /* the program's environment; strings owned by envp_own */
    char *envp_own[SUP_ENV_OWN];
    char *pid_var; /* LISTEN_PID's value: SUP_PID_LEN + 1 bytes, written in the child */
    pid_t child;
    int wstatus;
    bool reaped;
    enum sup_phase phase;
    bool ready; /* baton_ready() succeeded: we are the owner */
    bool superseded;
    bool killed;
    uint64_t started;  /* monotonic ms at fork */
    uint64_t deadline; /* starting: ready or fail; stopping: SIGKILL */
};

static void sup_vlog(struct sup *s, bool failure, const char *fmt, va_list ap)
{
    char line[1024];

    vsnprintf(line, sizeof(line), fmt, ap);
    if (s->log)
        fprintf(s->log, "baton run[%d]: %s\n", (int)getpid(), line);
    if (failure && s->log != stderr)
        fprintf(stderr, "baton run: %s\n", line);
}

/* What it does, for --log only. */
static void __attribute__((format(printf, 2, 3))) sup_log(struct sup *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sup_vlog(s, false, fmt, ap);
    va_end(ap);
}

/* Why something failed: always on stderr, and in --log. */
static void __attribute__((format(printf, 2, 3))) sup_say(struct sup *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sup_vlog(s, true, fmt, ap);
    va_end(ap);
}

/* libbaton's messages: everything with --log; without it, the warnings
 * (a successor that failed and was dropped while we serve on). */
static void sup_lib_log(void *ctx, int level, const char *msg)
{
    struct sup *s = ctx;

    if (s->log)
        fprintf(s->log, "baton run[%d]: libbaton: %s\n", (int)getpid(), msg);
    else if (level <= BATON_LOG_WARNING)
        fprintf(stderr, "baton run: %s\n", msg);
}

int run_name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > BATON_NAME_MAX)
        return 0;
    for (; *name; name++)
        if (!isgraph((unsigned char)*name) || strchr(":=\"\\", *name))
            return 0;
    return 1;
}

/* PROGRAM as execvp would find it, looked up before the fork: the child
 * then only calls execve. */
static int sup_find_exe(struct sup *s, const char *file)
{
    const char *path = getenv("PATH");
    struct stat st;

    if (strchr(file, '/')) {
        if (snprintf(s->exe, sizeof(s->exe), "%s", file) >= (int)sizeof(s->exe))
            return -ENAMETOOLONG;
        return access(s->exe, X_OK) == 0 ? 0 : -errno;
    }
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        if (snprintf(s->exe, sizeof(s->exe), "%.*s%s%s", (int)n, path, n ? "/" : "", file) <
                (int)sizeof(s->exe) &&
            stat(s->exe, &st) == 0 && S_ISREG(st.st_mode) && access(s->exe, X_OK) == 0)
            return 0;
        path += n + (path[n] == ':');
    }
    return -ENOENT;
}

/*
 * Take TERM, INT, HUP, CHLD, USR1 and USR2 through a signalfd. Each is set
 * to its default first: a shell starts background jobs with INT ignored,
 * and an ignored signal never reaches a signalfd.
 */
static int sup_signals(struct sup *s)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2};
    sigset_t set;

    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        signal(sigs[i], SIG_DFL);
        sigaddset(&set, sigs[i]);
    }
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -errno;
    s->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return s->sigfd < 0 ? -errno : 0;
}

/* Take over from the copy serving o->dir, if any, and claim each --listen:
 * the inherited socket when its name and address match, else a new one. */
static int sup_open(struct sup *s)
{
    const struct run_opts *o = s->o;
    struct baton_options bo = {
        .dir = o->dir,
        /* The old copy waits for our READY this long: our program's
         * readiness, and a margin for the takeover itself. */
        .ready_timeout_ms = (o->ready_timeout_s + 5) * 1000,
        .allowed_uid = (uid_t)-1,
        .flags = BATON_NO_THREAD | BATON_WAIT_LOCK,
        .log = sup_lib_log,
        .log_ctx = s,
        .probation_ms = o->probation_ms,
        .max_generations = o->max_generations,
        /* Our own drain ends with the stop signal, then SIGKILL: the
         * library's bound is the backstop for a wedged copy. */
        .drain_timeout_ms = o->drain_s > 0 && o->drain_s < 80000 ? (o->drain_s + 15) * 1000 : 0,
    };
    int r;

    s->fds = calloc(o->nlisten, sizeof(*s->fds));
    if (!s->fds)
        return -ENOMEM;
    r = baton_open(&bo, &s->b);
    if (r < 0) {
        sup_say(s, "%s", baton_last_error(NULL));
        return r;
    }
    for (size_t i = 0; i < o->nlisten; i++) {
        r = baton_listen(s->b, o->listen[i].name, o->listen[i].addr, 0);
        if (r < 0) {
            sup_say(s, "--listen %s=%s: %s", o->listen[i].name, o->listen[i].addr,
                    baton_last_error(s->b));
            return r;
        }
        s->fds[i] = r;
    }
    sup_log(s, "%s generation %d in %s", baton_inherited(s->b) ? "taking over as" : "starting",
            baton_generation(s->b), o->dir);
    return 0;
}

/* Remove the notify sockets of supervisors that are gone. */
static void sup_sweep(struct sup *s)
{
    int fd = dup(s->dirfd);
    struct dirent *e;
    DIR *d;

    if (fd < 0)
        return;
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    while ((e = readdir(d))) {
        int pid = 0, n = 0;
        if (sscanf(e->d_name, "notify.%d.sock%n", &pid, &n) == 1 && e->d_name[n] == 0 && pid > 0 &&
            pid != getpid() && kill(pid, 0) < 0 && errno == ESRCH)
            unlinkat(s->dirfd, e->d_name, 0);
    }
    closedir(d);
}

/*
 * Our NOTIFY_SOCKET: a datagram socket at DIR/notify.PID.sock, bound
 * through the directory fd (checked as libbaton checks it), so only our
 * uid (and root) can reach it. SO_PASSCRED makes the kernel attach each
 * sender's pid, which is how a READY=1 is traced to our program.
 */
static int sup_notify_open(struct sup *s)
{
    struct sockaddr_un sa;
    char why[600];
    int one = 1, r;

    s->dirfd = open(s->o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (s->dirfd < 0) {
        r = -errno;
        sup_say(s, "%s: %s", s->o->dir, strerror(-r));
        return r;
    }
    r = baton__dir_check(s->dirfd, s->o->dir, true, &s->dir_by_fd, why, sizeof(why));
    if (r < 0) {
        sup_say(s, "refusing %s", why);
        return r;
    }
    sup_sweep(s);
    snprintf(s->notify_leaf, sizeof(s->notify_leaf), "notify.%d.sock", (int)getpid());
    if (snprintf(s->notify_path, sizeof(s->notify_path), "%s/%s", s->o->dir, s->notify_leaf) >=
            (int)sizeof(s->notify_path) ||
        baton__dir_name(s->dirfd, s->dir_by_fd, s->o->dir, s->notify_leaf, &sa) < 0) {
        sup_say(s, "%s/%s: too long for NOTIFY_SOCKET (at most %zu bytes); pass a shorter --dir",
                s->o->dir, s->notify_leaf, sizeof(s->notify_path) - 1);
        return -ENAMETOOLONG;
    }
    s->notifyfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->notifyfd < 0 ||
        setsockopt(s->notifyfd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
        r = -errno;
        sup_say(s, "notify socket: %s", strerror(-r));
        return r;
    }
    unlinkat(s->dirfd, s->notify_leaf, 0);
    if (bind(s->notifyfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        r = -errno;
        sup_say(s, "bind(%s): %s", s->notify_path, strerror(-r));
        return r;
    }
    return 0;
}

static bool env_ours(const char *e)
{
    static const char *const names[] = {
        "LISTEN_PID=",   "LISTEN_FDS=",    "LISTEN_FDNAMES=",  "NOTIFY_SOCKET=",
        "WATCHDOG_PID=", "WATCHDOG_USEC=", "BATON_GENERATION="};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strncmp(e, names[i], strlen(names[i])))
            return true;
    return false;
}

/* "NAME=VALUE" in a new string, or NULL. */
static char *env_var(const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value);
    char *e = malloc(n + v + 2);

    if (e) {
        memcpy(e, name, n);
        e[n] = '=';
        memcpy(e + n + 1, value, v + 1);
    }
    return e;
}

/* The program's environment: ours without what systemd may have given us
 * (that was for the supervisor), with LISTEN_FDS, LISTEN_FDNAMES,
 * NOTIFY_SOCKET, BATON_GENERATION and a LISTEN_PID to fill in after fork. */
static int sup_env(struct sup *s)
{
    const struct run_opts *o = s->o;
    char zeros[SUP_PID_LEN + 1], nfds[32], gen[32], *names;
    size_t n = 0, k = 0, len = 1;

    for (char **e = environ; *e; e++)
        n++;
    for (size_t i = 0; i < o->nlisten; i++)
        len += strlen(o->listen[i].name) + 1;
    names = calloc(1, len);
    s->envp = calloc(n + SUP_ENV_OWN + 1, sizeof(char *));
    if (!names || !s->envp) {
        free(names);
        return -ENOMEM;
    }
    for (size_t i = 0; i < o->nlisten; i++)
        strcat(strcat(names, i ? ":" : ""), o->listen[i].name);
    memset(zeros, '0', SUP_PID_LEN);
    zeros[SUP_PID_LEN] = 0;
    snprintf(nfds, sizeof(nfds), "%zu", o->nlisten);
    snprintf(gen, sizeof(gen), "%d", baton_generation(s->b));
    s->envp_own[0] = env_var("LISTEN_PID", zeros);
    s->envp_own[1] = env_var("LISTEN_FDS", nfds);
    s->envp_own[2] = env_var("LISTEN_FDNAMES", names);
    s->envp_own[3] = env_var("NOTIFY_SOCKET", s->notify_path);
    s->envp_own[4] = env_var("BATON_GENERATION", gen);
    free(names);
    for (char **e = environ; *e; e++)
        if (!env_ours(*e))
            s->envp[k++] = *e;
    for (size_t i = 0; i < SUP_ENV_OWN; i++) {
        if (!s->envp_own[i])
            return -ENOMEM;
        s->envp[k++] = s->envp_own[i];
    }
    s->pid_var = s->envp_own[0] + strlen("LISTEN_PID=");
    return 0;
}

/* Decimal digits of pid at dst (SUP_PID_LEN + 1 bytes): async-signal-safe. */
static void put_pid(char *dst, pid_t pid)
{
    char tmp[SUP_PID_LEN];
    unsigned long v = (unsigned long)pid;
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < sizeof(tmp));
    while (n)
        *dst++ = tmp[--n];
    *dst = 0;
}

/*
 * In the child, between fork and exec: the listeners go to fds 3, 4, ...
 * in --listen order (copied above that range first, so that no listener
 * is overwritten before it is copied), LISTEN_PID gets our pid, and the
 * program gets the stop signal if the supervisor dies. Only
 * async-signal-safe calls here.
 */
static void __attribute__((noreturn)) sup_child(struct sup *s, pid_t parent)
{
    size_t n = s->o->nlisten;
    int high[n ? n : 1];
    sigset_t none;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (prctl(PR_SET_PDEATHSIG, s->o->stop_sig) < 0 || getppid() != parent)
        _exit(RUN_EXIT_NOEXEC);
    for (size_t i = 0; i < n; i++)
        if ((high[i] = fcntl(s->fds[i], F_DUPFD_CLOEXEC, (int)(3 + n))) < 0)
            _exit(RUN_EXIT_NOEXEC);
    for (size_t i = 0; i < n; i++)
        if (dup2(high[i], (int)(3 + i)) < 0)
            _exit(RUN_EXIT_NOEXEC);
    put_pid(s->pid_var, getpid());
    execve(s->exe, s->o->argv, s->envp);
    _exit(RUN_EXIT_NOEXEC);
}

static int sup_start(struct sup *s)
{
    pid_t parent = getpid();
    int r = sup_env(s);

    if (r < 0) {
        sup_say(s, "out of memory");
        return r;
    }
    s->child = fork();
    if (s->child < 0) {
        r = -errno;
        sup_say(s, "fork: %s", strerror(-r));
        return r;
    }
    if (s->child == 0)
        sup_child(s, parent);
    s->started = baton__now_ms();
    s->deadline = s->started + (uint64_t)s->o->ready_timeout_s * 1000;
    sup_log(s, "started %s, pid %d, with %zu listeners", s->exe, (int)s->child, s->o->nlisten);
    return 0;
}

/* The program's exit as a shell reports it: the status, or 128 + signal. */
static int sup_status(int wstatus)
{
    return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
}

/* "SIGTERM", or "signal 40" for one without a name. */
static const char *sig_name(int sig)
{
    static char buf[32];
    const char *abbrev = sigabbrev_np(sig);

    if (abbrev)
        snprintf(buf, sizeof(buf), "SIG%s", abbrev);
    else
        snprintf(buf, sizeof(buf), "signal %d", sig);
    return buf;
}

static void sup_describe(int wstatus, char *buf, size_t len)
{
    if (WIFEXITED(wstatus))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(wstatus));
    else
        snprintf(buf, len, "was killed by %s", sig_name(WTERMSIG(wstatus)));
}

static void sup_reap(struct sup *s)
{
    if (!s->reaped && waitpid(s->child, &s->wstatus, WNOHANG) == s->child)
        s->reaped = true;
}

/* pid's parent, from /proc/PID/stat (the field after the command's last
 * ')'); -1 when pid is gone. */
static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512], *p;
    ssize_t n;
    int fd, ppid;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
        return -1;
    return ppid;
}

/* Our program or one of its descendants. A sender that is gone (and
 * reaped) by the time we look cannot be traced and does not count. */
static bool from_program(const struct sup *s, pid_t pid)
{
    for (int i = 0; i < SUP_DEPTH_MAX && pid > 1; i++) {
        if (pid == s->child)
            return true;
        pid = parent_of(pid);
    }
    return false;
}

/* Is line one of msg's newline-separated lines? */
static bool has_line(const char *msg, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = msg;;) {
        const char *end = strchr(p, '\n');
        if ((size_t)(end ? end - p : (ptrdiff_t)strlen(p)) == n && !strncmp(p, line, n))
            return true;
        if (!end)
            return false;
        p = end + 1;
    }
}

/* Read one notification: 1 when it is READY=1 from our program, 0 for
 * anything else (ignored), -EAGAIN when none waits. Fds attached to a
 * message (FDSTORE=1) are closed: we keep no store. */
static int sup_notify_read(struct sup *s)
{
    char buf[SUP_NOTIFY_MAX + 1];
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 253)];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl)};
    struct ucred cr = {.pid = 0};
    bool have_cr = false;
    ssize_t n = recvmsg(s->notifyfd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? -EAGAIN : 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(0)) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                close(fd);
            }
        } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(cr))) {
            memcpy(&cr, CMSG_DATA(c), sizeof(cr));
            have_cr = true;
        }
    }
    buf[n] = 0;
    if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || !have_cr) {
        sup_log(s, "notify: ignored a %s message", have_cr ? "truncated" : "anonymous");
        return 0;
    }
    if (!from_program(s, cr.pid)) {
        sup_log(s,
                "notify: ignored a message from pid %d, which is not our program (pid %d) "
                "or one of its descendants",
                (int)cr.pid, (int)s->child);
        return 0;
    }
    return has_line(buf, "READY=1") ? 1 : 0;
}

/* Send the stop signal and give the program the drain timeout. */
static void sup_stop(struct sup *s, const char *why)
{
    if (s->phase == SUP_STOPPING)
        return;
    s->phase = SUP_STOPPING;
    s->deadline = baton__now_ms() + (uint64_t)s->o->drain_s * 1000;
    sup_log(s, "%s: sending %s to pid %d", why, sig_name(s->o->stop_sig), (int)s->child);
    if (!s->reaped)
        kill(s->child, s->o->stop_sig);
}

/* Our program is ready: tell the old copy to step down. */
static int sup_ready(struct sup *s)
{
    int r = baton_ready(s->b);

    if (r < 0) {
        sup_say(s, "baton_ready: %s; stopping %s; the old copy serves on", baton_last_error(s->b),
                s->o->argv[0]);
        return r;
    }
    s->phase = SUP_SERVING;
    s->ready = true;
    sup_log(s, "pid %d is ready; generation %d serves", (int)s->child, baton_generation(s->b));
    return 0;
}

/* HUP: start the same command line again, which takes over from us. It
 * blocks until that copy is ready or has failed (signals wait meanwhile). */
static void sup_upgrade(struct sup *s)
{
    int r;

    if (s->phase != SUP_SERVING) {
        sup_log(s, "SIGHUP ignored: not serving");
        return;
    }
    sup_log(s, "SIGHUP: starting our successor");
    r = baton_upgrade(s->b, NULL);
    if (r < 0)
        sup_say(s, "upgrade on SIGHUP failed: %s; serving on", baton_last_error(s->b));
}

/* Handle pending signals. Returns -ECANCELED when a TERM or INT arrives
 * before the program is ready. */
static int sup_on_signals(struct sup *s)
{
    struct signalfd_siginfo si;

    while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
        int sig = (int)si.ssi_signo;
        if (sig == SIGCHLD)
            continue;
        if (sig == SIGHUP) {
            sup_upgrade(s);
        } else if (sig == SIGUSR1 || sig == SIGUSR2) {
            if (!s->reaped)
                kill(s->child, sig);
        } else if (s->phase == SUP_STARTING) {
            sup_say(s, "%s before %s was ready; stopping it", sig_name(sig), s->o->argv[0]);
            return -ECANCELED;
        } else {
            sup_stop(s, sig_name(sig));
        }
    }
    sup_reap(s);
    return 0;
}

static int sup_timeout(const struct sup *s)
{
    uint64_t now = baton__now_ms(), at = s->deadline;

    if (s->phase == SUP_SERVING)
        return -1;
    if (s->phase == SUP_STARTING && s->o->ready_after_ms &&
        s->started + (uint64_t)s->o->ready_after_ms < at)
        at = s->started + (uint64_t)s->o->ready_after_ms;
    return at <= now ? 0 : (int)(at - now);
}

/*
 * Wait until the program is ready (0), or fails to be: it exits, the ready
 * timeout passes, TERM or INT arrives (-errno; said on stderr).
 */
static int sup_wait_ready(struct sup *s)
{
    struct pollfd p[2] = {{.fd = s->sigfd, .events = POLLIN},
                          {.fd = s->notifyfd, .events = POLLIN}};
    char what[96];
    int r;

    for (;;) {
        uint64_t now;
        if (sup_on_signals(s) < 0)
            return -ECANCELED;
        while ((r = sup_notify_read(s)) != -EAGAIN)
            if (r == 1)
                return 0;
        if (s->reaped) {
            sup_describe(s->wstatus, what, sizeof(what));
            sup_say(s, "%s (pid %d) %s before it was ready%s", s->o->argv[0], (int)s->child, what,
                    baton_inherited(s->b) ? "; the old copy serves on" : "");
            return -ECHILD;
        }
        now = baton__now_ms();
        if (s->o->ready_after_ms && now >= s->started + (uint64_t)s->o->ready_after_ms)
            return 0;
        if (now >= s->deadline) {
            sup_say(s, "%s (pid %d) did not say READY=1 within %d s; stopping it%s", s->o->argv[0],
                    (int)s->child, s->o->ready_timeout_s,
                    baton_inherited(s->b) ? "; the old copy serves on" : "");
            return -ETIMEDOUT;
        }
        if (poll(p, 2, sup_timeout(s)) < 0 && errno != EINTR)
            return -errno;
    }
}

/* Read the upgrade events: true once a successor is final. One on
 * probation is not: our program serves on beside it, and alone again if
 * it dies (the library gives the directory back to us). */
static bool sup_released(struct sup *s)
{
    struct baton_event ev;
    bool done = false;
    int t;

    while ((t = baton_upgrade_event(s->b, &ev)) > 0) {
        if (t == BATON_EVENT_STEP_DOWN && s->o->probation_ms > 0)
            sup_log(s, "generation %d (pid %d) serves, on probation for %d ms: serving on",
                    ev.generation, (int)ev.pid, s->o->probation_ms);
        else if (t == BATON_EVENT_RESUME)
            sup_say(s, "generation %d (pid %d) died on probation: generation %d serves alone again",
                    ev.generation, (int)ev.pid, baton_generation(s->b));
        else if (t == BATON_EVENT_RELEASED)
            done = true;
    }
    return done;
}

/*
 * Serve until the program is gone: stopped because a successor took over
 * (the upgrade fd), because TERM or INT came, or on its own. Returns our
 * exit status.
 */
static int sup_serve(struct sup *s)
{
    char what[96];

    while (!s->reaped) {
        /* Until we own the directory, only the program matters. */
        struct pollfd p[4] = {
            {.fd = s->sigfd, .events = POLLIN},
            {.fd = s->notifyfd, .events = POLLIN},
            {.fd = s->ready ? baton_control_fd(s->b) : -1, .events = POLLIN},
            {.fd = s->ready && !s->superseded ? baton_upgrade_fd(s->b) : -1, .events = POLLIN}};
        int t = sup_timeout(s);

        if (s->phase == SUP_STOPPING && t == 0 && !s->killed) {
            sup_say(s, "%s (pid %d) still runs %d s after %s; killing it", s->o->argv[0],
                    (int)s->child, s->o->drain_s, sig_name(s->o->stop_sig));
            kill(s->child, SIGKILL);
            s->killed = true;
        }
        if (poll(p, 4, s->killed ? 1000 : t) < 0 && errno != EINTR)
            break;
        if (p[2].revents & POLLIN)
            baton_dispatch(s->b);
        if ((p[3].revents & POLLIN) && sup_released(s)) {
            s->superseded = true;
            sup_stop(s, "a successor serves");
        }
        while (sup_notify_read(s) != -EAGAIN)
            ;
        sup_on_signals(s);
    }
    if (!s->reaped)
        return 1;
    sup_describe(s->wstatus, what, sizeof(what));
    if (s->phase != SUP_STOPPING) {
        sup_say(s, "%s (pid %d) %s", s->o->argv[0], (int)s->child, what);
        return sup_status(s->wstatus);
    }
    sup_log(s, "%s (pid %d) %s", s->o->argv[0], (int)s->child, what);
    /* Asked to stop, it stopped: ending by the stop signal itself is
     * what we asked for, not a failure. */
    if (WIFSIGNALED(s->wstatus) && WTERMSIG(s->wstatus) == s->o->stop_sig && !s->killed)
        return 0;
    return sup_status(s->wstatus);
}

/* A program that never became ready is stopped like one that served (it
 * may have accepted connections: it finishes them), and reaped. */
static void sup_abandon(struct sup *s)
{
    if (s->child <= 0)
        return;
    sup_stop(s, "not ready");
    sup_serve(s);
}

static void sup_free(struct sup *s)
{
    if (s->notifyfd >= 0) {
        close(s->notifyfd);
        unlinkat(s->dirfd, s->notify_leaf, 0);
    }
    if (s->dirfd >= 0)
        close(s->dirfd);
    if (s->sigfd >= 0)
        close(s->sigfd);
    baton_free(s->b);
    free(s->fds);
    free(s->envp);
    for (size_t i = 0; i < SUP_ENV_OWN; i++)
        free(s->envp_own[i]);
    if (s->log && s->log != stderr)
        fclose(s->log);
}

static int sup_log_open(struct sup *s)
{
    const char *path = s->o->log;
    int fd;

    if (!path)
        return 0;
    if (!strcmp(path, "-") || !strcmp(path, "stderr")) {
        s->log = stderr;
        return 0;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0)
        s->log = fdopen(fd, "a");
    if (!s->log) {
        fprintf(stderr, "baton run: --log %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setvbuf(s->log, NULL, _IOLBF, 0);
    return 0;
}

int run_supervise(const struct run_opts *o)
{
    struct sup s = {.o = o, .sigfd = -1, .notifyfd = -1, .dirfd = -1};
    int st = 1, r;

    if (sup_log_open(&s) < 0)
        return 1;
    r = sup_find_exe(&s, o->argv[0]);
    if (r < 0) {
        sup_say(&s, "%s: %s", o->argv[0], r == -ENOENT ? "command not found" : strerror(-r));
        sup_free(&s);
        return RUN_EXIT_NOEXEC;
    }
    if (sup_signals(&s) < 0) {
        sup_say(&s, "signalfd: %s", strerror(errno));
        goto out;
    }
    if (sup_open(&s) < 0 || sup_notify_open(&s) < 0 || sup_start(&s) < 0)
        goto out;
    if (sup_wait_ready(&s) < 0 || sup_ready(&s) < 0) {
        sup_abandon(&s);
        goto out;
    }
    st = sup_serve(&s);
out:
    sup_free(&s);
    return st;
}
