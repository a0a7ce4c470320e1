/* metrics — the Prometheus text exposition format (version 0.0.4).  See
 * metrics.h; everything here appends to a caller's evbuffer. */
#include "metrics.h"

#include <math.h>
#include <string.h>

#include <event2/buffer.h>

/* Appends s with backslash and newline escaped, and double quote too when
 * quote is set (label values escape all three, HELP text only the first two). */
static void add_escaped(struct evbuffer *out, const char *s, int quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '\n')
            esc = "\\n";
        else if (*s == '"' && quote)
            esc = "\\\"";
        if (!esc)
            continue;
        evbuffer_add(out, run, (size_t)(s - run));
        evbuffer_add(out, esc, 2);
        run = s + 1;
    }
    evbuffer_add(out, run, (size_t)(s - run));
}

/* Integral values print as integers ("42", not "42.0" or "4.2e+01"); the
 * rest as %.17g, which reads back to the same double. */
static void add_value(struct evbuffer *out, double v)
{
    if (isnan(v))
        evbuffer_add(out, "NaN", 3);
    else if (isinf(v))
        evbuffer_add_printf(out, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v == trunc(v) && fabs(v) < 9e18)   /* fits a long long exactly */
        evbuffer_add_printf(out, "%lld", (long long)v);
    else
        evbuffer_add_printf(out, "%.17g", v);
}

void metrics_family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s ", name);
    add_escaped(out, help ? help : "", 0);
    evbuffer_add_printf(out, "\n# TYPE %s %s\n", name, type);
}

void metrics_sample(struct evbuffer *out, const char *name, const char *const *labels, double value)
{
    evbuffer_add(out, name, strlen(name));
    if (labels && labels[0]) {
        evbuffer_add(out, "{", 1);
        for (int i = 0; labels[i]; i += 2) {
            const char *v = labels[i + 1];
            evbuffer_add_printf(out, "%s%s=\"", i ? "," : "", labels[i]);
            add_escaped(out, v ? v : "", 1);
            evbuffer_add(out, "\"", 1);
            if (!v)     /* an odd-length array ends here */
                break;
        }
        evbuffer_add(out, "}", 1);
    }
    evbuffer_add(out, " ", 1);
    add_value(out, value);
    evbuffer_add(out, "\n", 1);
}
