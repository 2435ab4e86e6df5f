/* SPDX-License-Identifier: MIT */
/*
 * The drain's decisions (preload/drain.c), under the sanitizers: which
 * connections belong to a listener, which keep-alive connections are idle
 * enough to end, whether a process is gone from its /proc stat line, and
 * the drain's timeline (stop signal, SIGKILL).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include "drain.h"
#include "harness.h"

static void conn_of(void)
{
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(8080)};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(8080)};
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    socklen_t ul = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen("/run/a.sock") + 1);

    inet_pton(AF_INET, "10.1.2.3", &s4.sin_addr);
    /* Any local address on the port: [::] and 0.0.0.0 listeners. */
    T_ASSERT(baton_run__conn_of("tcp://0.0.0.0:8080", (struct sockaddr *)&s4, sizeof(s4)));
    T_ASSERT(baton_run__conn_of("tcp://[::]:8080/v6only", (struct sockaddr *)&s6, sizeof(s6)));
    T_ASSERT(baton_run__conn_of("tcp://[::]:8080#2", (struct sockaddr *)&s4, sizeof(s4)));
    T_ASSERT(!baton_run__conn_of("tcp://0.0.0.0:8081", (struct sockaddr *)&s4, sizeof(s4)));
    T_ASSERT(!baton_run__conn_of("udp://0.0.0.0:8080", (struct sockaddr *)&s4, sizeof(s4)));
    T_ASSERT(!baton_run__conn_of("unix:/run/a.sock", (struct sockaddr *)&s4, sizeof(s4)));
    /* A truncated address is not one. */
    T_ASSERT(!baton_run__conn_of("tcp://0.0.0.0:8080", (struct sockaddr *)&s4, sizeof(s4) - 1));

    strcpy(su.sun_path, "/run/a.sock");
    T_ASSERT(baton_run__conn_of("unix:/run/a.sock", (struct sockaddr *)&su, ul));
    T_ASSERT(baton_run__conn_of("unix:/run/a.sock#3", (struct sockaddr *)&su, ul));
    T_ASSERT(!baton_run__conn_of("unix:/run/a.so", (struct sockaddr *)&su, ul));
    T_ASSERT(!baton_run__conn_of("unix:/run/a.sock.2", (struct sockaddr *)&su, ul));
    T_ASSERT(!baton_run__conn_of("unix:/run/a.sock", (struct sockaddr *)&su, ul - 1));
    T_ASSERT(!baton_run__conn_of("unix:@abstract", (struct sockaddr *)&su, ul));
    T_ASSERT(!baton_run__conn_of("tcp://0.0.0.0:8080", (struct sockaddr *)&su, ul));
}

static void conn_idle(void)
{
    /* Asked, answered 1.5 s ago, quiet since. */
    struct baton_run__tcp t = {.state = 1,
                               .last_recv_ms = 1500,
                               .last_sent_ms = 1500,
                               .bytes_received = 40,
                               .bytes_sent = 200};

    T_ASSERT(baton_run__conn_idle(&t, 1000)); /* answer in the request's tick */
    t.last_recv_ms = 1510;
    T_ASSERT(baton_run__conn_idle(&t, 1000));
    T_ASSERT(!baton_run__conn_idle(&t, 2000)); /* not quiet long enough */
    T_ASSERT(!baton_run__conn_idle(&t, 0));    /* never */
    t.last_recv_ms = 1490; /* asked again after the last answer: being worked on */
    T_ASSERT(!baton_run__conn_idle(&t, 1000));
    t.last_recv_ms = 1500;
    t.inq = 1; /* a request the program has not read */
    T_ASSERT(!baton_run__conn_idle(&t, 1000));
    t.inq = 0;
    t.outq = 10; /* an answer not yet acknowledged */
    T_ASSERT(!baton_run__conn_idle(&t, 1000));
    t.outq = 0;
    t.state = 8; /* CLOSE_WAIT: the client is gone, the program will see it */
    T_ASSERT(!baton_run__conn_idle(&t, 1000));
    t.state = 1;
    t.bytes_sent = 0; /* asked and never answered, however long ago */
    T_ASSERT(!baton_run__conn_idle(&t, 1000));
    t.bytes_received = 0; /* connected, never asked anything */
    T_ASSERT(baton_run__conn_idle(&t, 1000));
    t.last_sent_ms = 900;
    T_ASSERT(!baton_run__conn_idle(&t, 1000));
}

static void stat_gone(void)
{
    T_ASSERT(!baton_run__stat_gone("1234 (nginx) S 1 1234 1234 0 -1"));
    T_ASSERT(baton_run__stat_gone("1234 (nginx) Z 1 1234 1234 0 -1"));
    T_ASSERT(baton_run__stat_gone("1234 (nginx) X 1"));
    /* A name with spaces and parentheses of its own. */
    T_ASSERT(!baton_run__stat_gone("1234 (a) Z (b) R 1 2 3"));
    T_ASSERT(baton_run__stat_gone("1234 (redis-server 127.0.0.1:6379) Z 1"));
    /* What does not parse counts as alive. */
    T_ASSERT(!baton_run__stat_gone(""));
    T_ASSERT(!baton_run__stat_gone("1234 (trunc"));
    T_ASSERT(!baton_run__stat_gone("1234 (x)"));
}

static void drain_next(void)
{
    struct baton_run__drain d = {.start_ms = 1000, .drain_ms = 30000, .kill_ms = 10000};

    T_EQ(baton_run__drain_next(&d, 1100, 3), BATON_RUN_DRAIN_WAIT);
    T_EQ(baton_run__drain_next(&d, 1100, 0), BATON_RUN_DRAIN_STOP); /* drained */
    T_EQ(baton_run__drain_next(&d, 30999, 3), BATON_RUN_DRAIN_WAIT);
    T_EQ(baton_run__drain_next(&d, 31000, 3), BATON_RUN_DRAIN_STOP); /* timeout */
    d.stopped_ms = 31000;
    T_EQ(baton_run__drain_next(&d, 31000, 0), BATON_RUN_DRAIN_WAIT); /* stopping */
    T_EQ(baton_run__drain_next(&d, 40999, 5), BATON_RUN_DRAIN_WAIT);
    T_EQ(baton_run__drain_next(&d, 41000, 0), BATON_RUN_DRAIN_KILL);
    d.stopped_ms = 0;
    d.drain_ms = 0; /* --drain-timeout 0: stop at once */
    T_EQ(baton_run__drain_next(&d, 1000, 7), BATON_RUN_DRAIN_STOP);
}

int main(int argc, char **argv)
{
    t_init(argc, argv);
    conn_of();
    conn_idle();
    stat_gone();
    drain_next();
    return t_done();
}
