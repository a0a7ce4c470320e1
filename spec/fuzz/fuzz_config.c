/* fuzz_config — the config loader (config_load) over any file content: it
 * loads or refuses with an error message, never crashes or hangs (a config
 * is evaluated under an instruction limit). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/eddy-fuzz-config.%d.lua", (int)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    char err[512];
    err[0] = 0;
    config *c = config_load(path, err, sizeof err);
    if (c) config_destroy(c);
    else if (!err[0]) abort();                          /* a refusal says why */
    return 0;
}
