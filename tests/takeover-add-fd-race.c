/* SPDX-License-Identifier: MIT */
/*
 * baton_add_fd() is thread-safe, and baton_last_error() is per thread.
 * In each generation two application threads add named fds without a
 * pause, and make failing calls whose messages they read back, while the
 * library's thread hands everything to the next generation; four
 * generations in a row. Under ThreadSanitizer (make check-tsan) any
 * unsynchronised access shows. In every build: each thread reads back its
 * own last message, never another's, and each successor receives, of each
 * thread's names, an unbroken prefix (what was named by HELLO), each with
 * a working fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define ADDR        "tcp://127.0.0.1:0"
#define GENERATIONS 4
#define MAX_ADDED   300

static char dir[PATH_MAX];
static const char *const prefixes[2] = {"one", "two"};

struct adder {
    baton *b;
    const char *prefix;
    atomic_bool *stop;
    int added; /* names prefix-0 .. prefix-(added-1) are ours */
    int wrong; /* messages read back that were not this thread's own */
};

static void *add_loop(void *arg)
{
    struct adder *a = arg;
    char name[64], bad[64];

    while (!atomic_load(a->stop)) {
        snprintf(name, sizeof(name), "%s-%d", a->prefix, a->added);
        if (a->added < MAX_ADDED && baton_add_fd(a->b, name, 0) == 0)
            a->added++;
        /* Failing calls; each message must be this thread's. */
        snprintf(bad, sizeof(bad), "%s bad", a->prefix);
        if (baton_add_fd(a->b, bad, 0) != -EINVAL ||
            !strstr(baton_last_error(a->b), "baton_add_fd: bad name"))
            a->wrong++;
        if (a->added == 0)
            continue;
        snprintf(name, sizeof(name), "%s-%d", a->prefix, a->added - 1);
        if (baton_add_fd(a->b, name, 0) != -EEXIST || !strstr(baton_last_error(NULL), name))
            a->wrong++;
    }
    return NULL;
}

/* Claim prefix-0, prefix-1, ... while they exist: how many. */
static int claim_prefix(baton *b, const char *prefix)
{
    char name[64];
    int n = 0, fd;

    for (;; n++) {
        snprintf(name, sizeof(name), "%s-%d", prefix, n);
        fd = baton_fd(b, name);
        if (fd < 0) {
            T_EQ(fd, -ENOENT);
            return n;
        }
        T_SYS(fcntl(fd, F_GETFD));
    }
}

static int gen_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    atomic_bool stop = false;
    struct adder a[2];
    pthread_t t[2];
    baton *b;
    int lfd;

    (void)arg;
    T_OK(baton_open(&o, &b));
    for (int i = 0; i < 2; i++) {
        a[i] = (struct adder){.b = b, .prefix = prefixes[i], .stop = &stop};
        a[i].added = claim_prefix(b, prefixes[i]);
        t_tell(chan, a[i].added);
    }
    lfd = T_OK(baton_listen(b, "web", ADDR, 0));
    T_OK(baton_ready(b));
    t_tell(chan, baton_generation(b));
    for (int i = 0; i < 2; i++)
        T_EQ(pthread_create(&t[i], NULL, add_loop, &a[i]), 0);
    /* Until a successor took over, or the parent says stop. */
    {
        struct pollfd p[2] = {{.fd = baton_upgrade_fd(b), .events = POLLIN},
                              {.fd = chan, .events = POLLIN}};
        T_GT(poll(p, 2, 3 * T_TIMEOUT), 0);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++) {
        T_EQ(pthread_join(t[i], NULL), 0);
        t_tell(chan, a[i].wrong);
        t_tell(chan, a[i].added);
    }
    close(lfd);
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    struct t_proc gen[GENERATIONS];
    long long found[2];

    t_init(argc, argv);
    t_path(dir, "run");
    for (int g = 0; g < GENERATIONS; g++) {
        t_spawn(&gen[g], gen_main, NULL);
        for (int i = 0; i < 2; i++)
            found[i] = t_hear(gen[g].chan, T_TIMEOUT);
        T_EQ(t_hear(gen[g].chan, T_TIMEOUT), g + 1);
        if (g == 0) {
            T_EQ(found[0], 0);
            T_EQ(found[1], 0);
            continue;
        }
        /* The predecessor stepped down: its threads' reports. */
        for (int i = 0; i < 2; i++) {
            long long wrong = t_hear(gen[g - 1].chan, T_TIMEOUT);
            long long added = t_hear(gen[g - 1].chan, T_TIMEOUT);
            t_log("generation %d: %s-* %lld added, %lld inherited by the next", g, prefixes[i],
                  added, found[i]);
            T_EQ(wrong, 0);
            T_LE(found[i], added);
        }
        T_EQ(t_proc_wait(&gen[g - 1], T_TIMEOUT), 0);
    }
    t_tell(gen[GENERATIONS - 1].chan, T_MSG_STOP);
    for (int i = 0; i < 2; i++) {
        T_EQ(t_hear(gen[GENERATIONS - 1].chan, T_TIMEOUT), 0);
        t_hear(gen[GENERATIONS - 1].chan, T_TIMEOUT);
    }
    T_EQ(t_proc_wait(&gen[GENERATIONS - 1], T_TIMEOUT), 0);
    return t_done();
}
