/* SPDX-License-Identifier: MIT */
/*
 * The per-process manager: start-up (who is active, opening the
 * coordination directory, the manager thread), readiness (when the copy
 * tells its predecessor to step down, and before a privilege drop), serving
 * successors until one takes over, and what ends a copy that never served.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "keys.h"
#include "shim.h"

static void lib_log(void *ctx, int level, const char *msg)
{
    say("libbaton: %s", msg);
}

static bool ready_due(uint64_t now, uint64_t *first_poke)
{
    int live = 0, claimed = 0;

    if (S.force_ready)
        return true;
    for (int i = 0; i < S.ne; i++) {
        live += S.e[i].lib_fd >= 0;
        claimed += S.e[i].inherited && S.e[i].claimed;
    }
    if (live == 0)
        return false;
    if (atomic_load(&S.shm->poked)) {
        if (!*first_poke)
            *first_poke = now;
        if (claimed >= S.ninherited || now >= *first_poke + GRACE_MS)
            return true;
    }
    return now >= S.start_ms + (uint64_t)S.ready_ms;
}

static int become_ready(void)
{
    int r;

    pthread_mutex_lock(&S.mu);
    baton_run__manifest_update();
    r = baton_ready(S.b);
    if (r == 0) {
        /* Inherited listeners nobody claimed are closed now. */
        for (int i = 0; i < S.ne; i++)
            if (S.e[i].inherited && !S.e[i].claimed)
                S.e[i].inherited = false;
        /* Ready early, the holder still waits for the program's first wait
         * for work to settle what it parked (settle_parked). */
        if (!S.force_ready)
            atomic_store(&S.shm->want_ready, 0);
        S.ready = true;
        baton_run__pidfile_claim();
        S.ctl_fd = baton_control_fd(S.b);
        say("ready: generation %d serves", baton_generation(S.b));
    } else {
        say("baton_ready: %s", baton_last_error(S.b));
    }
    pthread_mutex_unlock(&S.mu);
    return r;
}

/* A forked process bound or listened on an address of ours (child_note):
 * such a listener is not passed on. If this process has no listener of its
 * own, the program serves from children it made after `baton run` started
 * it (a daemon, or a wrapper): give up rather than never become ready. If
 * it has, say so once. S.mu held. */
static void check_child_listener(bool *warned)
{
    int pid = atomic_load(&S.shm->child_pid), own = 0;

    if (pid == 0 || *warned)
        return;
    for (int i = 0; i < S.ne; i++)
        own += S.e[i].lib_fd >= 0 && S.e[i].nprog > 0;
    if (own == 0) {
        complain("pid %d, which it forked, binds %s: only listeners made by the process "
                 "`baton run` started (pid %d) are passed on; run the program in the "
                 "foreground, binding its listeners itself",
                 pid, S.shm->child_key, (int)getpid());
        pthread_mutex_unlock(&S.mu);
        baton_run__give_up();
    }
    complain("pid %d, which it forked, binds %s: a listener made in a forked process is not "
             "passed on, and the next copy cannot take it over",
             pid, S.shm->child_key);
    *warned = true;
}

/* Read the library's upgrade events: true once a successor is final, and
 * then every process of the copy is told (S.upgrade_fd). A successor on
 * probation is not: the program serves on beside it, as it did, and goes
 * on alone if it dies (the library gives the directory back to us). */
static bool released(void)
{
    struct baton_event ev;
    bool done = false;
    uint64_t one = 1;

    for (;;) {
        switch (baton_upgrade_event(S.b, &ev)) {
        case BATON_EVENT_STEP_DOWN:
            if (S.probation_ms > 0)
                say("generation %d (pid %d) serves, on probation for %d ms: serving on meanwhile",
                    ev.generation, (int)ev.pid, S.probation_ms);
            continue;
        case BATON_EVENT_RESUME:
            complain("generation %d (pid %d) died on probation: generation %d serves alone "
                     "again",
                     ev.generation, (int)ev.pid, baton_generation(S.b));
            continue;
        case BATON_EVENT_RELEASED:
            done = true;
            continue;
        default:
            break;
        }
        break;
    }
    if (done && write(S.upgrade_fd, &one, sizeof(one)) < 0) {
        /* An eventfd written once does not fail. */
    }
    return done;
}

static void wait_ready(void)
{
    uint64_t first_poke = 0, junk;
    bool warned = false;

    for (;;) {
        struct pollfd p = {.fd = S.ready_efd, .events = POLLIN};
        bool due;
        REAL(poll)(&p, 1, PRE_READY_TICK);
        if (read(S.ready_efd, &junk, sizeof(junk)) < 0) {
            /* Nothing pending. */
        }
        pthread_mutex_lock(&S.mu);
        check_child_listener(&warned);
        due = ready_due(now_ms(), &first_poke);
        pthread_mutex_unlock(&S.mu);
        if (due)
            return;
    }
}

