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
    uint64_t key_off, val_off;
    uint32_t key_len, val_len;
    int32_t partition;
    int16_t port;
    int16_t flags;
    uint32_t kg;
    uint32_t source;
    uint64_t hdr_off;
    uint32_t hdr_len;
} eddy_rec;

typedef struct eddy_io {
    eddy_rec *recs;
    const char *data;
    int32_t n;
    int32_t cur;
    int32_t cur_node;
    int32_t in_call;
    int32_t channel;
    uint64_t seq;
    uint64_t errors, skipped, dead_letters;
    int64_t *chan_wm;
    uint8_t *chan_idle;
    int64_t wm;
    int64_t maxts;
} eddy_io;

typedef struct eddy_fired {
    const char *key;
    size_t klen;
    int64_t start, end;
    double count, sum, min, max;
    const char *state;
    size_t state_len;
} eddy_fired;

typedef struct eddy_window_info {
    const char *key;
    size_t klen;
    int64_t start, end;
    int64_t mark;
    double count;
    int32_t dirty;
    int32_t due;
} eddy_window_info;

void *eddy_window_open(void *task, const char *uid, int64_t size, int64_t advance, int64_t offset,
                       int64_t lateness);
int eddy_window_add(void *w, const char *key, size_t klen, int64_t ts, double x);
void eddy_window_drop_late(void *w);
int32_t eddy_window_assign(void *w, int64_t ts, int64_t *starts, int32_t max);
const char *eddy_window_state(void *w, const char *key, size_t klen, int64_t start, size_t *len);
int32_t eddy_window_store(void *w, const char *key, size_t klen, int64_t start, const char *p, size_t n, int32_t mode,
                          double *count);
int32_t eddy_window_session_find(void *w, const char *key, size_t klen, int64_t ts, int64_t *starts, int32_t max,
                                 int64_t *range);
int32_t eddy_window_session_put(void *w, const char *key, size_t klen, const int64_t *starts, int32_t n,
                                int64_t start, int64_t end, const char *p, size_t plen);
int32_t eddy_window_add_at(void *w, const char *key, size_t klen, int64_t start, double x, double *count);
int32_t eddy_window_fire(void *w, const char *key, size_t klen, int64_t start, int32_t purge);
int32_t eddy_window_list(void *w, eddy_window_info *info, int32_t max);
void eddy_window_mark(void *w, const char *key, size_t klen, int64_t start, int64_t mark);
void eddy_window_keep_unfired(void *w);
void eddy_task_wants_ticks(void *task);
int32_t eddy_window_advance(void *w, int64_t wm);
const eddy_fired *eddy_window_fired(void *w, int32_t i);

int64_t eddy_now_ms(void);
int eddy_parse_duration(const char *s, int64_t *ms);
int eddy_parse_time(const char *s, size_t n, int64_t *ms);

int eddy_sink_write(void *task, int32_t sink, const char *p, size_t n);
int eddy_sink_write_kv(void *task, int32_t sink, const char *key, size_t klen, const char *p, size_t n, int64_t ts,
                       int32_t carry);
const char *eddy_sink_error(void *task, int32_t sink);
int eddy_dead_letter(void *task, const char *p, size_t n);
void eddy_log(void *task, int32_t level, int32_t limited, const char *msg);

void eddy_state_mark(void *tx);
void eddy_state_undo(void *tx);
int32_t eddy_dedup(void *tx, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t ts, int64_t ttl_ms);
int32_t eddy_timer_set(void *ix, const char *uid, uint32_t kg, const char *key, size_t klen, int32_t kind, int64_t ts);
int32_t eddy_timer_del(void *ix, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t ts);
uint32_t eddy_keygroup(const char *key, size_t len, int32_t max_parallelism);
]]

-- once per VM: a second load (busted reloads modules) must not redefine the types
if not pcall(ffi.typeof, "eddy_rec") then ffi.cdef(M.cdef) end
M.REC_MALFORMED = 1
M.REC_PACKED = 2
M.REC_KEY = 8
M.REC_TOMBSTONE = 16

-- Puts FFI calls in the `native` table core/lua_api.c built, in place of the
-- classic functions for the runtime's per-record scalar calls (keygroup,
-- state_mark, state_undo, dedup, timer_set, timer_del): a classic
-- lua_CFunction ends the JIT's trace, an FFI call is compiled into it.  The
-- C side is exported by the module that owns the data (ffi_api.h).  Each
-- replacement takes the FFI path when its arguments have the types the
-- runtime passes, and otherwise calls the classic function, which converts
-- them or raises the same "bad argument" error as before.  An FFI call cannot
-- raise: a -1 (out of memory) is raised here with the classic function's
-- message.  native.state_tx and native.timers (lightuserdata: the task's
-- state_tx and timer_index) are absent when there is no state store; then
-- the state calls stay classic (they raise "keyed state is not available
-- here").  Returns native.
local C = ffi.C
local byte, type, error = string.byte, type, error

function M.bind_native(native)
  local maxp = native.max_parallelism
  local keygroup = native.keygroup
  if type(maxp) == "number" and keygroup then
    native.keygroup = function(key)
      if type(key) ~= "string" then return keygroup(key) end
      return C.eddy_keygroup(key, #key, maxp)
    end
  end
  if native.state_tx == nil or native.timers == nil then return native end
  local tx = ffi.cast("void *", native.state_tx)
  local ix = ffi.cast("void *", native.timers)
  native.state_mark = function() C.eddy_state_mark(tx) end
  native.state_undo = function() C.eddy_state_undo(tx) end
  local dedup, timer_set, timer_del = native.dedup, native.timer_set, native.timer_del
  native.dedup = function(uid, kg, key, ts, ttl)
    if type(uid) ~= "string" or type(kg) ~= "number" or type(key) ~= "string" or type(ts) ~= "number"
      or type(ttl) ~= "number" then
      return dedup(uid, kg, key, ts, ttl)
    end
    local rc = C.eddy_dedup(tx, uid, kg, key, #key, ts, ttl)
    if rc < 0 then error("out of memory", 0) end
    return rc == 1
  end
  native.timer_set = function(uid, kg, key, kind, ts)
    if type(uid) ~= "string" or type(kg) ~= "number" or type(key) ~= "string" or type(kind) ~= "string"
      or type(ts) ~= "number" then
      return timer_set(uid, kg, key, kind, ts)
    end
    if C.eddy_timer_set(ix, uid, kg, key, #key, byte(kind) or 0, ts) < 0 then error("out of memory", 0) end
  end
  native.timer_del = function(uid, kg, key, ts)
    if type(uid) ~= "string" or type(kg) ~= "number" or type(key) ~= "string" or type(ts) ~= "number" then
      return timer_del(uid, kg, key, ts)
    end
    if C.eddy_timer_del(ix, uid, kg, key, #key, ts) < 0 then error("out of memory", 0) end
  end
  return native
end

return M
