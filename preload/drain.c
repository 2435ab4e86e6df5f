/* SPDX-License-Identifier: MIT */
/* The drain's decisions, pure; see drain.h. */
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include "drain.h"
#include "keys.h"

bool baton_run__conn_of(const char *key, const struct sockaddr *sa, socklen_t len)
{
    const char *path;

    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
        return strncmp(key, "tcp://", 6) == 0 &&
               baton_run__key_port(key) == ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
        return strncmp(key, "tcp://", 6) == 0 &&
               baton_run__key_port(key) == ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    if (sa->sa_family == AF_UNIX && (path = baton_run__key_path(key)) != NULL) {
        const char *sp = ((const struct sockaddr_un *)sa)->sun_path;
        size_t n = strcspn(path, "#"), off = offsetof(struct sockaddr_un, sun_path);
        /* The path, then its terminating NUL, within len. */
        return len > off + n && strncmp(sp, path, n) == 0 && sp[n] == 0;
    }
    return false;
}

bool baton_run__conn_idle(const struct baton_run__tcp *t, unsigned idle_ms)
{
    if (t->state != 1 || t->inq != 0 || t->outq != 0 || idle_ms == 0 || t->last_recv_ms < idle_ms ||
        t->last_sent_ms < idle_ms)
        return false;
    if (t->bytes_received == 0) /* never asked anything */
        return true;
    /* Asked, and answered since: the last data (a tick's worth of doubt
     * aside) was ours. Asked and never answered is a request being worked
     * on, however long it takes. */
    return t->bytes_sent > 0 && t->last_recv_ms >= t->last_sent_ms;
}

bool baton_run__stat_gone(const char *stat)
{
    const char *p = strrchr(stat, ')'); /* after the name, which may hold anything */

    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X' || p[2] == 'x');
}

enum baton_run__drain_step baton_run__drain_next(const struct baton_run__drain *d, uint64_t now_ms,
                                                 int conns)
{
    if (d->stopped_ms)
        return now_ms >= d->stopped_ms + d->kill_ms ? BATON_RUN_DRAIN_KILL : BATON_RUN_DRAIN_WAIT;
    if (conns == 0 || now_ms >= d->start_ms + d->drain_ms)
        return BATON_RUN_DRAIN_STOP;
    return BATON_RUN_DRAIN_WAIT;
}
