/* SPDX-License-Identifier: MIT */
/*
 * baton_listen()'s error paths: NULL arguments, bad names, malformed
 * addresses, a name taken twice, and an address in use, each with the
 * exact -errno and no fd left open.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

int main(int argc, char **argv)
{
    static const char *const bad[] = {
        "",
        "tcp://",
        "tcp:/127.0.0.1:0",
        "http://127.0.0.1:0",
        "TCP://127.0.0.1:0",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:",
        "tcp://:0",
        "tcp://127.0.0.1:abc",
        "tcp://127.0.0.1:-1",
        "tcp://127.0.0.1:99999",
        "tcp://127.0.0.1:0 ",
        "tcp://127.0.0.1 :0",
        "tcp://[::1:0",
        "tcp://[::1]0",
        "tcp://::1:0",
        "udp://",
        "udp://127.0.0.1",
        "unix:",
        "unix",
    };
    char dir[PATH_MAX], name[BATON_NAME_MAX + 2], addr[BATON_ADDR_MAX + 64];
    struct baton_options o;
    baton *b;
    int fds0, fd, port, busy;

    t_init(argc, argv);
    t_path(dir, "run");
    o = t_opts(dir, 0, 0);
    T_OK(baton_open(&o, &b));
    fds0 = t_fd_count();

    T_EQ(baton_listen(NULL, "web", "tcp://127.0.0.1:0", 0), -EINVAL);
    T_EQ(baton_listen(b, NULL, "tcp://127.0.0.1:0", 0), -EINVAL);
    T_EQ(baton_listen(b, "web", NULL, 0), -EINVAL);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = baton_listen(b, "web", bad[i], 0);
        if (r != -EINVAL)
            t_log("address \"%s\"", bad[i]);
        T_EQ(r, -EINVAL);
        T_ASSERT(baton_last_error(b)[0] != 0);
    }
    /* An address longer than BATON_ADDR_MAX. */
    snprintf(addr, sizeof(addr), "unix:%s/", t_tmpdir());
    while (strlen(addr) <= BATON_ADDR_MAX)
        strcat(addr, "x");
    T_EQ(baton_listen(b, "web", addr, 0), -EINVAL);

    /* Names: empty, with a space or a quote, and one byte too long. */
    T_EQ(baton_listen(b, "", "tcp://127.0.0.1:0", 0), -EINVAL);
    T_EQ(baton_listen(b, "a b", "tcp://127.0.0.1:0", 0), -EINVAL);
    T_EQ(baton_listen(b, "a\"b", "tcp://127.0.0.1:0", 0), -EINVAL);
    memset(name, 'n', BATON_NAME_MAX + 1);
    name[BATON_NAME_MAX + 1] = 0;
    /* The header leaves this open; the library answers -ENAMETOOLONG. */
    T_EQ(baton_listen(b, name, "tcp://127.0.0.1:0", 0), -ENAMETOOLONG);
    T_EQ(t_fd_count(), fds0);

    /* The longest name is fine. */
    name[BATON_NAME_MAX] = 0;
    fd = T_OK(baton_listen(b, name, "tcp://127.0.0.1:0", 0));
    T_ASSERT(t_port(fd) > 0);

    /* A name taken, by a listener or by a named fd. */
    fd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    port = t_port(fd);
    T_EQ(baton_listen(b, "web", "tcp://127.0.0.1:0", 0), -EEXIST);
    T_EQ(baton_listen(b, "web", "udp://127.0.0.1:0", 0), -EEXIST);
    T_EQ(baton_add_fd(b, "web", 0), -EEXIST);
    T_OK(baton_add_fd(b, "named", 0));
    T_EQ(baton_listen(b, "named", "tcp://127.0.0.1:0", 0), -EEXIST);

    /* The bind error of an address in use, and nothing left open. */
    fds0 = t_fd_count();
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", port);
    T_EQ(baton_listen(b, "web2", addr, 0), -EADDRINUSE);
    T_EQ(t_fd_count(), fds0);
    /* The failed name is not taken. */
    busy = T_OK(baton_listen(b, "web2", "tcp://127.0.0.1:0", 0));
    T_NE(t_port(busy), port);

    /* A unix path too long for sun_path. */
    snprintf(addr, sizeof(addr), "unix:%s/", t_tmpdir());
    while (strlen(addr) < 5 + 120)
        strcat(addr, "u");
    T_EQ(baton_listen(b, "unix", addr, 0), -ENAMETOOLONG);
    T_EQ(t_fd_count(), fds0 + 1);

    baton_free(b);
    return t_done();
}
