/* SPDX-License-Identifier: MIT */
/* Application state: a sealed memfd, so a successor can map it knowing the
 * predecessor can no longer change or shrink it under its feet. */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

int baton__state_make(const void *data, size_t len, int *ret_fd)
{
    const char *p = data;
    size_t done = 0;
    int fd, r;

    fd = memfd_create("baton-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, len) < 0)
        goto fail;
    while (done < len) {
        ssize_t n = pwrite(fd, p + done, len - done, done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        done += n;
    }
    if (fcntl(fd, F_ADD_SEALS, SEALS) < 0)
        goto fail;
    *ret_fd = fd;
    return 0;
fail:
    r = errno ? -errno : -EIO;
    close(fd);
    return r;
}

/* Map a received state memfd after checking that it is sealed and as long
 * as announced. Takes ownership of fd. */
int baton__state_map(baton *b, int fd, uint64_t len)
{
    struct stat st;
    int seals;
    void *p;

    seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & SEALS) != SEALS) {
        close(fd);
        return baton__fail(b, EPROTO, "state memfd is not sealed");
    }
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != len || len > SIZE_MAX) {
        close(fd);
        return baton__fail(b, EPROTO, "state memfd size differs from announced %llu",
                           (unsigned long long)len);
    }
    p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return baton__fail(b, errno, "mmap(state, %llu bytes)", (unsigned long long)len);
    b->state_map = p;
    b->state_map_len = len;
    return 0;
}
