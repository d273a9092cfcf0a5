/* map.h - a string-keyed hash map (chaining, power-of-two buckets).
 *
 * Keys are copied; values are opaque pointers the caller owns. Iteration order
 * is unspecified. Used for the key cache, the live-object cache and the
 * workqueue's dedupe set. */
#ifndef CB_MAP_H
#define CB_MAP_H

#include <stdbool.h>
#include <stddef.h>

struct map_entry {
    struct map_entry *next;
    size_t hash;
    void *value;
    char key[]; /* NUL-terminated copy */
};

struct map {
    /* private */
    struct map_entry **buckets;
    size_t nbuckets; /* 0 or a power of two */
    /* read-only */
    size_t count;
};

#define MAP_INIT                                                                                   \
    { NULL, 0, 0 }

void *map_get(const struct map *m, const char *key);
bool map_has(const struct map *m, const char *key);
/* Insert or replace. On replace, *old (if given) receives the previous value.
 * Returns 0, or -1 when out of memory (the map is unchanged). */
int map_put(struct map *m, const char *key, void *value, void **old);
/* Remove; returns the value or NULL. */
void *map_del(struct map *m, const char *key);
/* Free the map's own memory; values are the caller's (free them first with
 * map_foreach if needed). */
void map_free(struct map *m);

struct map_iter {
    const struct map *m;
    size_t bucket;
    struct map_entry *e;
};
void map_iter_init(struct map_iter *it, const struct map *m);
/* Returns the next entry or NULL. Do not modify the map while iterating,
 * except deleting the entry just returned. */
struct map_entry *map_iter_next(struct map_iter *it);

#endif
