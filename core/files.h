/* files — the state dir's file chores, shared by the units that keep files
 * there (daemon, checkpoint, file sinks): folders made with their parents,
 * small files replaced atomically and durably, trees removed.  Calls only
 * libc. */
#ifndef EDDY_FILES_H
#define EDDY_FILES_H

/* mkdir -p.  0, or -1 with errno. */
int files_mkdirs(const char *dir);
/* fsync of the folder that holds path (a rename or create in it is durable). */
void files_fsync_dir(const char *path);
/* Replaces path by text: a temporary file, fsync, rename, fsync of the
 * folder.  0, or -1 (path unchanged). */
int files_write_durably(const char *path, const char *text);
/* rm -rf (what cannot be removed stays; nothing is reported). */
void files_rm_tree(const char *path);

#endif
