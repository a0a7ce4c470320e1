-- eddy.ffi — the ffi.cdef matching core/ffi_api.h (between FFI-BEGIN and
-- FFI-END there); spec/unit/ffi_spec.lua checks that the two agree.
local ffi = require("ffi")

local M = {}
M.cdef = [[
typedef struct eddy_rec {
    int64_t ts;
    int64_t wm;
    int64_t offset;
    int64_t line;
    uint32_t key_off, key_len;
    uint32_t val_off, val_len;
    int32_t partition;
    int16_t port;
    int16_t flags;
    uint32_t kg;
    uint32_t source;
} eddy_rec;

typedef struct eddy_io {
    const eddy_rec *recs;
    const char *data;
    int32_t n;
    int32_t cur;
    int32_t cur_node;
    int32_t in_call;
    uint64_t seq;
    uint64_t *node_in;
    uint64_t *node_out;
    uint64_t errors, skipped, dead_letters;
} eddy_io;

int eddy_sink_write(void *task, int32_t sink, const char *p, size_t n);
int eddy_dead_letter(void *task, const char *p, size_t n);
void eddy_log(void *task, int32_t level, int32_t limited, const char *msg);
]]

ffi.cdef(M.cdef)
M.REC_MALFORMED = 1
M.REC_PACKED = 2
return M
