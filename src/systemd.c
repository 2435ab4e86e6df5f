/* SPDX-License-Identifier: MIT */
/*
 * systemd without libsystemd: socket activation (LISTEN_FDS) for the first
 * generation and readiness notification (READY=1, MAINPID=) for whichever
 * process takes over. Both protocols are small and stable (sd_listen_fds(3),
 * sd_notify(3)); speaking them directly keeps the core on libc alone.
 */
#include <errno.h>
#include <fcntl.h>
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

void baton__sd_notify_ready(baton *b)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char msg[128];
    size_t len;
    int fd;

    if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
        return;
    memcpy(sa.sun_path, path, strlen(path));
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = 0;
    len = offsetof(struct sockaddr_un, sun_path) + strlen(path);
    snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%d\nSTATUS=serving, generation %d", (int)getpid(),
             b->generation);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0)
        baton__log(b, BATON_LOG_WARNING, "sd_notify(%s): %s", path, strerror(errno));
    close(fd);
}
