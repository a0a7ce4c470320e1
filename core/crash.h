/* crash — what eddy does when user code crashes the process (a SIGSEGV,
 * SIGBUS, SIGILL or SIGFPE inside a task's Lua call: FFI code under
 * sandbox.ffi, or a fault in a library it called).  The process cannot go
 * on, but the crash must not repeat on every start: the handler writes the
 * record's position to state.dir/poison.json, as the watchdog does for a
 * call it cannot interrupt, so the next start hands that record to the
 * error policy; then it says what crashed, where, and exits 1.  A crash
 * outside a user call is left to the default action (a core dump).  Reads
 * the running task through vm_current_owner(); calls only libc in the
 * handler. */
#ifndef EDDY_CRASH_H
#define EDDY_CRASH_H

/* Installs the handlers; poison_path is copied.  Once per process. */
void crash_install(const char *poison_path);
/* Gives the calling thread an alternate signal stack, so that a crash by
 * stack overflow can still be handled.  Once per thread that runs Lua. */
void crash_thread_init(void);

#endif
