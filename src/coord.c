/* SPDX-License-Identifier: MIT */
/*
 * The coordination directory: its permission checks, the upgrade lock,
 * the control socket's path and publication, and the owner record.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define CTL_NAME    "control.sock"
#define LOCK_NAME   "lock"
#define RECORD_NAME "owner"

/*
 * May a path that is not reached through our directory fd be trusted? Only
 * when nobody but root and us can rename any of its components: each
 * ancestor is owned by root or by us, and one that others may write into
 * is sticky (they cannot rename our entries in it). Symbolic links are
 * refused. Used only where /proc is not mounted.
 */
static int path_trusted(const char *dir, char *why, size_t len)
{
    char buf[4096], *p, *next;
    struct stat st;
    int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC), r = 0;

    if (fd < 0 || snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf) || dir[0] != '/') {
        snprintf(why, len, "%s: not an absolute path", dir);
        r = -EINVAL;
        goto out;
    }
    for (p = buf + 1; p && *p; p = next) {
        int sub;

        next = strchr(p, '/');
        if (next)
            *next++ = 0;
        if (fstat(fd, &st) < 0 || (st.st_uid != 0 && st.st_uid != geteuid()) ||
            ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))) {
            snprintf(why, len, "an ancestor of %s (uid %u, mode %03o) may be renamed by others",
                     dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
            r = -EPERM;
            goto out;
        }
        sub = openat(fd, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            snprintf(why, len, "%s: component \"%s\": %s", dir, p, strerror(errno));
            r = -errno;
            goto out;
        }
        close(fd);
        fd = sub;
    }
out:
    if (fd >= 0)
        close(fd);
    return r;
}

/* Is /proc/self/fd/N the directory we hold? Then it is how we name what is
 * in it, and no rename of it or of an ancestor can redirect us. */
