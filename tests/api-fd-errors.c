/* SPDX-License-Identifier: MIT */
/*
 * The error paths of baton_fd(), baton_add_fd(), baton_state() and
 * baton_set_state(), with the exact -errno; and what they leave behind:
 * the caller's fd stays the caller's, a failed call takes no name.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

int main(int argc, char **argv)
{
    char dir[PATH_MAX], name[BATON_NAME_MAX + 2];
    struct baton_options o;
    const void *data = &data;
    size_t len = 42;
    baton *b;
    int p[2], fds0;

    t_init(argc, argv);
    t_path(dir, "run");
    o = t_opts(dir, 0, 0);
    T_OK(baton_open(&o, &b));
    T_SYS(pipe2(p, O_CLOEXEC));
    fds0 = t_fd_count();

    /* baton_fd */
    T_EQ(baton_fd(NULL, "x"), -EINVAL);
    T_EQ(baton_fd(b, NULL), -EINVAL);
    T_EQ(baton_fd(b, "nope"), -ENOENT);
    T_EQ(baton_fd(b, ""), -ENOENT);

    /* baton_add_fd */
    T_EQ(baton_add_fd(NULL, "x", p[0]), -EINVAL);
    T_EQ(baton_add_fd(b, NULL, p[0]), -EINVAL);
    T_EQ(baton_add_fd(b, "x", -1), -EBADF);
    T_EQ(baton_add_fd(b, "x", 4000), -EBADF); /* not open */
    T_EQ(baton_add_fd(b, "", p[0]), -EINVAL);
    T_EQ(baton_add_fd(b, "a\nb", p[0]), -EINVAL);
    memset(name, 'n', BATON_NAME_MAX + 1);
    name[BATON_NAME_MAX + 1] = 0;
    T_EQ(baton_add_fd(b, name, p[0]), -ENAMETOOLONG);
    T_EQ(t_fd_count(), fds0);

    /* A duplicate is taken: one more fd. */
    T_OK(baton_add_fd(b, "x", p[0]));
    T_EQ(t_fd_count(), fds0 + 1);
    T_EQ(baton_add_fd(b, "x", p[1]), -EEXIST);
    T_EQ(t_fd_count(), fds0 + 1);
    /* The caller's fd stays open and its flags untouched. */
    T_ASSERT(t_fd_open(p[0]));
    /* baton_fd also finds our own named fds: the library's duplicate. */
    int dup = T_OK(baton_fd(b, "x"));
    T_NE(dup, p[0]);
    T_EQ(t_ino(dup), t_ino(p[0]));
    T_EQ(fcntl(dup, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    /* The longest name is fine. */
    name[BATON_NAME_MAX] = 0;
    T_OK(baton_add_fd(b, name, p[1]));

    /* baton_state */
    T_EQ(baton_state(NULL, &data, &len), -EINVAL);
    T_EQ(baton_state(b, NULL, &len), -EINVAL);
    T_EQ(baton_state(b, &data, NULL), -EINVAL);
    T_OK(baton_state(b, &data, &len));
    T_EQ(len, 0); /* a fresh start has no state */

    /* baton_set_state */
    T_EQ(baton_set_state(NULL, "x", 1), -EINVAL);
    T_EQ(baton_set_state(b, NULL, 1), -EINVAL);
    T_OK(baton_set_state(b, NULL, 0)); /* clearing is fine */
    T_OK(baton_set_state(b, "abc", 3));
    T_OK(baton_set_state(b, "abcd", 4)); /* replaces, keeps one memfd */
    int with_state = t_fd_count();
    T_OK(baton_set_state(b, "efgh", 4));
    T_EQ(t_fd_count(), with_state);
    T_OK(baton_set_state(b, NULL, 0));
    T_EQ(t_fd_count(), with_state - 1);

    baton_free(b);
    close(p[0]);
    close(p[1]);
    return t_done();
}
