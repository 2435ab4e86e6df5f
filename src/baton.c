/* SPDX-License-Identifier: MIT */
/* The handle: options, errors, the fd tables and the public entry points. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define KNOWN_FLAGS                                                                                \
    (BATON_NO_THREAD | BATON_WAIT_LOCK | BATON_NO_INHERIT | BATON_TAKE_CONNS | BATON_FDSTORE |     \
     BATON_STANDBY)

void baton__log(const baton *b, int level, const char *fmt, ...)
{
    char msg[600];
    va_list ap;

    if (!b->opts.log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    b->opts.log(b->opts.log_ctx, level, msg);
}

/* The calling thread's last failure, for baton_last_error(): per thread,
 * as dlerror() is, so that the library's own thread (answering successors)
 * never overwrites what the application is about to read. */
static __thread char last_err[512];

const char *baton__last_err(void)
{
    return last_err;
}

/*
 * Record a failure for baton_last_error(); returns -err so that callers can
 * write `return baton__fail(b, errno, ...)`. The caller is told through
 * the return value, so the log gets it at DEBUG only (library code does
 * not log errors it returns); what nobody returns to the application is
 * logged by its caller at WARNING.
 */
int baton__fail(baton *b, int err, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err < 0)
        err = -err;
    va_start(ap, fmt);
    n = vsnprintf(last_err, sizeof(last_err), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(last_err))
        snprintf(last_err + n, sizeof(last_err) - n, ": %s", baton_strerror(-err));
    if (b)
        baton__log(b, BATON_LOG_DEBUG, "%s", last_err);
    return -err;
}

uint64_t baton__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t baton__realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready for events or the monotonic deadline passes:
 * 0 ready, -ETIMEDOUT, or -errno. */
