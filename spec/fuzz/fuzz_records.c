/* fuzz_records — a file source's record reader (core/source_file.c) over
 * any bytes, as json/lines/raw and as CSV (with and without a header, ','
 * or ';'), with a small max_bytes: it never crashes or loops, every record
 * of a line format points at exactly the bytes of its line in the input
 * (offset, length, 1-based line numbers that rise), and CSV records and
 * malformed ones carry an offset inside the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "batch.h"
#include "source_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const char *const formats[] = { "json", "lines", "raw", "csv" };
    unsigned sel = data[0];
    const char *format = formats[sel & 3];
    int csv = (sel & 3) == 3;
    const uint8_t *in = data + 1;
    size_t n = size - 1;

    int fd = memfd_create("fuzz-records", 0);
    if (fd < 0) abort();
    if (n && write(fd, in, n) != (ssize_t)n) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char *files[1] = { path };
    source_info si;
    memset(&si, 0, sizeof si);
    si.name = "fuzz";
    si.kind = SRC_FILE;
    si.format = (char *)format;
    si.files = files;
    si.nfiles = 1;
    si.header = csv && (sel & 4);
    si.delimiter = (sel & 8) ? ';' : ',';
    si.max_bytes = (sel & 16) ? 64 : 1 << 20;

    char err[256];
    source_reader *r = source_file_open(&si, 0, 0, err, sizeof err);
    if (!r) abort();
    batch *b = batch_create(16);
    int eof = 0, rounds = 0;
    int64_t last_line = 0;
    while (!eof) {
        batch_clear(b);
        int got = source_file_read(r, b, 16, &eof, err, sizeof err);
        if (got < 0) abort();
        for (int i = 0; i < b->n; i++) {
            const eddy_rec *rec = &b->recs[i];
            if (rec->offset < 0 || (size_t)rec->offset > n) abort();
            if (rec->line < 1 || rec->line < last_line) abort();
            last_line = rec->line;
            if (csv || (rec->flags & EDDY_REC_MALFORMED)) continue;
            /* a line record: its bytes are the input's at its offset */
            if ((size_t)rec->offset + rec->val_len > n) abort();
            if (memcmp(b->data + rec->val_off, in + rec->offset, rec->val_len) != 0) abort();
        }
        if (++rounds > 1000000) abort();                /* no progress: a loop */
    }
    if (source_file_position(r) != (int64_t)n) abort();      /* everything was consumed */
    batch_destroy(b);
    source_file_close(r);
    close(fd);
    return 0;
}
