/* shuffle — key_by across instances through Kafka (shuffle = "kafka"):
 * the names of a keyed stage's repartition topic and of a stateful
 * operator's changelog topic, the frames a repartition topic carries
 * (records and the watermark, idle and end marks of the tasks that write
 * it), and this instance's id (state.dir/instance).  See contract.md,
 * "Scale-out with state".  Calls batch and pipeline (the plan). */
#ifndef EDDY_SHUFFLE_H
#define EDDY_SHUFFLE_H

#include <stddef.h>
#include <stdint.h>
#include "batch.h"
#include "config.h"

/* "<name>-<uid>-repartition" and "<name>-<uid>-changelog". */
void shuffle_repartition_topic(const config *cfg, const char *uid, char *out, size_t n);
void shuffle_changelog_topic(const config *cfg, const char *uid, char *out, size_t n);

/* Under shuffle = "kafka": gives every keyed stage of p a Kafka source
 * reading its repartition topic (source_info.repartition, one partition
 * per keyed task, stage.source its index), named after the uid of the
 * stage's first key_by.  0, or -1 with err. */
struct plan;
int shuffle_plan(struct plan *p, const config *cfg, char *err, size_t errlen);
/* The repartition topic of keyed stage st (NULL when it has none). */
struct stage;
const char *shuffle_stage_topic(const struct plan *p, const struct stage *st);

/* standby = n: whether instance `me` keeps a warm copy of the keyed task
 * that is partition `partition` of `topic`, given the group's members (as
 * kgroup_members describes them): the n instances after its owner, in the
 * order of their ids, do.  0 when no one owns it, or me does. */
#include <jansson.h>
int shuffle_standby_of(json_t *members, const char *me, const char *topic, int partition, int n);

/* This instance's id: read from state.dir/instance, or made (16 hex digits
 * from /dev/urandom) and written there on the first run.  0, or -1 with err. */
int shuffle_instance_id(const char *state_dir, char out[17], char *err, size_t errlen);

/* ---- frames ---------------------------------------------------------------
 * A repartition message's value is a frame: a fixed header (little-endian)
 * then, for a record, its headers and its value.  Its key is the record's
 * key.  kind: a record, or a mark of upstream task `input` (its index among
 * the keyed stage's inputs, as a channel's would be in one process). */
enum { FRAME_RECORD = 0, FRAME_WATERMARK = 1, FRAME_IDLE = 2, FRAME_END = 3 };
#define FRAME_MAGIC 0xED

typedef struct frame {
    int kind;
    uint32_t input;
    int64_t value;                 /* a record: the watermark before it; a watermark mark: the watermark */
    /* records only: */
    int64_t ts;
    int16_t port;
    uint32_t kg, source;
    int32_t partition;
    int64_t offset, line;
    const char *hdrs; size_t hlen; /* borrowed from the frame's bytes */
    const char *val; size_t vlen;
} frame;

/* The frame of record r (of batch b) sent by upstream input `input`, into
 * buf (grown with realloc; *cap its size).  Its length, or -1. */
long frame_encode_record(const batch *b, const eddy_rec *r, uint32_t input, char **buf, size_t *cap);
/* A mark's frame into out (at least FRAME_MARK_LEN bytes); its length. */
#define FRAME_MARK_LEN 16
size_t frame_encode_mark(int kind, uint32_t input, int64_t value, char *out);
/* Decodes p[0..n).  0, or -1 when it is not a frame. */
int frame_decode(const char *p, size_t n, frame *f);

#endif
