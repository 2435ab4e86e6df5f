/* SPDX-License-Identifier: MIT */
/*
 * A small baton server that tests start as an owner or as a successor
 * program (baton_upgrade(), `baton upgrade`):
 *
 *   helper-server DIR REPORT MODE [FAILFILE]
 *
 * It opens DIR, claims the listener "web" (tcp://127.0.0.1:0) and readies,
 * then reports "ready GEN PID PORT INO" as a datagram to the unix socket
 * REPORT, and answers each connection's line with "helperGEN LINE" until
 * its upgrade fd fires (reports "superseded GEN PID", exits 0) or a client
 * sends "quit". MODE "fail", or an existing FAILFILE, makes it report
 * "fail GEN PID" and exit 1 after baton_open(), before baton_ready().
 * Started again by the library with the same argv, it behaves the same.
 *
 * FAILFILE may instead say how to be slow (a server that starts slowly is
 * the subject of those tests, so here a sleep is the behaviour itself):
 * "slow MS" sleeps MS before baton_open(), "stall MS" between baton_open()
 * and baton_ready(), "stubborn MS" the same with SIGTERM ignored. Like a
 * server that daemonizes, "fork-stall MS" forks, the parent exits 0 and
 * the child stalls as "stall MS"; "fork-ready" the same, and the child
 * goes on at once; "wrap-stall MS" forks and the parent, like a wrapper
 * script, waits for the child (which stalls) and exits with its status.
 * A slow start first reports "start PID" (the child's, after a fork).
 *
 * With BATON_TEST_STANDBY=1 in the environment it opens with BATON_STANDBY
 * and reports "main PID" as main() begins, and answers the line "whoami"
 * with "helperGEN whoami pid=PID job=J standby=S exe=E": J 1 if BATON_JOB
 * is set, S 1 if BATON_STANDBY_FD is, E 1 if /proc/self/exe is a file
 * that has since been replaced or removed. If the file REPORT.linger exists
 * when it is superseded, it stays (without baton_free()) until a signal
 * ends it. In that mode it also opens /dev/null without O_CLOEXEC once
 * ready, as a plain accept() leaves a connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* Is the file we run from gone from its path (replaced or removed)? */
static int exe_replaced(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

    buf[n > 0 ? n : 0] = 0;
    return n <= 0 || strstr(buf, " (deleted)") != NULL;
}

static int serve(baton *b, int lfd, const char *report)
{
    int gen = baton_generation(b), ufd = baton_upgrade_fd(b);
    char tag[32], line[256];

    snprintf(tag, sizeof(tag), "helper%d", gen);
    for (;;) {
        struct pollfd p[2] = {{.fd = ufd, .events = POLLIN}, {.fd = lfd, .events = POLLIN}};
        ssize_t n;
        int fd, r = poll(p, 2, 30000);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "helper-server: idle for 30 s, exiting\n");
            return 1;
        }
        if (p[0].revents & POLLIN) {
            char linger[PATH_MAX + 8];
            t_report_send(report, "superseded %d %d", gen, (int)getpid());
            /* REPORT.linger exists: stay, as a draining server would,
             * until a signal ends us. */
            snprintf(linger, sizeof(linger), "%s.linger", report);
            if (access(linger, F_OK) == 0)
                for (;;)
                    pause();
            return 0;
        }
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        n = t_read_line(fd, line, sizeof(line), T_TIMEOUT);
        if (n > 0 && line[n - 1] == '\n') {
            char resp[300];
            line[n - 1] = 0;
            snprintf(resp, sizeof(resp), "%s %s\n", tag, line);
            if (strcmp(line, "whoami") == 0)
                snprintf(resp, sizeof(resp), "%s whoami pid=%d job=%d standby=%d exe=%d\n", tag,
                         (int)getpid(), getenv("BATON_JOB") != NULL,
                         getenv("BATON_STANDBY_FD") != NULL, exe_replaced());
            t_write_all(fd, resp, strlen(resp));
            if (strcmp(line, "quit") == 0) {
                close(fd);
                return 0;
            }
        }
        close(fd);
    }
}

/* What FAILFILE says: 'f' fail, 's' slow, 't' stall, 'k' stubborn, 0 none. */
static int failfile_mode(const char *path, int *ret_ms)
{
    char buf[64] = {0};
    FILE *f = fopen(path, "re");
    int mode = 'f';

    *ret_ms = 0;
    if (!f)
        return 0;
    if (fgets(buf, sizeof(buf), f)) {
        if (sscanf(buf, "slow %d", ret_ms) == 1)
            mode = 's';
        else if (sscanf(buf, "stall %d", ret_ms) == 1)
            mode = 't';
        else if (sscanf(buf, "stubborn %d", ret_ms) == 1)
            mode = 'k';
        else if (sscanf(buf, "fork-stall %d", ret_ms) == 1)
            mode = 'F';
        else if (strncmp(buf, "fork-ready", 10) == 0)
            mode = 'R';
        else if (sscanf(buf, "wrap-stall %d", ret_ms) == 1)
            mode = 'W';
    }
    fclose(f);
    return mode;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    struct baton_options o = {0};
    const char *report;
    bool fail;
    baton *b;
    int r, lfd, mode = 0, ms = 0;

    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR REPORT serve|fail [FAILFILE]\n", argv[0]);
        return 2;
    }
    report = argv[2];
    if (getenv("BATON_TEST_STANDBY")) {
        o.flags |= BATON_STANDBY;
        t_report_send(report, "main %d", (int)getpid());
    }
    if (argc > 4)
        mode = failfile_mode(argv[4], &ms);
    if (mode == 'F' || mode == 'R' || mode == 'W') {
        int status = 0;
        pid_t child = fork();
        if (child < 0)
            return 1;
        if (child > 0 && mode == 'W' && waitpid(child, &status, 0) == child)
            _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        if (child > 0)
            _exit(0);
        if (mode == 'R')
            t_report_send(report, "start %d", (int)getpid());
        mode = mode == 'R' ? 0 : 't';
    }
    if (mode == 's' || mode == 't' || mode == 'k')
        t_report_send(report, "start %d", (int)getpid());
    fail = strcmp(argv[3], "fail") == 0 || mode == 'f';
    if (mode == 'k')
        signal(SIGTERM, SIG_IGN);
    if (mode == 's')
        pause_ms(ms);
    o.dir = argv[1];
    o.ready_timeout_ms = 5000;
    o.allowed_uid = (uid_t)-1;
    r = baton_open(&o, &b);
    if (r < 0) {
        t_report_send(report, "error open %d", r);
        return 1;
    }
    if (fail) {
        t_report_send(report, "fail %d %d", baton_generation(b), (int)getpid());
        /* Exit without baton_free(), as a crashing program would. */
        _exit(1);
    }
    if (mode == 't' || mode == 'k')
        pause_ms(ms);
    lfd = baton_listen(b, "web", "tcp://127.0.0.1:0", 0);
    if (lfd < 0) {
        t_report_send(report, "error listen %d", lfd);
        baton_free(b);
        return 1;
    }
    r = baton_ready(b);
    if (r < 0) {
        t_report_send(report, "error ready %d", r);
        baton_free(b);
        return 1;
    }
    t_report_send(report, "ready %d %d %d %lld", baton_generation(b), (int)getpid(), t_port(lfd),
                  t_ino(lfd));
    /* An fd without O_CLOEXEC, as a connection from a plain accept() is:
     * a standby must not inherit it. */
    if (o.flags & BATON_STANDBY)
        (void)open("/dev/null", O_RDONLY);
    r = serve(b, lfd, report);
    baton_free(b);
    return r;
}
