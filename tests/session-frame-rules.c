/* SPDX-License-Identifier: MIT */
/*
 * Length rules of docs/session-protocol.md, checked on the decoder
 * (session/frame.c):
 *   - MOVE: addr_len must be exactly the payload length - 34, and not 0;
 *   - EXPORT: its fixed fields are 48 bytes, and its largest payload is
 *     48 + the state's and the queue's maximums;
 *   - the codes a next server passes on: REFUSED is "the move is off"
 *     (-ECANCELED), LOST "the session is lost" (-ECONNABORTED).
 */
#include <errno.h>
#include <string.h>

#include "frame.h"
#include "session-util.h"

static uint8_t f[8 + 34 + 300];

static int move(uint16_t addr_len, uint32_t payload)
{
    struct baton__sframe fr;

    memset(f, 'x', sizeof(f));
    baton__s_hdr(f, BATON__S_MOVE, payload);
    baton__s_put16(f + 8 + 32, addr_len);
    return baton__sframe_decode(f, 8 + payload, BATON__S_RX_ANY, &fr);
}

int main(int argc, char **argv)
{
    struct baton__sframe fr;
    uint8_t e[8 + 48] = {0};

    t_init(argc, argv);
    T_EQ(move(20, 34 + 20), 8 + 34 + 20);
    T_EQ(move(19, 34 + 20), -EPROTO); /* bytes after the address */
    T_EQ(move(21, 34 + 20), -EPROTO); /* an address past the payload */
    T_EQ(move(0, 34), -EPROTO);       /* empty */
    T_EQ(move(255, 34 + 255), 8 + 34 + 255);
    T_EQ(move(256, 34 + 256), -EMSGSIZE);

    T_EQ(BATON__S_EXPORT_MAX,
         48 + BATON_SESSION_STATE_MAX + 4 * BATON_SESSION_QUEUE_MAX + BATON_SESSION_QUEUE_BYTES);
    /* The smallest EXPORT: no state, no queue: its 48 fixed bytes. */
    baton__s_hdr(e, BATON__S_EXPORT, 48);
    T_EQ(baton__sframe_decode(e, sizeof(e), BATON__S_RX_ANY, &fr), 8 + 48);
    baton__s_hdr(e, BATON__S_EXPORT, BATON__S_EXPORT_MAX + 1);
    T_EQ(baton__sframe_decode(e, 8, BATON__S_RX_ANY, &fr), -EMSGSIZE);

    T_EQ(baton__s_code_err(BATON__SC_REFUSED), -ECANCELED);
    T_EQ(baton__s_err_code(-ECANCELED), BATON__SC_REFUSED);
    T_EQ(baton__s_code_err(BATON__SC_LOST), -ECONNABORTED);
    T_EQ(baton__s_code_err(BATON__SC_TIMEOUT), -ETIMEDOUT);
    return t_done();
}
