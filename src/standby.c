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
#include <link.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

/* The files /proc/self/maps named at the first look, NUL-separated, so
 * that the look after waking (on the upgrade's path) need not read it
 * again: a file replaced since is a new inode at the same path. */
static char seen[16384];
static size_t seen_len;
static bool seen_full;

static void seen_add(const char *path, size_t n)
{
    if (seen_full || seen_len + n + 1 > sizeof(seen)) {
        seen_full = true;
        return;
    }
    memcpy(seen + seen_len, path, n + 1);
    seen_len += n + 1;
}

/* Mappings that are not files an upgrade installs: shared anonymous
 * memory, memfds, System V segments. */
static bool not_a_file(const char *path)
{
    return strncmp(path, "/dev/", 5) == 0 || strncmp(path, "/memfd:", 7) == 0 ||
           strncmp(path, "/SYSV", 5) == 0 || strncmp(path, "/anon_hugepage", 14) == 0;
}

/* Fold what stat() says of the file at path now into *h: false when
 * there is none. */
static bool fold_stat(uint64_t *h, const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return false;
    *h = fnv(*h, path, strlen(path));
    *h = fnv(*h, &st.st_dev, sizeof(st.st_dev));
    *h = fnv(*h, &st.st_ino, sizeof(st.st_ino));
    *h = fnv(*h, &st.st_size, sizeof(st.st_size));
    *h = fnv(*h, &st.st_mtim, sizeof(st.st_mtim));
    *h = fnv(*h, &st.st_ctim, sizeof(st.st_ctim));
    return true;
}

/*
 * One line of /proc/self/maps ("lo-hi perms offset dev inode path"): fold
 * the file at its path into *h. False when the file we mapped is gone
 * from its path, and, on the first look (first), when the path already
 * holds another inode than the one mapped (replaced between our exec and
 * now). Only inode numbers are compared with the line: on overlay file
 * systems the line's device is the lower layer's, not stat()'s.
 */
static bool map_line(const char *line, uint64_t *h, char *last, size_t last_len, bool first)
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
    if (path[0] != '/' || not_a_file(path) || strcmp(path, last) == 0) /* files map in parts */
        return true;
    n = strlen(path);
    if (n < last_len)
        memcpy(last, path, n + 1);
    if (n > sizeof(deleted) - 1 && strcmp(path + n - (sizeof(deleted) - 1), deleted) == 0)
        return false;
    if (first && (stat(path, &st) < 0 || (unsigned long long)st.st_ino != ino))
        return false;
    if (first)
        seen_add(path, n);
    return fold_stat(h, path);
}

struct names {
    uint64_t h;
    bool ok;
};

/* The loader's names of our libraries, symlinks unresolved: an upgrade
 * that installs a library beside the old one and moves the soname link
 * leaves every mapped file as it was. A name relative to the working
 * directory (LD_LIBRARY_PATH=lib) is one too: we have not moved since.
 * Only names without a '/' (the vDSO) are not files. */
static int fold_name(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct names *n = arg;

    (void)size;
    if (info->dlpi_name && strchr(info->dlpi_name, '/') && !fold_stat(&n->h, info->dlpi_name))
        n->ok = false;
    return 0;
}

/* Signals a parked standby ignores: the owner's own name and process
 * group are its, and `killall -HUP`, `pkill` or `systemctl kill` meant for
 * the owner must not end the process an upgrade is about to wake. It ends
 * by its owner's hand (end of stream, SIGKILL) or with it (PDEATHSIG). */
