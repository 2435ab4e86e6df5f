/* SPDX-License-Identifier: MIT */
/*
 * The preload shim's pure parts (preload/keys.c), under the sanitizers:
 * names for bound addresses (IPv4, IPv6 with and without V6ONLY, UDP, unix
 * paths and abstract names, escapes, limits), the n-th listener on one
 * address, ports and paths back out of names, and the /proc/net parsers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "harness.h"
#include "keys.h"

static void v4(void)
{
    struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(8080)};
    char k[BATON_NAME_MAX + 1];

    inet_pton(AF_INET, "127.0.0.1", &s.sin_addr);
    T_OK(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_STREAM, 0, k, sizeof(k)));
    T_STREQ(k, "tcp://127.0.0.1:8080");
    T_EQ(baton_run__key_port(k), 8080);
    T_ASSERT(baton_run__key_path(k) == NULL);
    T_OK(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_DGRAM, 0, k, sizeof(k)));
    T_STREQ(k, "udp://127.0.0.1:8080");
    T_EQ(baton_run__key((struct sockaddr *)&s, sizeof(s) - 1, SOCK_STREAM, 0, k, sizeof(k)),
         -EINVAL);
    T_EQ(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_SEQPACKET, 0, k, sizeof(k)),
         -EAFNOSUPPORT);
    T_EQ(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_STREAM, 0, k, 8), -ENAMETOOLONG);
}

static void v6(void)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    char k[BATON_NAME_MAX + 1];

    s.sin6_addr = in6addr_any;
    T_OK(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_STREAM, 0, k, sizeof(k)));
    T_STREQ(k, "tcp://[::]:443");
    T_EQ(baton_run__key_port(k), 443);
    T_OK(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_STREAM, 1, k, sizeof(k)));
    T_STREQ(k, "tcp://[::]:443/v6only");
    T_EQ(baton_run__key_port(k), 443);
    inet_pton(AF_INET6, "::1", &s.sin6_addr);
    T_OK(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_DGRAM, 0, k, sizeof(k)));
    T_STREQ(k, "udp://[::1]:443");
}

static void unix_paths(void)
{
    struct sockaddr_un s = {.sun_family = AF_UNIX};
    size_t off = offsetof(struct sockaddr_un, sun_path);
    char k[BATON_NAME_MAX + 1];

    strcpy(s.sun_path, "/run/app/http.sock");
    T_OK(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_STREAM, 0, k, sizeof(k)));
    T_STREQ(k, "unix:/run/app/http.sock");
    T_STREQ(baton_run__key_path(k), "/run/app/http.sock");
    T_EQ(baton_run__key_port(k), 0);
    /* Only as many bytes as the caller said; no NUL needed. */
    T_OK(baton_run__key((struct sockaddr *)&s, off + 4, SOCK_STREAM, 0, k, sizeof(k)));
    T_STREQ(k, "unix:/run");
    memcpy(s.sun_path, "\0app 1%", 7);
    T_OK(baton_run__key((struct sockaddr *)&s, off + 7, SOCK_STREAM, 0, k, sizeof(k)));
    T_STREQ(k, "unix:@app%201%25");
    T_ASSERT(baton_run__key_path(k) == NULL);
    T_EQ(baton_run__key((struct sockaddr *)&s, off, SOCK_STREAM, 0, k, sizeof(k)), -EINVAL);
    T_EQ(baton_run__key((struct sockaddr *)&s, off + 1, SOCK_STREAM, 0, k, sizeof(k)), -EINVAL);
    T_EQ(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_DGRAM, 0, k, sizeof(k)),
         -EAFNOSUPPORT);
    /* A path of spaces escapes to three times its length: too long. */
    memset(s.sun_path, ' ', sizeof(s.sun_path));
    s.sun_path[0] = '/';
    T_EQ(baton_run__key((struct sockaddr *)&s, sizeof(s), SOCK_STREAM, 0, k, sizeof(k)),
         -ENAMETOOLONG);
}

static void variants(void)
{
    char k[BATON_NAME_MAX + 1], big[BATON_NAME_MAX + 1];

    T_OK(baton_run__key_variant("tcp://1.2.3.4:80", 1, k, sizeof(k)));
    T_STREQ(k, "tcp://1.2.3.4:80");
    T_OK(baton_run__key_variant("tcp://1.2.3.4:80", 3, k, sizeof(k)));
    T_STREQ(k, "tcp://1.2.3.4:80#3");
    T_EQ(baton_run__key_port(k), 80);
    memset(big, 'a', BATON_NAME_MAX);
    big[BATON_NAME_MAX] = 0;
    T_OK(baton_run__key_variant(big, 1, k, sizeof(k)));
    T_EQ(baton_run__key_variant(big, 2, k, sizeof(k)), -ENAMETOOLONG);
}

static void proc_net(void)
{
    char u1[] = "0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/app.sock\n";
    char u2[] = "0000000000000000: 00000003 00000000 00000000 0001 03 4343 /run/app.sock\n";
    char u3[] = "0000000000000000: 00000003 00000000 00000000 0001 03 4444\n";
    char bad[] = "garbage\n";
    unsigned port, state;
    unsigned long ino;
    const char *path;
    int listening;

    T_OK(baton_run__parse_tcp("   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 "
                              "00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n",
                              &port, &state, &ino));
    T_EQ(port, 8080);
    T_EQ(state, 0x0A);
    T_EQ(ino, 12345);
    T_OK(baton_run__parse_tcp("   3: 00000000000000000000000001000000:01BB "
                              "00000000000000000000000001000000:A2C4 01 00000000:00000000 "
                              "00:00000000 00000000  1000        0 777 1 0 20 4 30 10 -1\n",
                              &port, &state, &ino));
    T_EQ(port, 443);
    T_EQ(state, 1);
    T_EQ(ino, 777);
    T_EQ(baton_run__parse_tcp("  sl  local_address rem_address   st tx_queue\n", &port, &state,
                              &ino),
         -EINVAL);
    T_OK(baton_run__parse_unix(u1, &listening, &ino, &path));
    T_EQ(listening, 1);
    T_EQ(ino, 4242);
    T_STREQ(path, "/run/app.sock");
    T_OK(baton_run__parse_unix(u2, &listening, &ino, &path));
    T_EQ(listening, 0);
    T_STREQ(path, "/run/app.sock");
    T_OK(baton_run__parse_unix(u3, &listening, &ino, &path));
    T_STREQ(path, "");
    T_EQ(baton_run__parse_unix(bad, &listening, &ino, &path), -EINVAL);
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    v4();
    v6();
    unix_paths();
    variants();
    proc_net();
    T_EQ(baton_run__hash("", 0), 0xcbf29ce484222325ull);
    T_NE(baton_run__hash("a\0b", 3), baton_run__hash("a\0c", 3));
    return t_done();
}
