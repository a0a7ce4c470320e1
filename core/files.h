/* files — the state dir's file chores, shared by the units that keep files
 * there (daemon, checkpoint, file sinks): folders made with their parents,
 * small files replaced atomically and durably, trees removed.  Calls only
 * libc. */
#ifndef EDDY_FILES_H
#define EDDY_FILES_H

#include <stddef.h>

/* mkdir -p.  0, or -1 with errno. */
int files_mkdirs(const char *dir);
/* fsync of the folder that holds path (a rename or create in it is durable). */
void files_fsync_dir(const char *path);
/* Replaces path by text: a temporary file, fsync, rename, fsync of the
 * folder.  0, or -1 (path unchanged). */
int files_write_durably(const char *path, const char *text);
/* rm -rf (what cannot be removed stays; nothing is reported). */
void files_rm_tree(const char *path);

/* Takes the state dir's lock: an exclusive flock on dir/lock, with this
 * process's pid written into it, held until the process ends (or execs: the
 * descriptor is close-on-exec, and the new image takes it again).  0, or -1
 * with err naming the folder and, when another process holds it, its pid. */
int files_lock_dir(const char *dir, char *err, size_t errlen);

#endif