static const int parked_ignores[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

static void parked_signals(void (*handler)(int))
{
    for (size_t i = 0; i < sizeof(parked_ignores) / sizeof(parked_ignores[0]); i++)
        signal(parked_ignores[i], handler);
}

/* Call fn with each line of /proc/self/maps until it returns false: true
 * when every line was seen. */
static bool maps_each(bool (*fn)(const char *line, void *arg), void *arg)
{
    char buf[8192], line[PATH_MAX + 128];
    size_t ll = 0;
    bool ok = true;
    ssize_t n = 0;
    int fd;

    fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    while (ok && (n = read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n && ok; i++) {
            if (buf[i] != '\n') {
                if (ll < sizeof(line) - 1)
                    line[ll++] = buf[i];
                continue;
            }
            line[ll] = 0;
            ok = fn(line, arg);
            ll = 0;
        }
    close(fd);
    return ok && n == 0;
}

struct fold {
    uint64_t *h;
    char last[PATH_MAX + 128];
    bool first;
};

static bool fold_line(const char *line, void *arg)
{
    struct fold *f = arg;

    return map_line(line, f->h, f->last, sizeof(f->last), f->first);
}

/* Fold each file /proc/self/maps names (after waking, the same paths
 * again without reading it, unless there were too many to keep). */
static bool maps_fold(uint64_t *h, bool first)
{
    static struct fold f; /* not on the small stack of a constructor */
    bool ok = true;

    if (!first && !seen_full) {
        for (size_t i = 0; ok && i < seen_len; i += strlen(seen + i) + 1)
            ok = fold_stat(h, seen + i);
        return ok;
    }
    f.h = h;
    f.last[0] = 0;
    f.first = first;
    return maps_each(fold_line, &f); /* false: cannot tell, start afresh */
}

/*
 * Warm the parked copy: touch now what its main() will touch first, so
 * that the upgrade does not wait for it. The first touch of a page costs
 * a fault, and on a virtual machine a first touch costs even where the
 * page is mapped; an anonymous page's first write is the dearest
 * (bench/README.md, "A standby's first touches"). Only what is there
 * already: runs of pages mincore() says are resident, of private mappings
 * we may read and no larger than WARM_MAP_MAX (a larger one is a
 * reservation, such as a sanitizer's shadow, not code about to run). The
 * kernel maps them for us (MADV_POPULATE_READ, and MADV_POPULATE_WRITE in a
 * writable mapping, which gives us our own copy of at most WARM_COPY_MAX
 * bytes of the libraries' data): no byte is read or written here, so
 * nothing races with a thread another library's constructor started, with
 * a signal handler or with the kernel (rseq), and no fault is taken: an
 * error (a device mapping, VM_IO, is refused; a kernel before 5.14 has
 * neither) ends the walk of that mapping. Nothing is read from disk,
 * nothing of a device or a shared mapping is touched. On a virtual machine
 * with shadow page tables a populated page's first touch still costs
 * (baton-bench-touch), so when we are the only thread we also read one
 * byte of each populated page: a read changes nothing, and the fault a
 * read could still meet (a file truncated meanwhile) is caught by a
 * handler that no other thread can run into. Then a little heap and
 * stack, which main() is sure to use.
 */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ  22
#define MADV_POPULATE_WRITE 23
#endif
#define WARM_MAP_MAX   (64ul << 20) /* bytes of one mapping */
#define WARM_TOUCH_MAX (64ul << 20) /* bytes populated in all */
#define WARM_COPY_MAX  (4ul << 20)  /* bytes populated writable in all */
#define WARM_HEAP      (24 * 1024)  /* x4, under glibc's trim threshold */
#define WARM_STACK     (64 * 1024)

struct warm {
    unsigned long touched, copied, page;
    bool read; /* we are the only thread: read the pages too */
};

static sigjmp_buf warm_jmp;
static volatile sig_atomic_t warm_armed; /* warm_jmp holds a live frame */

/* A fault of warm_read_pages() returns to warm_read(). Any other SIGSEGV
 * or SIGBUS meanwhile (sent by someone, or a fault elsewhere) gets its
 * default action, as it would have without us. */
static void warm_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (warm_armed && si->si_code > 0)
        siglongjmp(warm_jmp, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* It reads memory that is not its own: not for the sanitizers to check. */
__attribute__((no_sanitize("address", "thread", "undefined"), noinline)) static void
warm_read_pages(unsigned long lo, unsigned long hi, unsigned long page)
{
    for (unsigned long a = lo; a < hi; a += page)
        (void)*(volatile unsigned char *)a;
}

/* Read lo..hi; a fault leaves the rest (warm() has set the handler). */
static void warm_read(unsigned long lo, unsigned long hi, unsigned long page)
{
    if (sigsetjmp(warm_jmp, 0) == 0) {
        warm_armed = 1;
        warm_read_pages(lo, hi, page);
    }
    warm_armed = 0;
}

static void warm_range(struct warm *w, unsigned long lo, unsigned long hi, bool write)
{
    unsigned char vec[1024];

    while (lo < hi && w->touched < WARM_TOUCH_MAX) {
        unsigned long end = hi - lo > sizeof(vec) * w->page ? lo + sizeof(vec) * w->page : hi;
        unsigned long a = lo;
        if (mincore((void *)lo, end - lo, vec) < 0)
            return;
        while (a < end && w->touched < WARM_TOUCH_MAX) {
            unsigned long run = a;
            bool wr = write && w->copied < WARM_COPY_MAX;
            unsigned long max = WARM_TOUCH_MAX - w->touched;
            if (wr && WARM_COPY_MAX - w->copied < max)
                max = WARM_COPY_MAX - w->copied;
            while (run < end && (vec[(run - lo) / w->page] & 1) && run - a < max)
                run += w->page;
            if (run == a) {
                a += w->page;
                continue;
            }
            if (madvise((void *)a, run - a, wr ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) < 0)
                return;
            if (w->read)
                warm_read(a, run, w->page);
            w->touched += run - a;
            if (wr)
                w->copied += run - a;
            a = run;
        }
        lo = end;
    }
}

static bool warm_line(const char *line, void *arg)
{
    unsigned long lo, hi;
    char perms[5];
    int off = 0;

    if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &lo, &hi, perms, &off) < 3 || perms[0] != 'r' ||
        perms[3] != 'p' || hi - lo > WARM_MAP_MAX)
        return true;
    /* A file (not a device, not a special mapping such as [vvar]), or
     * anonymous memory: the heap, the stack, a library's zeroed data. */
    if (off && line[off] && line[off] != '/' && strcmp(line + off, "[heap]") != 0 &&
        strcmp(line + off, "[stack]") != 0)
        return true;
    if (off && line[off] == '/' && not_a_file(line + off))
        return true;
    warm_range(arg, lo, hi, perms[1] == 'w');
    return true;
}

static __attribute__((noinline)) void warm_stack(void)
{
    volatile unsigned char buf[WARM_STACK];

    for (size_t i = 0; i < sizeof(buf); i += 256)
        buf[i] = 0;
}

static void warm(void)
{
    /* Field 20 of /proc/PID/stat: num_threads. */
    struct warm w = {0, 0, (unsigned long)sysconf(_SC_PAGESIZE),
                     baton__proc_stat_field(getpid(), 20) == 1};
    struct sigaction sa = {.sa_sigaction = warm_fault, .sa_flags = SA_NODEFER | SA_SIGINFO}, segv,
                     bus;
    struct rlimit rl;
    void *p[4];

    sigemptyset(&sa.sa_mask);
    if (w.read && sigaction(SIGSEGV, &sa, &segv) < 0)
        w.read = false;
    if (w.read && sigaction(SIGBUS, &sa, &bus) < 0) {
        sigaction(SIGSEGV, &segv, NULL);
        w.read = false;
    }
    maps_each(warm_line, &w);
    if (w.read) {
        sigaction(SIGBUS, &bus, NULL);
        sigaction(SIGSEGV, &segv, NULL);
    }
    if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur >= 16 * WARM_STACK)
        warm_stack();
    for (int i = 0; i < 4; i++)
        if ((p[i] = malloc(WARM_HEAP)))
            memset(p[i], 0, WARM_HEAP);
    for (int i = 0; i < 4; i++)
        free(p[i]);
}

