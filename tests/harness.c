/* SPDX-License-Identifier: MIT */
/* The test harness; see harness.h. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

#define MAX_PROCS 256

static pid_t main_pid;
static int fd_baseline = -1;
static char tmpdir[PATH_MAX];
static const char *prog = "test";
static pid_t procs[MAX_PROCS];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline, for poll(). */
static int left_ms(uint64_t deadline)
{
    uint64_t now = now_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

const char *t_fmt(long long v, char *buf, size_t len)
{
    const char *name = v < 0 && v > -4096 ? strerrorname_np((int)-v) : NULL;

    if (name)
        snprintf(buf, len, "%lld (-%s)", v, name);
    else
        snprintf(buf, len, "%lld", v);
    return buf;
}

static void vreport(const char *kind, const char *file, int line, const char *fmt, va_list ap)
{
    char msg[1024];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (file)
        fprintf(stderr, "%s: %s [pid %d] %s:%d: %s\n", prog, kind, (int)getpid(), file, line, msg);
    else
        fprintf(stderr, "%s: %s [pid %d] %s\n", prog, kind, (int)getpid(), msg);
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("FAIL", file, line, fmt, ap);
    va_end(ap);
    exit(1);
}

void t_fail_cmp(const char *file, int line, const char *ea, const char *op, const char *eb,
                long long a, long long b)
{
    char x[64], y[64];

    t_fail(file, line, "expected %s %s %s, got %s vs %s", ea, op, eb, t_fmt(a, x, sizeof(x)),
           t_fmt(b, y, sizeof(y)));
}

void t_skip(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("SKIP", NULL, 0, fmt, ap);
    va_end(ap);
    exit(T_SKIP);
}

void t_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("info", NULL, 0, fmt, ap);
    va_end(ap);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

/* Kill and reap every child still around, ours or orphans reparented to us
 * (we are a child subreaper), so that no server outlives its test. */
static void reap_all(void)
{
    char path[64], buf[4096];
    int fd;
    ssize_t n;

    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] > 0)
            kill(procs[i], SIGKILL);
    for (int round = 0; round < 3; round++) {
        snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            buf[n > 0 ? n : 0] = 0;
            for (char *s = buf, *e; *s; s = e) {
                long pid = strtol(s, &e, 10);
                if (e == s)
                    break;
                if (pid > 0)
                    kill((pid_t)pid, SIGKILL);
            }
        }
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
    }
    /* Children killed just now may still be exiting: wait for them briefly. */
    uint64_t deadline = now_ms() + 2000;
    while (now_ms() < deadline) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r < 0)
            break;
        if (r == 0) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            /* Reaping is not synchronisation: nothing depends on this pace. */
            nanosleep(&ts, NULL);
        }
    }
}

static void at_exit(void)
{
    if (getpid() != main_pid)
        return;
    reap_all();
    if (tmpdir[0])
        nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void t_init(int argc, char **argv)
{
    struct rlimit rl;
    const char *slash;

    if (argc > 0 && argv[0]) {
        slash = strrchr(argv[0], '/');
        prog = slash ? slash + 1 : argv[0];
    }
    main_pid = getpid();
    setvbuf(stderr, NULL, _IONBF, 0);
    /* Orphaned successors (started by a library under test) become ours. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
        rl.rlim_cur = 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_DFL);
    atexit(at_exit);
    fd_baseline = t_fd_count();
}

static void list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    char path[300], target[PATH_MAX];

    if (!d)
        return;
    while ((de = readdir(d))) {
        ssize_t n;
        if (de->d_name[0] == '.' || atoi(de->d_name) == dirfd(d))
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
        n = readlink(path, target, sizeof(target) - 1);
        target[n > 0 ? n : 0] = 0;
        fprintf(stderr, "  fd %s -> %s\n", de->d_name, target);
    }
    closedir(d);
}

int t_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    if (!d)
        t_fail(__FILE__, __LINE__, "opendir(/proc/self/fd): %m");
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

bool t_fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

int t_done(void)
{
    int n = t_fd_count();

    if (n != fd_baseline) {
        fprintf(stderr, "%s: open fds now:\n", prog);
        list_fds();
        t_fail(__FILE__, __LINE__, "fd leak: %d open fds at start, %d at the end", fd_baseline, n);
    }
    return 0;
}

const char *t_tmpdir(void)
{
    const char *base = getenv("TMPDIR");

    if (tmpdir[0])
        return tmpdir;
    /* Unix socket paths are short: keep the base short too. */
    if (!base || !base[0] || strlen(base) > 40)
        base = "/tmp";
    snprintf(tmpdir, sizeof(tmpdir), "%s/baton-test-XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        tmpdir[0] = 0;
        t_fail(__FILE__, __LINE__, "mkdtemp: %m");
    }
    return tmpdir;
}

char *t_path(char *buf, const char *leaf)
{
    snprintf(buf, PATH_MAX, "%s/%s", t_tmpdir(), leaf);
    return buf;
}

struct baton_options t_opts(const char *dir, int ready_timeout_ms, unsigned flags)
{
    struct baton_options o = {
        .dir = dir,
        .ready_timeout_ms = ready_timeout_ms,
        .allowed_uid = (uid_t)-1,
        .flags = flags,
    };
    return o;
}

static void track(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] <= 0) {
            procs[i] = pid;
            return;
        }
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] == pid)
            procs[i] = 0;
}