int baton__wait_fd(int fd, short events, uint64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = events};

    for (;;) {
        uint64_t now = baton__now_ms();
        int r;

        if (now >= deadline)
            return -ETIMEDOUT;
        r = poll(&p, 1, (int)(deadline - now > 60000 ? 60000 : deadline - now));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

/*
 * Has pid exited (or is it a zombie)? A peer's hang-up comes while the
 * kernel is still tearing the process down, so wait up to wait_ms for its
 * pidfd to turn readable rather than trust a kill(pid, 0) that races with
 * the exit. A process that lives on (one that chose to drop us) costs the
 * whole wait.
 */
bool baton__pid_gone(pid_t pid, int wait_ms)
{
    struct pollfd p = {.events = POLLIN};
    bool gone;

    if (pid <= 0)
        return false;
    p.fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (p.fd < 0)
        return errno == ESRCH;
    gone = poll(&p, 1, wait_ms) == 1;
    close(p.fd);
    return gone;
}

bool baton__name_ok(const char *name)
{
    size_t n = strnlen(name, BATON_NAME_MAX + 1);

    if (n == 0 || n > BATON_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = name[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\')
            return false;
    }
    return true;
}

static uint32_t name_hash(const char *name)
{
    uint32_t h = 2166136261u;

    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 16777619u;
    return h;
}

static void slot_put(uint32_t *slots, size_t nslots, const char *name, uint32_t index)
{
    size_t i = name_hash(name) & (nslots - 1);

    while (slots[i])
        i = (i + 1) & (nslots - 1);
    slots[i] = index + 1;
}

/* A hash index of nslots (a power of 2) over the entries. */
static int index_resize(struct baton__table *t, size_t nslots)
{
    uint32_t *slots = calloc(nslots, sizeof(*slots));

    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < t->n; i++)
        slot_put(slots, nslots, t->v[i].name, (uint32_t)i);
    free(t->slots);
    t->slots = slots;
    t->nslots = nslots;
    return 0;
}

/* Room for cap entries. */
static int entries_resize(struct baton__table *t, size_t cap)
{
    void *v = realloc(t->v, cap * sizeof(*t->v));

    if (!v)
        return -ENOMEM;
    t->v = v;
    t->cap = cap;
    return 0;
}

/* Keep the index at most half full. */
static int index_grow(struct baton__table *t)
{
    if (t->nslots && (t->n + 1) * 2 <= t->nslots)
        return 0;
    return index_resize(t, t->nslots ? t->nslots * 2 : 32);
}

int baton__table_reserve(struct baton__table *t, size_t n)
{
    size_t nslots = t->nslots ? t->nslots : 32;
    int r;

    if (n > t->cap && (r = entries_resize(t, n)) < 0)
        return r;
    while (n * 2 > nslots)
        nslots *= 2;
    return nslots == t->nslots ? 0 : index_resize(t, nslots);
}

int baton__table_add(struct baton__table *t, const char *name, const char *addr, int kind, int fd)
{
    struct baton__entry *e;
    size_t nl, al;

    if (t->n == t->cap && entries_resize(t, t->cap ? t->cap * 2 : 16) < 0)
        return -ENOMEM;
    if (index_grow(t) < 0)
        return -ENOMEM;
    /* Callers checked the lengths. */
    e = &t->v[t->n];
    nl = strnlen(name, BATON_NAME_MAX);
    al = addr ? strnlen(addr, BATON_ADDR_MAX) : 0;
    e->name = malloc(nl + 1 + al + 1);
    if (!e->name)
        return -ENOMEM;
    memcpy(e->name, name, nl);
    e->name[nl] = 0;
    e->addr = e->name + nl + 1;
    memcpy(e->addr, addr ? addr : "", al);
    e->addr[al] = 0;
    e->kind = kind;
    e->claimed = e->activated = false;
    e->fd = fd;
    slot_put(t->slots, t->nslots, e->name, (uint32_t)t->n++);
    return 0;
}

int baton__entry_set_addr(struct baton__entry *e, const char *addr)
{
    size_t nl = strlen(e->name), al = strnlen(addr, BATON_ADDR_MAX);
    char *p = malloc(nl + 1 + al + 1);

    if (!p)
        return -ENOMEM;
    memcpy(p, e->name, nl + 1);
    memcpy(p + nl + 1, addr, al);
    p[nl + 1 + al] = 0;
    free(e->name);
    e->name = p;
    e->addr = p + nl + 1;
    return 0;
}

struct baton__entry *baton__table_find(struct baton__table *t, const char *name)
{
    if (!t->nslots)
        return NULL;
    for (size_t i = name_hash(name) & (t->nslots - 1); t->slots[i]; i = (i + 1) & (t->nslots - 1))
        if (strcmp(t->v[t->slots[i] - 1].name, name) == 0)
            return &t->v[t->slots[i] - 1];
    return NULL;
}

void baton__table_close(struct baton__table *t)
{
    /* A claimed inherited entry's fd lives on in the table we pass on. */
    for (size_t i = 0; i < t->n; i++) {
        if (t->v[i].fd >= 0 && !t->v[i].claimed)
            close(t->v[i].fd);
        free(t->v[i].name); /* and the address with it */
    }
    free(t->v);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static int check_options(const struct baton_options *o)
{
    if (!o || !o->dir || !o->dir[0] || o->ready_timeout_ms < 0)
        return baton__fail(NULL, EINVAL, "baton_open: no directory, or a negative timeout");
    if (o->flags & ~KNOWN_FLAGS)
        return baton__fail(NULL, EINVAL, "baton_open: unknown flags 0x%x", o->flags & ~KNOWN_FLAGS);
    /* Room for fields to come: a program that sets one is built against a
     * newer baton than the one it runs with. */
    for (size_t i = 0; i < sizeof(o->resv) / sizeof(o->resv[0]); i++)
        if (o->resv[i])
            return baton__fail(NULL, EINVAL,
                               "baton_open: reserved option field %zu is not zero (built "
                               "against a newer libbaton?)",
                               i);
    if (o->probation_ms < 0 || o->probation_ms > BATON_PROBATION_MAX_MS)
        return baton__fail(NULL, EINVAL,
                           "baton_open: probation_ms %d is out of range (0 for none, at most %d)",
                           o->probation_ms, BATON_PROBATION_MAX_MS);
    if (o->max_generations < 0 || o->max_generations == 1 ||
        o->max_generations > BATON_MAX_GENERATIONS_MAX)
        return baton__fail(
            NULL, EINVAL, "baton_open: max_generations %d is out of range (0 for %d, else 2 to %d)",
            o->max_generations, BATON_MAX_GENERATIONS_DEFAULT, BATON_MAX_GENERATIONS_MAX);
    if (o->drain_timeout_ms < 0 || o->drain_timeout_ms > BATON_PROBATION_MAX_MS)
        return baton__fail(NULL, EINVAL,
                           "baton_open: drain_timeout_ms %d is out of range (0 for none, at most "
                           "%d)",
                           o->drain_timeout_ms, BATON_PROBATION_MAX_MS);
    if (o->kill_grace_ms < 0 || o->kill_grace_ms > 60000)
        return baton__fail(NULL, EINVAL,
                           "baton_open: kill_grace_ms %d is out of range (0 for %d, at most 60000)",
                           o->kill_grace_ms, BATON__KILL_GRACE_MS);
    /* A takeover that waits for a generation over the cap to be ended must
     * not time out first: the grace, and 2 s for the exit to be seen. */
    if (o->kill_grace_ms &&
        o->kill_grace_ms + 2000 >=
            (o->ready_timeout_ms ? o->ready_timeout_ms : BATON__DEFAULT_TIMEOUT_MS))
        return baton__fail(NULL, EINVAL,
                           "baton_open: kill_grace_ms (%d) is out of range: it must end 2000 ms "
                           "before ready_timeout_ms (%d)",
                           o->kill_grace_ms,
                           o->ready_timeout_ms ? o->ready_timeout_ms : BATON__DEFAULT_TIMEOUT_MS);
    if (strlen(o->dir) >= sizeof(((baton *)0)->dir))
        return baton__fail(NULL, ENAMETOOLONG, "baton_open: directory path too long");
    return 0;
}

static baton *handle_new(const struct baton_options *opts)
{
    baton *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    b->opts = *opts;
    if (b->opts.ready_timeout_ms == 0)
        b->opts.ready_timeout_ms = BATON__DEFAULT_TIMEOUT_MS;
    if (b->opts.max_generations == 0)
        b->opts.max_generations = BATON_MAX_GENERATIONS_DEFAULT;
    /* The default grace, shortened to fit a short ready timeout. */
    if (b->opts.kill_grace_ms == 0)
        b->opts.kill_grace_ms =
            b->opts.ready_timeout_ms - 2000 < BATON__KILL_GRACE_MS
                ? (b->opts.ready_timeout_ms > 4000 ? b->opts.ready_timeout_ms - 2000
                                                   : b->opts.ready_timeout_ms / 2)
                : BATON__KILL_GRACE_MS;
    snprintf(b->dir, sizeof(b->dir), "%s", opts->dir);
    b->opts.dir = b->dir;
    b->dirfd = b->lockfd = b->pred_fd = -1;
    b->own_state_fd = b->ctl_fd = -1;
    b->epfd = b->timerfd = b->wakefd = b->upgradefd = b->jobfd = b->connfd = b->connep = -1;
    b->inotifyfd = -1;
    b->steer_fd = b->steer_lfd = -1;
    b->job.pidfd = -1;
    b->prob.pidfd = -1;
    baton__standby_init(b);
    for (int i = 0; i < BATON__MAX_PEERS; i++)
        b->peers[i].fd = b->peers[i].state_fd = -1;
    b->generation = 1;
    b->conns = -1;
    b->pid = getpid();
    pthread_mutex_init(&b->mu, NULL);
    return b;
}

/*
 * A successor that takes connections may receive thousands of fds after
 * its thread has started. Each time the kernel grows a multithreaded
 * process's fd table it waits for an RCU grace period (milliseconds), and
 * it grows by powers of two: receiving 10,000 fds would pay that about ten
 * times, in the middle of the handoff. Grow it once, now, while we may
 * still be single-threaded: up to the RLIMIT_NOFILE soft limit (at most
 * 65,536 entries: half a megabyte).
 */
static void reserve_fd_table(baton *b)
{
    struct rlimit rl;
    int fd;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < 64)
        return;
    fd = fcntl(b->epfd, F_DUPFD_CLOEXEC, (int)(rl.rlim_cur > 65536 ? 65536 : rl.rlim_cur) - 1);
    if (fd >= 0)
        close(fd);
}

/* The job token an owner that started us put in BATON_JOB (0: none). */
static uint64_t job_token(void)
{
    const char *v = secure_getenv("BATON_JOB");
    char *end;
    unsigned long long t;

    if (!v || !*v)
        return 0;
    errno = 0;
    t = strtoull(v, &end, 16);
    return errno || *end ? 0 : (uint64_t)t;
}

/* A fresh start (no owner answered) while older generations still drain
 * (their owner died): it is numbered above them, so that a generation
 * number names one process (UDP flow steering routes by it). */
static void fresh_generation(baton *b)
{
    struct baton__gen *g = NULL;
    int n = baton__gens_read(b->dirfd, &g);

    for (int i = 0; i < n; i++)
        if (g[i].pid != (int)getpid() && g[i].generation >= b->generation)
            b->generation = g[i].generation + 1;
    free(g);
}

BATON_EXPORT int baton_open(const struct baton_options *opts, baton **ret)
{
    baton *b;
    int r;

    BATON__ARG(ret);
    r = check_options(opts);
    if (r < 0)
        return r;
    b = handle_new(opts);
    if (!b)
        return baton__fail(NULL, ENOMEM, "baton_open: allocating the handle");

    b->job_token = job_token();
    r = baton__argv_load(b);
    if (r >= 0)
        r = baton__owner_init(b);
    if (r >= 0 && (b->opts.flags & BATON_TAKE_CONNS))
        reserve_fd_table(b);
    if (r >= 0)
        r = baton__dir_open(b);
    if (r >= 0)
        r = baton__lock(b);
    if (r >= 0)
        r = baton__takeover(b);
    if (r >= 0 && !b->inherited)
        fresh_generation(b);
    if (r >= 0 && !b->inherited)
        r = baton__sd_listen_fds(b);
    if (r < 0) {
        baton_free(b);
        return r;
    }
    *ret = b;
    return 0;
}

BATON_EXPORT void baton_free(baton *b)
{
    /* In a process forked from the handle's (a prefork server's worker
     * at exit), only this process's copies go: the thread, the lock, the
     * control socket, the owner record and the links are the parent's,
     * which serves on with them. */
    bool forked;

    if (!b)
        return;
    forked = getpid() != b->pid;
    if (forked) {
        baton__owner_forget(b);
    } else {
        baton__owner_stop(b);
        baton__ctl_retire(b);
        if (b->ready)
            baton__gen_remove(b);
    }
    baton__conn_free(b);
    baton__steer_free(b, !forked);
    baton__table_close(&b->inh);
    baton__table_close(&b->own);
    if (b->state_map)
        munmap(b->state_map, b->state_map_len);
    /* A successor giving up (freed before baton_ready()) frees the lock and
     * ends its link to the owner for good: a child it forked in between
     * shares both open files, and a close() alone would leave the lock held
     * and the owner waiting on the link until that child exits. */
    if (!forked) {
        baton__unlock(b);
        if (!b->ready && b->pred_fd >= 0)
            shutdown(b->pred_fd, SHUT_RDWR);
    } else if (b->lockfd >= 0) {
        close(b->lockfd);
    }
    int fds[] = {b->dirfd,   b->pred_fd, b->own_state_fd, b->ctl_fd, b->epfd,
                 b->timerfd, b->wakefd,  b->upgradefd,    b->jobfd,  b->job.pidfd,
                 b->connfd,  b->connep,  b->inotifyfd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (b->argv) {
        for (char **a = b->argv; *a; a++)
            free(*a);
        free(b->argv);
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
}

BATON_EXPORT int baton_generation(const baton *b)
{
    return b ? b->generation : -EINVAL;
}

BATON_EXPORT int baton_inherited(const baton *b)
{
    return b ? b->inherited : -EINVAL;
}

/* A name must be unused in this process, whether it was claimed from the
 * predecessor or created here. */
static int name_taken(baton *b, const char *name)
{
    struct baton__entry *e;
    int taken;

    pthread_mutex_lock(&b->mu);
    taken = baton__table_find(&b->own, name) != NULL;
    pthread_mutex_unlock(&b->mu);
    if (taken)
        return 1;
    e = baton__table_find(&b->inh, name);
    return e && e->claimed;
}

/* Move an inherited entry into the table we pass on. */
static int claim(baton *b, struct baton__entry *e)
{
    int r;

    pthread_mutex_lock(&b->mu);
    r = baton__table_add(&b->own, e->name, e->addr, e->kind, e->fd);
    pthread_mutex_unlock(&b->mu);
    if (r < 0)
        return r;
    e->claimed = true;
    return e->fd;
}

BATON_EXPORT int baton_listen(baton *b, const char *name, const char *address, int backlog)
{
    struct baton__entry *e;
    int kind, fd, r;

    BATON__ARG(b && name && address);
    if (!baton__name_ok(name))
        return baton__fail(b, strlen(name) > BATON_NAME_MAX ? ENAMETOOLONG : EINVAL,
                           "baton_listen: bad name");
    kind = baton__addr_kind(address);
    if (kind < 0)
        return baton__fail(b, EINVAL, "baton_listen(%s): bad address \"%s\"", name, address);
    if (name_taken(b, name))
        return baton__fail(b, EEXIST, "baton_listen(%s)", name);

    e = baton__table_find(&b->inh, name);
    if (e && e->activated && e->kind == kind) {
        /* systemd's socket unit says where it listens: trust it. */
        if ((r = baton__entry_set_addr(e, address)) < 0)
            return baton__fail(b, -r, "baton_listen(%s)", name);
        return claim(b, e);
    }
    /* The same socket address, not the same string: "tcp://localhost:80"
     * is the socket "tcp://127.0.0.1:0" was given, if it got port 80. */
    if (e && e->kind == kind && baton__addr_matches(e->fd, kind, address)) {
        if ((r = baton__entry_set_addr(e, address)) < 0)
            return baton__fail(b, -r, "baton_listen(%s)", name);
        return claim(b, e);
    }
    if (e)
        baton__log(b, BATON_LOG_INFO, "%s: inherited %s differs from %s: new socket", name, e->addr,
                   address);

    r = baton__listen_new(b, address, backlog, &fd);
    if (r < 0)
        return r;
    pthread_mutex_lock(&b->mu);
    r = baton__table_add(&b->own, name, address, kind, fd);
    pthread_mutex_unlock(&b->mu);
    if (r < 0) {
        close(fd);
        return baton__fail(b, r, "baton_listen(%s)", name);
    }
    return fd;
}

BATON_EXPORT int baton_fd(baton *b, const char *name)
{
    struct baton__entry *e;
    int fd;

    BATON__ARG(b && name);
    e = baton__table_find(&b->inh, name);
    if (e)
        return e->claimed ? e->fd : claim(b, e);
    /* After baton_ready() the inherited table is gone; what was claimed
     * (or created here) lives in the table we pass on. */
    pthread_mutex_lock(&b->mu);
    e = baton__table_find(&b->own, name);
    fd = e ? e->fd : -ENOENT;
    pthread_mutex_unlock(&b->mu);
    return fd;
}

BATON_EXPORT int baton_add_fd(baton *b, const char *name, int fd)
{
    int dup, r;

    if (!b || !name || fd < 0)
        return fd < 0 && b && name ? -EBADF : -EINVAL;
    if (!baton__name_ok(name))
        return baton__fail(b, strlen(name) > BATON_NAME_MAX ? ENAMETOOLONG : EINVAL,
                           "baton_add_fd: bad name");
    if (name_taken(b, name))
        return baton__fail(b, EEXIST, "baton_add_fd(%s)", name);
    dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dup < 0)
        return baton__fail(b, errno, "baton_add_fd(%s): fcntl(%d, F_DUPFD_CLOEXEC)", name, fd);
    /* One critical section: the dispatcher (a takeover's HELLO counts the
     * table; PUBLISH rewrites the record) sees the table and the record
     * change together, and baton_ready() in another thread either ran
     * before (we write the record) or after (it writes it). */
    pthread_mutex_lock(&b->mu);
    r = baton__table_add(&b->own, name, "", BATON__KIND_FD, dup);
    if (r == 0 && b->ready)
        baton__record_write_locked(b);
    pthread_mutex_unlock(&b->mu);
    if (r < 0) {
        close(dup);
        return baton__fail(b, r, "baton_add_fd(%s)", name);
    }
    return 0;
}

BATON_EXPORT int baton_state(baton *b, const void **ret_data, size_t *ret_len)
{
    BATON__ARG(b && ret_data && ret_len);
    *ret_data = b->state_map;
    *ret_len = b->state_map ? b->state_map_len : 0;
    return 0;
}

BATON_EXPORT int baton_set_state(baton *b, const void *data, size_t len)
{
    int fd = -1, old, r;

    BATON__ARG(b && (data || !len));
    if (len) {
        r = baton__state_make(data, len, &fd);
        if (r < 0)
            return baton__fail(b, r, "baton_set_state(%zu bytes)", len);
    }
    pthread_mutex_lock(&b->mu);
    old = b->own_state_fd;
    b->own_state_fd = fd;
    b->own_state_len = len;
    pthread_mutex_unlock(&b->mu);
    if (old >= 0)
        close(old);
    return 0;
}

/* Close what the predecessor passed and the application did not claim.
 * Claimed fds live on in b->own; the inherited table is emptied. */
static void close_unclaimed(baton *b)
{
    for (size_t i = 0; i < b->inh.n; i++) {
        struct baton__entry *e = &b->inh.v[i];
        if (!e->claimed)
            baton__log(b, BATON_LOG_INFO, "closing unclaimed inherited fd %s (%s)", e->name,
                       e->addr[0] ? e->addr : "fd");
    }
    baton__table_close(&b->inh);
}

/* A fresh start that stalled past its lease may find that another process
 * went ahead and serves now: then it must not replace that one's socket. */
static int fresh_start_check(baton *b)
{
    int fd, r = baton__connect(b, baton__now_ms() + 1000, &fd);

    if (r <= 0)
        return r;
    close(fd);
    return baton__fail(b, EBUSY, "%s: another owner started meanwhile", b->dir);
}

BATON_EXPORT int baton_ready(baton *b)
{
    char tmp[128];
    int ctl = -1, r;

    BATON__ARG(b);
    if (b->ready)
        return baton__fail(b, EALREADY, "baton_ready");
    r = baton__ctl_create(b, &ctl, tmp, sizeof(tmp));
    if (r < 0)
        return r;
    /* The record is written once the socket is ours and, after a
     * takeover, before the predecessor hears PUBLISHED: whoever it answers
     * (`baton upgrade`) then finds the new owner in `baton status`. */
    b->since_ms = baton__realtime_ms();
    if (b->inherited)
        r = baton__takeover_finish(b, &ctl, tmp);
    else if ((r = fresh_start_check(b)) == 0 && (r = baton__ctl_publish(b, ctl, tmp)) == 0)
        r = baton__record_write(b);
    if (r < 0) {
        close(ctl);
        unlinkat(b->dirfd, tmp, 0);
        return r;
    }
    /* Before close_unclaimed(): the fd store forgets what we did not claim. */
    baton__sd_notify_ready(b);
    close_unclaimed(b);
    pthread_mutex_lock(&b->mu);
    b->ready = true;
    pthread_mutex_unlock(&b->mu);
    baton__unlock(b);
    baton__gen_write(b);
    return baton__owner_start(b, ctl);
}

BATON_EXPORT int baton_upgrade_fd(const baton *b)
{
    return b ? b->upgradefd : -EINVAL;
}

BATON_EXPORT int baton_upgrade_event(baton *b, struct baton_event *ev)
{
    BATON__ARG(b);
    return baton__event_pop(b, ev);
}

BATON_EXPORT int baton_set_conns(baton *b, int n)
{
    BATON__ARG(b && n >= -1);
    baton__gen_conns(b, n);
    return 0;
}

BATON_EXPORT int baton_wait_upgrade(baton *b, int timeout_ms)
{
    uint64_t deadline;

    BATON__ARG(b);
    deadline = timeout_ms < 0 ? UINT64_MAX : baton__now_ms() + timeout_ms;
    for (;;) {
        struct pollfd p[2] = {{.fd = b->upgradefd, .events = POLLIN},
                              {.fd = b->epfd, .events = POLLIN}};
        int nfds = (b->opts.flags & BATON_NO_THREAD) ? 2 : 1;
        uint64_t now = baton__now_ms();
        int r, wait;

        if (now >= deadline)
            return 0;
        wait = deadline == UINT64_MAX ? -1 : (int)(deadline - now > 60000 ? 60000 : deadline - now);
        r = poll(p, nfds, wait);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0 && (p[0].revents & POLLIN))
            return 1;
        if (nfds == 2 && (p[1].revents & POLLIN))
            baton__owner_dispatch(b);
    }
}

BATON_EXPORT int baton_upgrade(baton *b, char *const argv[])
{
    BATON__ARG(b);
    if (!b->ready)
        return baton__fail(b, EINVAL, "baton_upgrade: call baton_ready() first");
    return baton__job_start(b, argv, b->opts.ready_timeout_ms + 1000, true);
}

BATON_EXPORT int baton_upgrade_start(baton *b, char *const argv[])
{
    int r;

    BATON__ARG(b);
    if (!b->ready)
        return baton__fail(b, EINVAL, "baton_upgrade_start: call baton_ready() first");
    pthread_mutex_lock(&b->mu);
    r = baton__job_start(b, argv, b->opts.ready_timeout_ms + 1000, false);
    if (r >= 0) {
        b->job.notify = true;
        r = 0;
    }
    pthread_mutex_unlock(&b->mu);
    return r;
}

BATON_EXPORT int baton_control_fd(const baton *b)
{
    BATON__ARG(b && (b->opts.flags & BATON_NO_THREAD));
    return b->epfd;
}

BATON_EXPORT int baton_dispatch(baton *b)
{
    BATON__ARG(b && (b->opts.flags & BATON_NO_THREAD));
    return baton__owner_dispatch(b);
}

BATON_EXPORT const char *baton_last_error(const baton *b)
{
    (void)b;
    return last_err;
}

BATON_EXPORT const char *baton_version(void)
{
#define STR2(x) #x
#define STR(x)  STR2(x)
    return STR(BATON_VERSION_MAJOR) "." STR(BATON_VERSION_MINOR) "." STR(BATON_VERSION_PATCH);
}

BATON_EXPORT const char *baton_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case EPROTO:
        return "protocol error (malformed message or another protocol version)";
    case EBUSY:
        return "another upgrade is in progress";
    default:
        return strerror(err);
    }
}
