/* SPDX-License-Identifier: MIT */
/* The preload shim's pure parts; see keys.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "baton.h"
#include "keys.h"

static int key_unix(const struct sockaddr_un *su, size_t len, char *buf, size_t cap)
{
    size_t off = offsetof(struct sockaddr_un, sun_path), n, o;
    const char *p = su->sun_path;
    bool abstract;

    if (len <= off || len > sizeof(*su))
        return -EINVAL;
    n = len - off;
    abstract = p[0] == 0;
    if (!abstract)
        n = strnlen(p, n);
    else
        p++, n--;
    if (n == 0)
        return -EINVAL;
    o = (size_t)snprintf(buf, cap, "unix:%s", abstract ? "@" : "");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        bool plain = c > ' ' && c < 0x7f && c != '%' && c != '"' && c != '\\';
        if (o + (plain ? 1 : 3) >= cap || o + (plain ? 1 : 3) > BATON_NAME_MAX)
            return -ENAMETOOLONG;
        if (plain)
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "%%%02X", c);
    }
    buf[o] = 0;
    return 0;
}

int baton_run__key(const struct sockaddr *sa, size_t len, int type, int v6only, char *buf,
                   size_t cap)
{
    const char *proto = type == SOCK_STREAM ? "tcp" : type == SOCK_DGRAM ? "udp" : NULL;
    char host[INET6_ADDRSTRLEN];
    int n;

    if (!sa || len < sizeof(sa->sa_family) || cap == 0)
        return -EINVAL;
    if (sa->sa_family == AF_UNIX)
        return type == SOCK_STREAM ? key_unix((const struct sockaddr_un *)sa, len, buf, cap)
                                   : -EAFNOSUPPORT;
    if (!proto)
        return -EAFNOSUPPORT;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        if (len < sizeof(*s4))
            return -EINVAL;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        n = snprintf(buf, cap, "%s://%s:%u", proto, host, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (len < sizeof(*s6))
            return -EINVAL;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        n = snprintf(buf, cap, "%s://[%s]:%u%s", proto, host, ntohs(s6->sin6_port),
                     v6only ? "/v6only" : "");
    } else
        return -EAFNOSUPPORT;
    if (n < 0 || (size_t)n >= cap || n > BATON_NAME_MAX)
        return -ENAMETOOLONG;
    return 0;
}

int baton_run__key_variant(const char *key, int n, char *buf, size_t cap)
{
    int r = n < 2 ? snprintf(buf, cap, "%s", key) : snprintf(buf, cap, "%s#%d", key, n);

    return r < 0 || (size_t)r >= cap || r > BATON_NAME_MAX ? -ENAMETOOLONG : 0;
}

unsigned baton_run__key_port(const char *key)
{
    const char *p;
    unsigned long v;
    char *end;

    if (strncmp(key, "tcp://", 6) != 0 && strncmp(key, "udp://", 6) != 0)
        return 0;
    p = key[6] == '[' ? strstr(key, "]:") : strrchr(key, ':');
    if (!p)
        return 0;
    p += *p == ']' ? 2 : 1;
    v = strtoul(p, &end, 10);
    return end != p && v <= 65535 ? (unsigned)v : 0;
}

const char *baton_run__key_path(const char *key)
{
    return strncmp(key, "unix:/", 6) == 0 ? key + 5 : NULL;
}

int baton_run__parse_tcp(const char *line, unsigned *ret_port, unsigned *ret_state,
                         unsigned long *ret_ino)
{
    char local[64], remote[64];
    unsigned state, uid;
    unsigned long ino;
    const char *colon;
    char *end;
    unsigned long port;

    /* "  0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000
     *  00000000     0        0 12345 ..." */
    if (sscanf(line, " %*u: %63s %63s %x %*s %*s %*s %u %*d %lu", local, remote, &state, &uid,
               &ino) != 5)
        return -EINVAL;
    colon = strrchr(local, ':');
    if (!colon)
        return -EINVAL;
    port = strtoul(colon + 1, &end, 16);
    if (end == colon + 1 || *end || port > 65535)
        return -EINVAL;
    *ret_port = (unsigned)port;
    *ret_state = state;
    *ret_ino = ino;
    return 0;
}

int baton_run__parse_unix(char *line, int *ret_listening, unsigned long *ret_ino,
                          const char **ret_path)
{
    unsigned long flags, ino;
    int n = 0;
    char *p, *nl;

    /* "0000000000000000: 00000002 00000000 00010000 0001 01 12345 /path" */
    if (sscanf(line, "%*s %*s %*s %lx %*s %*s %lu%n", &flags, &ino, &n) != 2 || n <= 0)
        return -EINVAL;
    p = line + n;
    while (*p == ' ')
        p++;
    nl = strchr(p, '\n');
    if (nl)
        *nl = 0;
    *ret_listening = (flags & 0x10000) != 0;
    *ret_ino = ino;
    *ret_path = p;
    return 0;
}

uint64_t baton_run__hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
