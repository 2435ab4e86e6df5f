/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for baton_quic_packet_generation(), which a QUIC server
 * runs on every datagram anyone sends it: any bytes, every connection ID
 * length, no read past the end and only the documented results. Built
 * with clang -fsanitize=fuzzer by `make fuzz`; fuzz/regress.c runs the
 * same entry point over fuzz/corpus/quic in `make check`.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "baton.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so that ASan catches any read
     * past the end of the input. */
    uint8_t *copy = malloc(size ? size : 1);

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    for (size_t cid_len = 0; cid_len <= 21; cid_len++) {
        int g = baton_quic_packet_generation(copy, size, cid_len);
        if (!(g == -EINVAL || g == -ENOENT || (g >= 0 && g <= 0xffff)))
            abort();
        if ((cid_len < 4 || cid_len > 20) && g != -EINVAL)
            abort();
    }
    free(copy);
    return 0;
}
