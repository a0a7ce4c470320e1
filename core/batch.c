#include "batch.h"
#include <stdlib.h>
#include <string.h>

batch *batch_create(int cap) {
    batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->cap = cap > 0 ? cap : 16;
    b->dcap = 64 * 1024;
    b->recs = malloc(sizeof *b->recs * b->cap);
    b->data = malloc(b->dcap);
    if (!b->recs || !b->data) { batch_destroy(b); return NULL; }
    return b;
}

void batch_destroy(batch *b) {
    if (!b) return;
    free(b->recs);
    free(b->data);
    free(b);
}

void batch_clear(batch *b) { b->n = 0; b->len = 0; }

long batch_reserve(batch *b, size_t n) {
    if (b->len + n > b->dcap) {
        size_t ncap = b->dcap * 2;
        while (ncap < b->len + n) ncap *= 2;
        char *d = realloc(b->data, ncap);
        if (!d) return -1;
        b->data = d;
        b->dcap = ncap;
    }
    long off = (long)b->len;
    b->len += n;
    return off;
}

eddy_rec *batch_add(batch *b, const void *key, size_t klen, const void *val, size_t vlen) {
    if (klen > UINT32_MAX || vlen > UINT32_MAX) return NULL;     /* eddy_rec's lengths */
    if (b->n == b->cap) {
        int ncap = b->cap * 2;
        eddy_rec *r = realloc(b->recs, sizeof *r * ncap);
        if (!r) return NULL;
        b->recs = r;
        b->cap = ncap;
    }
    long off = batch_reserve(b, klen + vlen);
    if (off < 0) return NULL;
    if (klen) memcpy(b->data + off, key, klen);
    if (vlen) memcpy(b->data + off + klen, val, vlen);
    eddy_rec *r = &b->recs[b->n++];
    memset(r, 0, sizeof *r);
    r->ts = TS_NONE;
    r->wm = TS_NONE;
    r->port = -1;
    r->key_off = (uint64_t)off;
    r->key_len = (uint32_t)klen;
    r->val_off = (uint64_t)off + klen;
    r->val_len = (uint32_t)vlen;
    return r;
}
