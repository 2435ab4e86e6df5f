/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the session protocol's frame decoder
 * (session/frame.c): every frame type of the client link and the peer link.
 * The input is decoded as a stream of frames, as a link would see it, once
 * for each kind of link in each state (what it may carry), and nothing
 * decoded may be a type the link may not carry, nor longer than its bound.
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

static const uint32_t links[] = {
    BATON__S_RX_ANY,    BATON__S_RX_CLIENT_NEW, BATON__S_RX_CLIENT_RESUMING,
    BATON__S_RX_CLIENT, BATON__S_RX_SERVER,     BATON__S_RX_PEER_NEW,
    BATON__S_RX_PEER,   BATON__S_RX_NEXT_NEW,   BATON__S_RX_NEXT,
};

static void decode_as(const uint8_t *copy, size_t size, uint32_t allow)
{
    size_t off = 0;

    while (off < size) {
        struct baton__sframe f;
        int r = baton__sframe_decode(copy + off, size - off, allow, &f);
        if (r < 0 && !f.why)
            abort(); /* every refusal says why */
        if (r <= 0)
            break;
        if ((size_t)r > size - off || (size_t)r > baton__sframe_bound(allow) ||
            !(allow & BATON__S_BIT(f.type)))
            abort();
        touch(&f);
        off += (size_t)r;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so that ASan catches any read
     * past the end. */
    uint8_t *copy = malloc(size ? size : 1);

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
        decode_as(copy, size, links[i]);
    free(copy);
    return 0;
}
