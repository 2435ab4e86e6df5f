/* SPDX-License-Identifier: MIT */
/*
 * A standby successor (BATON_STANDBY). The owner starts a copy of its own
 * executable ahead of time, with BATON_STANDBY_FD naming one end of a
 * socketpair. libbaton's constructor parks that copy before its main():
 * the exec, the dynamic loader and the other libraries' constructors are
 * behind it. An upgrade sends the job token over the socketpair; the copy
 * checks that every file it has mapped is still the one at its path (else
 * it starts afresh with exec: a new binary or library is what upgrades
 * install) and returns to the program's main(), which reads its
 * configuration then, as any successor would, with BATON_JOB set.
 *
 * The owner's end closing (the owner exits, steps down or frees its
 * handle), or the thread that started it ending, ends the copy before
 * main(): it never serves uninvited.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define STANDBY_ENV "BATON_STANDBY_FD"

/* ---- the standby's side: before main() ---------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    for (const unsigned char *c = p; n--; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    return h;
}

/* Fold one line of /proc/self/maps ("lo-hi perms offset dev inode path")
 * into *h: the path and what stat() says of the file there now. False when
 * the file we mapped is gone from its path. stat() on both sides of the
 * wait, not the line's own dev and inode, which differ from stat()'s on
 * overlay file systems. */
static bool map_line(const char *line, uint64_t *h, char *last, size_t last_len)
{
    static const char deleted[] = " (deleted)";
    unsigned long long ino;
    struct stat st;
    const char *path;
    size_t n;
    int off = 0;

    if (sscanf(line, "%*s %*s %*s %*s %llu %n", &ino, &off) < 1 || !off || !ino)
        return true;
    path = line + off;
    if (path[0] != '/' || strcmp(path, last) == 0) /* a file maps in several parts */
        return true;
    n = strlen(path);
    if (n < last_len)
        memcpy(last, path, n + 1);
    if (n > sizeof(deleted) - 1 && strcmp(path + n - (sizeof(deleted) - 1), deleted) == 0)
        return false;
    if (stat(path, &st) < 0)
        return false;
    *h = fnv(*h, path, n);
    *h = fnv(*h, &st.st_dev, sizeof(st.st_dev));
    *h = fnv(*h, &st.st_ino, sizeof(st.st_ino));
    *h = fnv(*h, &st.st_size, sizeof(st.st_size));
    *h = fnv(*h, &st.st_mtim, sizeof(st.st_mtim));
    *h = fnv(*h, &st.st_ctim, sizeof(st.st_ctim));
    return true;
}

/* A digest of every file we have mapped (the executable, each library) as
 * it is at its path now; false when one is gone. Without stdio or malloc:
 * we run before main(). */
