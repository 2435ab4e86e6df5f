/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for baton-httpd's request parser (examples/http-parse.c),
 * driven as the server drives it: pipelined requests parsed one after the
 * other, each body skipped. Built with clang -fsanitize=fuzzer by `make
 * fuzz`; fuzz/regress.c runs the same entry point over fuzz/corpus/http in
 * `make check` with any compiler.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http-parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so that ASan catches any read
     * past the end of the input. */
    char *copy = malloc(size ? size : 1);
    struct http_request req;
    size_t off = 0;

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    while (off < size && http_parse_request(copy + off, size - off, &req) == 1) {
        if (req.status != 0)
            break; /* the server answers the error and closes */
        /* A complete head lies inside the input and ends the line it is on. */
        if (req.head_len == 0 || req.head_len > size - off || copy[off + req.head_len - 1] != '\n')
            abort();
        if (req.head_only && !req.method_ok)
            abort(); /* HEAD is a method we answer */
        (void)http_keep_alive(&req);
        off += req.head_len;
        off += req.body_len < size - off ? req.body_len : size - off;
    }
    free(copy);
    return 0;
}
