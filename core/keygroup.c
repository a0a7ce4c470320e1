/* keygroup — key -> key group -> task.  The hash is librdkafka's Java-
 * compatible murmur2 partitioner, so a key lands in the key group whose
 * number equals the Kafka partition the Java client would choose for it with
 * max_parallelism partitions; key groups are dealt to tasks in contiguous
 * ranges with Flink's formula.  Callers pass max_parallelism >= 1 and
 * 1 <= parallelism; 64-bit products keep the formulas exact. */
#include "keygroup.h"
#include "ffi_api.h"

#include <librdkafka/rdkafka.h>

uint32_t keygroup_of(const void *key, size_t len, int max_parallelism)
{
    /* (murmur2(key) & 0x7fffffff) % n; the topic and opaques are unused. */
    return (uint32_t)rd_kafka_msg_partitioner_murmur2(NULL, key, len, max_parallelism, NULL, NULL);
}

/* The FFI export (ffi_api.h): the runtime's per-record keygroup(key). */
uint32_t eddy_keygroup(const char *key, size_t len, int32_t max_parallelism)
{
    return keygroup_of(key, len, max_parallelism);
}

int keygroup_task(uint32_t kg, int max_parallelism, int parallelism)
{
    return (int)((uint64_t)kg * (uint64_t)parallelism / (uint64_t)max_parallelism);
}

/* task t owns kg  <=>  t <= kg*p/maxp < t+1  <=>  t*maxp <= kg*p < (t+1)*maxp
 * <=>  ceil(t*maxp/p) <= kg < ceil((t+1)*maxp/p).  A task gets an empty range
 * (lo == hi) when parallelism > max_parallelism. */
void keygroup_range(int task, int max_parallelism, int parallelism, uint32_t *lo, uint32_t *hi)
{
    uint64_t maxp = (uint64_t)max_parallelism, p = (uint64_t)parallelism, t = (uint64_t)task;

    *lo = (uint32_t)((t * maxp + p - 1) / p);
    *hi = (uint32_t)(((t + 1) * maxp + p - 1) / p);
}
