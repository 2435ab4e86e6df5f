/* SPDX-License-Identifier: MIT */
/*
 * An intrusive doubly linked list, as the Linux kernel, liburing and libuv
 * keep theirs: the node lives in the object, so adding and removing never
 * allocate, and an object removes itself without knowing which list holds
 * it. A list head is a node of its own that no object surrounds; an empty
 * list, and a node on no list, point at themselves.
 */
#ifndef BATON_SESSION_LIST_H
#define BATON_SESSION_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct baton__list {
    struct baton__list *next, *prev;
};

/* An empty list, or a node that is on none. Every head, and every node
 * that baton__list_empty() or baton__list_del() may see before it was
 * added, starts this way. */
static inline void baton__list_init(struct baton__list *l)
{
    l->next = l->prev = l;
}

/* For a head: the list is empty. For a node: it is on no list. */
static inline bool baton__list_empty(const struct baton__list *l)
{
    return l->next == l;
}

static inline void baton__list_insert(struct baton__list *n, struct baton__list *prev,
                                      struct baton__list *next)
{
    n->next = next;
    n->prev = prev;
    prev->next = n;
    next->prev = n;
}

/* At the front: iteration then visits the newest first. */
static inline void baton__list_add(struct baton__list *head, struct baton__list *n)
{
    baton__list_insert(n, head, head->next);
}

/* At the back: a queue, iterated in the order of arrival. */
static inline void baton__list_add_tail(struct baton__list *head, struct baton__list *n)
{
    baton__list_insert(n, head->prev, head);
}

/* Off whatever list holds n. n is left on none, so removing it again, or
 * removing a node that was never added (but initialised), does nothing. */
static inline void baton__list_del(struct baton__list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    baton__list_init(n);
}

/* The object of type whose member is the node ptr. */
#define baton__list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* The first object on a list that is not empty. */
#define baton__list_first(head, type, member) baton__list_entry((head)->next, type, member)

/* Every object on the list, front to back: pos is the object, member its
 * node. The loop body must not remove pos; baton__list_foreach_safe() is
 * for that. */
#define baton__list_foreach(pos, head, member)                                                     \
    for (pos = baton__list_entry((head)->next, __typeof__(*pos), member); &pos->member != (head);  \
         pos = baton__list_entry(pos->member.next, __typeof__(*pos), member))

/* The same, but the body may remove (and free) pos: tmp already holds the
 * next one. The body must not remove tmp, which only the body's own code
 * can see coming: a loop whose body runs callbacks that may end other
 * objects moves what it visits to a list of its own first. */
#define baton__list_foreach_safe(pos, tmp, head, member)                                           \
    for (pos = baton__list_entry((head)->next, __typeof__(*pos), member),                          \
        tmp = baton__list_entry(pos->member.next, __typeof__(*pos), member);                       \
         &pos->member != (head);                                                                   \
         pos = tmp, tmp = baton__list_entry(tmp->member.next, __typeof__(*pos), member))

#endif
