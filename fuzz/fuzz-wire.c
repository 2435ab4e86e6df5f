/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the control protocol's decoder. Built with clang
 * -fsanitize=fuzzer by `make fuzz`; fuzz/regress.c runs the same entry
 * point over fuzz/corpus/ in `make check` with any compiler.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct baton__msg m;
    /* A private copy of exactly size bytes, so that ASan catches any read
     * past the end of the message. */
    uint8_t *copy = malloc(size ? size : 1);

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (baton__msg_decode(copy, size, &m) == 0) {
        /* Touch every decoded span: they must lie inside the message. */
        volatile uint8_t sink = 0;
        if (m.type == BATON__MSG_FDS)
            for (uint32_t i = 0; i < m.u.fds.count; i++) {
                const struct baton__wire_entry *e = &m.u.fds.entries[i];
                for (int k = 0; k < e->name_len; k++)
                    sink ^= e->name[k];
                for (int k = 0; k < e->addr_len; k++)
                    sink ^= e->addr[k];
            }
        if (m.type == BATON__MSG_RESULT || m.type == BATON__MSG_ERROR)
            for (int k = 0; k < m.u.result.text_len; k++)
                sink ^= m.u.result.text[k];
        (void)sink;
    }
    free(copy);
    return 0;
}
