/* versions — the kept versions of the pipeline: state.dir/versions/<N>/,
 * one folder per accepted version of this run (the one eddy started with
 * and each accepted reload), holding the script's bytes and the .lua files
 * beside it as they were when it was accepted, and version.json (its
 * number, sha256 and when it was loaded).  Keeps the last
 * reload.keep_versions; picks one by number or sha256 prefix (reload --to).
 * File work only, on the event loop; calls pipeline (the content hash) and
 * jansson.  The reload policy (reload.c) decides when. */
#ifndef EDDY_VERSIONS_H
#define EDDY_VERSIONS_H

#include <stddef.h>
#include <stdint.h>
#include "pipeline.h"

typedef struct version_info {
    int version;
    char sha256[65];
    int64_t loaded_at_ms;   /* wall clock */
    char script[256];       /* the script's name in the copy (as in the pipeline's folder) */
} version_info;

/* Empties state.dir/versions (the kept versions of an earlier run: version
 * numbers start again at 1 with each run) and creates it.  0, or -1 with err. */
int versions_reset(const char *state_dir, char *err, size_t errlen);

/* Keeps accepted version `version` of plan p (its sha256 p->hash): copies
 * the script's bytes (p->text, or p->script) and every .lua file beside the
 * script into versions/<version>/, checks that the copy hashes to p->hash
 * (a file changed while it was copied: nothing is kept, -1), writes
 * version.json, then trims to the newest `keep`.  0, or -1 with err. */
int versions_keep(const char *state_dir, int version, const plan *p, int64_t loaded_at_ms, int keep, char *err,
                  size_t errlen);

/* reload --to, before planning: copies kept version `from` (its script and
 * modules) to versions/<version>/, the folder the new version will be
 * read from, without version.json (a folder without one is not a kept
 * version).  Fills script_out with the copy's script.  0, or -1 with err. */
int versions_stage(const char *state_dir, const version_info *from, int version, char *script_out, size_t outlen,
                   char *err, size_t errlen);
/* The staged version was accepted: writes its version.json (sha256 as
 * given) and trims to the newest `keep`.  Refused: versions_drop. */
int versions_commit(const char *state_dir, int version, const char *sha256, const char *script, int64_t loaded_at_ms,
                    int keep, char *err, size_t errlen);
void versions_drop(const char *state_dir, int version);   /* removes versions/<version>/ */

/* The kept versions, oldest first, into an owned array (free()).  Returns
 * their count (0 when there are none), or -1 with err. */
int versions_list(const char *state_dir, version_info **out, char *err, size_t errlen);

/* Which of the kept versions v[0..n) `spec` names: a version number, or a
 * prefix (4 to 64 hex digits, any case) of a sha256.  A number that is not
 * a kept version's is tried as a prefix when it is long enough.  Several
 * versions with the same content: the newest.  Returns the index, or one of
 * the negative VERSIONS_* with err saying why. */
enum { VERSIONS_UNKNOWN = -1, VERSIONS_AMBIGUOUS = -2, VERSIONS_MALFORMED = -3 };
int versions_pick(const version_info *v, int n, const char *spec, char *err, size_t errlen);

#endif