/* In a new child: close every fd but 0-2 and keep. */
static void close_inherited(int keep)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int fds[4096], n = 0;

    if (!d)
        _exit(1);
    while ((de = readdir(d)) && n < 4096) {
        int fd = atoi(de->d_name);
        if (de->d_name[0] != '.' && fd > 2 && fd != keep && fd != dirfd(d))
            fds[n++] = fd;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static int pidfd_of(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

void t_spawn(struct t_proc *p, t_proc_fn fn, void *arg)
{
    int sv[2];
    pid_t pid;

    pid_t parent = getpid();

    T_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    pid = T_SYS(fork());
    if (pid == 0) {
        int r;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        memset(procs, 0, sizeof(procs));
        close_inherited(sv[1]);
        r = fn(sv[1], arg);
        close(sv[1]);
        exit(r);
    }
    close(sv[1]);
    track(pid);
    p->pid = pid;
    p->chan = sv[0];
    p->pidfd = pidfd_of(pid);
    if (p->pidfd < 0)
        t_fail(__FILE__, __LINE__, "pidfd_open: %m");
}

void t_spawn_exec(struct t_proc *p, char *const argv[], int *ret_out)
{
    int out[2] = {-1, -1}, err[2];
    pid_t pid;

    if (ret_out)
        T_SYS(pipe2(out, O_CLOEXEC));
    /* Reports an exec failure to the parent. */
    T_SYS(pipe2(err, O_CLOEXEC));
    pid = T_SYS(fork());
    if (pid == 0) {
        int e;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (ret_out)
            dup2(out[1], 1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        e = errno;
        if (write(err[1], &e, sizeof(e)) < 0)
            _exit(127);
        _exit(127);
    }
    close(err[1]);
    int e = 0;
    ssize_t n = read(err[0], &e, sizeof(e));
    close(err[0]);
    if (n == sizeof(e)) {
        waitpid(pid, NULL, 0);
        t_fail(__FILE__, __LINE__, "exec %s: %s", argv[0], strerror(e));
    }
    track(pid);
    p->pid = pid;
    p->chan = -1;
    p->pidfd = pidfd_of(pid);
    if (p->pidfd < 0)
        t_fail(__FILE__, __LINE__, "pidfd_open: %m");
    if (ret_out) {
        close(out[1]);
        *ret_out = out[0];
    }
}

static void proc_release(struct t_proc *p)
{
    untrack(p->pid);
    if (p->pidfd >= 0)
        close(p->pidfd);
    if (p->chan >= 0)
        close(p->chan);
    p->pidfd = p->chan = -1;
    p->pid = 0;
}

int t_proc_exited(struct t_proc *p, int timeout_ms)
{
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    int r;

    do
        r = poll(&pfd, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r > 0 ? 0 : -ETIMEDOUT;
}

int t_proc_wait(struct t_proc *p, int timeout_ms)
{
    int status = 0;
    pid_t pid = p->pid;

    if (t_proc_exited(p, timeout_ms) < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        proc_release(p);
        t_fail(__FILE__, __LINE__, "process %d did not exit within %d ms", (int)pid, timeout_ms);
    }
    if (waitpid(pid, &status, 0) != pid) {
        if (errno != ECHILD)
            t_fail(__FILE__, __LINE__, "waitpid(%d): %m", (int)pid);
        proc_release(p);
        return -1;
    }
    proc_release(p);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

void t_proc_kill(struct t_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    proc_release(p);
}

int t_run(char *const argv[], int timeout_ms, char *out, size_t cap)
{
    struct t_proc p;
    uint64_t deadline = now_ms() + timeout_ms;
    size_t len = 0;
    int fd;

    t_spawn_exec(&p, argv, &fd);
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        char buf[1024];
        ssize_t n;
        int r = poll(&pfd, 1, left_ms(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        if (out && len + 1 < cap) {
            size_t k = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
            memcpy(out + len, buf, k);
            len += k;
        }
    }
    close(fd);
    if (out && cap)
        out[len] = 0;
    return t_proc_wait(&p, left_ms(deadline) + 1);
}

void t_tell(int chan, long long v)
{
    ssize_t n = send(chan, &v, sizeof(v), MSG_NOSIGNAL);
    if (n != sizeof(v))
        t_fail(__FILE__, __LINE__, "t_tell(%lld): %m", v);
}

int t_try_hear(int chan, int timeout_ms, long long *v)
{
    char *p = (char *)v;
    size_t got = 0;
    uint64_t deadline = now_ms() + timeout_ms;

    while (got < sizeof(*v)) {
        struct pollfd pfd = {.fd = chan, .events = POLLIN};
        ssize_t n;
        int r = poll(&pfd, 1, left_ms(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -ETIMEDOUT;
        n = recv(chan, p + got, sizeof(*v) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == ECONNRESET ? -EPIPE : -errno;
        if (n == 0)
            return -EPIPE;
        got += n;
    }
    return 0;
}

long long t_hear(int chan, int timeout_ms)
{
    long long v = 0;
    int r = t_try_hear(chan, timeout_ms, &v);

    if (r == -ETIMEDOUT)
        t_fail(__FILE__, __LINE__, "t_hear: nothing within %d ms", timeout_ms);
    if (r < 0)
        t_fail(__FILE__, __LINE__, "t_hear: %s (the other process ended?)", strerror(-r));
    return v;
}

static socklen_t loopback(int family, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        s6->sin6_port = htons(port);
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s4->sin_port = htons(port);
    return sizeof(*s4);
}

bool t_have_ipv6(void)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(AF_INET6, 0, &ss);
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0)
        return false;
    ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
    close(fd);
    return ok;
}

int t_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}

int t_free_port(int family)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, 0, &ss);
    int fd = T_SYS(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0)), port;

    T_SYS(bind(fd, (struct sockaddr *)&ss, len));
    port = T_OK(t_port(fd));
    close(fd);
    return port;
}

static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    int flags = fcntl(fd, F_GETFL), err = 0;
    socklen_t el = sizeof(err);

    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (connect(fd, sa, len) < 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int r;
        if (errno != EINPROGRESS && errno != EAGAIN)
            return -errno;
        do
            r = poll(&pfd, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        if (r == 0)
            return -ETIMEDOUT;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
            return -errno;
        if (err)
            return -err;
    }
    fcntl(fd, F_SETFL, flags);
    return 0;
}

int t_tcp_connect(int family, int port, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

    if (fd < 0)
        return -errno;
    r = connect_bounded(fd, (struct sockaddr *)&ss, len, timeout_ms);
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

int t_unix_connect(const char *path, int timeout_ms)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, r;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    r = connect_bounded(fd, (struct sockaddr *)&sa, sizeof(sa), timeout_ms);
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

int t_ctl_connect(const char *dir)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, n;

    n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control.sock", dir);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int t_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
            n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= n;
    }
    return 0;
}

static int wait_in(int fd, uint64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r;

    do
        r = poll(&pfd, 1, left_ms(deadline));
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    return r == 0 ? -ETIMEDOUT : 0;
}

ssize_t t_read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    size_t len = 0;

    while (len + 1 < cap) {
        ssize_t n;
        int r = wait_in(fd, deadline);
        if (r < 0)
            return r;
        n = read(fd, buf + len, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        if (buf[len++] == '\n')
            break;
    }
    buf[len] = 0;
    return len;
}

int t_read_full(int fd, void *buf, size_t len, int timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    char *p = buf;

    while (len) {
        ssize_t n;
        int r = wait_in(fd, deadline);
        if (r < 0)
            return r;
        n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= n;
    }
    return 0;
}

int t_ask(int fd, const char *req, char *resp, size_t cap, int timeout_ms)
{
    char line[512];
    ssize_t n;
    int r;

    snprintf(line, sizeof(line), "%s\n", req);
    r = t_write_all(fd, line, strlen(line));
    if (r < 0)
        return r;
    n = t_read_line(fd, resp, cap, timeout_ms);
    if (n < 0)
        return (int)n;
    if (n == 0 || resp[n - 1] != '\n')
        return -EPIPE;
    resp[n - 1] = 0;
    return 0;
}

int t_request(int family, int port, const char *req, char *resp, size_t cap)
{
    int fd = t_tcp_connect(family, port, T_TIMEOUT), r;

    if (fd < 0)
        return fd;
    r = t_ask(fd, req, resp, cap, T_TIMEOUT);
    close(fd);
    return r;
}

int t_serve_one(int lfd, const char *tag, int timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    char line[512], resp[600];
    ssize_t n;
    int fd, r;

    r = wait_in(lfd, deadline);
    if (r < 0)
        return r;
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = t_read_line(fd, line, sizeof(line), left_ms(deadline));
    if (n <= 0 || line[n - 1] != '\n') {
        close(fd);
        return n < 0 ? (int)n : -EPIPE;
    }
    line[n - 1] = 0;
    snprintf(resp, sizeof(resp), "%s %s\n", tag, line);
    r = t_write_all(fd, resp, strlen(resp));
    close(fd);
    return r;
}

int t_owner_loop(baton *b, int lfd, int chan, const char *tag)
{
    int ufd = baton_upgrade_fd(b), cfd = baton_control_fd(b);

    T_OK(ufd);
    for (;;) {
        struct pollfd p[4] = {
            {.fd = ufd, .events = POLLIN},
            {.fd = chan, .events = POLLIN},
            {.fd = lfd, .events = POLLIN},
            {.fd = cfd, .events = POLLIN},
        };
        int n = cfd >= 0 ? 4 : 3, r;

        r = poll(p, n, 30000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            t_fail(__FILE__, __LINE__, "owner loop: nothing happened for 30 s");
        if (r < 0)
            t_fail(__FILE__, __LINE__, "poll: %m");
        if (p[0].revents & POLLIN) {
            t_tell(chan, T_MSG_SUPERSEDED);
            return 1;
        }
        if (p[1].revents) {
            long long v;
            if (t_try_hear(chan, 1000, &v) < 0 || v == T_MSG_STOP)
                return 0;
        }
        if (p[2].revents & POLLIN) {
            T_OK(t_serve_one(lfd, tag, T_TIMEOUT));
            t_tell(chan, T_MSG_SERVED);
        }
        if (n == 4 && (p[3].revents & POLLIN))
            T_OK(baton_dispatch(b));
    }
}

long long t_ino(int fd)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    return (long long)st.st_ino;
}

void t_proc_adopt(struct t_proc *p, pid_t pid)
{
    p->pid = pid;
    p->chan = -1;
    p->pidfd = pidfd_of(pid);
    if (p->pidfd < 0)
        t_fail(__FILE__, __LINE__, "pidfd_open(%d): %m", (int)pid);
    track(pid);
}

int t_report_bind(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path))
        t_fail(__FILE__, __LINE__, "%s: too long for a unix socket", path);
    strcpy(sa.sun_path, path);
    fd = T_SYS(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    T_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    return fd;
}

void t_report_recv(int fd, char *buf, size_t cap, int timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    ssize_t n;

    if (wait_in(fd, deadline) < 0)
        t_fail(__FILE__, __LINE__, "no report within %d ms", timeout_ms);
    n = recv(fd, buf, cap - 1, 0);
    if (n < 0)
        t_fail(__FILE__, __LINE__, "recv(report): %m");
    buf[n] = 0;
}

int t_report_send(const char *path, const char *fmt, ...)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char msg[512];
    va_list ap;
    int fd, r = 0;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        r = -errno;
    close(fd);
    return r;
}

