/* SPDX-License-Identifier: MIT */
/*
 * Peer links between servers: the peers a server knows (add_peer), the
 * link it opens to one, the mutual HMAC handshake on links both ways, the
 * frames each way once authenticated, and a link going down.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server-internal.h"

struct peer *baton__srv_peer_find(baton_session_server *srv, const char *name)
{
    struct peer *p;

    baton__list_foreach(p, &srv->peers, node) if (strcmp(p->name, name) == 0) return p;
    return NULL;
}

BATON_SESSION_EXPORT int baton_session_server_add_peer(baton_session_server *srv, const char *name,
                                                       const char *peer_address,
                                                       const char *client_address)
{
    struct baton__saddr ca;
    struct peer *p;

    if (!srv || !name || !*name || strlen(name) > BATON_SESSION_NAME_MAX || !client_address)
        return -EINVAL;
    if (baton__srv_peer_find(srv, name))
        return -EEXIST;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (baton__saddr_parse(peer_address, &p->addr) < 0 ||
        baton__saddr_parse(client_address, &ca) < 0) {
        baton__srv_set_err(srv, BATON_SESSION_LOG_ERR, "peer %s: malformed address", name);
        free(p);
        return -EINVAL;
    }
    strcpy(p->name, name);
    strcpy(p->client_addr, client_address);
    baton__list_init(&p->waiting);
    baton__list_init(&p->offered);
    baton__list_add(&srv->peers, &p->node);
    return 0;
}

int baton__srv_peer_connect(baton_session_server *srv, struct peer *p)
{
    int fd = baton__s_connect(&p->addr);
    struct slink *k;

    if (fd < 0) {
        baton__srv_set_err(srv, BATON_SESSION_LOG_ERR, "peer %s: socket: %s", p->name,
                           strerror(-fd));
        return fd;
    }
    k = baton__srv_link_new(srv, fd, L_PEER_OUT);
    if (!k) {
        close(fd);
        return -ENOMEM;
    }
    k->peer = p;
    k->pstate = P_CONNECTING;
    p->link = k;
    if (srv->tls_peer_out) {
        /* By certificates: the next server proves the deployment's peer
         * name, or the address we dial. By the key: the PSK proves it. */
        char host[64];
        const char *name = srv->o.tls_peer_name;
        if (!srv->o.tls_ca_file)
            name = NULL;
        else if (!name || !*name)
            baton__saddr_host(&p->addr, host, sizeof(host)), name = host;
        if (baton__slink_tls(&k->l, srv->tls_peer_out, false, name, NULL) < 0) {
            baton__srv_peer_down(srv, p, -ENOMEM);
            return -ENOMEM;
        }
    }
    if (baton__slink_watch(&k->l, srv->epfd, k) < 0) {
        baton__srv_peer_down(srv, p, -ENOMEM);
        return -ENOMEM;
    }
    return 0;
}

void baton__srv_peer_down(baton_session_server *srv, struct peer *p, int err)
{
    const char *tls = p->link ? p->link->l.tls_why : NULL;

    if (tls)
        baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING,
                           "peer %s: link down: TLS: %s%s; moves called off", p->name, tls,
                           err == -EACCES && !srv->o.tls_ca_file ? ": wrong key" : "");
    else
        baton__srv_set_err(
            srv, BATON_SESSION_LOG_WARNING, "peer %s: link down: %s; moves called off", p->name,
            err == -EACCES ? "authentication failed: wrong key" : baton_session_strerror(err));
    baton__srv_pmsgs_drop(srv, p);
    if (p->link) {
        struct slink *k = p->link;
        k->peer = NULL;
        baton__srv_link_kill(srv, k);
        p->link = NULL;
        /* Remote sessions that forwarded on it end (on_close says so). */
        baton__srv_fwd_link_down(srv, k);
    }
    baton__srv_moves_fail(srv, p, err);
}

static void peer_send_hello(struct slink *k)
{
    uint8_t *p = baton__slink_put(&k->l, BATON__S_PHELLO, 32);

    if (p && baton__s_random(k->nonce_out, 32) == 0)
        memcpy(p, k->nonce_out, 32);
    k->pstate = P_WAIT_CHAL;
}

int baton__srv_peer_connected(baton_session_server *srv, struct slink *k)
{
    int e = 0;
    socklen_t el = sizeof(e);

    getsockopt(k->l.fd, SOL_SOCKET, SO_ERROR, &e, &el);
    if (e) {
        baton__srv_set_err(srv, BATON_SESSION_LOG_WARNING, "peer %s: connect: %s",
                           k->peer ? k->peer->name : "?", strerror(e));
        baton__srv_peer_error(srv, k, -e, NULL);
        return -e;
    }
    k->l.connected = true;
    peer_send_hello(k);
    return 0;
}

/* Mutual challenge-response: the connecting side sends a nonce; the
 * accepting side answers with its nonce and a MAC over both; the
 * connecting side checks it and answers with its own MAC over both. The
 * labels differ so that one MAC cannot be reflected as the other. */
