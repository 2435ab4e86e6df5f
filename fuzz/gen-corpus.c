/* SPDX-License-Identifier: MIT */
/* Writes the seed corpus for fuzz-wire: one valid message of every type,
 * made by the library's own encoders. Run once; the output is committed. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static void put(const char *dir, const char *name, const void *buf, size_t len)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len)
        perror(path);
    if (f)
        fclose(f);
}

int main(int argc, char **argv)
{
    static char buf[BATON__MSG_MAX];
    const char *dir = argc > 1 ? argv[1] : ".";
    size_t len;

    put(dir, "req-takeover", buf, baton__enc_req(buf, BATON__REQ_TAKEOVER, 0, 1234));
    put(dir, "req-upgrade", buf, baton__enc_req(buf, BATON__REQ_UPGRADE, 30000, 1234));
    put(dir, "req-takeover-job", buf,
        baton__enc_req_job(buf, BATON__REQ_TAKEOVER, 0, 1234, 0x0123456789abcdefull));
    put(dir, "hello", buf, baton__enc_hello(buf, 3, 99, 2, 4096, 1700000000000ull));
    put(dir, "state", buf, baton__enc_state(buf, 4096));
    put(dir, "ready", buf, baton__enc_ready(buf, 4321, 1));
    put(dir, "end", buf, baton__enc_empty(buf, BATON__MSG_END));
    put(dir, "commit", buf, baton__enc_empty(buf, BATON__MSG_COMMIT));
    put(dir, "published", buf, baton__enc_empty(buf, BATON__MSG_PUBLISHED));
    put(dir, "result", buf, baton__enc_result(buf, BATON__MSG_RESULT, 0, 4, 77, "ready"));
    put(dir, "error", buf, baton__enc_result(buf, BATON__MSG_ERROR, -16, 0, 0, "busy"));
    len = baton__fds_begin(buf);
    baton__fds_add(buf, &len, 1, "http", "tcp://127.0.0.1:8080");
    baton__fds_add(buf, &len, 3, "admin", "unix:/run/app/admin.sock");
    baton__fds_add(buf, &len, 0, "config", "");
    baton__fds_end(buf, len, 3);
    put(dir, "fds", buf, BATON__HDR_LEN + len);
    len = baton__conn_begin();
    baton__conn_add(buf, &len, 7, "GET / HTTP/1.1\r\n", 16);
    baton__conn_add(buf, &len, 8, "", 0);
    baton__conn_end(buf, len, 2);
    put(dir, "conn", buf, BATON__HDR_LEN + len);
    {
        uint32_t ids[3] = {7, 8, 9};
        put(dir, "ack", buf, baton__enc_ack(buf, ids, 3));
    }
    put(dir, "done", buf, baton__enc_empty(buf, BATON__MSG_DONE));
    return 0;
}
