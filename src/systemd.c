/* SPDX-License-Identifier: MIT */
/*
 * systemd without libsystemd: socket activation (LISTEN_FDS) for the first
 * generation, readiness notification (READY=1, MAINPID=, STATUS=) for
 * whichever process takes over and, with BATON_FDSTORE=1 in the
 * environment, the file descriptor store (FDSTORE=1, FDNAME=). These
 * protocols are small and stable (sd_listen_fds(3), sd_notify(3),
 * sd_pid_notify_with_fds(3)); speaking them directly keeps the core on libc
 * alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define SD_LISTEN_FDS_START 3

static int kind_of(int fd)
{
    int type = 0, domain = 0;
    socklen_t l = sizeof(int);

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
        return BATON__KIND_FD;
    l = sizeof(int);
    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l);
    if (domain == AF_UNIX)
        return BATON__KIND_UNIX;
    if (domain == AF_INET || domain == AF_INET6)
        return type == SOCK_DGRAM ? BATON__KIND_UDP : BATON__KIND_TCP;
    return BATON__KIND_FD;
}

/* Take the fds systemd passed us as if a predecessor had: the application
 * claims them by name with baton_listen() or baton_fd(). */
int baton__sd_listen_fds(baton *b)
{
    const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    char *copy = NULL, *save = NULL, *tok;
    long n;
    int r = 0;

    if (!pid || !nfds || atol(pid) != (long)getpid())
        return 0;
    n = atol(nfds);
    if (n <= 0 || n > 10000)
        return 0;
    if (names)
        copy = strdup(names);
    tok = copy ? strtok_r(copy, ":", &save) : NULL;
    for (long i = 0; i < n && r == 0; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        char name[BATON_NAME_MAX + 1];

        snprintf(name, sizeof(name), "%s", tok && baton__name_ok(tok) ? tok : "");
        if (!name[0])
            snprintf(name, sizeof(name), "LISTEN_FD_%ld", i + SD_LISTEN_FDS_START);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        if (baton__table_find(&b->inh, name)) {
            close(fd);
        } else if ((r = baton__table_add(&b->inh, name, "", kind_of(fd), fd)) == 0) {
            b->inh.v[b->inh.n - 1].activated = true;
        }
        tok = tok ? strtok_r(NULL, ":", &save) : NULL;
    }
    free(copy);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (r == 0)
        baton__log(b, BATON_LOG_INFO, "took %ld fds from systemd socket activation", n);
    return r;
}

/* The address in NOTIFY_SOCKET: a path or, with a leading '@', an abstract
 * name. 0 and the address, or -ENOENT when we run outside systemd. */
static int notify_addr(struct sockaddr_un *sa, socklen_t *ret_len)
{
    const char *path = getenv("NOTIFY_SOCKET");
    size_t n = path ? strlen(path) : 0;

    if (n < 2 || (path[0] != '/' && path[0] != '@') || n >= sizeof(sa->sun_path))
        return -ENOENT;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, n);
    if (sa->sun_path[0] == '@')
        sa->sun_path[0] = 0;
    *ret_len = offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/');
    return 0;
}

/* One datagram to the service manager, with fd attached when fd >= 0 (the
 * caller keeps fd; the manager gets its own copy). Returns 0 or -errno. */
static int notify_send(int sock, const struct sockaddr_un *sa, socklen_t salen, const char *msg,
                       int fd)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = strlen(msg)};
    struct msghdr mh = {
        .msg_name = (void *)sa, .msg_namelen = salen, .msg_iov = &iov, .msg_iovlen = 1};

    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
        return -errno;
    return 0;
}

/* systemd accepts printable ASCII without ':' (the LISTEN_FDNAMES
 * separator) as an fd name; baton names may hold a ':'. */
static bool fdname_ok(const char *name)
{
    return strchr(name, ':') == NULL;
}

