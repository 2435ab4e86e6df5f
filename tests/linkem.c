/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "linkem.h"

#define PKT_MAX 2048

/* One direction of one link: packets read from one device, waiting for
 * their time to be written to the other. */
struct dir {
    int in, out;
    uint64_t due[LINKEM_LIMIT];
    uint16_t len[LINKEM_LIMIT];
    uint8_t (*pkt)[PKT_MAX];
    unsigned head, count;
    long long carried, dropped, overflow;
};

static uint64_t now_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000;
}

static uint64_t rng_state;

static uint32_t rng(void)
{
    /* xorshift64*: plenty for choosing which packets to drop. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static int tun_open(const char *ns, const char *dev)
{
    char path[128];
    struct ifreq ifr;
    int nsfd, fd;

    snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
    nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0)
        return -errno;
    if (setns(nsfd, CLONE_NEWNET) < 0) {
        int e = -errno;
        close(nsfd);
        return e;
    }
    close(nsfd);
    fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static void dir_read(struct dir *d, const struct linkem *e, uint64_t now)
{
    for (int i = 0; i < 64; i++) {
        unsigned slot = (d->head + d->count) % LINKEM_LIMIT;
        uint8_t scratch[PKT_MAX];
        bool keep = d->count < LINKEM_LIMIT;
        ssize_t n = read(d->in, keep ? d->pkt[slot] : scratch, PKT_MAX);
        if (n <= 0)
            return;
        if (!keep) {
            d->overflow++;
            continue;
        }
        if (rng() % 1000000u < e->loss_ppm) {
            d->dropped++;
            continue;
        }
        d->due[slot] = now + e->delay_us;
        d->len[slot] = (uint16_t)n;
        d->count++;
    }
}

/* Write what is due; the earliest time still waiting, or 0. */
static uint64_t dir_write(struct dir *d, uint64_t now)
{
    while (d->count && d->due[d->head] <= now) {
        /* A full device queue drops the packet, as a full qdisc would. */
        (void)!write(d->out, d->pkt[d->head], d->len[d->head]);
        d->carried++;
        d->head = (d->head + 1) % LINKEM_LIMIT;
        d->count--;
    }
    return d->count ? d->due[d->head] : 0;
}

static int linkem_main(int chan, void *arg)
{
    struct linkem *e = arg;
    struct dir *dirs = calloc((size_t)e->n * 2, sizeof(*dirs));
    int fds[LINKEM_MAX][2], ep, tfd, nd = e->n * 2;
    struct epoll_event ev = {.events = EPOLLIN};
    long long carried = 0, dropped = 0, overflow = 0;

    rng_state = now_us() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < e->n; i++)
        for (int s = 0; s < 2; s++) {
            fds[i][s] = tun_open(e->links[i].ns[s], e->links[i].dev[s]);
            if (fds[i][s] < 0) {
                t_tell(chan, fds[i][s]);
                free(dirs);
                return 0;
            }
        }
    ep = T_SYS(epoll_create1(EPOLL_CLOEXEC));
    tfd = T_SYS(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    for (int i = 0; i < nd; i++) {
        struct dir *d = &dirs[i];
        d->in = fds[i / 2][i % 2];
        d->out = fds[i / 2][1 - i % 2];
        d->pkt = malloc(sizeof(*d->pkt) * LINKEM_LIMIT);
        T_ASSERT(d->pkt);
        ev.data.u32 = (uint32_t)i;
        T_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, d->in, &ev));
    }
    ev.data.u32 = (uint32_t)nd;
    T_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev));
    ev.data.u32 = (uint32_t)nd + 1;
    T_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, chan, &ev));
    t_tell(chan, 0);
    for (bool stop = false; !stop;) {
        struct epoll_event got[16];
        int n = epoll_wait(ep, got, 16, -1);
        uint64_t now = now_us(), next = 0, x;
        for (int i = 0; i < n; i++) {
            if (got[i].data.u32 < (uint32_t)nd)
                dir_read(&dirs[got[i].data.u32], e, now);
            else if (got[i].data.u32 == (uint32_t)nd)
                (void)!read(tfd, &x, sizeof(x));
            else
                stop = true; /* linkem_stop(): the channel closed */
        }
        now = now_us();
        for (int i = 0; i < nd; i++) {
            uint64_t t = dir_write(&dirs[i], now);
            if (t && (!next || t < next))
                next = t;
        }
        if (next) {
            /* The clock is CLOCK_MONOTONIC in microseconds: arm absolute. */
            struct itimerspec it = {{0, 0},
                                    {(time_t)(next / 1000000u), (long)(next % 1000000u) * 1000}};
            T_SYS(timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it, NULL));
        }
    }
    for (int i = 0; i < nd; i++) {
        carried += dirs[i].carried;
        dropped += dirs[i].dropped;
        overflow += dirs[i].overflow;
        free(dirs[i].pkt);
        close(dirs[i].in);
    }
    free(dirs);
    close(tfd);
    close(ep);
    printf("link emulator: %lld packets carried, %lld dropped at random, %lld over the queue "
           "limit\n",
           carried, dropped, overflow);
    fflush(stdout);
    return 0;
}

int linkem_start(struct linkem *e)
{
    long long r;

    if (access("/dev/net/tun", R_OK | W_OK) != 0)
        return -errno;
    t_spawn(&e->proc, linkem_main, e);
    r = t_hear(e->proc.chan, T_TIMEOUT);
    if (r < 0) {
        t_proc_wait(&e->proc, T_TIMEOUT);
        return (int)r;
    }
    return 0;
}

void linkem_stop(struct linkem *e)
{
    shutdown(e->proc.chan, SHUT_RDWR);
    T_EQ(t_proc_wait(&e->proc, T_TIMEOUT), 0);
}
