/* SPDX-License-Identifier: MIT */
/* What every session server needs before it starts: a listening socket on
 * an address of the library's form, and the peer key from a file. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

BATON_SESSION_EXPORT int baton_session_listen(const char *address, int backlog)
{
    struct baton__saddr a;
    int one = 1, fd;

    if (!address || baton__saddr_parse(address, &a) < 0)
        return -EINVAL;
    fd = socket(a.sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&a.sa, a.len) < 0 ||
        listen(fd, backlog > 0 ? backlog : 4096) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

BATON_SESSION_EXPORT int baton_session_load_key(const char *path, void *buf, size_t cap,
                                                size_t *ret_len)
{
    struct stat st;
    size_t len = 0;
    int fd, r = 0;

    if (!path || !buf || !ret_len)
        return -EINVAL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto out;
    }
    /* A key others can read is a key others have; one they can write is
     * one they choose. */
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        r = S_ISREG(st.st_mode) ? -EACCES : -EINVAL;
        goto out;
    }
    for (;;) {
        ssize_t n;
        if (len == cap) {
            char c;
            /* One byte more than fits: too long, unless it is the
             * trailing newline. */
            n = read(fd, &c, 1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                r = -errno;
                goto out;
            }
            if (n == 1 && !(c == '\n' && read(fd, &c, 1) == 0)) {
                r = -EINVAL;
                goto out;
            }
            break;
        }
        n = read(fd, (char *)buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len && ((char *)buf)[len - 1] == '\n')
        len--;
    if (len < BATON_SESSION_KEY_MIN) {
        r = -EINVAL;
        goto out;
    }
    *ret_len = len;
out:
    close(fd);
    return r;
}