/* After a ready at a privilege drop (baton_run__ready_early): the listeners parked
 * then that the program has not bound by its first wait for work (or 2 s
 * after it, or READY_MS after start) are not its listeners any more. As at
 * an ordinary baton_ready(), which closes them, they stop listening
 * (shutdown() of a listening socket resets its queue and unlistens it) and
 * are not passed on. Returns false if a successor took over meanwhile. */
static bool settle_parked(void)
{
    uint64_t first_poke = 0, junk;

    for (;;) {
        struct pollfd p[3] = {{.fd = S.ready_efd, .events = POLLIN},
                              {.fd = S.ctl_fd, .events = POLLIN},
                              {.fd = S.lib_upgrade_fd, .events = POLLIN}};
        uint64_t now;
        int left = 0;
        REAL(poll)(p, 3, PRE_READY_TICK);
        if (read(S.ready_efd, &junk, sizeof(junk)) < 0) {
            /* Nothing pending. */
        }
        if (p[1].revents & POLLIN)
            baton_dispatch(S.b);
        if ((p[2].revents & POLLIN) && released())
            return false;
        now = now_ms();
        if (atomic_load(&S.shm->poked) && !first_poke)
            first_poke = now;
        pthread_mutex_lock(&S.mu);
        for (int i = 0; i < S.ne; i++)
            left += S.e[i].parked && !S.e[i].adopted && !S.e[i].dropped;
        if (left == 0 || (first_poke && now >= first_poke + GRACE_MS) ||
            now >= S.start_ms + (uint64_t)S.ready_ms) {
            for (int i = 0; i < S.ne; i++) {
                struct entry *en = &S.e[i];
                if (!en->parked || en->adopted || en->dropped)
                    continue;
                shutdown(en->lib_fd, SHUT_RD);
                en->dropped = true;
                say("closing %s: parked at the privilege drop, never bound", en->key);
            }
            baton_run__manifest_update();
            atomic_store(&S.shm->want_ready, 0);
            pthread_mutex_unlock(&S.mu);
            return true;
        }
        pthread_mutex_unlock(&S.mu);
    }
}

/* Serve successors until one takes over for good. */
static void serve(void)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = S.lib_upgrade_fd, .events = POLLIN},
                              {.fd = S.ctl_fd, .events = POLLIN}};
        if (REAL(poll)(p, 2, -1) < 0)
            continue;
        if (p[1].revents & POLLIN)
            baton_dispatch(S.b);
        if ((p[0].revents & POLLIN) && released())
            return;
    }
}

/* A program that drops its privileges (memcached -u) can no longer create
 * files in the coordination directory, which baton_ready() does. So the
 * holder becomes ready before its first drop of root's uid: every inherited
 * listener the program has not bound yet is claimed now and parked (its
 * bind() will find it), the predecessor steps down, and the drop goes on
 * once that is done. Listeners the program then never binds are closed
 * later (settle_parked). If the takeover fails, the manager ends this copy
 * (the caller never returns). Everything after this needs no privilege:
 * dead sockets need no file, the drain reads our own /proc entries (which
 * a non-dumpable process may), and the successor connects to a control
 * socket that was bound while we were root. */
void baton_run__ready_early(void)
{
    uint64_t one = 1;

    pthread_mutex_lock(&S.mu);
    if (!S.ready && !S.force_ready) {
        int n = 0;
        for (int i = 0; i < S.ne; i++) {
            struct entry *en = &S.e[i];
            int lib;
            if (!en->inherited || en->claimed)
                continue;
            en->claimed = true;
            lib = baton_fd(S.b, en->key);
            if (lib < 0) {
                say("inherited %s: %s", en->key, baton_last_error(S.b));
                continue;
            }
            en->lib_fd = lib;
            en->parked = true;
            n++;
        }
        S.force_ready = true;
        say("the program drops its privileges: ready now (%d listener(s) parked)", n);
        if (write(S.ready_efd, &one, sizeof(one)) < 0) {
            /* The manager also looks every PRE_READY_TICK ms. */
        }
    }
    pthread_mutex_unlock(&S.mu);
    pthread_mutex_lock(&S.ready_mu);
    while (S.ready_result == 0)
        pthread_cond_wait(&S.ready_cv, &S.ready_mu);
    pthread_mutex_unlock(&S.ready_mu);
}

