/* SPDX-License-Identifier: MIT */
/*
 * baton-httpd's request parser: the request line, the headers it acts on
 * (Connection, Content-Length, Transfer-Encoding) and the keep-alive
 * decision. No allocation and no state between calls; it reads only the
 * len bytes it is given (fuzz/fuzz-http.c checks that under ASan).
 */
#ifndef BATON_EXAMPLES_HTTP_PARSE_H
#define BATON_EXAMPLES_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_request {
    size_t head_len;   /* request line and headers, blank line included */
    uint64_t body_len; /* Content-Length */
    int status;        /* 0, or the error to answer before closing */
    bool http11;
    bool conn_close;      /* Connection: close */
    bool conn_keep_alive; /* Connection: keep-alive (matters for HTTP/1.0) */
    bool has_length;
    bool head_only; /* HEAD */
    bool method_ok; /* GET or HEAD */
};

/*
 * Parses one request head at buf. Returns 0 when it is not complete yet, 1
 * when it is: req->status is then 0, or the error to answer before closing
 * (400 malformed, 501 a Transfer-Encoding, whose chunked body we cannot
 * delimit); on an error req->head_len is meaningless. A body of
 * req->body_len bytes follows the head.
 */
int http_parse_request(const char *buf, size_t len, struct http_request *req);

/* Does the client want the connection kept open after the answer? */
bool http_keep_alive(const struct http_request *req);

#endif
