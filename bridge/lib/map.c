/* map.c - string-keyed hash map; see map.h. FNV-1a hashing, chaining. */
#include "bridge/lib/map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

static struct map_entry **find_slot(const struct map *m, const char *key, size_t h) {
    if (!m->nbuckets)
        return NULL;
    struct map_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && strcmp((*pp)->key, key) == 0))
        pp = &(*pp)->next;
    return pp;
}

void *map_get(const struct map *m, const char *key) {
    struct map_entry **pp = find_slot(m, key, hash_str(key));
    return pp && *pp ? (*pp)->value : NULL;
}

bool map_has(const struct map *m, const char *key) {
    struct map_entry **pp = find_slot(m, key, hash_str(key));
    return pp && *pp;
}

static int grow(struct map *m) {
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    struct map_entry **b = calloc(n, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct map_entry *e = m->buckets[i];
        while (e) {
            struct map_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

int map_put(struct map *m, const char *key, void *value, void **old) {
    size_t h = hash_str(key);
    struct map_entry **pp = find_slot(m, key, h);
    if (pp && *pp) {
        if (old)
            *old = (*pp)->value;
        (*pp)->value = value;
        return 0;
    }
    if (old)
        *old = NULL;
    if (m->count + 1 > m->nbuckets * 3 / 4 && grow(m) < 0)
        return -1;
    size_t klen = strlen(key);
    struct map_entry *e = malloc(sizeof *e + klen + 1);
    if (!e)
        return -1;
    memcpy(e->key, key, klen + 1);
    e->hash = h;
    e->value = value;
    size_t i = h & (m->nbuckets - 1);
    e->next = m->buckets[i];
    m->buckets[i] = e;
    m->count++;
    return 0;
}

void *map_del(struct map *m, const char *key) {
    struct map_entry **pp = find_slot(m, key, hash_str(key));
    if (!pp || !*pp)
        return NULL;
    struct map_entry *e = *pp;
    void *v = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

void map_free(struct map *m) {
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct map_entry *e = m->buckets[i];
        while (e) {
            struct map_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->count = 0;
}

void map_iter_init(struct map_iter *it, const struct map *m) {
    it->m = m;
    it->bucket = 0;
    it->e = NULL;
}

struct map_entry *map_iter_next(struct map_iter *it) {
    /* it->e is the entry to return next; fetch its successor before handing
     * it out so the caller may delete it. */
    while (!it->e) {
        if (it->bucket >= it->m->nbuckets)
            return NULL;
        it->e = it->m->buckets[it->bucket++];
    }
    struct map_entry *cur = it->e;
    it->e = cur->next;
    return cur;
}
