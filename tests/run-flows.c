/* SPDX-License-Identifier: MIT */
/*
 * The UDP flow table of `baton run` (preload/flows.c), under the
 * sanitizers: who owns a peer, when a quiet one changes hands, that two
 * processes claiming the same peers at once agree on every owner, a table
 * filled past its room, and the file it lives in refused when it is not
 * ours to trust (group-readable, a symlink, a FIFO, the wrong size or
 * contents).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "flows.h"
#include "harness.h"

#define IDLE 1000

static int dirfd_of(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    T_SYS(fd);
    return fd;
}

/* Peer number i: 10.x.y.z:port, distinct for every i. */
static void peer(unsigned i, uint64_t key[4])
{
    struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(1024 + i % 50000))};
    s.sin_addr.s_addr = htonl(0x0a000000u | (i / 50000) << 8 | (i & 0xff));
    T_ASSERT(baton_run__flow_key((struct sockaddr *)&s, sizeof(s), key) == 1);
}

static void keys(void)
{
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(443)};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    uint64_t a[4], b[4];

    inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &s6.sin6_addr);
    T_EQ(baton_run__flow_key((struct sockaddr *)&s4, sizeof(s4), a), 1);
    T_EQ(baton_run__flow_key((struct sockaddr *)&s6, sizeof(s6), b), 1);
    T_ASSERT(memcmp(a, b, sizeof(a)) != 0);
    /* Another port is another flow; what the kernel leaves in sin_zero is
     * not part of it. */
    memset(s4.sin_zero, 0xee, sizeof(s4.sin_zero));
    T_EQ(baton_run__flow_key((struct sockaddr *)&s4, sizeof(s4), b), 1);
    T_ASSERT(memcmp(a, b, sizeof(a)) == 0);
    s4.sin_port = htons(444);
    T_EQ(baton_run__flow_key((struct sockaddr *)&s4, sizeof(s4), b), 1);
    T_ASSERT(memcmp(a, b, sizeof(a)) != 0);
    /* Not an IP peer, or cut short: no flow. */
    T_EQ(baton_run__flow_key((struct sockaddr *)&su, sizeof(su), a), 0);
    T_EQ(baton_run__flow_key((struct sockaddr *)&s4, sizeof(s4) - 1, a), 0);
    T_EQ(baton_run__flow_key((struct sockaddr *)&s6, sizeof(s6) - 1, a), 0);
    T_EQ(baton_run__flow_key(NULL, 0, a), 0);
}

static void owners(struct flows *t)
{
    uint64_t k[4], other[4];
    uint64_t now = 5000000;

    peer(1, k);
    peer(2, other);
    T_EQ(baton_run__flow_owner(t, k, now, IDLE), -1);
    T_EQ(baton_run__flow_claim(t, k, 1, now, IDLE, FLOW_READ), 1);
    T_EQ(baton_run__flow_owner(t, k, now, IDLE), 1);
    T_EQ(baton_run__flow_owner(t, other, now, IDLE), -1);
    /* A live flow stays its owner's, whoever reads it, and each claim
     * refreshes it. */
    T_EQ(baton_run__flow_claim(t, k, 2, now + 900, IDLE, FLOW_READ), 1);
    T_EQ(baton_run__flow_claim(t, k, 2, now + 1800, IDLE, FLOW_READ), 1);
    T_EQ(baton_run__flows_live(t, 1, now + 1800, IDLE), 1u);
    T_EQ(baton_run__flows_live(t, 2, now + 1800, IDLE), 0u);
    /* Quiet for longer than the idle time: the next reader's. */
    T_EQ(baton_run__flow_owner(t, k, now + 2801, IDLE), -1);
    T_EQ(baton_run__flows_live(t, 1, now + 2801, IDLE), 0u);
    T_EQ(baton_run__flow_claim(t, k, 2, now + 2801, IDLE, FLOW_READ), 2);
    T_EQ(baton_run__flow_owner(t, k, now + 2801, IDLE), 2);
    /* take: its owner is gone, whatever the clock says. */
    T_EQ(baton_run__flow_claim(t, k, 3, now + 2802, IDLE, FLOW_TAKE), 3);
    T_EQ(baton_run__flow_claim(t, k, 2, now + 2803, IDLE, FLOW_READ), 3);
    /* A send to another's live peer keeps that flow not: its time stays. */
    T_EQ(baton_run__flow_claim(t, k, 2, now + 2803 + IDLE, IDLE, FLOW_SENT), 3);
    T_EQ(baton_run__flow_owner(t, k, now + 2803 + IDLE + 1, IDLE), -1);
    T_EQ(baton_run__flow_claim(t, k, 3, now + 2803, IDLE, FLOW_SENT), 3);
    /* Generations compare by their low 16 bits. */
    T_EQ(baton_run__flow_claim(t, k, 3 + 65536, now + 2804, IDLE, FLOW_READ), 3);
    /* A time a little ahead of our clock was written by another process
     * after we read it: live, and not moved back. */
    T_EQ(baton_run__flow_owner(t, k, now + 2800, IDLE), 3);
    T_EQ(baton_run__flow_claim(t, k, 4, now + 2800, IDLE, FLOW_READ), 3);
    T_EQ(baton_run__flow_owner(t, k, now + 2804 + IDLE, IDLE), 3);
    /* Far ahead (from before a reboot): not live. */
    T_EQ(baton_run__flow_owner(t, k, now - 3000000, IDLE), -1);
    T_EQ(baton_run__flow_claim(t, k, 4, now - 3000000, IDLE, FLOW_READ), 4);
}

