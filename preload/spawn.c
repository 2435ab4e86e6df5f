/* SPDX-License-Identifier: MIT */
/*
 * Successors started with the shim's environment: libbaton's src/spawn.c
 * is compiled into the shim with posix_spawn renamed to
 * baton_run__posix_spawn (preload/CMakeLists.txt).
 */
#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

/* libbaton's src/spawn.c is compiled into the shim with posix_spawn renamed
 * to this: a program may have replaced its environment (nginx keeps only
 * TZ), and `baton upgrade` must still start the successor with the shim. */
extern char **environ;

int baton_run__posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);

int baton_run__posix_spawnp(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);

static bool ours(const char *kv)
{
    return strncmp(kv, "LD_PRELOAD=", 11) == 0 || strncmp(kv, "BATON_RUN_", 10) == 0;
}

static char **merged_env(char *const envp[])
{
    size_t n = 0, k = 0, m = 0;
    char **v;

    while (envp && envp[n])
        n++;
    while (S.keep_env && S.keep_env[m])
        m++;
    v = calloc(n + m + 1, sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!ours(envp[i]))
            v[k++] = envp[i];
    for (size_t i = 0; i < m; i++)
        v[k++] = S.keep_env[i];
    return v;
}

static int spawn_with(bool p, pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                      const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    char **env = merged_env(envp);
    int r;

    if (!env)
        return ENOMEM;
    r = p ? posix_spawnp(pid, path, fa, attr, argv, env)
          : posix_spawn(pid, path, fa, attr, argv, env);
    free(env);
    return r;
}

int baton_run__posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return spawn_with(false, pid, path, fa, attr, argv, envp);
}

int baton_run__posix_spawnp(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return spawn_with(true, pid, path, fa, attr, argv, envp);
}

void baton_run__keep_env(void)
{
    size_t n = 0, k = 0;

    for (char **e = environ; *e; e++)
        n += ours(*e);
    S.keep_env = calloc(n + 1, sizeof(char *));
    for (char **e = environ; S.keep_env && *e; e++)
        if (ours(*e))
            S.keep_env[k++] = strdup(*e);
}
