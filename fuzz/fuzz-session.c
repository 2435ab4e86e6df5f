/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the session protocol's frame decoder
 * (session/frame.c): every frame type of the client link and the peer link.
 * The input is decoded as a stream of frames, as a link would see it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch(const struct baton__sframe *f)
{
    volatile uint8_t sink = 0;
    const uint8_t *p;
    uint32_t n;

    switch (f->type) {
    case BATON__S_DATA:
        for (uint32_t i = 0; i < f->u.data.len; i++)
            sink ^= f->u.data.data[i];
        break;
    case BATON__S_MOVE:
        for (int i = 0; i < f->u.move.addr_len; i++)
            sink ^= (uint8_t)f->u.move.addr[i];
        sink ^= f->u.move.token[31];
        break;
    case BATON__S_CLOSE:
        for (int i = 0; i < f->u.close.text_len; i++)
            sink ^= (uint8_t)f->u.close.text[i];
        break;
    case BATON__S_OFFER:
        for (uint32_t i = 0; i < f->u.offer.n * 16; i++)
            sink ^= f->u.offer.ids[i];
        break;
    case BATON__S_EXPORT:
        for (uint32_t i = 0; i < f->u.exp.state_len; i++)
            sink ^= f->u.exp.state[i];
        p = f->u.exp.msgs;
        for (uint32_t i = 0; i < f->u.exp.nmsg; i++) {
            const uint8_t *m = baton__sframe_export_next(&p, &n);
            for (uint32_t k = 0; k < n; k++)
                sink ^= m[k];
        }
        break;
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so that ASan catches any read
     * past the end. */
    uint8_t *copy = malloc(size ? size : 1);
    size_t off = 0;

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    while (off < size) {
        struct baton__sframe f;
        int r = baton__sframe_decode(copy + off, size - off, &f);
        if (r <= 0)
            break;
        if ((size_t)r > size - off)
            abort();
        touch(&f);
        off += (size_t)r;
    }
    free(copy);
    return 0;
}
