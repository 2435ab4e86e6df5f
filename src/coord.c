/* SPDX-License-Identifier: MIT */
/*
 * The coordination directory: its permission checks, the upgrade lock,
 * the control socket's path and publication, and the owner record.
 */
#include <dirent.h>
#include <errno.h>
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

int baton__record_read(int dirfd, struct baton__record *rec)
{
    struct baton__record r = {0};
    size_t cap = 0;
    char line[1024];
    FILE *f;
    int fd, err = 0;

    fd = openat(dirfd, RECORD_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    f = fdopen(fd, "re");
    if (!f) {
        close(fd);
        return -ENOMEM;
    }
    if (!fgets(line, sizeof(line), f) || strcmp(line, "baton-owner 1\n") != 0)
        err = -EPROTO;
    while (err == 0 && fgets(line, sizeof(line), f)) {
        struct baton__record_fd *e;

        if (sscanf(line, "pid %d", &r.pid) == 1 ||
            sscanf(line, "generation %d", &r.generation) == 1 ||
            sscanf(line, "since %llu", &r.since_ms) == 1)
            continue;
        if (strncmp(line, "fd ", 3) != 0 || r.nfds >= BATON__RECORD_MAX_FDS) {
            err = -EPROTO;
            break;
        }
        if (r.nfds == cap) {
            cap = cap ? 2 * cap : 8;
            e = realloc(r.fds, cap * sizeof(*e));
            if (!e) {
                err = -ENOMEM;
                break;
            }
            r.fds = e;
        }
        e = &r.fds[r.nfds];
        if (sscanf(line, "fd %127s %7s %255s %95s", e->name, e->kind, e->addr, e->local) != 4) {
            err = -EPROTO;
            break;
        }
        r.nfds++;
    }
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

/* Remove what successors killed mid-way left behind: ".control.PID.sock"
 * and ".owner.PID.tmp" of processes that are gone. */
void baton__dir_sweep(baton *b)
{
    int fd = dup(b->dirfd);
    struct dirent *e;
    DIR *d;

    if (fd < 0)
        return;
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    rewinddir(d);
    while ((e = readdir(d))) {
        int pid = 0, n = 0;
        if ((sscanf(e->d_name, ".control.%d.sock%n", &pid, &n) == 1 ||
             sscanf(e->d_name, ".owner.%d.tmp%n", &pid, &n) == 1) &&
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