/*
 * A digest of every file we run: each file /proc/self/maps names, each
 * library by the name the loader found it under, and the executable by the
 * path we were started as (AT_EXECFN), all as stat() sees them now. False
 * when one is gone or, on the first look, already replaced. Without stdio
 * or malloc: we run before main().
 */
static bool run_digest(uint64_t *ret, const char *execfn, bool first)
{
    struct names names = {0xcbf29ce484222325ull, true};

    struct stat at, self;

    if (!maps_fold(&names.h, first))
        return false;
    dl_iterate_phdr(fold_name, &names);
    if (!names.ok || !execfn || !fold_stat(&names.h, execfn))
        return false;
    /* The path we were started as may be a symlink flipped between our
     * exec and now (a deploy of releases): it must still name the file
     * we run. */
    if (first && (stat(execfn, &at) < 0 || stat("/proc/self/exe", &self) < 0 ||
                  at.st_dev != self.st_dev || at.st_ino != self.st_ino))
        return false;
    *ret = names.h;
    return true;
}

/* Start afresh as the file at the path we were started as (the owner's
 * executable path, where an upgrade installs the new binary), whatever
 * became of the file we run: a deploy may have renamed it to keep a
 * backup. */
static void standby_exec(const char *execfn, char **argv)
{
    if (execfn)
        execv(execfn, argv);
    dprintf(2, "baton: standby pid %d: exec %s: %s\n", (int)getpid(), execfn ? execfn : "(none)",
            execfn ? strerror(errno) : "no AT_EXECFN");
    _exit(127);
}

