/* follow — wakes the tasks of followed files (`follow = true`) as soon as
 * one of those files changes (inotify on their folders), so an appended
 * record is read at once, not at the event loop's next poll tick (10 ms).
 * The tick stays, for what inotify does not see (network file systems).
 * Calls libevent, pipeline (the sources' files), log. */
#ifndef EDDY_FOLLOW_H
#define EDDY_FOLLOW_H

#include "pipeline.h"

struct event_base;
typedef struct follow follow;

/* Watches the folders of every followed file of plan p; wake(ud) runs on
 * the event loop when one of those files (or a new file in one of those
 * folders) changes.  NULL when p follows no file, or inotify refused
 * (logged: the poll tick then does it alone). */
follow *follow_open(struct event_base *base, const plan *p, void (*wake)(void *ud), void *ud);
void follow_close(follow *f);      /* NULL is a no-op */

#endif