static bool maps_digest(uint64_t *ret)
{
    char buf[8192], line[PATH_MAX + 128], last[PATH_MAX + 128] = "";
    uint64_t h = 0xcbf29ce484222325ull;
    size_t ll = 0;
    bool ok = true;
    ssize_t n;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return false; /* cannot tell: start afresh */
    while (ok && (n = read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n && ok; i++) {
            if (buf[i] != '\n') {
                if (ll < sizeof(line) - 1)
                    line[ll++] = buf[i];
                continue;
            }
            line[ll] = 0;
            ok = map_line(line, &h, last, sizeof(last));
            ll = 0;
        }
    close(fd);
    *ret = h;
    return ok && n == 0;
}

static void standby_exec(char **argv)
{
    static const char deleted[] = " (deleted)";
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    size_t dl = sizeof(deleted) - 1;

    exe[n > 0 ? n : 0] = 0;
    n = strlen(exe);
    if ((size_t)n > dl && strcmp(exe + n - dl, deleted) == 0)
        exe[n - dl] = 0;
    execv(exe, argv);
    dprintf(2, "baton: standby pid %d: exec %s: %s\n", (int)getpid(), exe, strerror(errno));
    _exit(127);
}

/* glibc passes argc, argv and envp to constructors. */
__attribute__((constructor)) static void standby_park(int argc, char **argv, char **envp)
{
    const char *v = secure_getenv(STANDBY_ENV);
    uint64_t token = 0, before = 0, after = 0;
    char *end, var[32];
    bool fresh;
    struct stat st;
    long fd, ppid;
    ssize_t n;

    (void)argc;
    (void)envp;
    if (!v)
        return;
    fd = strtol(v, &end, 10);
    ppid = *end == ':' ? strtol(end + 1, &end, 10) : 0;
    unsetenv(STANDBY_ENV);
    if (*end || fd < 3 || fd > 1 << 20 || ppid <= 0 || fstat((int)fd, &st) < 0 ||
        !S_ISSOCK(st.st_mode))
        return; /* not ours to wait on: start as usual */
    /* Our end of the socketpair reads EOF once every copy of the owner's
     * end is closed, and a server that forks workers gives them copies:
     * end with the thread that started us too (the owner's library
     * thread, which lives as long as the handle), or at once if it is
     * gone already. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)ppid)
        _exit(0);
    fresh = maps_digest(&before);
    do
        n = recv((int)fd, &token, sizeof(token), 0);
    while (n < 0 && errno == EINTR);
    /* Anything but a token: the owner let us go, or is gone. */
    if (n != (ssize_t)sizeof(token) || !token)
        _exit(0);
    close((int)fd);
    /* From here on we are a successor like any other. */
    prctl(PR_SET_PDEATHSIG, 0);
    snprintf(var, sizeof(var), "%016llx", (unsigned long long)token);
    setenv("BATON_JOB", var, 1);
    if (!fresh || !maps_digest(&after) || after != before)
        standby_exec(argv);
}

/* ---- the owner's side ---------------------------------------------------- */

void baton__standby_init(baton *b)
{
    memset(&b->standby, 0, sizeof(b->standby));
    b->standby.pidfd = b->standby.fd = -1;
}

/* Start one, if wanted and none is there. Called with b->mu held, on the
 * owner's thread. */
void baton__standby_start(baton *b)
{
    struct baton__standby *s = &b->standby;
    int sv[2], r;
    char var[64];

    s->at = 0;
    if (!(b->opts.flags & BATON_STANDBY) || s->pid || b->superseded || !b->ready)
        return;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        baton__log(b, BATON_LOG_WARNING, "standby: socketpair: %s", strerror(errno));
        return;
    }
    snprintf(var, sizeof(var), STANDBY_ENV "=%d:%d", sv[1], (int)getpid());
    r = baton__spawn_with(b, NULL, var, sv[1], &s->pid, &s->pidfd);
    close(sv[1]);
    if (r < 0) {
        baton__log(b, BATON_LOG_WARNING, "standby: %s", baton__last_err());
        close(sv[0]);
        s->pid = 0;
        s->pidfd = -1;
        return;
    }
    s->fd = sv[0];
    if (baton__ep_add(b, s->pidfd, EPOLLIN, BATON__TAG_STANDBY) < 0) {
        baton__standby_end(b);
        return;
    }
    baton__log(b, BATON_LOG_DEBUG, "standby successor pid %d started", (int)s->pid);
    baton__gen_write(b); /* `baton status` shows it */
}

/* End it (we step down, or free the handle), and reap it: it has not
 * reached main(), so nothing of the application's is lost. */
void baton__standby_end(baton *b)
{
    struct baton__standby *s = &b->standby;
    siginfo_t si;

    s->at = 0;
    if (!s->pid)
        return;
    close(s->fd);
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
    syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0);
    while (waitid(P_PIDFD, s->pidfd, &si, WEXITED) < 0 && errno == EINTR) {
    }
    close(s->pidfd);
    baton__standby_init(b);
}

/* In a process forked from the owner's: the copies of our fds only. */
void baton__standby_forget(baton *b)
{
    if (b->standby.pid) {
        close(b->standby.fd);
        close(b->standby.pidfd);
    }
    baton__standby_init(b);
}

/* It exited before it was needed (killed, or out of memory): reap it and
 * go on without one; an upgrade starts its successor the usual way. */
void baton__standby_exited(baton *b)
{
    struct baton__standby *s = &b->standby;
    siginfo_t si = {0};

    if (!s->pid)
        return;
    waitid(P_PIDFD, s->pidfd, &si, WEXITED | WNOHANG);
    baton__log(b, BATON_LOG_WARNING,
               "standby successor pid %d exited (%s %d) before it was needed; upgrades start one "
               "the usual way",
               (int)s->pid, si.si_code == CLD_EXITED ? "status" : "signal", si.si_status);
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
    close(s->pidfd);
    close(s->fd);
    baton__standby_init(b);
    baton__gen_write(b);
}

/* Wake it for the job with this token: 1 and its pid and pidfd (now the
 * job's), or 0 when there is none to wake (start one the usual way). */
int baton__standby_take(baton *b, uint64_t token, pid_t *ret_pid, int *ret_pidfd)
{
    struct baton__standby *s = &b->standby;
    ssize_t n;

    if (!s->pid)
        return 0;
    n = send(s->fd, &token, sizeof(token), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n != (ssize_t)sizeof(token)) {
        baton__log(b, BATON_LOG_WARNING, "standby pid %d: %s; starting a successor instead",
                   (int)s->pid, n < 0 ? strerror(errno) : "short send");
        baton__standby_end(b);
        return 0;
    }
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
    close(s->fd);
    *ret_pid = s->pid;
    *ret_pidfd = s->pidfd;
    baton__standby_init(b);
    baton__gen_write(b);
    return 1;
}