static void *manager(void *arg)
{
    sigset_t all;
    int r;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    wait_ready();
    r = become_ready();
    pthread_mutex_lock(&S.ready_mu);
    S.ready_result = r == 0 ? 1 : -1;
    pthread_cond_broadcast(&S.ready_cv);
    pthread_mutex_unlock(&S.ready_mu);
    if (r < 0) {
        /* Our predecessor serves on (or is gone): do not serve beside it. */
        if (baton_inherited(S.b))
            complain("could not take over from generation %d, which serves on: %s",
                     baton_generation(S.b) - 1, baton_last_error(S.b));
        else
            complain("could not start serving: %s", baton_last_error(S.b));
        baton_run__give_up();
    }
    if (!S.force_ready || settle_parked())
        serve();
    baton_run__drain("a successor serves");
    return NULL;
}

static void at_prepare(void)
{
    pthread_mutex_lock(&S.mu);
    /* Decided here, under S.mu: S.ready may change as soon as the parent
     * lets go of S.mu. */
    S.fork_lock_fd = S.shm && !S.ready ? S.lock_fd : -1;
}

static void at_parent(void)
{
    pthread_mutex_unlock(&S.mu);
}

static void at_child(void)
{
    static const pthread_mutex_t fresh = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
    static const pthread_mutex_t fresh_ready_mu = PTHREAD_MUTEX_INITIALIZER;
    static const pthread_cond_t fresh_ready_cv = PTHREAD_COND_INITIALIZER;

    atomic_store(&S.child, true);
    atomic_store(&S.in_accept, NULL); /* the parent's: ours comes at our first accept */
    /* libbaton unlocks (LOCK_UN) the open file all copies share at
     * baton_ready(), but if the holder dies before that, a child's copy
     * would keep the lock and stall the next takeover until it exits. */
    if (S.fork_lock_fd >= 0)
        REAL(close)(S.fork_lock_fd);
    S.lock_fd = S.fork_lock_fd = -1;
    /* Not pthread_mutex_unlock(): S.mu is recursive and its owner is the
     * forking thread's tid in the parent, which is not ours, so the unlock
     * would fail with EPERM and leave S.mu locked for ever in the child (a
     * worker would then hang at its first retirement). at_prepare() held it,
     * so the state it guards is consistent, and this is the only thread. */
    S.mu = fresh;
    S.ready_mu = fresh_ready_mu;
    S.ready_cv = fresh_ready_cv;
}

static int read_cmdline_hash(uint64_t *ret)
{
    char buf[65536];
    size_t len = 0;
    ssize_t n;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) > 0)
        len += (size_t)n;
    REAL(close)(fd);
    *ret = baton_run__hash(buf, len);
    return 0;
}

/* The process `baton run` executed, or a successor libbaton started with
 * the same command line; nothing else the program executes. */
static bool should_activate(void)
{
    const char *pid = getenv("BATON_RUN_PID"), *cmd = getenv("BATON_RUN_CMD");
    char hex[32];
    uint64_t h;

    if (read_cmdline_hash(&h) < 0)
        return false;
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
    if (pid && atoi(pid) == (int)getpid()) {
        setenv("BATON_RUN_CMD", hex, 1);
        return true;
    }
    return cmd && strcmp(cmd, hex) == 0;
}

/* The fd of DIR/lock, which libbaton holds from baton_open() to
 * baton_ready(). */
static int find_lock_fd(void)
{
    char want[PATH_MAX + 8], link[PATH_MAX + 8], fp[64];
    struct dirent *d;
    DIR *dir = opendir("/proc/self/fd");
    int fd = -1;

    snprintf(want, sizeof(want), "%s/lock", S.dir);
    while (dir && fd < 0 && (d = readdir(dir))) {
        ssize_t n;
        snprintf(fp, sizeof(fp), "/proc/self/fd/%.20s", d->d_name);
        n = readlink(fp, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = 0;
            if (strcmp(link, want) == 0)
                fd = atoi(d->d_name);
        }
    }
    if (dir)
        closedir(dir);
    return fd;
}

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

