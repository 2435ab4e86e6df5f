/* SPDX-License-Identifier: MIT */
/*
 * `baton status` shows every live generation and the last takeover:
 * after generation 2 takes over while generation 1 still drains, both are
 * listed (2 serving, 1 draining) and the last takeover says ok, from 1 to
 * 2, with the time of each step; once 1 frees its handle only 2 is
 * listed; a successor killed before READY is recorded as a failed
 * takeover while 2 serves on; and a SIGKILLed owner's generation is not
 * listed as alive (its record is stale), while the history stays.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

static int gen_main(int chan, void *arg)
{
    const char *tag = arg;
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, baton_generation(b));
    /* Superseded: stay alive, draining, until told to stop. */
    if (t_owner_loop(b, lfd, chan, tag) == 1)
        T_HEAR_EQ(chan, T_MSG_STOP);
    baton_free(b);
    return 0;
}

/* Dies in baton_ready(), before READY. */
static int doomed_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;

    (void)arg;
    setenv("BATON_FAULT", "s-ready=kill", 1);
    T_OK(baton_open(&o, &b));
    T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    t_tell(chan, T_MSG_DONE);
    baton_ready(b);
    return 1;
}

static void want(const char *out, const char *fmt, long long a, long long b)
{
    char s[256];

    snprintf(s, sizeof(s), fmt, a, b);
    if (!strstr(out, s))
        t_fail(__FILE__, __LINE__, "status lacks '%s':\n%s", s, out);
}

int main(int argc, char **argv)
{
    static char out[16384];
    struct t_proc g1, g2, doomed;
    pid_t dpid;
    int ino;
    char *tool;

    t_init(argc, argv);
    if (argc != 2)
        t_fail(__FILE__, __LINE__, "usage: %s BATON-TOOL", argv[0]);
    tool = argv[1];
    t_path(dir, "run");
    char *json[] = {tool, "status", "--json", dir, NULL};
    char *text[] = {tool, "status", dir, NULL};

    t_spawn(&g1, gen_main, "gen1");
    T_EQ(t_hear(g1.chan, T_TIMEOUT), 1);
    t_spawn(&g2, gen_main, "gen2");
    T_EQ(t_hear(g2.chan, T_TIMEOUT), 2);
    T_HEAR_EQ(g1.chan, T_MSG_SUPERSEDED);

    /* Both alive: 2 serves, 1 drains; the takeover's steps are timed. */
    T_EQ(t_run(json, T_TIMEOUT, out, sizeof(out)), 0);
    want(out, "\"generations\":[{\"gen\":%lld,\"gen_pid\":%lld,\"state\":\"serving\"", 2, g2.pid);
    want(out, "{\"gen\":%lld,\"gen_pid\":%lld,\"state\":\"draining\"", 1, g1.pid);
    want(out,
         "\"last_upgrade\":{\"result\":0,\"kind\":\"takeover\",\"from_gen\":%lld,"
         "\"from_pid\":%lld,",
         1, g1.pid);
    /* The owner's pid is the last "pid" key: naive parsers find it. */
    want(out, "\"pid\":%lld,\"generation\":%lld,", g2.pid, 2);
    T_ASSERT(strstr(strstr(out, "\"pid\":") + 1, "\"pid\":") == NULL);
    want(out, "\"to_gen\":%lld,\"to_pid\":%lld,", 2, g2.pid);
    want(out, "\"ms\":{\"connected\":0.000,\"fds_sent\":%.0lld%.0lld", 0, 0);
    T_ASSERT(strstr(out, "\"serving\":") && strstr(out, "\"committed\":") &&
             !strstr(out, "\"spawned\""));
    T_EQ(t_run(text, T_TIMEOUT, out, sizeof(out)), 0);
    want(out, "  2    pid %-8lld serving  since%.0lld", g2.pid, 0);
    want(out, "  1    pid %-8lld draining since%.0lld", g1.pid, 0);
    want(out, "last takeover: generation 1 (pid %lld) -> 2 (pid %lld): ok", g1.pid, g2.pid);

    /* 1 ends: only 2 is listed. */
    t_tell(g1.chan, T_MSG_STOP);
    T_EQ(t_proc_wait(&g1, T_TIMEOUT), 0);
    T_EQ(t_run(json, T_TIMEOUT, out, sizeof(out)), 0);
    want(out, "\"generations\":[{\"gen\":%lld,\"gen_pid\":%lld,\"state\":\"serving\"", 2, g2.pid);
    T_ASSERT(!strstr(out, "draining"));
    /* --watch: the status again every second, until ended (here by
     * timeout(1) after 2.5 s: two frames at least). */
    {
        char *watch[] = {"/usr/bin/timeout", "2.5", tool, "status", "--watch", dir, NULL};
        char *p = out;
        int frames = 0;
        T_EQ(t_run(watch, T_TIMEOUT, out, sizeof(out)), 124);
        while ((p = strstr(p, "--- ")))
            frames++, p++;
        T_GE(frames, 2);
        want(out, "  2    pid %-8lld serving  since%.0lld", g2.pid, 0);
    }

    /* A successor dies before READY: a failed takeover, 2 serves on. The
     * owner records it when it sees the hang-up: wait for the record's
     * rename into place (inotify), not for a while. */
    ino = T_SYS(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    T_SYS(inotify_add_watch(ino, dir, IN_MOVED_TO));
    t_spawn(&doomed, doomed_main, NULL);
    dpid = doomed.pid;
    T_HEAR_EQ(doomed.chan, T_MSG_DONE);
    T_NE(t_proc_wait(&doomed, T_TIMEOUT), 0);
    for (bool seen = false; !seen;) {
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        struct pollfd p = {.fd = ino, .events = POLLIN};
        ssize_t n;

        T_EQ(poll(&p, 1, T_TIMEOUT), 1);
        while ((n = read(ino, buf, sizeof(buf))) > 0)
            for (char *q = buf; q < buf + n;) {
                struct inotify_event *e = (struct inotify_event *)q;
                seen |= e->len && strcmp(e->name, "last-upgrade") == 0;
                q += sizeof(*e) + e->len;
            }
    }
    close(ino);
    T_EQ(t_run(json, T_TIMEOUT, out, sizeof(out)), 0);
    T_ASSERT(strstr(out, "\"last_upgrade\":{\"result\":-") != NULL);
    want(out, "\"to_gen\":%lld,\"to_pid\":%lld,", 3, dpid);
    want(out, "\"serving\":true,\"pid\":%lld,\"generation\":%lld", g2.pid, 2);
    T_EQ(t_run(text, T_TIMEOUT, out, sizeof(out)), 0);
    want(out, "last takeover: generation 2 (pid %lld) -> 3 (pid %lld): ", g2.pid, dpid);

    /* 2 killed: its record is stale, not a live generation; the history
     * stays. */
    t_proc_kill(&g2);
    T_EQ(t_run(json, T_TIMEOUT, out, sizeof(out)), 3);
    T_ASSERT(strstr(out, "{\"serving\":false,\"generations\":[],\"last_upgrade\":{") == out);
    T_ASSERT(strstr(out, "\"pid\":") == NULL);
    return t_done();
}