/* BATON_FDSTORE in the options, or BATON_FDSTORE=1 in the environment (for
 * programs that do not set the flag, e.g. under a unit's Environment=). */
static bool fdstore_wanted(const baton *b)
{
    const char *v = getenv("BATON_FDSTORE");

    if (b->opts.flags & BATON_FDSTORE)
        return true;
    return v && (strcmp(v, "1") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "true") == 0);
}

/*
 * Park every fd we pass on (listeners and other named fds) in the unit's fd
 * store, so that after a crash and Restart= the next process gets the same
 * sockets back in LISTEN_FDS/LISTEN_FDNAMES and no connect() is refused in
 * the gap. The manager keeps every fd sent under a name, so each name is
 * first removed (FDSTOREREMOVE=1): a listener that moved to a new address
 * would otherwise sit in the store beside its replacement, and the next
 * process could be handed the stale one. We hold our own copy meanwhile, so
 * the socket itself never closes. Fds that systemd passed and the
 * application did not claim are removed from the store too. The unit needs
 * FileDescriptorStoreMax= > 0 and, for a successor that is not the unit's
 * main process, NotifyAccess=all; without them the manager drops the
 * messages, and we cannot tell (the protocol has no answer).
 */
static void fdstore_push(baton *b, int sock, const struct sockaddr_un *sa, socklen_t salen)
{
    char msg[64 + BATON_NAME_MAX];
    size_t stored = 0;
    int r;

    for (size_t i = 0; i < b->inh.n; i++) {
        const struct baton__entry *e = &b->inh.v[i];
        if (!e->activated || e->claimed || !fdname_ok(e->name))
            continue;
        snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", e->name);
        notify_send(sock, sa, salen, msg, -1);
    }
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < b->own.n; i++) {
        const struct baton__entry *e = &b->own.v[i];
        if (!fdname_ok(e->name)) {
            baton__log(b, BATON_LOG_WARNING,
                       "fd store: %s: systemd forbids ':' in names; not stored", e->name);
            continue;
        }
        snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", e->name);
        r = notify_send(sock, sa, salen, msg, -1);
        if (r == 0) {
            snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", e->name);
            r = notify_send(sock, sa, salen, msg, e->fd);
        }
        if (r < 0)
            baton__log(b, BATON_LOG_WARNING, "fd store: %s: %s", e->name, strerror(-r));
        else
            stored++;
    }
    pthread_mutex_unlock(&b->mu);
    baton__log(b, BATON_LOG_INFO, "fd store: %zu fds parked with systemd", stored);
}

/* Called once we serve. The fds go to the store before READY=1, so that
 * once `systemctl start` returns a crash already keeps the sockets. */
void baton__sd_notify_ready(baton *b)
{
    struct sockaddr_un sa;
    socklen_t salen;
    char msg[128];
    int sock, r;

    if (notify_addr(&sa, &salen) < 0)
        return;
    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return;
    if (fdstore_wanted(b))
        fdstore_push(b, sock, &sa, salen);
    snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%d\nSTATUS=serving, generation %d", (int)getpid(),
             b->generation);
    r = notify_send(sock, &sa, salen, msg, -1);
    if (r < 0)
        baton__log(b, BATON_LOG_WARNING, "sd_notify(%s): %s", getenv("NOTIFY_SOCKET"),
                   strerror(-r));
    close(sock);
}

void baton__sd_notify_status(baton *b, const char *status)
{
    struct sockaddr_un sa;
    socklen_t salen;
    char msg[320];
    int sock;

    if (notify_addr(&sa, &salen) < 0)
        return;
    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return;
    snprintf(msg, sizeof(msg), "MAINPID=%d\nSTATUS=%s", (int)getpid(), status);
    if (notify_send(sock, &sa, salen, msg, -1) < 0)
        baton__log(b, BATON_LOG_WARNING, "sd_notify(STATUS=%s) failed", status);
    close(sock);
}