/* glibc passes argc, argv and envp to constructors. */
__attribute__((constructor(101))) static void standby_park(int argc, char **argv, char **envp)
{
    const char *v = getenv(STANDBY_ENV), *execfn = (const char *)getauxval(AT_EXECFN);
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
    /*
     * Only an owner sets this, for a process it will wake; one that runs
     * main() instead would take over as a copy started by hand, and its
     * owner would end it at the step-down: never serve from here. That
     * includes a set-id or file-capability program (AT_SECURE), whose
     * environment is not to be trusted (its owner starts no standby).
     */
    if (getauxval(AT_SECURE) || *end || fd < 3 || fd > 1 << 20 || ppid <= 0 ||
        fstat((int)fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        dprintf(2, "baton: pid %d: %s=%s is not a standby's: exiting\n", (int)getpid(), STANDBY_ENV,
                getauxval(AT_SECURE) ? "(set-id program)" : v);
        _exit(127);
    }
    unsetenv(STANDBY_ENV);
    /* Our end of the socketpair reads EOF once every copy of the owner's
     * end is closed, and a server that forks workers gives them copies:
     * end with the thread that started us too (the owner's library
     * thread, which lives as long as the handle), or at once if it is
     * gone already. */
    parked_signals(SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)ppid)
        _exit(0);
    fresh = run_digest(&before, execfn, true);
    if (fresh) /* else it starts afresh when woken: nothing to keep warm */
        warm();
    do
        n = recv((int)fd, &token, sizeof(token), 0);
    while (n < 0 && errno == EINTR);
    /* Anything but a token: the owner let us go, or is gone. */
    if (n != (ssize_t)sizeof(token) || !token)
        _exit(0);
    close((int)fd);
    /* From here on we are a successor like any other: every signal at its
     * default, as the owner started us. */
    prctl(PR_SET_PDEATHSIG, 0);
    parked_signals(SIG_DFL);
    snprintf(var, sizeof(var), "%016llx", (unsigned long long)token);
    setenv("BATON_JOB", var, 1);
    if (!fresh || !run_digest(&after, execfn, false) || after != before)
        standby_exec(execfn, argv);
}

