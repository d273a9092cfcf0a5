/* list.h - one intrusive doubly linked list, for every "list of things in
 * flight" (HTTP requests and sockets, server connections, source writes, API
 * calls, queued work items).
 *
 * A node is embedded in the element; the list head is a node of its own, so
 * an empty list points at itself and insert/remove never test for NULL.
 * list_remove leaves the node pointing at itself, so removing twice is safe
 * and list_linked tells whether a node is on a list. Nothing here allocates.
 *
 *     struct call { struct list_node link; ... };
 *     struct list_node calls;          list_init(&calls);
 *     list_push_back(&calls, &c->link);
 *     list_for_each_safe(n, next, &calls) {
 *         struct call *c = list_entry(n, struct call, link);
 *         ...              (may list_remove(n) and free c)
 *     } */
#ifndef CB_LIST_H
#define CB_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_node {
    struct list_node *prev, *next;
};

#define list_entry(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))

/* Walk the list; the _safe form allows removing (and freeing) the current node. */
#define list_for_each(n, head) for (struct list_node *n = (head)->next; n != (head); n = n->next)
#define list_for_each_safe(n, nx, head)                                                            \
    for (struct list_node *n = (head)->next, *nx = n->next; n != (head); n = nx, nx = n->next)

/* A head, or a node not on any list. */
static inline void list_init(struct list_node *n) {
    n->prev = n->next = n;
}

static inline bool list_empty(const struct list_node *head) {
    return head->next == head;
}

/* True when n is on a list (it was initialised and not removed since). */
static inline bool list_linked(const struct list_node *n) {
    return n->next != n;
}

static inline void list_push_back(struct list_node *head, struct list_node *n) {
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void list_push_front(struct list_node *head, struct list_node *n) {
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}

/* Unlink n (a no-op when it is on no list); n is left as list_init makes it. */
static inline void list_remove(struct list_node *n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    list_init(n);
}

/* The first node, or NULL when the list is empty. */
static inline struct list_node *list_first(const struct list_node *head) {
    return list_empty(head) ? NULL : head->next;
}

#endif