/* Many peers: all recorded while the table has room; past it, some are
 * left unrecorded (-1), nothing hangs, and those recorded keep their owner. */
static void fill(struct flows *t)
{
    uint64_t k[4], now = 9000000;
    unsigned lost = 0;

    for (unsigned i = 100; i < 100 + 30000; i++) {
        peer(i, k);
        T_EQ(baton_run__flow_claim(t, k, 7, now, IDLE, FLOW_READ), 7);
    }
    for (unsigned i = 100; i < 100 + 30000; i++) {
        peer(i, k);
        T_EQ(baton_run__flow_owner(t, k, now, IDLE), 7);
    }
    T_EQ(baton_run__flows_live(t, 7, now, IDLE), 30000u);
    for (unsigned i = 40000; i < 40000 + 60000; i++) {
        peer(i, k);
        lost += baton_run__flow_claim(t, k, 8, now, IDLE, FLOW_READ) < 0;
    }
    printf("# 90,000 live peers in 65,536 slots: %u unrecorded\n", lost);
    T_GT(lost, 0u);
    for (unsigned i = 100; i < 100 + 30000; i++) {
        peer(i, k);
        T_EQ(baton_run__flow_owner(t, k, now, IDLE), 7);
    }
    /* Once they are all quiet, their slots serve new peers. */
    lost = 0;
    for (unsigned i = 200000; i < 200000 + 20000; i++) {
        peer(i, k);
        lost += baton_run__flow_claim(t, k, 9, now + 2 * IDLE, IDLE, FLOW_READ) != 9;
    }
    T_EQ(lost, 0u);
    T_EQ(baton_run__flows_live(t, 9, now + 2 * IDLE, IDLE), 20000u);
}

/* Two processes claim the same new peers at the same moment, in the same
 * order, so that they meet on most of them: each peer ends with one owner,
 * the one both were told. */