static void open_log(void)
{
    const char *v = getenv("BATON_RUN_LOG");

    if (!v || !*v)
        return;
    if (strcmp(v, "stderr") == 0 || strcmp(v, "-") == 0)
        S.log_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    else
        S.log_fd = open(v, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* The holder exits before it served: the program failed, or it is one that
 * daemonizes (the process `baton run` started exits, a child serves). The
 * person who ran it must not take that for success: say so, put the pid
 * file back, end the children, and exit non-zero. */
static void at_holder_exit(int status, void *arg)
{
    bool kids;

    if (!is_holder() || S.ready)
        return;
    if (!atomic_exchange(&S.gave_up, true)) {
        kids = baton_run__has_children();
        complain("exited with status %d before it served%s; %s", status,
                 kids ? ", leaving processes behind (ended now): the process `baton run` starts "
                        "must be the one that serves (run it in the foreground, not daemonized)"
                      : "",
                 baton_inherited(S.b) ? "the running copy serves on" : "nothing serves");
        pthread_mutex_lock(&S.mu);
        baton_run__pidfile_restore();
        pthread_mutex_unlock(&S.mu);
        if (kids)
            baton_run__kill_tree(getpid(), 0, SIGKILL);
    }
    if (status == 0) {
        fflush(NULL);
        _exit(EXIT_NOT_SERVING);
    }
}

/* Before the program runs, nothing has been done that needs undoing. */
static _Noreturn void cannot_start(const char *fmt, const char *detail)
{
    complain(fmt, S.dir, detail);
    _exit(EXIT_NOT_SERVING);
}

__attribute__((constructor)) static void shim_init(void)
{
    const char *dir = getenv("BATON_RUN_DIR");
    struct baton_options o = {0};
    sigset_t all, old;
    pthread_t t;
    int r;

    baton_run__resolve();
    if (!dir || !*dir || strlen(dir) >= sizeof(S.dir) || !should_activate())
        return;
    open_log();
    S.err_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    snprintf(S.dir, sizeof(S.dir), "%s", dir);
    S.drain_ms = env_int("BATON_RUN_DRAIN_MS", DRAIN_MS);
    S.udp_steer = env_int("BATON_RUN_UDP_STEER", 0) != 0;
    S.udp_idle_ms = env_int("BATON_RUN_UDP_IDLE_MS", UDP_IDLE_MS);
    S.probation_ms = env_int("BATON_RUN_PROBATION_MS", 0);
    S.max_generations = env_int("BATON_RUN_MAX_GENERATIONS", 0);
    S.stop_sig = env_int("BATON_RUN_STOP_SIGNAL", SIGTERM);
    S.ready_ms = env_int("BATON_RUN_READY_MS", READY_MS);
    S.min_backlog = env_int("BATON_RUN_MIN_BACKLOG", MIN_BACKLOG);
    S.idle_close_ms = env_int("BATON_RUN_IDLE_CLOSE_MS", IDLE_CLOSE_MS);
    S.start_ms = now_ms();
    baton_run__pidfile_name();
    baton_run__keep_env();
    S.shm = mmap(NULL, sizeof(*S.shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    S.ready_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    S.retire_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    /* Before the program forks workers: they watch it too. */
    S.upgrade_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (S.shm == MAP_FAILED || S.ready_efd < 0 || S.retire_efd < 0 || S.upgrade_fd < 0)
        cannot_start("%s: cannot start: %s", strerror(errno));
    o.dir = S.dir;
    o.ready_timeout_ms = env_int("BATON_RUN_TAKEOVER_TIMEOUT_MS", OWNER_TIMEOUT);
    o.allowed_uid = (uid_t)-1;
    o.flags = BATON_NO_THREAD | BATON_WAIT_LOCK;
    /* --standby: a copy of the program parked before its main() (and
     * before this constructor: libbaton's runs first), woken by an
     * upgrade. */
    if (env_int("BATON_RUN_STANDBY", 0))
        o.flags |= BATON_STANDBY;
    o.log = lib_log;
    o.probation_ms = S.probation_ms;
    o.max_generations = S.max_generations;
    /* Our own drain ends with the stop signal and SIGKILL KILL_MS later;
     * the library's bound is the backstop if this copy is wedged. */
    if (S.drain_ms > 0)
        o.drain_timeout_ms = S.drain_ms > BATON_PROBATION_MAX_MS - KILL_MS - 5000
                                 ? BATON_PROBATION_MAX_MS
                                 : S.drain_ms + KILL_MS + 5000;
    r = baton_open(&o, &S.b);
    if (r < 0)
        cannot_start("%s: %s",
                     *baton_last_error(NULL) ? baton_last_error(NULL) : baton_strerror(r));
    if (baton_inherited(S.b))
        baton_run__manifest_read();
    if (S.pidfile[0] && baton_inherited(S.b))
        baton_run__pidfile_hide();
    S.lock_fd = find_lock_fd();
    S.lib_upgrade_fd = baton_upgrade_fd(S.b);
    atomic_store(&S.shm->want_ready, 1);
    pthread_atfork(at_prepare, at_parent, at_child);
    S.active = true;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    r = pthread_create(&t, NULL, manager, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0)
        cannot_start("%s: pthread_create: %s", strerror(r));
    pthread_detach(t);
    on_exit(at_holder_exit, NULL);
    say("generation %d in %s", baton_generation(S.b), S.dir);
}
