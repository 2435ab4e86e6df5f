/* SPDX-License-Identifier: MIT */
/* What tools/baton.c hands to `baton run --listen-fds` (run-supervisor.c). */
#ifndef BATON_TOOL_RUN_H
#define BATON_TOOL_RUN_H

#include <stdbool.h>
#include <stddef.h>

#include "baton.h"

/* One --listen NAME=ADDRESS. argv stays as it was: a copy started by
 * SIGHUP or `baton upgrade` reads it again from /proc/self/cmdline. */
struct run_listen {
    char name[BATON_NAME_MAX + 1];
    const char *addr; /* points into argv */
};

struct run_opts {
    const char *dir; /* the coordination directory, absolute */
    const char *log; /* --log FILE, "-" or "stderr"; NULL: failures only, on stderr */
    int drain_s;     /* --drain-timeout */
    int stop_sig;    /* --stop-signal */
    int ready_timeout_s;
    int ready_after_ms;  /* --ready-after; 0: wait for READY=1 only */
    int probation_ms;    /* --probation */
    int max_generations; /* --max-generations; 0: the library's default */
    int udp_idle_ms;     /* --udp-idle; 0: the shim's default */
    bool udp_steer;      /* --udp-steer */
    bool standby;        /* --standby */
    const struct run_listen *listen;
    size_t nlisten;
    char **argv; /* PROGRAM ARGS..., NULL-terminated */
};

/* Defaults of the options above. */
#define RUN_DRAIN_S         30
#define RUN_READY_TIMEOUT_S 30
#define RUN_UDP_IDLE_MAX_MS 3600000

/* Exit status of `baton run` when PROGRAM cannot be found or executed. */
#define RUN_EXIT_NOEXEC 127

/*
 * Run o->argv under a supervisor that holds the listeners and hands them
 * on: returns the exit status for `baton run` (see man baton-run,
 * EXIT STATUS). Prints why it failed on stderr.
 */
int run_supervise(const struct run_opts *o);

/* A listener name systemd accepts in LISTEN_FDNAMES and baton accepts as a
 * name: 1 to BATON_NAME_MAX printable characters, none of them ':' or '='. */
int run_name_ok(const char *name);

#endif
