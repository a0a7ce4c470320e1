/* batch — a batch of records: an array of eddy_rec and one byte arena that
 * holds their keys and values.  Batches are the unit that crosses channels
 * and the C/Lua boundary.  Calls nothing but malloc. */
#ifndef EDDY_BATCH_H
#define EDDY_BATCH_H

#include "ffi_api.h"

#define TS_NONE INT64_MIN

typedef struct batch {
    eddy_rec *recs;
    int n, cap;
    char *data;
    size_t len, dcap;
} batch;

batch *batch_create(int cap);        /* owned; NULL on allocation failure */
void batch_destroy(batch *b);        /* NULL is a no-op */
void batch_clear(batch *b);
/* Appends a record with a copy of key and value; returns it (borrowed, valid
 * until the next append), or NULL on allocation failure. */
eddy_rec *batch_add(batch *b, const void *key, size_t klen, const void *val, size_t vlen);
/* Reserves n bytes at the end of the arena and returns their offset, or -1. */
long batch_reserve(batch *b, size_t n);


#endif