int t_fds_with_ino(long long ino, int *ret_fd)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    char path[300];
    int n = 0;

    if (!d)
        t_fail(__FILE__, __LINE__, "opendir(/proc/self/fd): %m");
    while ((de = readdir(d))) {
        struct stat st;
        int fd = atoi(de->d_name);
        if (de->d_name[0] == '.' || fd == dirfd(d))
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && (long long)st.st_ino == ino) {
            n++;
            if (ret_fd)
                *ret_fd = fd;
        }
    }
    closedir(d);
    return n;
}

/* mount(2) gives EINVAL for a propagation change on anything but the root
 * of a mount, which / is not in a plain chroot; statx tells that case apart
 * from the others, which are real failures. */
void t_private_mounts(void)
{
    struct statx stx;
    int err;

    if (unshare(CLONE_NEWNS) < 0)
        t_skip("unshare(CLONE_NEWNS): %s (a mount namespace needs CAP_SYS_ADMIN)", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
        return;
    err = errno;
#ifdef STATX_ATTR_MOUNT_ROOT
    if (err == EINVAL && statx(AT_FDCWD, "/", 0, 0, &stx) == 0 &&
        (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
        !(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
        t_skip("/ is not a mount point (a chroot?), so no mount can be made private here; "
               "bind-mount the root onto itself or use a container");
#else
    (void)stx;
#endif
    t_fail(__FILE__, __LINE__, "making / private in a new mount namespace: %s", strerror(err));
}

int t_dir_wait(const char *dir, bool (*pred)(void *arg), void *arg, int timeout_ms)
{
    const uint32_t mask = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_CLOSE_WRITE | IN_ONLYDIR;
    char parent[PATH_MAX], *slash;
    struct timespec now;
    long long deadline;
    int ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK), r = -ETIMEDOUT;

    if (ino < 0)
        t_fail(__FILE__, __LINE__, "inotify_init1: %m");
    snprintf(parent, sizeof(parent), "%s", dir);
    slash = strrchr(parent, '/');
    if (slash && slash != parent)
        *slash = 0;
    /* The parent too: the directory may not exist yet. */
    inotify_add_watch(ino, parent, mask);
    clock_gettime(CLOCK_MONOTONIC, &now);
    deadline = now.tv_sec * 1000LL + now.tv_nsec / 1000000 + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = ino, .events = POLLIN};
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        long long left;

        /* Watched before looking, so no change after the look is missed. */
        inotify_add_watch(ino, dir, mask);
        if (pred(arg)) {
            r = 0;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        left = deadline - (now.tv_sec * 1000LL + now.tv_nsec / 1000000);
        if (left <= 0)
            break;
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
            t_fail(__FILE__, __LINE__, "poll(inotify): %m");
        while (read(ino, buf, sizeof(buf)) > 0) {
        }
    }
    close(ino);
    return r;
}

int t_owner_pid(int dirfd, int *gen)
{
    struct baton__record rec;
    int pid = 0;

    if (baton__record_read(dirfd, &rec) == 0) {
        pid = rec.pid;
        if (gen)
            *gen = rec.generation;
        baton__record_free(&rec);
    }
    return pid;
}

struct owner_is {
    const char *dir;
    pid_t pid;
};

static bool owner_is(void *arg)
{
    struct owner_is *o = arg;
    int fd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), pid;

    if (fd < 0)
        return false;
    pid = t_owner_pid(fd, NULL);
    close(fd);
    return pid == o->pid;
}

int t_wait_owner(const char *dir, pid_t pid, int timeout_ms)
{
    struct owner_is o = {dir, pid};
    return t_dir_wait(dir, owner_is, &o, timeout_ms);
}

static long long t_now_ms_(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* A child of one of owner's threads blocked in recvfrom(2): its pid, 0 none. */
pid_t t_standby_parked(pid_t owner)
{
    char path[320], buf[512], sc[64];
    pid_t found = 0;
    struct dirent *e;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)owner);
    d = opendir(path);
    while (d && !found && (e = readdir(d))) {
        char *p, *end;
        ssize_t n;
        int fd;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%s/children", (int)owner, e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        for (p = buf; !found; p = end) {
            long child = strtol(p, &end, 10);
            if (end == p)
                break;
            snprintf(path, sizeof(path), "/proc/%ld/syscall", child);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            n = read(fd, sc, sizeof(sc) - 1);
            close(fd);
            sc[n > 0 ? n : 0] = 0;
            if (n > 0 && strtol(sc, NULL, 10) == SYS_recvfrom)
                found = (pid_t)child;
        }
    }
    if (d)
        closedir(d);
    return found;
}

/* Wait for owner's standby to park: polls /proc at 5 ms with a deadline
 * (a process blocking in a system call sends no event to wait on). */
pid_t t_wait_standby(pid_t owner)
{
    long long deadline = t_now_ms_() + T_TIMEOUT;
    pid_t s;

    while (!(s = t_standby_parked(owner))) {
        if (t_now_ms_() > deadline)
            t_fail(__FILE__, __LINE__, "no standby of pid %d parked within %d ms", (int)owner,
                   T_TIMEOUT);
        poll(NULL, 0, 5);
    }
    return s;
}
