/* SPDX-License-Identifier: MIT */
/*
 * A network link emulator in user space, for kernels without sch_netem:
 * each link is a pair of TUN devices, one in each of two network
 * namespaces, and a process that carries every packet from one to the
 * other after a fixed delay, dropping a given share of them at random (as
 * `tc qdisc add ... netem delay D loss L` on both ends of a veth pair
 * would). Packets keep their order; each direction queues at most
 * LINKEM_LIMIT packets (netem's default limit) and drops beyond that.
 */
#ifndef BATON_TEST_LINKEM_H
#define BATON_TEST_LINKEM_H

#include <stdint.h>

#include "harness.h"

#define LINKEM_LIMIT 1000
#define LINKEM_MAX   4 /* links per emulator */

struct linkem_link {
    const char *ns[2]; /* the namespaces' names (under /var/run/netns) */
    char dev[2][16];   /* the TUN devices' names, one in each */
};

struct linkem {
    struct t_proc proc;
    int n;
    uint64_t delay_us;
    uint32_t loss_ppm; /* dropped packets per million */
    struct linkem_link links[LINKEM_MAX];
};

/* Start the emulator process: it creates every link's TUN devices (down,
 * without addresses: configure them with ip) and carries packets until
 * linkem_stop(). Returns 0, or -errno if TUN devices cannot be made here
 * (no /dev/net/tun: the caller skips). */
int linkem_start(struct linkem *e);
/* Stop it; its devices go with it. Prints what it carried and dropped. */
void linkem_stop(struct linkem *e);

#endif