static bool proc_names_fd(int dirfd)
{
    struct stat a, b;
    char path[64];

    snprintf(path, sizeof(path), "/proc/self/fd/%d", dirfd);
    return fstat(dirfd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* /proc/thread-self (Linux 3.17) where there is one: /proc/self names the
 * thread group leader, and once the main thread has called pthread_exit()
 * its fd links no longer resolve for the library's thread. */
static const char *proc_fd_dir = "/proc/self/fd";
static pthread_once_t proc_fd_once = PTHREAD_ONCE_INIT;

static void proc_fd_pick(void)
{
    if (access("/proc/thread-self/fd", F_OK) == 0)
        proc_fd_dir = "/proc/thread-self/fd";
}

int baton__dir_name(int dirfd, bool by_fd, const char *dir, const char *leaf,
                    struct sockaddr_un *sa)
{
    int n;

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    pthread_once(&proc_fd_once, proc_fd_pick);
    if (by_fd)
        n = snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%d/%s", proc_fd_dir, dirfd, leaf);
    else
        n = snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s", dir, leaf);
    return n < 0 || (size_t)n >= sizeof(sa->sun_path) ? -ENAMETOOLONG : 0;
}

int baton__dir_check(int dirfd, const char *dir, bool ours, bool *ret_by_fd, char *why, size_t len)
{
    struct stat st;

    if (fstat(dirfd, &st) < 0) {
        snprintf(why, len, "fstat(%s): %s", dir, strerror(errno));
        return -errno;
    }
    /* Whoever can write the directory can replace the control socket and
     * hand us forged listeners: refuse anything but a private directory,
     * and for a process that serves there, its own. (The tool trusts the
     * directory's owner, whose processes it then talks to.) */
    if (ours && st.st_uid != geteuid()) {
        snprintf(why, len, "%s is owned by uid %u, not by us (uid %u)", dir, (unsigned)st.st_uid,
                 (unsigned)geteuid());
        return -EPERM;
    }
    if (st.st_mode & 022) {
        snprintf(why, len, "%s is writable by group or others (mode %03o)", dir,
                 (unsigned)(st.st_mode & 0777));
        return -EPERM;
    }
    *ret_by_fd = proc_names_fd(dirfd);
    return *ret_by_fd ? 0 : path_trusted(dir, why, len);
}

int baton__dir_open(baton *b)
{
    char why[512];
    int fd, r;

    if (mkdir(b->dir, 0700) < 0 && errno != EEXIST)
        return baton__fail(b, errno, "mkdir(%s)", b->dir);
    fd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return baton__fail(b, errno, "open(%s)", b->dir);
    /* From here on everything in the directory is reached through fd. */
    r = baton__dir_check(fd, b->dir, true, &b->dir_by_fd, why, sizeof(why));
    if (r < 0) {
        close(fd);
        return baton__fail(b, r, "%s", why);
    }
    b->dirfd = fd;
    return 0;
}

/*
 * The lock file holds a lease, "pid deadline" (CLOCK_MONOTONIC ms), beside
 * the flock. A successor that stalls (SIGSTOP, a debugger) keeps its flock,
 * but not past its lease: the owner drops it at the same time, and the next
 * successor goes ahead. The owner, which serves one takeover at a time, is
 * what keeps upgrades one at a time then.
 */
static bool lease_expired(int fd)
{
    char buf[64] = {0};
    unsigned long long deadline;
    int pid;

    if (pread(fd, buf, sizeof(buf) - 1, 0) <= 0 || sscanf(buf, "%d %llu", &pid, &deadline) != 2)
        return false;
    return baton__now_ms() > deadline;
}

static void lease_write(baton *b, int fd)
{
    char buf[48];
    /* Fixed width, so that one pwrite replaces the old lease whole. */
    int n = snprintf(buf, sizeof(buf), "%-10d %-20llu\n", (int)getpid(),
                     (unsigned long long)(baton__now_ms() + b->opts.ready_timeout_ms + 1000));

    if (pwrite(fd, buf, n, 0) != n)
        baton__log(b, BATON_LOG_WARNING, "%s/" LOCK_NAME ": cannot write the lease", b->dir);
}

int baton__lock(baton *b)
{
    uint64_t deadline = baton__now_ms() + b->opts.ready_timeout_ms;
    int fd;

    fd = openat(b->dirfd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return baton__fail(b, errno, "open(%s/" LOCK_NAME ")", b->dir);
    for (;;) {
        struct timespec ts = {0, 10 * 1000 * 1000};

        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int e = errno;
            close(fd);
            return baton__fail(b, e, "flock(%s/" LOCK_NAME ")", b->dir);
        }
        if (lease_expired(fd)) {
            baton__log(b, BATON_LOG_WARNING,
                       "%s: the lock's holder is past its deadline; going ahead", b->dir);
            break;
        }
        if (!(b->opts.flags & BATON_WAIT_LOCK) || baton__now_ms() >= deadline) {
            close(fd);
            return baton__fail(b, EBUSY, "%s: another successor is taking over", b->dir);
        }
        /* flock() has no timeout; poll the lock at a modest pace. */
        nanosleep(&ts, NULL);
    }
    lease_write(b, fd);
    b->lockfd = fd;
    return 0;
}

int baton__lock_try(baton *b)
{
    int fd = openat(b->dirfd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno == EWOULDBLOCK || errno == EINTR ? EBUSY : errno;
        if (e != EBUSY || !lease_expired(fd)) {
            close(fd);
            return -e;
        }
    }
    lease_write(b, fd);
    b->lockfd = fd;
    return 0;
}

/* Unlock explicitly: a child forked before baton_ready() shares the lock's
 * open file, and a close() here alone would leave the lock held by it. */
void baton__unlock(baton *b)
{
    if (b->lockfd >= 0) {
        flock(b->lockfd, LOCK_UN);
        close(b->lockfd);
    }
    b->lockfd = -1;
}

static int sockaddr_for(baton *b, const char *leaf, struct sockaddr_un *sa)
{
    if (baton__dir_name(b->dirfd, b->dir_by_fd, b->dir, leaf, sa) < 0)
        return baton__fail(b, ENAMETOOLONG, "%s/%s: too long for a unix socket", b->dir, leaf);
    return 0;
}

/* Connect to the owner's control socket. 1 with the connected fd, 0 when no
 * owner serves (no socket, or a stale one left by a crash), or -errno. */
int baton__connect(baton *b, uint64_t deadline, int *ret_fd)
{
    struct sockaddr_un sa;
    uint64_t now = baton__now_ms();
    struct timeval tv;
    int fd, r;

    r = sockaddr_for(b, CTL_NAME, &sa);
    if (r < 0)
        return r;
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return baton__fail(b, errno, "socket(AF_UNIX)");
    /* A unix connect blocks while the owner's backlog is full; bound it. */
    now = now < deadline ? deadline - now : 1;
    tv.tv_sec = now / 1000;
    tv.tv_usec = (now % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        if (e == ENOENT || e == ECONNREFUSED)
            return 0;
        if (e == EAGAIN || e == EINPROGRESS)
            e = ETIMEDOUT;
        return baton__fail(b, e, "connect(%s/" CTL_NAME ")", b->dir);
    }
    tv.tv_sec = tv.tv_usec = 0;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    *ret_fd = fd;
    return 1;
}

/* Bind and listen on a private name; baton__ctl_publish() renames it over
 * control.sock so that a successor never finds no socket at all. */
int baton__ctl_create(baton *b, int *ret_fd, char *ret_tmp, size_t tmp_len)
{
    struct sockaddr_un sa;
    int fd, r;

    snprintf(ret_tmp, tmp_len, ".control.%d.sock", (int)getpid());
    r = sockaddr_for(b, ret_tmp, &sa);
    if (r < 0)
        return r;
    unlinkat(b->dirfd, ret_tmp, 0);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return baton__fail(b, errno, "socket(AF_UNIX)");
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        unlinkat(b->dirfd, ret_tmp, 0);
        return baton__fail(b, e, "bind/listen(%s/%s)", b->dir, ret_tmp);
    }
    *ret_fd = fd;
    return 0;
}

int baton__ctl_publish(baton *b, int fd, const char *tmp)
{
    struct stat st;

    if (fstatat(b->dirfd, tmp, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return baton__fail(b, errno, "stat(%s/%s)", b->dir, tmp);
    if (renameat(b->dirfd, tmp, b->dirfd, CTL_NAME) < 0) {
        int e = errno;
        unlinkat(b->dirfd, tmp, 0);
        return baton__fail(b, e, "rename(%s/%s, " CTL_NAME ")", b->dir, tmp);
    }
    b->ctl_ino = st.st_ino;
    (void)fd;
    return 0;
}

static const char *kind_name(int kind)
{
    static const char *const names[] = {"fd", "tcp", "udp", "unix"};
    return kind >= 0 && kind <= BATON__KIND_MAX ? names[kind] : "?";
}

static void local_address(int fd, int kind, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[64];

    snprintf(buf, len, "-");
    if (kind != BATON__KIND_TCP && kind != BATON__KIND_UDP)
        return;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    }
}

/*
 * The owner record, for `baton status` and `baton wait`: one line per fact,
 * written to a temporary file and renamed, so a reader sees either the old
 * record or the new one.
 *   pid 123 / generation 4 / since 1700000000123 / fd NAME KIND ADDRESS LOCAL
 */
static int record_write(baton *b)
{
    char tmp[64], local[96];
    FILE *f;
    int fd;

    snprintf(tmp, sizeof(tmp), ".owner.%d.tmp", (int)getpid());
    fd = openat(b->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return baton__fail(b, errno, "open(%s/%s)", b->dir, tmp);
    f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return baton__fail(b, ENOMEM, "fdopen");
    }
    fprintf(f, "baton-owner 1\npid %d\ngeneration %d\nsince %llu\n", (int)getpid(), b->generation,
            (unsigned long long)b->since_ms);
    for (size_t i = 0; i < b->own.n; i++) {
        struct baton__entry *e = &b->own.v[i];
        local_address(e->fd, e->kind, local, sizeof(local));
        fprintf(f, "fd %s %s %s %s\n", e->name, kind_name(e->kind), e->addr[0] ? e->addr : "-",
                local);
    }
    if (fflush(f) != 0 || ferror(f)) {
        int e = errno;
        fclose(f);
        unlinkat(b->dirfd, tmp, 0);
        return baton__fail(b, e, "write(%s/%s)", b->dir, tmp);
    }
    fclose(f);
    if (renameat(b->dirfd, tmp, b->dirfd, RECORD_NAME) < 0) {
        int e = errno;
        unlinkat(b->dirfd, tmp, 0);
        return baton__fail(b, e, "rename(%s/%s, " RECORD_NAME ")", b->dir, tmp);
    }
    return 0;
}

/* The whole write under b->mu: the dispatcher writes the record too, and
 * both would use the same temporary file. */
int baton__record_write(baton *b)
{
    int r;

    pthread_mutex_lock(&b->mu);
    r = record_write(b);
    pthread_mutex_unlock(&b->mu);
    return r;
}

/* "KEY N\n" with N a plain decimal in [1, max]: 1, else 0. */
static bool record_num(const char *line, const char *key, unsigned long long max,
                       unsigned long long *ret)
{
    size_t k = strlen(key);
    unsigned long long v = 0;
    const char *p = line + k + 1;

    if (strncmp(line, key, k) != 0 || line[k] != ' ' || *p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (max - (unsigned)(*p - '0')) / 10)
            return false;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (*p != '\n' || v == 0)
        return false;
    *ret = v;
    return true;
}

/* "fd NAME KIND ADDRESS LOCAL\n": exactly four fields, each within its
 * bound, KIND one of ours. */
static bool record_fd(char *line, struct baton__record_fd *e)
{
    static const char *const kinds[] = {"fd", "tcp", "udp", "unix"};
    char *field[4], *save = NULL, *nl = strchr(line, '\n');
    size_t max[4] = {sizeof(e->name), sizeof(e->kind), sizeof(e->addr), sizeof(e->local)};
    bool kind_ok = false;
    int n = 0;

    if (strncmp(line, "fd ", 3) != 0 || !nl)
        return false;
    *nl = 0;
    for (char *t = strtok_r(line + 3, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (n == 4 || strlen(t) >= max[n])
            return false;
        field[n++] = t;
    }
    if (n != 4)
        return false;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        kind_ok |= strcmp(field[1], kinds[i]) == 0;
    if (!kind_ok)
        return false;
    snprintf(e->name, sizeof(e->name), "%s", field[0]);
    snprintf(e->kind, sizeof(e->kind), "%s", field[1]);
    snprintf(e->addr, sizeof(e->addr), "%s", field[2]);
    snprintf(e->local, sizeof(e->local), "%s", field[3]);
    return true;
}

int baton__record_read(int dirfd, struct baton__record *rec)
{
    struct baton__record r = {0};
    unsigned long long v;
    size_t cap = 0, linecap = 0;
    char *line = NULL;
    struct stat st;
    ssize_t len;
    FILE *f;
    int fd, err = 0;

    /* Non-blocking, and only a regular file of a sane size: a FIFO or a
     * device put there must not hang whoever reads (the owner's thread
     * among them). */
    fd = openat(dirfd, RECORD_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > BATON__RECORD_MAX_BYTES) {
        close(fd);
        return -EPROTO;
    }
    f = fdopen(fd, "re");
    if (!f) {
        close(fd);
        return -ENOMEM;
    }
    len = getline(&line, &linecap, f);
    if (len < 0 || strcmp(line, "baton-owner 1\n") != 0)
        err = -EPROTO;
    while (err == 0 && (len = getline(&line, &linecap, f)) >= 0) {
        struct baton__record_fd *e;

        if ((size_t)len != strlen(line)) { /* a NUL inside */
            err = -EPROTO;
        } else if (record_num(line, "pid", INT_MAX, &v)) {
            r.pid = (int)v;
        } else if (record_num(line, "generation", INT_MAX, &v)) {
            r.generation = (int)v;
        } else if (record_num(line, "since", ULLONG_MAX, &v)) {
            r.since_ms = v;
        } else if (r.nfds >= BATON__RECORD_MAX_FDS) {
            err = -EPROTO;
        } else {
            if (r.nfds == cap) {
                cap = cap ? 2 * cap : 8;
                e = realloc(r.fds, cap * sizeof(*e));
                if (!e) {
                    err = -ENOMEM;
                    break;
                }
                r.fds = e;
            }
            if (record_fd(line, &r.fds[r.nfds]))
                r.nfds++;
            else
                err = -EPROTO;
        }
    }
    free(line);
    fclose(f);
    if (err == 0 && (r.pid <= 0 || r.generation <= 0))
        err = -EPROTO;
    if (err < 0) {
        free(r.fds);
        return err;
    }
    *rec = r;
    return 0;
}

void baton__record_free(struct baton__record *rec)
{
    free(rec->fds);
    rec->fds = NULL;
    rec->nfds = 0;
}

pid_t baton__record_pid(baton *b)
{
    struct baton__record rec;
    pid_t pid;

    if (baton__record_read(b->dirfd, &rec) < 0)
        return 0;
    pid = rec.pid;
    baton__record_free(&rec);
    return pid;
}

/* For the dispatcher, which holds b->mu already. */
int baton__record_write_locked(baton *b)
{
    return record_write(b);
}

/* Make sure control.sock is the socket *ctl_fd listens on; if another
 * process's socket replaced it, publish a new one of ours and swap it in
 * (the old fd is closed). 1 if it republished, 0 if nothing was needed,
 * or -errno. */
int baton__ctl_ensure(baton *b, int *ctl_fd)
{
    char tmp[128];
    struct stat st;
    int fd, r;

    if (fstatat(b->dirfd, CTL_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == b->ctl_ino)
        return 0;
    r = baton__ctl_create(b, &fd, tmp, sizeof(tmp));
    if (r < 0)
        return r;
    r = baton__ctl_publish(b, fd, tmp);
    if (r < 0) {
        close(fd);
        return r;
    }
    if (*ctl_fd >= 0)
        close(*ctl_fd);
    *ctl_fd = fd;
    return 1;
}

/* A stream of the directory's entries from the start, on a descriptor of
 * its own (closedir() closes it, not dirfd): NULL and errno on failure. */
static DIR *dir_read(int dirfd)
{
    int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3), e;
    DIR *d;

    if (fd < 0)
        return NULL;
    d = fdopendir(fd);
    if (!d) {
        e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    rewinddir(d);
    return d;
}

/* The PID of a "gen.PID" name, else 0. */
static int gen_name(const char *name)
{
    int pid, len = 0;

    return sscanf(name, "gen.%d%n", &pid, &len) == 1 && !name[len] && pid > 0 ? pid : 0;
}

/* Remove what successors killed mid-way left behind: ".control.PID.sock"
 * and ".owner.PID.tmp" of processes that are gone. */
void baton__dir_sweep(baton *b)
{
    struct dirent *e;
    DIR *d = dir_read(b->dirfd);

    if (!d)
        return;
    while ((e = readdir(d))) {
        int pid = 0, n = 0;
        if ((sscanf(e->d_name, ".control.%d.sock%n", &pid, &n) == 1 ||
             sscanf(e->d_name, ".owner.%d.tmp%n", &pid, &n) == 1 ||
             sscanf(e->d_name, ".gen.%d.%d.tmp%n", &pid, &pid, &n) == 2 ||
             sscanf(e->d_name, ".last-upgrade.%d.tmp%n", &pid, &n) == 1 ||
             sscanf(e->d_name, "gen.%d%n", &pid, &n) == 1) &&
            e->d_name[n] == 0 && pid > 0 && pid != getpid() && kill(pid, 0) < 0 && errno == ESRCH)
            unlinkat(b->dirfd, e->d_name, 0);
    }
    closedir(d);
}

/* A ready owner that ends without a successor takes its control socket and
 * record with it, so that `baton status` says nobody serves. A superseded
 * one leaves them: they are its successor's. */
void baton__ctl_retire(baton *b)
{
    struct stat st;

    if (!b->ready || b->superseded || b->dirfd < 0)
        return;
    if (fstatat(b->dirfd, CTL_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == b->ctl_ino) {
        unlinkat(b->dirfd, CTL_NAME, 0);
        unlinkat(b->dirfd, RECORD_NAME, 0);
    }
}

/* ---- generations and the last upgrade ----------------------------------- */

unsigned long long baton__proc_stat_field(pid_t pid, int field)
{
    char path[64], buf[1024], *p;
    unsigned long long v = 0;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    /* The command (field 2) may hold spaces and parentheses: count from
     * the last ')'. */
    p = strrchr(buf, ')');
    for (int f = 2; p && f < field; f++)
        p = strchr(p + 1, ' ');
    if (p)
        v = strtoull(p + 1, NULL, 10);
    return v;
}

/* Field 22, starttime. Whatever the state: this is the process's identity
 * (a leader that called pthread_exit() shows as a zombie while its threads
 * serve on); whether it lives is the pidfd's to say (baton__pid_gone()). */
unsigned long long baton__proc_start(pid_t pid)
{
    return baton__proc_stat_field(pid, 22);
}

/* Write text to DIR/name through a temporary file and a rename. */
static int file_replace(baton *b, const char *name, const char *text)
{
    char tmp[64];
    size_t len = strlen(text);
    int fd, e = 0;

    snprintf(tmp, sizeof(tmp), ".%s.%d.tmp", name, (int)getpid());
    fd = openat(b->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    if (write(fd, text, len) != (ssize_t)len)
        e = errno ? errno : EIO;
    if (close(fd) < 0 && !e)
        e = errno;
    if (!e && renameat(b->dirfd, tmp, b->dirfd, name) < 0)
        e = errno;
    if (e)
        unlinkat(b->dirfd, tmp, 0);
    return -e;
}

int baton__gen_write(baton *b)
{
    char name[32], text[512];
    int r;

    uint64_t drain_until = 0;

    if (b->superseded && b->opts.drain_timeout_ms > 0 && b->prob.pidfd < 0)
        drain_until = b->draining_since_ms + (uint64_t)b->opts.drain_timeout_ms;
    snprintf(name, sizeof(name), "gen.%d", (int)getpid());
    snprintf(text, sizeof(text),
             "baton-gen 1\npid %d\nstart %llu\ngeneration %d\nstate %s\nsince %llu\n"
             "draining_since %llu\nconns %d\nprobation_until %llu\ndrain_until %llu\n"
             "standby %d\n",
             (int)getpid(), baton__proc_start(getpid()), b->generation,
             b->prob.rolling_back ? "rolling-back"
             : b->superseded      ? "draining"
                                  : "serving",
             (unsigned long long)b->since_ms, (unsigned long long)b->draining_since_ms, b->conns,
             (unsigned long long)(b->prob.pidfd >= 0 ? b->prob.until_rt : 0),
             (unsigned long long)drain_until, (int)b->standby.pid);
    r = file_replace(b, name, text);
    if (r < 0)
        baton__log(b, BATON_LOG_DEBUG, "%s/%s: %s", b->dir, name, baton_strerror(r));
    return r;
}

void baton__gen_remove(baton *b)
{
    char name[32];

    snprintf(name, sizeof(name), "gen.%d", (int)getpid());
    unlinkat(b->dirfd, name, 0);
}

void baton__gen_conns(baton *b, int n)
{
    pthread_mutex_lock(&b->mu);
    if (b->ready && n != b->conns) {
        b->conns = n;
        baton__gen_write(b);
    }
    pthread_mutex_unlock(&b->mu);
}

static int gen_parse(int dirfd, const char *name, struct baton__gen *g)
{
    char buf[512], state[16] = "";
    const char *more;
    ssize_t n;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

    if (fd < 0)
        return -errno;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -EPROTO;
    buf[n] = 0;
    memset(g, 0, sizeof(*g));
    if (sscanf(buf,
               "baton-gen 1\npid %d\nstart %llu\ngeneration %d\nstate %15s\nsince %llu\n"
               "draining_since %llu\nconns %d\n",
               &g->pid, &g->start, &g->generation, state, &g->since_ms, &g->draining_since_ms,
               &g->conns) != 7 ||
        g->pid <= 0 || g->generation <= 0 ||
        (strcmp(state, "serving") != 0 && strcmp(state, "draining") != 0 &&
         strcmp(state, "rolling-back") != 0))
        return -EPROTO;
    g->draining = strcmp(state, "draining") == 0;
    g->rolling_back = strcmp(state, "rolling-back") == 0;
    /* Lines a later writer added; absent from an older one's record. */
    more = strstr(buf, "\nprobation_until ");
    if (more && sscanf(more, "\nprobation_until %llu\ndrain_until %llu\n", &g->probation_until,
                       &g->drain_until) != 2)
        return -EPROTO;
    /* Informative only: a bad value does not hide the generation. */
    more = strstr(buf, "\nstandby ");
    if (more && (sscanf(more, "\nstandby %9d\n", &g->standby_pid) != 1 || g->standby_pid < 0))
        g->standby_pid = 0;
    return 0;
}

static int gen_cmp(const void *a, const void *b)
{
    const struct baton__gen *x = a, *y = b;

    return y->generation - x->generation;
}

int baton__gens_count(int dirfd)
{
    struct dirent *e;
    DIR *d = dir_read(dirfd);
    int n = 0;

    if (!d)
        return -errno;
    while ((e = readdir(d)))
        n += gen_name(e->d_name) > 0;
    closedir(d);
    return n;
}

int baton__gens_read(int dirfd, struct baton__gen **ret)
{
    struct baton__gen *v = NULL, g;
    size_t n = 0, cap = 0;
    struct dirent *e;
    DIR *d = dir_read(dirfd);

    if (!d)
        return -errno;
    while ((e = readdir(d))) {
        int pid = gen_name(e->d_name);

        if (!pid || gen_parse(dirfd, e->d_name, &g) < 0 || g.pid != pid || !g.start ||
            baton__proc_start(pid) != g.start || baton__pid_gone(pid, 0))
            continue;
        if (n == cap) {
            struct baton__gen *nv = realloc(v, (cap ? 2 * cap : 8) * sizeof(*v));
            if (!nv)
                break;
            v = nv;
            cap = cap ? 2 * cap : 8;
        }
        v[n++] = g;
    }
    closedir(d);
    if (n)
        qsort(v, n, sizeof(*v), gen_cmp);
    *ret = v;
    return (int)n;
}

uint64_t baton__now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void baton__upgrade_write(baton *b, const struct baton__peer *p, int result, const char *text)
{
    struct baton__times t = p ? p->t : (struct baton__times){0};
    bool job = b->job.token &&
               (!p || (p->job && p->job == b->job.token) || (b->job.pid && p->pid == b->job.pid));
    uint64_t v[6], base = 0;
    char buf[1024], clean[256];
    size_t i, len;

    if (job) {
        t.spawned = b->job.spawned_us;
        b->job.recorded = true;
    }
    v[0] = t.spawned, v[1] = t.connected, v[2] = t.fds_sent;
    v[3] = t.ready, v[4] = t.committed, v[5] = t.serving;
    for (i = 0; i < 6 && !base; i++)
        base = v[i];
    /* One line of printable text. */
    snprintf(clean, sizeof(clean), "%s", text ? text : "");
    for (i = 0; clean[i]; i++)
        if ((unsigned char)clean[i] < 0x20 || clean[i] == 0x7f)
            clean[i] = ' ';
    len = (size_t)snprintf(buf, sizeof(buf),
                           "baton-upgrade 1\nresult %d\nfrom %d %d\nto %d %d\nkind %s\nat %llu\n"
                           "times",
                           result, (int)getpid(), b->generation, p ? (int)p->pid : (int)b->job.pid,
                           b->generation + 1, job ? "upgrade" : "takeover",
                           (unsigned long long)baton__realtime_ms());
    for (i = 0; i < 6; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, " %lld",
                                v[i] && v[i] >= base ? (long long)(v[i] - base) : -1LL);
    snprintf(buf + len, sizeof(buf) - len, "\ntext %s\n", clean);
    if (file_replace(b, "last-upgrade", buf) < 0)
        baton__log(b, BATON_LOG_DEBUG, "%s/last-upgrade: cannot write it", b->dir);
}

int baton__upgrade_read(int dirfd, struct baton__upgrade *u)
{
    char buf[1024], kind[16] = "", *text;
    ssize_t n;
    int fd = openat(dirfd, "last-upgrade", O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

    if (fd < 0)
        return -errno;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -EPROTO;
    buf[n] = 0;
    memset(u, 0, sizeof(*u));
    if (sscanf(buf,
               "baton-upgrade 1\nresult %d\nfrom %d %d\nto %d %d\nkind %15s\nat %llu\n"
               "times %lld %lld %lld %lld %lld %lld\n",
               &u->result, &u->from_pid, &u->from_gen, &u->to_pid, &u->to_gen, kind, &u->at_ms,
               &u->us[0], &u->us[1], &u->us[2], &u->us[3], &u->us[4], &u->us[5]) != 13 ||
        (strcmp(kind, "upgrade") != 0 && strcmp(kind, "takeover") != 0))
        return -EPROTO;
    u->job = strcmp(kind, "upgrade") == 0;
    text = strstr(buf, "\ntext ");
    if (text) {
        char *end;
        snprintf(u->text, sizeof(u->text), "%s", text + 6);
        end = strchr(u->text, '\n');
        if (end)
            *end = 0;
    }
    return 0;
}
