/* SPDX-License-Identifier: MIT */
/*
 * The error paths of the owner's functions: baton_ready(),
 * baton_upgrade_fd(), baton_wait_upgrade(), baton_upgrade(),
 * baton_control_fd(), baton_dispatch(), and the accessors, with the exact
 * -errno; and the messages of baton_last_error()/baton_strerror().
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

int main(int argc, char **argv)
{
    char dir[PATH_MAX], dir2[PATH_MAX], missing[PATH_MAX], ver[32];
    char *bad_argv[] = {missing, NULL};
    struct baton_options o;
    baton *b, *nt;
    int ufd;

    t_init(argc, argv);
    t_path(dir, "run");
    t_path(dir2, "run2");
    t_path(missing, "no-such-program");

    /* Accessors and NULL. */
    T_EQ(baton_generation(NULL), -EINVAL);
    T_EQ(baton_inherited(NULL), -EINVAL);
    T_EQ(baton_ready(NULL), -EINVAL);
    T_EQ(baton_upgrade_fd(NULL), -EINVAL);
    T_EQ(baton_wait_upgrade(NULL, 0), -EINVAL);
    T_EQ(baton_upgrade(NULL, NULL), -EINVAL);
    T_EQ(baton_control_fd(NULL), -EINVAL);
    T_EQ(baton_dispatch(NULL), -EINVAL);
    /* Each says which call and what was wrong, per thread (NULL handle
     * included). */
    t_log("last error: %s", baton_last_error(NULL));
    T_ASSERT(strstr(baton_last_error(NULL), "baton_dispatch: invalid argument") != NULL);

    /* Version and messages. */
    snprintf(ver, sizeof(ver), "%d.%d.%d", BATON_VERSION_MAJOR, BATON_VERSION_MINOR,
             BATON_VERSION_PATCH);
    T_STREQ(baton_version(), ver);
    T_STREQ(baton_strerror(-EINVAL), strerror(EINVAL));
    T_ASSERT(baton_strerror(-EBUSY)[0] != 0);
    T_ASSERT(baton_strerror(-EPROTO)[0] != 0);
    T_ASSERT(baton_strerror(-ETIMEDOUT)[0] != 0);
    T_ASSERT(baton_strerror(-123456) != NULL);

    o = t_opts(dir, 2000, 0);
    T_OK(baton_open(&o, &b));
    /* A success leaves the last failure's message as it was. */
    T_ASSERT(strstr(baton_last_error(b), "baton_dispatch") != NULL);

    /* Without BATON_NO_THREAD there is no control fd to poll. */
    T_EQ(baton_control_fd(b), -EINVAL);
    T_EQ(baton_dispatch(b), -EINVAL);

    /* Before baton_ready(): nothing to upgrade from yet. */
    T_EQ(baton_upgrade(b, bad_argv), -EINVAL);
    T_ASSERT(baton_last_error(b)[0] != 0);

    T_OK(baton_ready(b));
    /* Twice: the library answers -EALREADY (the header does not say). */
    T_EQ(baton_ready(b), -EALREADY);

    ufd = T_OK(baton_upgrade_fd(b));
    struct pollfd p = {.fd = ufd, .events = POLLIN};
    T_EQ(poll(&p, 1, 0), 0);
    T_EQ(baton_wait_upgrade(b, 0), 0);
    T_EQ(baton_wait_upgrade(b, 50), 0);

    /* A successor program that does not exist: posix_spawn's error, and the
     * owner is still the owner. */
    T_EQ(baton_upgrade(b, bad_argv), -ENOENT);
    T_ASSERT(baton_last_error(b)[0] != 0);
    T_EQ(baton_wait_upgrade(b, 0), 0);
    baton_free(b);

    /* With BATON_NO_THREAD the control fd exists and dispatch is fine with
     * nothing pending. */
    o = t_opts(dir2, 2000, BATON_NO_THREAD);
    T_OK(baton_open(&o, &nt));
    T_OK(baton_ready(nt));
    T_OK(baton_control_fd(nt));
    T_OK(baton_dispatch(nt));
    T_EQ(baton_wait_upgrade(nt, 10), 0);
    baton_free(nt);

    return t_done();
}
