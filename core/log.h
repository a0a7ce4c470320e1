/* log — leveled logging to stderr, as text or JSON lines.  The macros check
 * the level before evaluating their arguments; per-task messages carry a
 * `[task:name]` prefix (log_task_*), and log_ratelimited() lets a caller
 * drop repeats of a per-record message.  Calls nothing else of eddy. */
#ifndef EDDY_LOG_H
#define EDDY_LOG_H

#include <stdint.h>

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

extern int log_level_current;

void log_setup(int level, int json);          /* json: 1 for JSON lines */
int log_level_parse(const char *name);        /* "debug".."error" -> LOG_*, or -1 */
const char *log_level_name(int level);
void log_write(int level, const char *task, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns 1 when a message under `*last_ms`/`*count` may be logged now: at most
 * `burst` per second; the caller keeps the two counters (e.g. per task). */
int log_ratelimited(int64_t *window_start_ms, int *count, int burst);

#define LOG_AT(lvl, task, ...) do { if ((lvl) >= log_level_current) log_write((lvl), (task), __VA_ARGS__); } while (0)
#define log_debug(...) LOG_AT(LOG_DEBUG, NULL, __VA_ARGS__)
#define log_info(...)  LOG_AT(LOG_INFO,  NULL, __VA_ARGS__)
#define log_warn(...)  LOG_AT(LOG_WARN,  NULL, __VA_ARGS__)
#define log_error(...) LOG_AT(LOG_ERROR, NULL, __VA_ARGS__)
#define log_task_debug(t, ...) LOG_AT(LOG_DEBUG, (t), __VA_ARGS__)
#define log_task_info(t, ...)  LOG_AT(LOG_INFO,  (t), __VA_ARGS__)
#define log_task_warn(t, ...)  LOG_AT(LOG_WARN,  (t), __VA_ARGS__)
#define log_task_error(t, ...) LOG_AT(LOG_ERROR, (t), __VA_ARGS__)

#endif
