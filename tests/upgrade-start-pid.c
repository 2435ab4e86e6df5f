/* SPDX-License-Identifier: MIT */
/*
 * BATON_EVENT_FAILED names the process started for the upgrade
 * (baton_upgrade_event(3): ev->pid is 0 only when none was), whichever way
 * the upgrade failed:
 *   - the successor exits non-zero before it connects (-ECHILD);
 *   - the successor exits 0 and nothing of its job takes over in time
 *     (-ETIMEDOUT).
 * Each successor writes its pid ($$) to a file first.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"

static int failed_event(baton *b, char *const argv[], const char *pidfile, int expect_err)
{
    struct pollfd p = {.fd = baton_upgrade_fd(b), .events = POLLIN};
    struct baton_event ev;
    FILE *f;
    int pid = -1;

    T_OK(baton_upgrade_start(b, argv));
    T_EQ(poll(&p, 1, T_TIMEOUT), 1);
    T_EQ(baton_upgrade_event(b, &ev), BATON_EVENT_FAILED);
    T_EQ(ev.error, expect_err);
    f = fopen(pidfile, "r");
    T_ASSERT(f);
    T_EQ(fscanf(f, "%d", &pid), 1);
    fclose(f);
    t_log("FAILED: error %d, ev.pid %d, the successor was pid %d", ev.error, (int)ev.pid, pid);
    T_EQ(ev.pid, pid);
    return 0;
}

int main(int argc, char **argv)
{
    char dir[PATH_MAX], pf1[PATH_MAX], pf2[PATH_MAX], c1[PATH_MAX + 32], c2[PATH_MAX + 32];
    struct baton_options o;
    baton *b;

    t_init(argc, argv);
    t_path(dir, "run");
    t_path(pf1, "pid1");
    t_path(pf2, "pid2");
    snprintf(c1, sizeof c1, "echo $$ >%s; exit 3", pf1);
    snprintf(c2, sizeof c2, "echo $$ >%s; exit 0", pf2);
    char *exit3[] = {"/bin/sh", "-c", c1, NULL};
    char *exit0[] = {"/bin/sh", "-c", c2, NULL};

    o = t_opts(dir, 300, 0);
    T_OK(baton_open(&o, &b));
    T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    failed_event(b, exit3, pf1, -ECHILD);
    failed_event(b, exit0, pf2, -ETIMEDOUT);
    baton_free(b);
    return t_done();
}
