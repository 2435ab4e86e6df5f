/* SPDX-License-Identifier: MIT */
/*
 * The UDP flow table behind `baton run`'s steering (udp.c): which
 * generation owns each peer of the service's UDP sockets.
 *
 * One file in the coordination directory, DIR/udp-flows, mapped shared by
 * every generation's holder: a hash table of peers (their address: the
 * flow's 4-tuple with our socket), each with its owner (a generation's low
 * 16 bits) and when a datagram of it last passed (CLOCK_MONOTONIC ms,
 * which every process shares). Whoever reads a datagram from a peer nobody
 * owns, or whose owner has been quiet for the idle time, claims it for its
 * own generation; a peer a live generation owns stays that generation's.
 * A claim is one compare-and-swap, so two generations that both read the
 * socket for a while (until the old one retires, or through a probation)
 * agree on every flow's owner. Slots are never emptied, only taken over
 * once idle, and each has a sequence word (odd while its key is written)
 * so that a reader never matches a half-written key. The hash is SipHash
 * keyed with a random key kept in the file: a client cannot choose
 * addresses that pile up in one probe chain. A chain longer than 128 slots,
 * or a full table (65,536 peers live at once), leaves the peer
 * unrecorded: its datagrams go to whoever reads them, as without steering.
 */
#ifndef BATON_RUN_FLOWS_H
#define BATON_RUN_FLOWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define FLOWS_LEAF  "udp-flows"
#define FLOWS_SLOTS 65536

struct flows;

/* A peer's address as a table key: family, port, address and scope. 1, or
 * 0 if it is not an IP address (then it has no flow). */
int baton_run__flow_key(const struct sockaddr *sa, socklen_t len, uint64_t key[4]);

/* How a claim comes: a datagram read from the peer (its flow is alive,
 * whoever owns it), one sent to it (only the sender's own flow is
 * refreshed: one copy's heartbeats must not keep another's flow), or a
 * take-over (the owner is gone). */
enum baton_run__flow_how { FLOW_READ, FLOW_SENT, FLOW_TAKE };

/* The generation (low 16 bits) that owns the peer key: its live owner, or
 * me once claimed (nobody live owned it, or FLOW_TAKE); its time
 * refreshed as how says. -1 if the peer cannot be recorded. */
int baton_run__flow_claim(struct flows *t, const uint64_t key[4], unsigned me, uint64_t now,
                          unsigned idle_ms, enum baton_run__flow_how how);

/* The live owner of key, or -1; changes nothing. */
int baton_run__flow_owner(struct flows *t, const uint64_t key[4], uint64_t now, unsigned idle_ms);

/* How many peers generation gen owns that are live. */
unsigned baton_run__flows_live(struct flows *t, unsigned gen, uint64_t now, unsigned idle_ms);

/* Map DIR/udp-flows (dirfd), making it if it is not there. The table, or
 * NULL with why[] saying why: the file is not a regular file of ours
 * closed to group and others, not of the table's size, or not a table. */
struct flows *baton_run__flows_map(int dirfd, char *why, size_t whylen);
void baton_run__flows_unmap(struct flows *t);

#endif
