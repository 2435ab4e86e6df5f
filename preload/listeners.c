/* SPDX-License-Identifier: MIT */
/*
 * The listener table: which listeners this copy has, under which names
 * (keys.h), on which program fds and epoll registrations; adopting an
 * inherited one onto the fd the program bound; passing a new one on (the
 * manifest); and retiring them all when a successor serves.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "keys.h"
#include "shim.h"

/* The names a successor should claim, as the handle's state. Called with
 * S.mu held, in the holder. */
void baton_run__manifest_update(void)
{
    char buf[MAX_ENTRIES * (BATON_NAME_MAX + 2) + 16];
    size_t o = 0;

    o += (size_t)snprintf(buf, sizeof(buf), "%s", BATON_RUN_MANIFEST);
    for (int i = 0; i < S.ne; i++)
        if (S.e[i].lib_fd >= 0 && (!S.e[i].inherited || S.e[i].claimed) && !S.e[i].dropped)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s\n", S.e[i].key);
    if (baton_set_state(S.b, buf, o) < 0)
        say("baton_set_state: %s", baton_last_error(S.b));
}

void baton_run__manifest_read(void)
{
    const void *data;
    size_t len, ml = strlen(BATON_RUN_MANIFEST);
    const char *p, *end;

    if (baton_state(S.b, &data, &len) < 0 || len < ml || memcmp(data, BATON_RUN_MANIFEST, ml))
        return;
    p = (const char *)data + ml;
    end = (const char *)data + len;
    while (p < end && S.ne < MAX_ENTRIES) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > 0 && n <= BATON_NAME_MAX) {
            struct entry *e = &S.e[S.ne++];
            memset(e, 0, sizeof(*e));
            memcpy(e->key, p, n);
            e->lib_fd = -1;
            e->dead = -1;
            e->mux = e->real = -1;
            e->inherited = true;
            S.ninherited++;
        }
        p += n + 1;
    }
    say("predecessor passed %d listener(s)", S.ninherited);
}

void baton_run__prog_add(struct entry *e, int fd)
{
    if (e->nprog < MAX_PROG && fd < FDMAP) {
        e->prog[e->nprog++] = fd;
        fdmap_set(fd, (int)(e - S.e) + 1);
    }
}

static void regs_drop(int fd, bool by_epfd)
{
    for (int i = 0; i < S.nregs;)
        if ((by_epfd ? S.regs[i].epfd : S.regs[i].fd) == fd)
            S.regs[i] = S.regs[--S.nregs];
        else
            i++;
}

/* The program stops using fd (close, or dup2 over it): its epoll
 * registrations go first, while fd still names the listener; the open file
 * lives on in libbaton, and the registration with it. */
void baton_run__forget(int fd)
{
    int v, e = errno;

    pthread_mutex_lock(&S.mu);
    v = fdmap_get(fd);
    if (v == FD_EPOLL) {
        regs_drop(fd, true);
    } else if (v >= 1 && v <= S.ne) {
        struct entry *en = &S.e[v - 1];
        for (int i = 0; i < S.nregs; i++)
            if (S.regs[i].fd == fd)
                REAL(epoll_ctl)(S.regs[i].epfd, EPOLL_CTL_DEL, fd, NULL);
        regs_drop(fd, false);
        for (int i = 0; i < en->nprog; i++)
            if (en->prog[i] == fd)
                en->prog[i--] = en->prog[--en->nprog];
    }
    fdmap_set(fd, 0);
    pthread_mutex_unlock(&S.mu);
    errno = e;
}

/* A TCP listener that no packet can reach: bound, with IP_FREEBIND (no
 * privilege needed), to an address that is not the host's and never will
 * be, IPv6's discard-only 100::1 (RFC 6666), or IPv4's TEST-NET-1
 * 192.0.2.1 where there is no IPv6. The kernel delivers only packets for
 * local addresses, so nothing ever connects: it never polls readable, a
 * blocking accept() on it blocks, a non-blocking one fails with EAGAIN. */
static int unreachable_listener(int family)
{
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0xc0000201)};
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, r;

    if (fd < 0)
        return -1;
    s6.sin6_addr.s6_addr[0] = 0x01;
    s6.sin6_addr.s6_addr[15] = 0x01;
    if (family == AF_INET6)
        r = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0 ||
            setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one)) < 0 ||
            REAL(bind)(fd, (struct sockaddr *)&s6, sizeof(s6)) < 0;
    else
        r = setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one)) < 0 ||
            REAL(bind)(fd, (struct sockaddr *)&s4, sizeof(s4)) < 0;
    if (r || REAL(listen)(fd, 1) < 0) {
        REAL(close)(fd);
        return -1;
    }
    return fd;
}

