/* SPDX-License-Identifier: MIT */
/* baton-httpd's request parser (see http-parse.h). */
#include "http-parse.h"

#include <string.h>
#include <strings.h>

static bool is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool all_tchars(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_tchar(p[i]))
            return false;
    return n > 0;
}

/* Lines end in CRLF; a bare LF is accepted as RFC 9112 allows. Returns the
 * start of the next line, or NULL if the line is not complete yet. */
static const char *next_line(const char *p, const char *end, size_t *ret_len)
{
    const char *nl = memchr(p, '\n', end - p);
    size_t n;

    if (!nl)
        return NULL;
    n = nl - p;
    if (n > 0 && p[n - 1] == '\r')
        n--;
    *ret_len = n;
    return nl + 1;
}

static bool token_is(const char *p, size_t n, const char *word)
{
    return n == strlen(word) && strncasecmp(p, word, n) == 0;
}

static int parse_request_line(const char *line, size_t n, struct http_request *req)
{
    const char *end = line + n;
    const char *sp1 = memchr(line, ' ', n);
    const char *target, *sp2, *ver;

    if (!sp1 || !all_tchars(line, sp1 - line))
        return -1;
    target = sp1 + 1;
    sp2 = memchr(target, ' ', end - target);
    if (!sp2 || sp2 == target)
        return -1;
    for (const char *q = target; q < sp2; q++)
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return -1;
    ver = sp2 + 1;
    if (end - ver != 8 || memcmp(ver, "HTTP/1.", 7) != 0 || (ver[7] != '0' && ver[7] != '1'))
        return -1;
    req->http11 = ver[7] == '1';
    req->head_only = sp1 - line == 4 && memcmp(line, "HEAD", 4) == 0;
    req->method_ok = req->head_only || (sp1 - line == 3 && memcmp(line, "GET", 3) == 0);
    return 0;
}

static void parse_connection(const char *v, size_t n, struct http_request *req)
{
    const char *end = v + n;

    while (v < end) {
        const char *comma = memchr(v, ',', end - v);
        const char *stop = comma ? comma : end;
        const char *a = v, *b = stop;

        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (token_is(a, b - a, "close"))
            req->conn_close = true;
        else if (token_is(a, b - a, "keep-alive"))
            req->conn_keep_alive = true;
        v = comma ? comma + 1 : end;
    }
}

static int parse_content_length(const char *v, size_t n, struct http_request *req)
{
    uint64_t len = 0;

    if (n == 0 || n > 15)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        len = len * 10 + (v[i] - '0');
    }
    /* Two different lengths would let a proxy and us disagree on where
     * the next request starts. */
    if (req->has_length && req->body_len != len)
        return -1;
    req->has_length = true;
    req->body_len = len;
    return 0;
}

static int parse_header(const char *line, size_t n, struct http_request *req)
{
    const char *colon = memchr(line, ':', n);
    const char *v, *end = line + n;

    /* A line starting with white space is the obsolete line folding. */
    if (!colon || !all_tchars(line, colon - line))
        return -1;
    v = colon + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (token_is(line, colon - line, "Connection"))
        parse_connection(v, end - v, req);
    else if (token_is(line, colon - line, "Content-Length"))
        return parse_content_length(v, end - v, req);
    else if (token_is(line, colon - line, "Transfer-Encoding"))
        req->status = 501; /* we cannot find the end of a chunked body */
    return 0;
}

int http_parse_request(const char *buf, size_t len, struct http_request *req)
{
    const char *p = buf, *end = buf + len, *line;
    size_t n;

    *req = (struct http_request){0};
    /* Empty lines before a request line are ignored (RFC 9112, 2.2). */
    do {
        line = p;
        p = next_line(p, end, &n);
        if (!p)
            return 0;
    } while (n == 0);
    if (parse_request_line(line, n, req) < 0) {
        req->status = 400;
        return 1;
    }
    for (;;) {
        line = p;
        p = next_line(p, end, &n);
        if (!p)
            return 0;
        if (n == 0)
            break;
        if (parse_header(line, n, req) < 0) {
            req->status = 400;
            return 1;
        }
    }
    req->head_len = p - buf;
    return 1;
}

bool http_keep_alive(const struct http_request *req)
{
    return !req->conn_close && (req->http11 || req->conn_keep_alive);
}
