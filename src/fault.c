/* SPDX-License-Identifier: MIT */
/*
 * Fault injection for the chaos tests: BATON_FAULT="point=action,..." in a
 * process's environment makes it SIGKILL or SIGSTOP itself when it reaches
 * the named point of the protocol, so that a test can hit the exact step it
 * means to ("mid fd batch") instead of guessing with timers. Only the
 * process whose environment says so is affected, and whoever sets a
 * process's environment controls it anyway.
 *
 * Points (s- successor side, o- owner side):
 *   s-connect   the directory checked and locked, the owner not yet asked
 *   s-hello     HELLO received, nothing else yet
 *   s-mid-fds   the first fd batch received, more to come
 *   s-mid-state STATE received, END not yet
 *   s-ready     in baton_ready(), before READY is sent
 *   s-commit    READY sent, COMMIT not yet received
 *   s-record    our socket renamed into place, our owner record not yet
 *   s-publish   our socket renamed into place, PUBLISHED not yet sent
 *   s-mid-conns the first handed connection taken
 *   o-hello     a takeover request received, HELLO not yet sent
 *   o-mid-fds   the first fd batch sent
 *   o-ready     READY received, COMMIT not yet sent
 *   o-commit    COMMIT sent, PUBLISHED not yet received
 *   o-stepdown  PUBLISHED received, before the upgrade fd fires
 *   o-mid-conns the first batch of connections sent
 * Actions: kill (SIGKILL), stop (SIGSTOP). Each point fires once per process.
 *
 * The variable is read once per process, with secure_getenv() (a setuid
 * program ignores it), and never again: the library's thread reaches these
 * points while the application may be changing its environment.
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Each point fires once per process: a stopped process that is continued
 * must get on with it, not stop again at the next connection. */
static bool first_time(const char *point)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static const char *fired[32];
    static size_t n;
    bool first = true;

    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n && first; i++)
        first = strcmp(fired[i], point) != 0;
    if (first && n < sizeof(fired) / sizeof(fired[0]))
        fired[n++] = point;
    pthread_mutex_unlock(&mu);
    return first;
}

static const char *fault_spec;
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

static void fault_read(void)
{
    const char *spec = secure_getenv("BATON_FAULT");

    fault_spec = spec && *spec ? strdup(spec) : NULL;
}

void baton__fault(const char *point)
{
    const char *spec, *p;
    size_t n = strlen(point);

    pthread_once(&fault_once, fault_read);
    spec = fault_spec;
    if (!spec || !strstr(spec, point) || !first_time(point))
        return;
    for (p = spec; (p = strstr(p, point)); p += n) {
        if ((p != spec && p[-1] != ',') || p[n] != '=')
            continue;
        if (strncmp(p + n + 1, "kill", 4) == 0)
            raise(SIGKILL);
        else if (strncmp(p + n + 1, "stop", 4) == 0)
            raise(SIGSTOP);
        return;
    }
}