/* A socket that never becomes readable, for retired listener fds: an
 * unreachable TCP listener (for every stream listener, unix ones too), or
 * an unbound UDP socket. It needs no file and no privilege: a program may
 * have dropped its privileges (memcached -u, Apache's User) by the time
 * its processes retire. It is made once per listener, when the holder
 * first sees it (before it forks workers), and all of the listener's fds,
 * in every process, become that one open
 * file, as they all were the listener's one open file (so O_NONBLOCK is
 * one flag for all of them, as it was). getsockname() on them answers the
 * listener's own address (see the wrapper). */
static int dead_socket(const struct entry *en)
{
    int fd;

    if (en->type == SOCK_DGRAM)
        return socket(en->domain, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    fd = unreachable_listener(AF_INET6);
    return fd >= 0 ? fd : unreachable_listener(AF_INET);
}

/* Stop this process's event loop from seeing its listeners. See shim.c for
 * why the order is DEL, dup3, ADD. Called with S.mu held. */
void baton_run__retire(void)
{
    int e = errno;

    if (S.retired || !S.active)
        return;
    S.retired = true;
    for (int i = 0; i < S.ne; i++) {
        struct entry *en = &S.e[i];
        if (en->mux >= 0)
            continue; /* steered: its socket leaves the mux (below) */
        if (en->nprog > 0 && en->dead < 0 && (en->dead = dead_socket(en)) < 0)
            say("cannot retire %s: %m", en->key);
        for (int k = 0; k < en->nprog && en->dead >= 0; k++) {
            int fd = en->prog[k], fl = REAL(fcntl)(fd, F_GETFL), fdfl = REAL(fcntl)(fd, F_GETFD);
            int dfl = REAL(fcntl)(en->dead, F_GETFL);
            /* Blocking as the listener was: accept() blocks, or fails with
             * EAGAIN, as the program expects. */
            if (fl >= 0 && dfl >= 0)
                REAL(fcntl)(en->dead, F_SETFL, (dfl & ~O_NONBLOCK) | (fl & O_NONBLOCK));
            for (int j = 0; j < S.nregs; j++)
                if (S.regs[j].fd == fd)
                    REAL(epoll_ctl)(S.regs[j].epfd, EPOLL_CTL_DEL, fd, NULL);
            REAL(dup3)(en->dead, fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
            for (int j = 0; j < S.nregs; j++)
                if (S.regs[j].fd == fd)
                    REAL(epoll_ctl)(S.regs[j].epfd, EPOLL_CTL_ADD, fd, &S.regs[j].ev);
        }
    }
    baton_run__udp_retire();
    say("listeners retired: no new connections here");
    errno = e;
}

void baton_run__retire_if_superseded(void)
{
    if (!S.retired && S.shm && atomic_load(&S.shm->superseded)) {
        pthread_mutex_lock(&S.mu);
        baton_run__retire();
        pthread_mutex_unlock(&S.mu);
    }
}

int baton_run__sock_type(int fd)
{
    int type = 0;
    socklen_t l = sizeof(type);
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 ? -1 : type;
}

int baton_run__v6only(int fd, int family)
{
    int v = 0;
    socklen_t l = sizeof(v);
    if (family != AF_INET6 || getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) < 0)
        return 0;
    return v;
}

/* The first entry named key or key#n that no program fd uses. */
struct entry *baton_run__find_free(const char *key)
{
    char name[BATON_NAME_MAX + 1];

    for (int n = 1; n <= MAX_ENTRIES; n++) {
        bool seen = false;
        if (baton_run__key_variant(key, n, name, sizeof(name)) < 0)
            return NULL;
        for (int i = 0; i < S.ne; i++) {
            if (strcmp(S.e[i].key, name) != 0)
                continue;
            seen = true;
            if (S.e[i].nprog == 0 && !S.e[i].dropped &&
                (S.e[i].lib_fd >= 0 || (S.e[i].inherited && !S.e[i].claimed)))
                return &S.e[i];
        }
        if (!seen)
            return NULL;
    }
    return NULL;
}

/* What en's listener, now on fd, is: its address (getsockname() on a
 * retired fd answers it), type, and the socket it becomes when retired. */
static void entry_learn(struct entry *en, int fd)
{
    en->addrlen = sizeof(en->addr);
    if (REAL(getsockname)(fd, (struct sockaddr *)&en->addr, &en->addrlen) < 0)
        en->addrlen = 0;
    en->domain = en->addrlen > 0 ? en->addr.ss_family : 0;
    en->type = baton_run__sock_type(fd);
    if (en->dead < 0 && (en->dead = dead_socket(en)) < 0)
        say("%s: no socket to retire it with yet: %m", en->key);
}

/* Hand the program the listener of entry en on its fd. S.mu held. */
int baton_run__adopt(struct entry *en, int fd)
{
    int fdfl, lib;

    if (en->lib_fd < 0) {
        lib = baton_fd(S.b, en->key);
        if (lib < 0) {
            say("inherited %s: %s", en->key, baton_last_error(S.b));
            en->claimed = true; /* not usable: never try again */
            return -1;
        }
        en->lib_fd = lib;
        en->claimed = true;
    }
    fdfl = fcntl(fd, F_GETFD);
    if (REAL(dup3)(en->lib_fd, fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        say("dup3(%s onto %d): %m", en->key, fd);
        return -1;
    }
    entry_learn(en, fd);
    baton_run__udp_steer(en, fd);
    baton_run__prog_add(en, fd);
    en->adopted = true;
    say("fd %d: %s (%s)", fd, en->key, en->inherited ? "inherited" : "kept across re-bind");
    return 0;
}

/* Pass a fresh listener on under its name. S.mu held. */
void baton_run__register(int fd, int type)
{
    char key[BATON_NAME_MAX + 1], name[BATON_NAME_MAX + 1];
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    struct entry *en;
    int lib;

    if (REAL(getsockname)(fd, (struct sockaddr *)&ss, &l) < 0 ||
        baton_run__key((struct sockaddr *)&ss, l, type, baton_run__v6only(fd, ss.ss_family), key,
                       sizeof(key)) < 0 ||
        S.ne >= MAX_ENTRIES)
        return;
    for (int n = 1;; n++) {
        bool taken = false;
        if (baton_run__key_variant(key, n, name, sizeof(name)) < 0)
            return;
        for (int i = 0; i < S.ne && !taken; i++)
            taken = strcmp(S.e[i].key, name) == 0;
        if (!taken)
            break;
    }
    if (baton_add_fd(S.b, name, fd) < 0 || (lib = baton_fd(S.b, name)) < 0) {
        say("passing on %s: %s", name, baton_last_error(S.b));
        return;
    }
    en = &S.e[S.ne++];
    memset(en, 0, sizeof(*en));
    snprintf(en->key, sizeof(en->key), "%s", name);
    en->lib_fd = lib;
    en->dead = -1;
    en->mux = en->real = -1;
    entry_learn(en, fd);
    baton_run__udp_steer(en, fd);
    baton_run__prog_add(en, fd);
    baton_run__manifest_update();
    say("fd %d: %s (new)", fd, name);
}

/* A forked process bound or listened on a TCP address (see
 * check_child_listener): the first one is noted for the holder. */
void baton_run__child_note(int fd, const struct sockaddr *sa, socklen_t len)
{
    char key[BATON_NAME_MAX + 1];
    int none = 0, e = errno;

    if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) ||
        baton_run__sock_type(fd) != SOCK_STREAM ||
        baton_run__key(sa, len, SOCK_STREAM, baton_run__v6only(fd, sa->sa_family), key,
                       sizeof(key)) < 0 ||
        !atomic_compare_exchange_strong(&S.shm->child_pid, &none, -1)) {
        errno = e;
        return;
    }
    memcpy(S.shm->child_key, key, sizeof(key));
    atomic_store(&S.shm->child_pid, (int)getpid());
    errno = e;
}

bool baton_run__is_listener_path(const char *path)
{
    bool hit = false;

    if (!S.active || !path)
        return false;
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < S.ne && !hit; i++) {
        const char *p = baton_run__key_path(S.e[i].key);
        size_t n = p ? strcspn(p, "#") : 0;
        hit = p && strlen(path) == n && strncmp(p, path, n) == 0 &&
              (S.e[i].lib_fd >= 0 || S.e[i].inherited);
    }
    pthread_mutex_unlock(&S.mu);
    if (hit)
        say("kept %s: the listener's path belongs to the service", path);
    return hit;
}
