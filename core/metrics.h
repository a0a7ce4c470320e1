/* metrics — writing the Prometheus text exposition format: one # HELP and
 * # TYPE header per family, then samples with escaped label values.  The
 * daemon calls these from its /metrics handler; no state is kept here. */
#ifndef EDDY_METRICS_H
#define EDDY_METRICS_H

#include <stdint.h>

struct evbuffer;

/* type: "counter" or "gauge".  Writes "# HELP name help\n# TYPE name type\n". */
void metrics_family(struct evbuffer *out, const char *name, const char *type, const char *help);

/* Writes one sample: name{k1="v1",k2="v2"} value.  labels is a NULL-terminated
 * array of alternating keys and values (may be NULL for no labels); values
 * are escaped (\\, \", \n) as the format requires. */
void metrics_sample(struct evbuffer *out, const char *name, const char *const *labels, double value);

#endif
