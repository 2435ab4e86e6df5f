/* SPDX-License-Identifier: MIT */
/*
 * The owner record, DIR/owner, has one reader (baton__record_read), used
 * by the library, the tool and the shim: what a real owner writes reads
 * back whole; a missing record is -ENOENT; a garbled one (wrong first
 * line, an unknown line, no pid or generation, a bad fd line, too many fd
 * lines, a field over its bound, a number that would wrap, a FIFO) is
 * -EPROTO and leaves the caller's record untouched; a symlink in its
 * place is not followed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

static char dir[PATH_MAX], path[PATH_MAX + 16];

static void put(const char *text)
{
    FILE *f = fopen(path, "w");

    T_ASSERT(f != NULL);
    T_ASSERT(fputs(text, f) >= 0);
    T_EQ(fclose(f), 0);
}

static int read_with(int dfd, const char *text)
{
    struct baton__record rec = {.pid = -7};
    int r;

    put(text);
    r = baton__record_read(dfd, &rec);
    if (r == 0)
        baton__record_free(&rec);
    else
        T_EQ(rec.pid, -7);
    return r;
}

int main(int argc, char **argv)
{
    struct baton_options o;
    struct baton__record rec;
    baton *b;
    int dfd, port;

    t_init(argc, argv);
    t_path(dir, "run");
    snprintf(path, sizeof(path), "%s/owner", dir);

    /* What a real owner writes. */
    o = t_opts(dir, 5000, 0);
    T_OK(baton_open(&o, &b));
    port = t_port(T_OK(baton_listen(b, "web", "tcp://127.0.0.1:0", 0)));
    T_OK(baton_add_fd(b, "cfg", 0));
    T_OK(baton_ready(b));
    dfd = T_SYS(open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    T_OK(baton__record_read(dfd, &rec));
    T_EQ(rec.pid, getpid());
    T_EQ(rec.generation, 1);
    T_GT(rec.since_ms, 0);
    T_EQ(rec.nfds, 2);
    {
        char local[64];
        bool web = false, cfg = false;
        snprintf(local, sizeof(local), "127.0.0.1:%d", port);
        for (size_t i = 0; i < rec.nfds; i++) {
            web |= !strcmp(rec.fds[i].name, "web") && !strcmp(rec.fds[i].kind, "tcp") &&
                   !strcmp(rec.fds[i].addr, "tcp://127.0.0.1:0") &&
                   !strcmp(rec.fds[i].local, local);
            cfg |= !strcmp(rec.fds[i].name, "cfg") && !strcmp(rec.fds[i].kind, "fd");
        }
        T_ASSERT(web && cfg);
    }
    baton__record_free(&rec);
    T_EQ(baton__record_pid(b), getpid());
    baton_free(b);

    /* Hand-written ones. */
    T_EQ(read_with(dfd, "baton-owner 1\npid 12\ngeneration 3\nsince 5\n"), 0);
    T_EQ(read_with(dfd, "baton-owner 2\npid 12\ngeneration 3\n"), -EPROTO);
    T_EQ(read_with(dfd, ""), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\ngeneration 3\n"), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid 12\n"), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid 0\ngeneration 3\n"), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid 12\ngeneration 3\nuid 0\n"), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid 12\ngeneration 3\nfd web tcp\n"), -EPROTO);
    /* Fields over their bounds do not spill into the next; numbers do not
     * wrap; a kind must be ours; a long line is one line. */
    T_EQ(read_with(dfd, "baton-owner 1\npid 12\ngeneration 3\nfd http tcpxxxxxEVIL tcp://x "
                        "1.2.3.4:5\n"),
         -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid 12\ngeneration 3\nfd a tcp b c d\n"), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid 12\ngeneration 3\nfd a tcpx b c\n"), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid12junk\ngeneration 3\n"), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid 4294967297\ngeneration 3\n"), -EPROTO);
    T_EQ(read_with(dfd, "baton-owner 1\npid -5\ngeneration 3\n"), -EPROTO);
    {
        static char longline[2048];
        size_t n =
            (size_t)snprintf(longline, sizeof(longline), "baton-owner 1\npid 12\ngeneration 3\nx");
        memset(longline + n, 'a', 1100);
        snprintf(longline + n + 1100, sizeof(longline) - n - 1100, "pid 666\n");
        T_EQ(read_with(dfd, longline), -EPROTO);
    }
    T_EQ(read_with(dfd, "baton-owner 1\npid 12\ngeneration 3\nfd a fd - -\n"), 0);
    {
        static char big[(BATON__RECORD_MAX_FDS + 2) * 24];
        size_t n = (size_t)snprintf(big, sizeof(big), "baton-owner 1\npid 12\ngeneration 3\n");
        for (int i = 0; i <= BATON__RECORD_MAX_FDS; i++)
            n += (size_t)snprintf(big + n, sizeof(big) - n, "fd f%d fd - -\n", i);
        T_EQ(read_with(dfd, big), -EPROTO);
    }

    /* Missing; a FIFO (must not block); a symlink to a good record
     * elsewhere. */
    T_SYS(unlink(path));
    T_EQ(baton__record_read(dfd, &rec), -ENOENT);
    T_SYS(mkfifo(path, 0600));
    T_EQ(baton__record_read(dfd, &rec), -EPROTO);
    T_SYS(unlink(path));
    {
        char other[PATH_MAX + 16];
        FILE *f;
        snprintf(other, sizeof(other), "%s/elsewhere", dir);
        f = fopen(other, "w");
        T_ASSERT(f != NULL);
        fputs("baton-owner 1\npid 12\ngeneration 3\n", f);
        T_EQ(fclose(f), 0);
        T_SYS(symlink(other, path));
        T_EQ(baton__record_read(dfd, &rec), -ELOOP);
    }
    /* The generation records and the last takeover (written by any process
     * of ours, so read as carefully): a record that names a live process
     * with another start time (a reused pid, or a lie), one of a dead
     * process, a garbled one and a FIFO are not generations; a FIFO or a
     * symlink as last-upgrade is refused without blocking. */
    {
        char gpath[PATH_MAX + 32], upath[PATH_MAX + 32], text[256];
        struct baton__upgrade u;
        struct baton__gen *g = NULL;
        unsigned long long mine = baton__proc_start(getpid());
        FILE *f;

        T_GT(mine, 0);
        snprintf(gpath, sizeof(gpath), "%s/gen.%d", dir, (int)getpid());
        snprintf(text, sizeof(text),
                 "baton-gen 1\npid %d\nstart %llu\ngeneration 7\nstate draining\nsince 1\n"
                 "draining_since 2\nconns 3\n",
                 (int)getpid(), mine);
        f = fopen(gpath, "w");
        T_ASSERT(f != NULL);
        fputs(text, f);
        T_EQ(fclose(f), 0);
        T_EQ(baton__gens_read(dfd, &g), 1);
        T_ASSERT(g[0].pid == getpid() && g[0].generation == 7 && g[0].draining && g[0].conns == 3);
        free(g);
        f = fopen(gpath, "w"); /* the same pid, another start time */
        T_ASSERT(f != NULL);
        fprintf(f,
                "baton-gen 1\npid %d\nstart %llu\ngeneration 7\nstate serving\nsince 1\n"
                "draining_since 0\nconns -1\n",
                (int)getpid(), mine + 1);
        T_EQ(fclose(f), 0);
        T_EQ(baton__gens_read(dfd, &g), 0);
        free(g);
        f = fopen(gpath, "w"); /* garbled: an unknown state */
        T_ASSERT(f != NULL);
        fprintf(f,
                "baton-gen 1\npid %d\nstart %llu\ngeneration 7\nstate king\nsince 1\n"
                "draining_since 0\nconns -1\n",
                (int)getpid(), mine);
        T_EQ(fclose(f), 0);
        T_EQ(baton__gens_read(dfd, &g), 0);
        free(g);
        T_SYS(unlink(gpath));
        T_SYS(mkfifo(gpath, 0600));
        T_EQ(baton__gens_read(dfd, &g), 0);
        free(g);
        T_SYS(unlink(gpath));

        snprintf(upath, sizeof(upath), "%s/last-upgrade", dir);
        T_EQ(baton__upgrade_read(dfd, &u), -ENOENT);
        T_SYS(mkfifo(upath, 0600));
        T_EQ(baton__upgrade_read(dfd, &u), -EPROTO);
        T_SYS(unlink(upath));
        T_SYS(symlink("elsewhere", upath));
        T_EQ(baton__upgrade_read(dfd, &u), -ELOOP);
        T_SYS(unlink(upath));
    }
    close(dfd);
    return t_done();
}
