/* SPDX-License-Identifier: MIT */
/* The session API's error paths, with the exact -errno. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "session-util.h"

static void on_message(void *ctx, baton_session *s, const void *d, size_t l)
{
}

static void on_cmessage(void *ctx, baton_session_client *c, const void *d, size_t l)
{
}

static char logged[512];

static void on_log(void *ctx, int level, const char *msg)
{
    snprintf(logged, sizeof(logged), "%s", msg);
    t_log("logged: %s", msg);
}

int main(int argc, char **argv)
{
    struct baton_session_server_options o = {.on_message = on_message};
    struct baton_session_client_options co = {.on_message = on_cmessage};
    baton_session_server *srv = NULL;
    baton_session_client *c = NULL;
    static char big[BATON_SESSION_MSG_MAX + 1];
    char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
    struct ts_server t;

    t_init(argc, argv);
    ts_server_start(&t, "T", TS_KEY);

    T_EQ(baton_session_server_new(NULL, t.lfd, -1, &srv), -EINVAL);
    T_EQ(baton_session_server_new(&o, -1, -1, &srv), -EINVAL);
    T_EQ(baton_session_server_new(&o, t.lfd, -1, NULL), -EINVAL);
    o.key = "short";
    o.key_len = 5;
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    o.key = NULL;
    o.key_len = 0;
    T_EQ(baton_session_server_new(&o, t.lfd, t.pfd, &srv), -EINVAL); /* peer fd needs a key */
    o.on_message = NULL;
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    T_ASSERT(srv == NULL);
    o.on_message = on_message;
    o.resv[0] = 1; /* reserved room must be zero */
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    o.resv[0] = 0;
    /* TLS unless explicitly insecure: neither is -EINVAL, and the log
     * says what is missing; a file that cannot be loaded is named. */
    o.log = on_log;
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    T_ASSERT(strstr(logged, "tls_cert_file"));
    snprintf(cert, sizeof(cert), "%s/server.pem", ts_tls_dir());
    snprintf(key, sizeof(key), "%s/server.key", ts_tls_dir());
    snprintf(ca, sizeof(ca), "%s/ca.pem", ts_tls_dir());
    o.tls_cert_file = cert;
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL); /* no key */
    o.tls_key_file = ca;                                          /* not a key */
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    T_ASSERT(strstr(logged, ca));
    o.tls_key_file = "/nonexistent/server.key";
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    T_ASSERT(strstr(logged, "/nonexistent/server.key"));
    o.tls_key_file = key;
    o.tls_ca_file = "/nonexistent/ca.pem";
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    T_ASSERT(strstr(logged, "/nonexistent/ca.pem"));
    o.tls_ca_file = ca;
    o.insecure = 1; /* insecure and TLS at once: which did they mean? */
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    o.insecure = 0;
    T_ASSERT(srv == NULL);
    T_OK(baton_session_server_new(&o, t.lfd, -1, &srv));
    baton_session_server_free(srv);
    srv = NULL;
    o.tls_cert_file = o.tls_key_file = o.tls_ca_file = NULL;
    o.insecure = 1;
    T_OK(baton_session_server_new(&o, t.lfd, -1, &srv));
    T_EQ(baton_session_move(srv, "x", NULL, 0), -EINVAL); /* no key */
    baton_session_server_free(srv);
    baton_session_server_free(NULL);

    T_EQ(baton_session_server_add_peer(t.srv, "p", "tcp://nohost:1", t.addr), -EINVAL);
    T_EQ(baton_session_server_add_peer(t.srv, "p", "unix:/x", t.addr), -EINVAL);
    T_EQ(baton_session_server_add_peer(t.srv, "p", t.paddr, "tcp://1.2.3.4:99999"), -EINVAL);
    T_EQ(baton_session_server_add_peer(t.srv, "", t.paddr, t.addr), -EINVAL);
    T_OK(baton_session_server_add_peer(t.srv, "p", t.paddr, t.addr));
    T_EQ(baton_session_server_add_peer(t.srv, "p", t.paddr, t.addr), -EEXIST);
    T_EQ(baton_session_move(t.srv, "nobody", NULL, 0), -ENOENT);
    T_EQ(baton_session_move(t.srv, "p", NULL, 3), -EINVAL);
    T_EQ(baton_session_move(t.srv, "p", NULL, 0), 0); /* no sessions */
    T_EQ(baton_session_server_dispatch(NULL), -EINVAL);
    T_EQ(baton_session_server_fd(NULL), -EINVAL);
    T_EQ(baton_session_send(NULL, "x", 1), -EINVAL);
    T_EQ(baton_session_close(NULL), -EINVAL);

    T_EQ(baton_session_client_connect(NULL, t.addr, &c), -EINVAL);
    co.log = on_log;
    co.tls_ca_file = "/nonexistent/ca.pem";
    T_EQ(baton_session_client_connect(&co, t.addr, &c), -EINVAL);
    T_ASSERT(strstr(logged, "/nonexistent/ca.pem"));
    co.tls_ca_file = ca;
    co.insecure = 1;
    T_EQ(baton_session_client_connect(&co, t.addr, &c), -EINVAL);
    co.tls_ca_file = NULL;
    co.tls_server_name = "x";
    T_EQ(baton_session_client_connect(&co, t.addr, &c), -EINVAL);
    co.tls_server_name = NULL;
    co.resv[0] = 1;
    T_EQ(baton_session_client_connect(&co, t.addr, &c), -EINVAL);
    co.resv[0] = 0;
    T_EQ(baton_session_client_connect(&co, "tcp://localhost:1", &c), -EINVAL);
    T_EQ(baton_session_client_connect(&co, "127.0.0.1:1", &c), -EINVAL);
    co.on_message = NULL;
    T_EQ(baton_session_client_connect(&co, t.addr, &c), -EINVAL);
    co.on_message = on_cmessage;
    T_ASSERT(c == NULL);
    T_OK(baton_session_client_connect(&co, t.addr, &c));
    T_EQ(baton_session_client_send(c, big, sizeof(big)), -EMSGSIZE);
    T_EQ(baton_session_client_send(c, NULL, 1), -EINVAL);
    for (int i = 0; i < BATON_SESSION_QUEUE_MAX; i++)
        T_OK(baton_session_client_send(c, "x", 1));
    T_EQ(baton_session_client_send(c, "x", 1), -ENOBUFS);
    T_EQ(baton_session_client_alive(c), 1);
    T_OK(baton_session_client_close(c));
    T_EQ(baton_session_client_alive(c), 0);
    T_EQ(baton_session_client_send(c, "x", 1), -ENOTCONN);
    T_EQ(baton_session_client_close(c), -ENOTCONN);
    baton_session_client_free(c);
    baton_session_client_free(NULL);
    T_STREQ(baton_session_strerror(-ECONNABORTED),
            "session lost (its server went away before handing it on)");
    ts_server_stop(&t);
    return t_done();
}