#define RACE_N 20000
static void race(const char *dir)
{
    int *seen = mmap(NULL, (2 * RACE_N + 1) * sizeof(int), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    _Atomic int *both; /* a barrier: they start within a few cycles */
    int go[2];
    pid_t kids[2];
    struct flows *t;
    char why[160];
    int dfd = dirfd_of(dir), disagree = 0, a_won = 0;
    uint64_t k[4], now = 20000000;

    T_ASSERT(seen != MAP_FAILED);
    both = (_Atomic int *)&seen[2 * RACE_N];
    T_SYS(pipe(go));
    for (int c = 0; c < 2; c++) {
        kids[c] = fork();
        T_SYS(kids[c]);
        if (kids[c] == 0) {
            char b;
            struct flows *mine = baton_run__flows_map(dfd, why, sizeof(why));
            close(go[1]);
            if (!mine || read(go[0], &b, 1) != 0)
                _exit(2);
            atomic_fetch_add(both, 1);
            while (atomic_load(both) < 2) {
            }
            for (int j = 0; j < RACE_N; j++) {
                int i = j;
                uint64_t kk[4];
                peer(300000 + (unsigned)i, kk);
                seen[c * RACE_N + i] =
                    baton_run__flow_claim(mine, kk, 20 + (unsigned)c, now, IDLE, FLOW_READ);
            }
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]); /* both start */
    for (int c = 0; c < 2; c++) {
        int st;
        T_SYS(waitpid(kids[c], &st, 0));
        T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    t = baton_run__flows_map(dfd, why, sizeof(why));
    T_ASSERT(t != NULL);
    for (int i = 0; i < RACE_N; i++) {
        int o;
        peer(300000 + (unsigned)i, k);
        o = baton_run__flow_owner(t, k, now, IDLE);
        disagree += seen[i] != o || seen[RACE_N + i] != o || (o != 20 && o != 21);
        a_won += o == 20;
    }
    printf("# %d peers claimed by two processes at once: %d to one, %d to the other, %d "
           "disagreements\n",
           RACE_N, a_won, RACE_N - a_won, disagree);
    T_EQ(disagree, 0);
    baton_run__flows_unmap(t);
    munmap(seen, (2 * RACE_N + 1) * sizeof(int));
    close(dfd);
}

/* The file is the trust boundary's: refused unless it is a private
 * regular file of ours with a table in it; never followed, never waited
 * on. */
static void bad_files(void)
{
    char d[PATH_MAX - 16], p[PATH_MAX], why[160];
    struct flows *t;
    int dfd, fd;

    snprintf(d, sizeof(d), "%s/bad", t_tmpdir());
    T_SYS(mkdir(d, 0700));
    dfd = dirfd_of(d);
    snprintf(p, sizeof(p), "%s/" FLOWS_LEAF, d);

    T_SYS(fd = open(p, O_CREAT | O_WRONLY, 0644));
    T_SYS(fchmod(fd, 0644));
    close(fd);
    T_ASSERT(baton_run__flows_map(dfd, why, sizeof(why)) == NULL);
    T_ASSERT(strstr(why, "not a private file") != NULL);
    T_SYS(unlink(p));

    T_SYS(symlink("/etc/passwd", p));
    T_ASSERT(baton_run__flows_map(dfd, why, sizeof(why)) == NULL);
    printf("# symlink: %s\n", why);
    T_SYS(unlink(p));

    T_SYS(mkfifo(p, 0600));
    T_ASSERT(baton_run__flows_map(dfd, why, sizeof(why)) == NULL);
    T_ASSERT(strstr(why, "not a private file") != NULL);
    T_SYS(unlink(p));

    T_SYS(fd = open(p, O_CREAT | O_WRONLY, 0600));
    T_SYS(ftruncate(fd, 100));
    close(fd);
    T_ASSERT(baton_run__flows_map(dfd, why, sizeof(why)) == NULL);
    T_ASSERT(strstr(why, "bytes, not") != NULL);
    T_SYS(unlink(p));

    /* The right size, but not made by us: not a table. */
    T_ASSERT((t = baton_run__flows_map(dfd, why, sizeof(why))) != NULL);
    baton_run__flows_unmap(t);
    T_SYS(fd = open(p, O_WRONLY));
    T_EQ(pwrite(fd, "junk", 4, 0), 4);
    close(fd);
    T_ASSERT(baton_run__flows_map(dfd, why, sizeof(why)) == NULL);
    T_ASSERT(strstr(why, "not a flow table") != NULL);
    close(dfd);
}

int main(int argc, char **argv)
{
    char why[160];
    struct flows *t, *again;
    int dfd;

    t_init(argc, argv);
    keys();
    dfd = dirfd_of(t_tmpdir());
    t = baton_run__flows_map(dfd, why, sizeof(why));
    T_ASSERT(t != NULL);
    /* A second mapping is the same table. */
    again = baton_run__flows_map(dfd, why, sizeof(why));
    T_ASSERT(again != NULL);
    owners(t);
    {
        uint64_t k[4];
        peer(1, k);
        T_EQ(baton_run__flow_owner(again, k, 5000000 - 3000000, IDLE), 4);
    }
    fill(t);
    baton_run__flows_unmap(again);
    baton_run__flows_unmap(t);
    close(dfd);
    {
        char rd[PATH_MAX];
        snprintf(rd, sizeof(rd), "%s/race", t_tmpdir());
        T_SYS(mkdir(rd, 0700));
        race(rd);
    }
    bad_files();
    return t_done();
}
