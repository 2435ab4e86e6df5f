/* SPDX-License-Identifier: MIT */
/*
 * A chat room split across two servers while its members move between
 * them (issue #16 part 2): every member gets every post once, in each
 * poster's order, however often it moves.
 *
 * The room's home is A (keep_moved). Every member posts at the server it
 * is at; B relays what its members post to A over the servers' channel
 * (baton_session_server_send_peer()), and A sends each post to every
 * member's handle, here or remote: a remote handle forwards it to the
 * server that holds the member. Meanwhile the servers move members both
 * ways: A half of the room to B, then in turn B some back and A some more
 * out, every MOVE_EVERY_MS. Each server runs in a thread of its own, as
 * it would in a process of its own, so that their events interleave as
 * they would between hosts (a post sent to a member while it leaves, a
 * relay that crosses a move).
 *
 * Each client checks that each poster's posts come in order with no gap
 * or repeat, and at the end that it has every post of every poster.
 * Before forwarding, the same room (each server sending to the members it
 * held, relaying to the other) missed 45 to 966 posts per move.
 *
 * Usage: test-session-room [MEMBERS [POSTS]]
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "session-util.h"

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define MAX_MEMBERS   64
#define POST_EVERY_MS 20
#define MOVE_EVERY_MS 100

struct room {
    struct ts_server t; /* first: ctx is &t */
    bool home;
    baton_session *members[MAX_MEMBERS * 2];
    int nmembers;
    long long relayed, broadcast, send_errors;
    unsigned seed; /* rand_r(): each server's thread its own */
};

static struct room a, b;
static struct ts_server *srvs[] = {&a.t, &b.t, NULL};
static struct ts_client cl[MAX_MEMBERS];
static int members = 30, posts = 100;
static int last[MAX_MEMBERS][MAX_MEMBERS]; /* [member][poster]: the last post seen */
static long long got_total, order_errors;

static void add_member(struct room *r, baton_session *s)
{
    for (int i = 0; i < r->nmembers; i++)
        if (r->members[i] == s)
            return;
    T_ASSERT(r->nmembers < MAX_MEMBERS * 2);
    r->members[r->nmembers++] = s;
}

static void drop_member(struct room *r, baton_session *s)
{
    for (int i = 0; i < r->nmembers; i++)
        if (r->members[i] == s) {
            r->members[i] = r->members[--r->nmembers];
            return;
        }
}

/* At home: to every member, wherever it is. */
static void broadcast(struct room *r, const void *data, size_t len)
{
    for (int i = 0; i < r->nmembers; i++) {
        int e = baton_session_send(r->members[i], data, len);
        if (e < 0) {
            t_log("home: send to %s: %s", baton_session_id(r->members[i]),
                  baton_session_strerror(e));
            r->send_errors++;
        }
    }
    r->broadcast++;
}

static void r_open(void *ctx, baton_session *s)
{
    add_member(ctx, s);
}

static void r_message(void *ctx, baton_session *s, const void *data, size_t len)
{
    struct room *r = ctx;
    (void)s;

    if (r->home) {
        broadcast(r, data, len);
        return;
    }
    if (baton_session_server_send_peer(r->t.srv, "A", data, len) < 0)
        r->send_errors++;
    r->relayed++;
}

static void r_peer_message(void *ctx, const void *data, size_t len)
{
    struct room *r = ctx;

    T_ASSERT(r->home);
    broadcast(r, data, len);
}

static void r_close(void *ctx, baton_session *s, int err)
{
    struct room *r = ctx;

    if (err != -ESHUTDOWN)
        t_log("%s: session %s ended: %s", r->t.name, baton_session_id(s),
              baton_session_strerror(err));
    drop_member(r, s);
}

static int r_import(void *ctx, baton_session *s, const void *d, size_t len)
{
    (void)d, (void)len;
    /* At home this is a handle it has (the member came back): no change.
     * At B it is a member to move on later. */
    add_member(ctx, s);
    return 0;
}

static void r_moved(void *ctx, baton_session *s, int err)
{
    struct room *r = ctx;

    /* The home keeps the handle (keep_moved): it forwards. B lets go. */
    if (err == 0 && !r->home)
        drop_member(r, s);
}

static struct room *starting;
static void server_hook(struct baton_session_server_options *o)
{
    o->on_open = starting->home ? r_open : NULL;
    o->on_message = r_message;
    o->on_close = r_close;
    o->export_state = NULL;
    o->import_state = r_import;
    o->on_moved = r_moved;
    o->on_move_done = NULL;
    o->on_peer_message = r_peer_message;
    o->keep_moved = starting->home;
}

static void cli_message(void *ctx, baton_session_client *c, const void *d, size_t len)
{
    struct ts_client *tc = ctx;
    int me = (int)(tc - cl), poster, seq;
    char buf[32];
    (void)c;

    if (len >= sizeof(buf) ||
        (memcpy(buf, d, len), buf[len] = 0, sscanf(buf, "P %d %d", &poster, &seq) != 2) ||
        poster < 0 || poster >= members) {
        tc->errors++;
        return;
    }
    if (seq != last[me][poster] + 1) {
        if (order_errors++ < 10)
            t_log("member %d: post %d of %d after %d", me, seq, poster, last[me][poster]);
        tc->errors++;
    }
    if (seq > last[me][poster])
        last[me][poster] = seq;
    got_total++;
}

