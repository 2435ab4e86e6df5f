/* SPDX-License-Identifier: MIT */
/* The session API's error paths, with the exact -errno. */
#include <errno.h>
#include <string.h>

#include "session-util.h"

static void on_message(void *ctx, baton_session *s, const void *d, size_t l)
{
}

static void on_cmessage(void *ctx, baton_session_client *c, const void *d, size_t l)
{
}

int main(int argc, char **argv)
{
    struct baton_session_server_options o = {.on_message = on_message};
    struct baton_session_client_options co = {.on_message = on_cmessage};
    baton_session_server *srv = NULL;
    baton_session_client *c = NULL;
    static char big[BATON_SESSION_MSG_MAX + 1];
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
    o.resv[7] = 1; /* reserved room must be zero */
    T_EQ(baton_session_server_new(&o, t.lfd, -1, &srv), -EINVAL);
    o.resv[7] = 0;
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
