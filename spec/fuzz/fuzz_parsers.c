/* fuzz_parsers — the duration, size and time parsers (config_parse_duration,
 * config_parse_size, eddy_parse_time) on any string: they accept or refuse,
 * never crash, and what they accept is in range (a time within years
 * 1-9999, a duration and a size not negative). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ffi_api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    int64_t v;
    if (config_parse_duration(s, &v) == 0 && v < 0) abort();
    if (config_parse_size(s, &v) == 0 && v < 0) abort();
    if (eddy_parse_time(s, size, &v) == 0 && (v < EDDY_TS_MIN || v > EDDY_TS_MAX)) abort();
    if (eddy_parse_duration(s, &v) == 0 && v < 0) abort();
    free(s);
    return 0;
}
