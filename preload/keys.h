/* SPDX-License-Identifier: MIT */
/*
 * The preload shim's pure parts: names for bound addresses, the parsers of
 * /proc/net/{tcp,tcp6,unix} lines and the command-line hash. No state and no
 * system calls, so that they are unit-tested under ASan (tests/run-keys.c)
 * while the shim itself is never built with a sanitizer.
 */
#ifndef BATON_RUN_KEYS_H
#define BATON_RUN_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The state a successor reads: this line, then one key per line. */
#define BATON_RUN_MANIFEST "baton-run 1\n"

/*
 * The name under which a listener bound to sa (len bytes) of socket type
 * type (SOCK_STREAM or SOCK_DGRAM) is passed on: "tcp://127.0.0.1:80",
 * "tcp://[::]:80", "tcp://[::]:80/v6only" (v6only set), "udp://…",
 * "unix:/path", "unix:@abstract" (bytes outside printable ASCII, '%', '"'
 * and '\\' as %XX). A name is a valid libbaton fd name (at most
 * BATON_NAME_MAX bytes). Returns 0, -EAFNOSUPPORT for other families or
 * types, -EINVAL for a malformed address, -ENAMETOOLONG.
 */
int baton_run__key(const struct sockaddr *sa, size_t len, int type, int v6only, char *buf,
                   size_t cap);

/* key, or "key#n" for n >= 2: the n-th listener on the same address (as
 * SO_REUSEPORT servers bind). 0 or -ENAMETOOLONG. */
int baton_run__key_variant(const char *key, int n, char *buf, size_t cap);

/* The port of a "tcp://" or "udp://" key (0 if none) and the path of a
 * "unix:/…" key (NULL for others or abstract names). */
unsigned baton_run__key_port(const char *key);
const char *baton_run__key_path(const char *key);

/* One line of /proc/net/tcp or tcp6 (not the header): the local port, the
 * state (0x0A is LISTEN) and the inode. 0, or -EINVAL. */
int baton_run__parse_tcp(const char *line, unsigned *ret_port, unsigned *ret_state,
                         unsigned long *ret_ino);

/* One line of /proc/net/unix: listening (__SO_ACCEPTCON), the inode and the
 * path ("" if unbound; points into line, up to the newline, which is
 * replaced). 0, or -EINVAL. */
int baton_run__parse_unix(char *line, int *ret_listening, unsigned long *ret_ino,
                          const char **ret_path);

/* FNV-1a, 64 bits. */
uint64_t baton_run__hash(const void *data, size_t len);

#endif
