/* acks — when a source position may be committed.  A marker from a source
 * partition travels behind its records through every task downstream (a
 * CH_MARK on the channels); each task reports it once the outputs it made
 * before the marker were acknowledged by its sinks (file and stdout sinks:
 * written; Kafka sinks: delivered, or refused and handed to the error
 * policy).  Once every task the marker reaches has reported, each record
 * before it has had all its outputs acknowledged, and its position can be
 * committed (at_least_once).  Calls kafka (sink acknowledgements). */
#ifndef EDDY_ACKS_H
#define EDDY_ACKS_H

#include <stdint.h>
#include "pipeline.h"

struct kafka_sink;
typedef struct acks acks;

/* Called when a marker is complete, on the thread whose report or poll completed it. */
typedef void (*acks_done_fn)(void *ud, int source_task, uint64_t marker, int64_t position);

/* Counts, for each source stage of p, the reports a marker from it needs.
 * Owned, or NULL. */
acks *acks_create(const plan *p, acks_done_fn done, void *ud);
void acks_destroy(acks *a);       /* NULL is a no-op */
/* A new marker from task source_task of source stage `stage`, at `position`
 * (the offset after the last record sent before it).  Returns its id (> 0),
 * or 0 when out of memory.  Any thread. */
uint64_t acks_begin(acks *a, int stage, int source_task, int64_t position);
/* A task passed marker id: everything it wrote before it is written, and the
 * n Kafka sinks in ks hold messages up to their current sequence number.
 * Any thread. */
void acks_report(acks *a, uint64_t id, struct kafka_sink *const *ks, int n);
/* Counts the reports whose Kafka sinks have delivered (event loop). */
void acks_poll(acks *a);
/* Markers still waiting for reports (status, tests). */
int acks_pending(acks *a);

#endif