static int on_peer_auth(baton_session_server *srv, struct slink *k, const struct baton__sframe *f)
{
    uint8_t mac[32], *p;

    if (k->l.kind == L_PEER_IN && k->pstate == P_WAIT_HELLO && f->type == BATON__S_PHELLO) {
        memcpy(k->nonce_in, f->u.auth.nonce, 32);
        if (baton__s_random(k->nonce_out, 32) < 0 ||
            baton__s_hmac(srv->key, srv->o.key_len, "baton-s-accept", k->nonce_in, k->nonce_out,
                          mac) < 0)
            return -EIO;
        p = baton__slink_put(&k->l, BATON__S_PCHAL, 64);
        if (!p)
            return -ENOMEM;
        memcpy(p, k->nonce_out, 32);
        memcpy(p + 32, mac, 32);
        k->pstate = P_WAIT_AUTH;
        return 0;
    }
    if (k->l.kind == L_PEER_IN && k->pstate == P_WAIT_AUTH && f->type == BATON__S_PAUTH) {
        if (baton__s_hmac(srv->key, srv->o.key_len, "baton-s-connect", k->nonce_in, k->nonce_out,
                          mac) < 0)
            return -EIO;
        if (!baton__s_equal(mac, f->u.auth.mac, 32))
            return -EACCES;
        k->pstate = P_READY;
        k->deadline = 0;
        baton__slink_allow(&k->l, BATON__S_RX_PEER);
        return 0;
    }
    if (k->l.kind == L_PEER_OUT && k->pstate == P_WAIT_CHAL && f->type == BATON__S_PCHAL) {
        memcpy(k->nonce_in, f->u.auth.nonce, 32);
        if (baton__s_hmac(srv->key, srv->o.key_len, "baton-s-accept", k->nonce_out, k->nonce_in,
                          mac) < 0)
            return -EIO;
        if (!baton__s_equal(mac, f->u.auth.mac, 32))
            return -EACCES;
        if (baton__s_hmac(srv->key, srv->o.key_len, "baton-s-connect", k->nonce_out, k->nonce_in,
                          mac) < 0)
            return -EIO;
        p = baton__slink_put(&k->l, BATON__S_PAUTH, 32);
        if (!p)
            return -ENOMEM;
        memcpy(p, mac, 32);
        k->pstate = P_READY;
        k->deadline = 0;
        baton__slink_allow(&k->l, BATON__S_RX_NEXT);
        if (k->peer) {
            baton__srv_pmsgs_send(srv, k->peer);
            baton__srv_peer_offer(srv, k->peer);
        }
        return 0;
    }
    return -EPROTO;
}

/* On a link another server opened to us we are the next server
 * (server-take.c); on one we opened, the current server
 * (server-move.c). */
int baton__srv_on_peer_frame(baton_session_server *srv, struct slink *k,
                             const struct baton__sframe *f)
{
    if (f->type == BATON__S_CLOSE)
        return baton__s_code_err(f->u.close.code) ?: -ECONNRESET;
    if (k->pstate != P_READY)
        return on_peer_auth(srv, k, f);
    if (k->l.kind == L_PEER_IN) {
        if (f->type == BATON__S_OFFER)
            baton__srv_on_offer(srv, k, f);
        else if (f->type == BATON__S_EXPORT)
            baton__srv_on_export(srv, k, f);
        else if (f->type == BATON__S_REFUSE)
            baton__srv_on_refuse(srv, f);
        else if (f->type == BATON__S_FORWARD || f->type == BATON__S_FLUSH ||
                 f->type == BATON__S_RELEASE || f->type == BATON__S_PMSG)
            baton__srv_on_fwd_frame(srv, k, f);
        else
            return -EPROTO;
        return 0;
    }
    if (f->type == BATON__S_OFFERED && k->peer)
        baton__srv_on_offered(k->peer, f->u.offer.batch);
    else if (f->type == BATON__S_TAKE)
        baton__srv_on_take(srv, k, f);
    else if (f->type == BATON__S_TAKEN)
        baton__srv_on_taken(srv, k, f->u.welcome.id);
    else if (f->type == BATON__S_DECLINE)
        baton__srv_on_declined(srv, k, f->u.welcome.id);
    else if (f->type == BATON__S_GONE)
        baton__srv_on_fwd_frame(srv, k, f);
    else
        return -EPROTO;
    return 0;
}

/* A link that another server opened to us is anyone's to open, so its
 * refusals are logged once per episode; a link we opened is our own
 * peer's, and its failure calls moves off (baton__srv_peer_down() logs
 * that). */
void baton__srv_peer_error(baton_session_server *srv, struct slink *k, int err, const char *what)
{
    char who[64], text[BATON__S_TEXT_MAX];
    bool told = what != NULL; /* a bad frame, which nothing else logs */

    if (!what)
        what = err == -EACCES      ? "authentication failed: wrong key"
               : err == -ETIMEDOUT ? "no authentication within the handshake deadline"
                                   : baton_session_strerror(err);
    if (k->dead || err == -ECONNRESET)
        ; /* it ended, nothing was refused */
    else if (k->l.kind == L_PEER_IN)
        baton__srv_refuse_log(srv, err == -ETIMEDOUT ? EP_DEADLINE : EP_PEER,
                              "peer link from %s%s closed: %s",
                              baton__srv_link_who(k, who, sizeof(who)),
                              k->pstate == P_READY ? "" : " (not authenticated)", what);
    else if (told || err == -EACCES) /* baton__srv_peer_down() logs the rest */
        baton__srv_set_err(srv, err == -EACCES ? BATON_SESSION_LOG_ERR : BATON_SESSION_LOG_WARNING,
                           "peer link to %s closed: %s", k->peer ? k->peer->name : "?", what);
    if (!k->dead && err != -ECONNRESET) {
        baton__s_fmt(text, sizeof(text), "%s: %s", what, baton_session_strerror(err));
        baton__slink_put_close(&k->l, err == -EACCES ? BATON__SC_AUTH : baton__s_err_code(err),
                               err == -EACCES ? "peer authentication failed: wrong key" : text);
    }
    (void)baton__slink_flush(&k->l);
    baton__srv_link_kill(srv, k);
    if (k->l.kind == L_PEER_IN)
        baton__srv_take_peer_down(srv, k);
    else if (k->peer)
        baton__srv_peer_down(srv, k->peer, err);
}
