-- eddy.runtime.c — the C functions the runtime calls through the FFI
-- (core/ffi_api.h, declared by eddy.ffi).  Every runtime file takes them from
-- here, so a unit spec can put a fake in package.loaded["eddy.runtime.c"]
-- before it requires the runtime (spec/unit/fake_native.lua).
-- Calls: eddy.ffi (the cdef).
require("eddy.ffi")
return require("ffi").C
