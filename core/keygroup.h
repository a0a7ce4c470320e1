/* keygroup — a key's key group and the task that owns it.  key group =
 * murmur2(key) % max_parallelism (librdkafka's murmur2, the Java client's
 * default partitioner hash, so eddy and Kafka agree); key groups map to tasks
 * in contiguous ranges, as Flink does, so state moves in whole ranges.
 * Exports eddy_keygroup to the Lua runtime (ffi_api.h).  Calls librdkafka. */
#ifndef EDDY_KEYGROUP_H
#define EDDY_KEYGROUP_H

#include <stddef.h>
#include <stdint.h>

uint32_t keygroup_of(const void *key, size_t len, int max_parallelism);
int keygroup_task(uint32_t kg, int max_parallelism, int parallelism);
/* The first and one-past-last key group owned by `task`. */
void keygroup_range(int task, int max_parallelism, int parallelism, uint32_t *lo, uint32_t *hi);

#endif