/* ---- the owner's side ---------------------------------------------------- */

void baton__standby_init(baton *b)
{
    unsigned deaths = b->standby.deaths;

    memset(&b->standby, 0, sizeof(b->standby));
    b->standby.pidfd = b->standby.fd = -1;
    b->standby.deaths = deaths;
}

/* Start one, if wanted and none is there. Called with b->mu held, on the
 * owner's thread. */
void baton__standby_start(baton *b)
{
    struct baton__standby *s = &b->standby;
    struct stat exe, self;
    int sv[2], r;
    char var[64];

    s->at = 0;
    if (!(b->opts.flags & BATON_STANDBY) || s->pid || b->superseded || !b->ready)
        return;
    /* Only a program that is the one we run parks: after an upgrade
     * failed the file at our path may be another (a binary without this
     * constructor, or not a baton program), whose main() would run
     * uninvited. The next upgrade starts it the usual way. */
    if (stat(b->exe, &exe) < 0 || stat("/proc/self/exe", &self) < 0 || exe.st_dev != self.st_dev ||
        exe.st_ino != self.st_ino) {
        baton__log(b, BATON_LOG_INFO, "standby: %s is not the file we run; none started", b->exe);
        return;
    }
    if (getauxval(AT_SECURE)) {
        /* Its environment would not be trusted before main(). */
        baton__log(b, BATON_LOG_WARNING,
                   "standby: not for a set-id or file-capability program; upgrades start "
                   "their successor the usual way");
        return;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        baton__log(b, BATON_LOG_WARNING, "standby: socketpair: %s", strerror(errno));
        return;
    }
    /* At fd 3, and nothing else of ours beyond 0-2: not the connections
     * this process accepts meanwhile, which a parked copy would keep open
     * for as long as we serve. */
    snprintf(var, sizeof(var), STANDBY_ENV "=3:%d", (int)getpid());
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

/* The standby is the process taking over (it should never be: one that
 * runs main() unwoken exits instead): it is the successor's now. */
void baton__standby_release(baton *b, pid_t pid)
{
    if (!b->standby.pid || b->standby.pid != pid)
        return;
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->standby.pidfd, NULL);
    baton__standby_forget(b);
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

/* A standby that died before it was needed is replaced after this long,
 * doubled for each death in a row (one that dies at once, of a binary
 * that cannot start, costs a fork a minute at most); an upgrade
 * meanwhile starts its successor the usual way. */
#define STANDBY_RETRY_MS     1000
#define STANDBY_RETRY_MAX_MS 60000

/* It exited before it was needed (killed, or out of memory): reap it and
 * start another later. */
void baton__standby_exited(baton *b)
{
    struct baton__standby *s = &b->standby;
    siginfo_t si = {0};
    uint64_t wait_ms = STANDBY_RETRY_MS;

    if (!s->pid)
        return;
    waitid(P_PIDFD, s->pidfd, &si, WEXITED | WNOHANG);
    for (unsigned i = 0; i < s->deaths && wait_ms < STANDBY_RETRY_MAX_MS; i++)
        wait_ms *= 2;
    if (wait_ms > STANDBY_RETRY_MAX_MS)
        wait_ms = STANDBY_RETRY_MAX_MS;
    baton__log(b, BATON_LOG_WARNING,
               "standby successor pid %d exited (%s %d) before it was needed; another in %llu "
               "ms, and upgrades meanwhile start one the usual way",
               (int)s->pid, si.si_code == CLD_EXITED ? "status" : "signal", si.si_status,
               (unsigned long long)wait_ms);
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
    close(s->pidfd);
    close(s->fd);
    s->deaths++;
    baton__standby_init(b);
    s->at = baton__now_ms() + wait_ms;
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
    s->deaths = 0;
    baton__gen_write(b);
    return 1;
}
