/* SPDX-License-Identifier: MIT */
/* Sending and receiving one message with its fds (SCM_RIGHTS). */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

void baton__close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Send one whole message; -EAGAIN when a non-blocking socket is full (then
 * nothing was sent: a SOCK_SEQPACKET record goes whole or not at all). */
int baton__send(int fd, const void *buf, size_t len, const int *fds, size_t nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * BATON__BATCH_MAX)];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    if (nfds > BATON__BATCH_MAX)
        return -EINVAL;
    if (nfds) {
        struct cmsghdr *c;
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    do
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EPROTO;
}

int baton__send_msg(int fd, int type, const void *payload, size_t len, const int *fds, size_t nfds)
{
    char buf[BATON__HDR_LEN + 256];

    if (len > sizeof(buf) - BATON__HDR_LEN)
        return -EINVAL;
    memcpy(buf + BATON__HDR_LEN, payload, len);
    baton__msg_header(buf, type, len);
    return baton__send(fd, buf, BATON__HDR_LEN + len, fds, nfds);
}

int baton__send_error(int fd, int err, const char *msg)
{
    char buf[BATON__HDR_LEN + 14 + BATON__TEXT_MAX];
    size_t n = baton__enc_result(buf, BATON__MSG_ERROR, err, 0, 0, msg);
    return baton__send(fd, buf, n, NULL, 0);
}

/*
 * Receive one message into buf (cap bytes) and at most maxfds fds, which
 * arrive close-on-exec. Returns 0, -EAGAIN when nothing waits, -ECONNRESET
 * at end of stream, -EMSGSIZE when the message did not fit, -EMFILE when
 * the kernel could not give us every fd (MSG_CTRUNC: usually
 * RLIMIT_NOFILE), -EPROTO for fds or control data we did not expect. On
 * failure no fd stays open.
 */
int baton__recv(int fd, void *buf, size_t cap, int *fds, size_t maxfds, size_t *ret_len,
                size_t *ret_nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * BATON__BATCH_MAX)];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    size_t nfds = 0;
    int r = 0;
    ssize_t n;

    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == ECONNRESET ? -ECONNRESET : -errno;

    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        size_t k;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
            c->cmsg_len < CMSG_LEN(0)) {
            r = -EPROTO;
            continue;
        }
        k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (nfds < maxfds && r == 0)
                fds[nfds++] = f;
            else {
                close(f);
                r = -EPROTO;
            }
        }
    }
    if (r == 0 && (mh.msg_flags & MSG_CTRUNC))
        r = -EMFILE;
    if (r == 0 && (mh.msg_flags & MSG_TRUNC))
        r = -EMSGSIZE;
    if (r == 0 && n == 0 && nfds == 0)
        r = -ECONNRESET;
    if (r < 0) {
        baton__close_fds(fds, nfds);
        return r;
    }
    *ret_len = n;
    *ret_nfds = nfds;
    return 0;
}