static void client_hook(struct baton_session_client_options *o)
{
    o->on_message = cli_message;
}

static void start(struct room *r, const char *name, bool home)
{
    starting = r;
    r->home = home; /* server_hook reads it */
    ts_server_start(&r->t, name, TS_KEY);
}

static bool all_joined(void *arg)
{
    (void)arg;
    for (int i = 0; i < members; i++)
        if (!*baton_session_client_id(cl[i].c))
            return false;
    return true;
}

static bool all_delivered(void *arg)
{
    (void)arg;
    return got_total == (long long)members * members * posts;
}

/* Move up to n of r's members that are here to the other server. */
static int move_some(struct room *r, const char *to, int n)
{
    baton_session *list[MAX_MEMBERS];
    int k = 0;

    for (int i = 0; i < r->nmembers && k < n; i++)
        if (baton_session_state(r->members[i]) == BATON_SESSION_HERE && rand_r(&r->seed) % 2 == 0)
            list[k++] = r->members[i];
    return k ? baton_session_move(r->t.srv, to, list, (size_t)k) : 0;
}

static atomic_bool stop, posting;
static int64_t t0;
static int move_calls[2], moved[2];

/* A server's thread: dispatch, and move members on its turns: move k is
 * at t0 + k * MOVE_EVERY_MS, A's the even ones (the first: half the room
 * to B), B's the odd ones (a third of its members back to A). */
static void *server_thread(void *arg)
{
    struct room *r = arg;
    int me = r->home ? 0 : 1;
    int64_t k = me;

    while (!atomic_load(&stop)) {
        struct pollfd p = {baton_session_server_fd(r->t.srv), POLLIN, 0};
        (void)poll(&p, 1, 2);
        T_OK(baton_session_server_dispatch(r->t.srv));
        if (atomic_load(&posting) && now_ms() >= t0 + k * MOVE_EVERY_MS) {
            int n = move_some(r, r->home ? "B" : "A", k == 0 ? members / 2 : members / 3);
            T_GE(n, 0);
            moved[me] += n;
            move_calls[me]++;
            k += 2;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int sent[MAX_MEMBERS] = {0};
    pthread_t th[2];

    if (argc > 1)
        members = atoi(argv[1]);
    if (argc > 2)
        posts = atoi(argv[2]);
    T_ASSERT(members > 1 && members <= MAX_MEMBERS && posts > 0);
    a.seed = 42;
    b.seed = 43;
    ts_server_opts_hook = server_hook;
    ts_client_opts_hook = client_hook;
    start(&a, "A", true);
    start(&b, "B", false);
    ts_server_peer(&a.t, "B", &b.t);
    ts_server_peer(&b.t, "A", &a.t);
    for (int i = 0; i < members; i++)
        ts_client_start(&cl[i], a.t.addr);
    T_ASSERT(ts_pump_until(srvs, cl, members, all_joined, NULL, 10000));
    T_EQ(a.nmembers, members);

    t0 = now_ms();
    atomic_store(&posting, true);
    T_ASSERT(pthread_create(&th[0], NULL, server_thread, &a) == 0);
    T_ASSERT(pthread_create(&th[1], NULL, server_thread, &b) == 0);
    for (int64_t now = t0; now - t0 < 60000; now = now_ms()) {
        int done = 0;
        int64_t slot = (now - t0) / POST_EVERY_MS;
        for (int i = 0; i < members; i++) {
            /* Each member posts once per slot, until it posted them all. */
            if (sent[i] < posts && sent[i] <= slot) {
                char buf[32];
                int n = snprintf(buf, sizeof(buf), "P %d %d", i, sent[i] + 1);
                T_OK(baton_session_client_send(cl[i].c, buf, (size_t)n));
                sent[i]++;
            }
            done += sent[i] == posts;
        }
        if (done == members)
            break;
        ts_pump(NULL, cl, members, 2);
    }
    atomic_store(&posting, false);
    T_ASSERT(ts_pump_until(NULL, cl, members, all_delivered, NULL, 30000));
    atomic_store(&stop, true);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);

    long long errors = 0, lost = 0, client_moves = 0;
    for (int i = 0; i < members; i++) {
        errors += cl[i].errors;
        lost += cl[i].lost;
        client_moves += cl[i].moves;
        for (int p = 0; p < members; p++)
            T_EQ(last[i][p], posts);
    }
    t_log("room: %d members, %d posts each, %lld deliveries; %d + %d move calls, %d + %d "
          "sessions moved (%lld client moves); %lld posts relayed by B; %lld errors, %lld lost",
          members, posts, got_total, move_calls[0], move_calls[1], moved[0], moved[1], client_moves,
          b.relayed, errors, lost);
    T_EQ(errors, 0);
    T_EQ(lost, 0);
    T_EQ(a.send_errors, 0);
    T_EQ(b.send_errors, 0);
    T_GT(b.relayed, 0);
    T_GT(client_moves, members);
    T_EQ(got_total, (long long)members * members * posts);
    for (int i = 0; i < members; i++)
        ts_client_stop(&cl[i]);
    ts_server_stop(&a.t);
    ts_server_stop(&b.t);
    return 0;
}
