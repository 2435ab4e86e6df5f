/* SPDX-License-Identifier: MIT */
/*
 * `baton status DIR [--json]`: exit 3 while nobody serves (an empty
 * directory; a stale record and socket left by a killed owner), exit 0
 * with the owner's pid and generation while one serves; usage errors exit 2.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];

static int owner_main(int chan, void *arg)
{
    struct baton_options o = t_opts(dir, 5000, 0);
    baton *b;
    int lfd;

    T_OK(baton_open(&o, &b));
    lfd = T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0));
    T_OK(baton_ready(b));
    t_tell(chan, t_port(lfd));
    t_owner_loop(b, lfd, chan, "gen1");
    baton_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    static char out[8192];
    char want[64], *tool;
    struct t_proc owner;
    int port;

    t_init(argc, argv);
    if (argc != 2)
        t_fail(__FILE__, __LINE__, "usage: %s BATON-TOOL", argv[0]);
    tool = argv[1];
    t_path(dir, "run");
    char *status[] = {tool, "status", dir, NULL};
    char *json[] = {tool, "status", dir, "--json", NULL};
    char *bad[] = {tool, "status", dir, "--bogus", NULL};
    /* Options may come first, as most tools allow; "--" ends them. */
    char *json_first[] = {tool, "status", "--json", dir, NULL};
    char *json_dashes[] = {tool, "status", "--json", "--", dir, NULL};
    char *two_dirs[] = {tool, "status", dir, dir, NULL};
    char *no_dir[] = {tool, "status", "--json", NULL};
    /* After "--" only DIR; another command's option is no option here. */
    char *after_dashes[] = {tool, "status", "--", dir, "--json", NULL};
    char *foreign_opt[] = {tool, "status", dir, "--timeout", "3", NULL};
    char *foreign_opt2[] = {tool, "upgrade", dir, "--generation", "3", NULL};
    /* Not allowed to look is not "nobody serves": 1, not 3. */
    char *as_nobody[] = {"/usr/bin/setpriv",
                         "--reuid=65534",
                         "--regid=65534",
                         "--clear-groups",
                         tool,
                         "status",
                         dir,
                         NULL};

    /* No directory at all, then an empty one. */
    T_EQ(t_run(status, T_TIMEOUT, out, sizeof(out)), 3);
    T_SYS(mkdir(dir, 0700));
    T_EQ(t_run(status, T_TIMEOUT, out, sizeof(out)), 3);
    T_EQ(t_run(json, T_TIMEOUT, out, sizeof(out)), 3);
    T_ASSERT(strstr(out, "\"serving\":false") != NULL);
    T_EQ(t_run(bad, T_TIMEOUT, NULL, 0), 2);
    T_EQ(t_run(two_dirs, T_TIMEOUT, NULL, 0), 2);
    T_EQ(t_run(no_dir, T_TIMEOUT, NULL, 0), 2);
    T_EQ(t_run(after_dashes, T_TIMEOUT, NULL, 0), 2);
    T_EQ(t_run(foreign_opt, T_TIMEOUT, NULL, 0), 2);
    T_EQ(t_run(foreign_opt2, T_TIMEOUT, NULL, 0), 2);

    t_spawn(&owner, owner_main, NULL);
    port = (int)t_hear(owner.chan, T_TIMEOUT);
    T_EQ(t_run(status, T_TIMEOUT, out, sizeof(out)), 0);
    snprintf(want, sizeof(want), "pid %d", (int)owner.pid);
    if (!strstr(out, want) || !strstr(out, "generation 1") || !strstr(out, "web"))
        t_fail(__FILE__, __LINE__, "status output lacks \"%s\", \"generation 1\" or \"web\":\n%s",
               want, out);
    T_EQ(t_run(json, T_TIMEOUT, out, sizeof(out)), 0);
    snprintf(want, sizeof(want), "\"pid\":%d", (int)owner.pid);
    if (out[0] != '{' || !strstr(out, "\"serving\":true") || !strstr(out, want) ||
        !strstr(out, "\"generation\":1"))
        t_fail(__FILE__, __LINE__, "unexpected JSON:\n%s", out);
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    T_ASSERT(strstr(out, want) != NULL);
    T_EQ(t_run(json_first, T_TIMEOUT, out, sizeof(out)), 0);
    T_ASSERT(out[0] == '{' && strstr(out, want) != NULL);
    T_EQ(t_run(json_dashes, T_TIMEOUT, out, sizeof(out)), 0);
    T_ASSERT(out[0] == '{' && strstr(out, want) != NULL);
    if (geteuid() == 0 && access("/usr/bin/setpriv", X_OK) == 0) {
        T_EQ(t_run(as_nobody, T_TIMEOUT, out, sizeof(out)), 1);
        T_ASSERT(strstr(out, "Permission denied") != NULL || out[0] == 0);
    }

    /* Killed: its record and control socket stay behind, stale. */
    t_proc_kill(&owner);
    T_EQ(t_run(status, T_TIMEOUT, out, sizeof(out)), 3);
    T_EQ(t_run(json, T_TIMEOUT, out, sizeof(out)), 3);
    T_ASSERT(strstr(out, "\"serving\":false") != NULL);
    return t_done();
}
