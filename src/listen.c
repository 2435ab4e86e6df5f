/* SPDX-License-Identifier: MIT */
/* Listener addresses: parsing, creating sockets, checking inherited ones. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

int baton__addr_kind(const char *a)
{
    if (strnlen(a, BATON_ADDR_MAX + 1) > BATON_ADDR_MAX)
        return -EINVAL;
    for (const char *p = a; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '"' || *p == '\\')
            return -EINVAL;
    if (strncmp(a, "tcp://", 6) == 0 && a[6])
        return BATON__KIND_TCP;
    if (strncmp(a, "udp://", 6) == 0 && a[6])
        return BATON__KIND_UDP;
    if (strncmp(a, "unix:", 5) == 0 && a[5])
        return BATON__KIND_UNIX;
    return -EINVAL;
}

/* Split "HOST:PORT" or "[V6]:PORT" into host and port. */
static int split_host_port(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon;
    size_t n;

    if (*s == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        n = end - s - 1;
        colon = end + 1;
        s++;
    } else {
        colon = strrchr(s, ':');
        if (!colon || strchr(s, ':') != colon)
            return -EINVAL;
        n = colon - s;
    }
    if (n == 0 || n >= hlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= plen)
        return -EINVAL;
    memcpy(host, s, n);
    host[n] = 0;
    strcpy(port, colon + 1);
    for (const char *p = port; *p; p++)
        if (*p < '0' || *p > '9')
            return -EINVAL;
    if (atol(port) > 65535)
        return -EINVAL;
    return 0;
}

static int listen_inet(baton *b, const char *address, int kind, int backlog, int *ret_fd)
{
    struct addrinfo hints = {0}, *ai = NULL;
    char host[256], port[8];
    int fd, r, one = 1;

    if (split_host_port(address + 6, host, sizeof(host), port, sizeof(port)) < 0)
        return baton__fail(b, EINVAL, "%s: expected HOST:PORT or [V6]:PORT", address);
    hints.ai_socktype = kind == BATON__KIND_TCP ? SOCK_STREAM : SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    r = getaddrinfo(host, port, &hints, &ai);
    if (r != 0)
        return baton__fail(b, r == EAI_SYSTEM ? errno : EADDRNOTAVAIL, "%s: %s", address,
                           gai_strerror(r));
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = baton__fail(b, errno, "socket(%s)", address);
        goto out;
    }
    if (kind == BATON__KIND_TCP)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        r = baton__fail(b, errno, "bind(%s)", address);
        goto fail;
    }
    if (kind == BATON__KIND_TCP && listen(fd, backlog) < 0) {
        r = baton__fail(b, errno, "listen(%s)", address);
        goto fail;
    }
    *ret_fd = fd;
    r = 0;
    goto out;
fail:
    close(fd);
out:
    freeaddrinfo(ai);
    return r;
}

static int listen_unix(baton *b, const char *address, int backlog, int *ret_fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *path = address + 5;
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path))
        return baton__fail(b, ENAMETOOLONG, "%s: too long for a unix socket", address);
    strcpy(sa.sun_path, path);
    /* A socket file left behind by an owner that is gone: nobody holds it
     * (we would have inherited it otherwise), so it is stale. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return baton__fail(b, errno, "socket(%s)", address);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return baton__fail(b, e, "bind/listen(%s)", address);
    }
    *ret_fd = fd;
    return 0;
}

int baton__listen_new(baton *b, const char *address, int backlog, int *ret_fd)
{
    int kind = baton__addr_kind(address);

    if (backlog <= 0)
        backlog = SOMAXCONN;
    switch (kind) {
    case BATON__KIND_TCP:
    case BATON__KIND_UDP:
        return listen_inet(b, address, kind, backlog, ret_fd);
    case BATON__KIND_UNIX:
        return listen_unix(b, address, backlog, ret_fd);
    default:
        return baton__fail(b, EINVAL, "bad address \"%s\"", address);
    }
}

/* Is fd still a socket of the kind its entry claims? An inherited fd is
 * only reused as a listener when it is. */
int baton__fd_matches(int fd, int kind)
{
    int type = 0, domain = 0;
    socklen_t l = sizeof(int);

    if (kind == BATON__KIND_FD)
        return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
        return -ENOTSOCK;
    l = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) < 0)
        return -ENOTSOCK;
    switch (kind) {
    case BATON__KIND_TCP:
        return type == SOCK_STREAM && (domain == AF_INET || domain == AF_INET6) ? 0 : -EPROTOTYPE;
    case BATON__KIND_UDP:
        return type == SOCK_DGRAM && (domain == AF_INET || domain == AF_INET6) ? 0 : -EPROTOTYPE;
    case BATON__KIND_UNIX:
        return domain == AF_UNIX ? 0 : -EPROTOTYPE;
    }
    return -EINVAL;
}

/* Does the bound inet address of fd equal one that host:port resolves to?
 * Port 0 asks for "any port", so it matches whatever port fd has. */
static bool inet_matches(int fd, const char *address, int kind)
{
    struct addrinfo hints = {0}, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[256], port[8];
    bool same = false;

    if (split_host_port(address + 6, host, sizeof(host), port, sizeof(port)) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return false;
    hints.ai_socktype = kind == BATON__KIND_TCP ? SOCK_STREAM : SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return false;
    for (struct addrinfo *a = ai; a && !same; a = a->ai_next) {
        if (a->ai_family != ss.ss_family)
            continue;
        if (a->ai_family == AF_INET) {
            const struct sockaddr_in *x = (const void *)a->ai_addr, *y = (const void *)&ss;
            same = x->sin_addr.s_addr == y->sin_addr.s_addr &&
                   (x->sin_port == 0 || x->sin_port == y->sin_port);
        } else if (a->ai_family == AF_INET6) {
            const struct sockaddr_in6 *x = (const void *)a->ai_addr, *y = (const void *)&ss;
            same = memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
                   (x->sin6_port == 0 || x->sin6_port == y->sin6_port);
        }
    }
    freeaddrinfo(ai);
    return same;
}

/* A unix listener matches the path it is bound to, or another name of the
 * same socket file. */
static bool unix_matches(int fd, const char *address)
{
    struct sockaddr_un sa;
    socklen_t sl = sizeof(sa);
    struct stat a, b;
    const char *path = address + 5;

    if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0 || sa.sun_family != AF_UNIX ||
        sl <= offsetof(struct sockaddr_un, sun_path) || !sa.sun_path[0])
        return false;
    sa.sun_path[sizeof(sa.sun_path) - 1] = 0;
    if (strcmp(sa.sun_path, path) == 0)
        return true;
    return stat(sa.sun_path, &a) == 0 && stat(path, &b) == 0 && S_ISSOCK(a.st_mode) &&
           a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int baton__addr_matches(int fd, int kind, const char *address)
{
    if (baton__fd_matches(fd, kind) < 0 || baton__addr_kind(address) != kind)
        return false;
    switch (kind) {
    case BATON__KIND_TCP:
    case BATON__KIND_UDP:
        return inet_matches(fd, address, kind);
    case BATON__KIND_UNIX:
        return unix_matches(fd, address);
    }
    return false;
}
