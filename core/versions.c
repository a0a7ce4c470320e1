#include "versions.h"
#include "files.h"
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define MANIFEST "version.json"

/* snprintf that says when the path did not fit: 0, or -1 (truncated). */
__attribute__((format(printf, 3, 4)))
static int fmt(char *out, size_t n, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    int k = vsnprintf(out, n, f, ap);
    va_end(ap);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

static void folder_of(const char *state_dir, int version, char *out, size_t n) {
    if (version > 0) fmt(out, n, "%s/versions/%d", state_dir, version);
    else fmt(out, n, "%s/versions", state_dir);
}

static int copy_file(const char *from, const char *to, char *err, size_t errlen) {
    FILE *in = fopen(from, "rb"), *out = NULL;
    char buf[65536];
    size_t n;
    int rc = -1;
    if (!in) { snprintf(err, errlen, "cannot read %s: %s", from, strerror(errno)); goto err; }
    if (!(out = fopen(to, "wb"))) { snprintf(err, errlen, "cannot write %s: %s", to, strerror(errno)); goto err; }
    struct stat st;                       /* the same mode: a config beside the script may hold the admin token */
    if (fstat(fileno(in), &st) == 0) fchmod(fileno(out), st.st_mode & 0777);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) { snprintf(err, errlen, "cannot write %s: %s", to, strerror(errno)); goto err; }
    if (ferror(in)) { snprintf(err, errlen, "cannot read %s", from); goto err; }
    rc = 0;
err:
    if (in) fclose(in);
    if (out && fclose(out) != 0 && rc == 0) { snprintf(err, errlen, "cannot write %s: %s", to, strerror(errno)); rc = -1; }
    return rc;
}

/* A fresh, empty versions/<version>/. */
static int make_folder(const char *state_dir, int version, char *dir, size_t n, char *err, size_t errlen) {
    char top[PATH_MAX];
    folder_of(state_dir, 0, top, sizeof top);
    folder_of(state_dir, version, dir, n);
    if (mkdir(top, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", top, strerror(errno));
        return -1;
    }
    files_rm_tree(dir);
    if (mkdir(dir, 0755) < 0) { snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno)); return -1; }
    return 0;
}

static int write_manifest(const char *dir, int version, const char *sha256, const char *script, int64_t loaded_at_ms,
                          char *err, size_t errlen) {
    char path[PATH_MAX];
    fmt(path, sizeof path, "%s/" MANIFEST, dir);
    json_t *j = json_pack("{s:i, s:s, s:I, s:s}", "version", version, "sha256", sha256, "loaded_at",
                          (json_int_t)loaded_at_ms, "script", script);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    int rc = text ? files_write_durably(path, text) : -1;
    free(text);
    if (rc < 0) { snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno)); return -1; }
    return 0;
}

static int by_version(const void *a, const void *b) {
    const version_info *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

int versions_list(const char *state_dir, version_info **out, char *err, size_t errlen) {
    char top[PATH_MAX];
    folder_of(state_dir, 0, top, sizeof top);
    *out = NULL;
    DIR *dh = opendir(top);
    if (!dh) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "cannot read %s: %s", top, strerror(errno));
        return -1;
    }
    version_info *v = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dh))) {
        char *end;
        long num = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || num < 1 || num > INT_MAX) continue;
        char path[PATH_MAX];
        if (fmt(path, sizeof path, "%s/%s/" MANIFEST, top, e->d_name) < 0) continue;
        json_t *j = json_load_file(path, 0, NULL);
        const char *sha = json_string_value(json_object_get(j, "sha256"));
        const char *script = json_string_value(json_object_get(j, "script"));
        if (!sha || strlen(sha) != 64 || !script || json_integer_value(json_object_get(j, "version")) != num) {
            json_decref(j);                     /* being staged, or not one of ours */
            continue;
        }
        if (n == cap) {
            version_info *nv = realloc(v, sizeof *v * (cap = cap ? cap * 2 : 8));
            if (!nv) { json_decref(j); free(v); closedir(dh); snprintf(err, errlen, "out of memory"); return -1; }
            v = nv;
        }
        version_info *vi = &v[n++];
        vi->version = (int)num;
        snprintf(vi->sha256, sizeof vi->sha256, "%s", sha);
        snprintf(vi->script, sizeof vi->script, "%s", script);
        vi->loaded_at_ms = json_integer_value(json_object_get(j, "loaded_at"));
        json_decref(j);
    }
    closedir(dh);
    if (n) qsort(v, n, sizeof *v, by_version);
    *out = v;
    return n;
}

/* Removes the oldest kept versions beyond the newest `keep`. */
static void trim(const char *state_dir, int keep) {
    version_info *v;
    char err[256], dir[PATH_MAX];
    int n = versions_list(state_dir, &v, err, sizeof err);
    for (int i = 0; i < n - keep; i++) {
        folder_of(state_dir, v[i].version, dir, sizeof dir);
        files_rm_tree(dir);
    }
    free(v);
}

int versions_reset(const char *state_dir, char *err, size_t errlen) {
    char top[PATH_MAX];
    folder_of(state_dir, 0, top, sizeof top);
    files_rm_tree(top);
    if (mkdir(top, 0755) < 0) { snprintf(err, errlen, "cannot create %s: %s", top, strerror(errno)); return -1; }
    return 0;
}

int versions_keep(const char *state_dir, int version, const plan *p, int64_t loaded_at_ms, int keep, char *err,
                  size_t errlen) {
    char dir[PATH_MAX], to[PATH_MAX], pattern[PATH_MAX], hash[65];
    glob_t g;
    int globbed = 0;
    if (make_folder(state_dir, version, dir, sizeof dir, err, errlen) < 0) return -1;
    snprintf(pattern, sizeof pattern, "%s/*.lua", p->dir);
    if (glob(pattern, 0, NULL, &g) == 0) {
        globbed = 1;
        for (size_t i = 0; i < g.gl_pathc; i++) {
            const char *name = g.gl_pathv[i] + strlen(p->dir) + 1;
            if (strcmp(g.gl_pathv[i], p->script) == 0 || plan_is_test_file(name)) continue;
            if (fmt(to, sizeof to, "%s/%s", dir, name) < 0) { snprintf(err, errlen, "%s: a name too long", name); goto err; }
            if (copy_file(g.gl_pathv[i], to, err, errlen) < 0) goto err;
        }
    }
    fmt(to, sizeof to, "%s/%s", dir, p->script_rel);
    if (copy_file(p->text ? p->text : p->script, to, err, errlen) < 0) goto err;
    if (plan_hash_files(to, p->script, dir, hash, err, errlen) < 0) goto err;
    if (strcmp(hash, p->hash) != 0) {
        snprintf(err, errlen, "the files of version %d changed while they were copied to %s (sha256 %.12s, not "
                 "%.12s): it is not kept", version, dir, hash, p->hash);
        goto err;
    }
    if (write_manifest(dir, version, p->hash, p->script_rel, loaded_at_ms, err, errlen) < 0) goto err;
    if (globbed) globfree(&g);
    trim(state_dir, keep);
    return 0;
err:
    if (globbed) globfree(&g);
    files_rm_tree(dir);
    return -1;
}

int versions_stage(const char *state_dir, const version_info *from, int version, char *script_out, size_t outlen,
                   char *err, size_t errlen) {
    char src[PATH_MAX], dir[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    folder_of(state_dir, from->version, src, sizeof src);
    if (make_folder(state_dir, version, dir, sizeof dir, err, errlen) < 0) return -1;
    DIR *dh = opendir(src);
    if (!dh) { snprintf(err, errlen, "cannot read %s: %s", src, strerror(errno)); goto err; }
    struct dirent *e;
    while ((e = readdir(dh))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, MANIFEST) == 0) continue;
        fmt(a, sizeof a, "%s/%s", src, e->d_name);
        fmt(b, sizeof b, "%s/%s", dir, e->d_name);
        if (copy_file(a, b, err, errlen) < 0) { closedir(dh); goto err; }
    }
    closedir(dh);
    fmt(script_out, outlen, "%s/%s", dir, from->script);
    if (access(script_out, R_OK) != 0) {
        snprintf(err, errlen, "the copy of version %d in %s has no %s", from->version, src, from->script);
        goto err;
    }
    return 0;
err:
    files_rm_tree(dir);
    return -1;
}

int versions_commit(const char *state_dir, int version, const char *sha256, const char *script, int64_t loaded_at_ms,
                    int keep, char *err, size_t errlen) {
    char dir[PATH_MAX];
    folder_of(state_dir, version, dir, sizeof dir);
    if (write_manifest(dir, version, sha256, script, loaded_at_ms, err, errlen) < 0) return -1;
    trim(state_dir, keep);
    return 0;
}

void versions_drop(const char *state_dir, int version) {
    char dir[PATH_MAX];
    folder_of(state_dir, version, dir, sizeof dir);
    files_rm_tree(dir);
}

int versions_pick(const version_info *v, int n, const char *spec, char *err, size_t errlen) {
    size_t len = spec ? strlen(spec) : 0;
    int digits = len > 0, hex = len > 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)spec[i])) digits = 0;
        if (!isxdigit((unsigned char)spec[i])) hex = 0;
    }
    if (digits && len <= 9) {
        int num = atoi(spec);
        for (int i = 0; i < n; i++) if (v[i].version == num) return i;
    }
    if (!hex || len > 64 || (len < 4 && !digits)) {
        snprintf(err, errlen, "'%s' is neither a version number nor a sha256 prefix (4 to 64 hex digits)",
                 spec ? spec : "");
        return VERSIONS_MALFORMED;
    }
    int found = -1;
    if (len >= 4) {
        for (int i = 0; i < n; i++) {
            if (strncasecmp(v[i].sha256, spec, len) != 0) continue;
            if (found >= 0 && strcmp(v[found].sha256, v[i].sha256) != 0) {
                snprintf(err, errlen, "'%s' is the start of the sha256 of more than one kept version (%d: %.12s, "
                         "%d: %.12s): give more of it", spec, v[found].version, v[found].sha256, v[i].version,
                         v[i].sha256);
                return VERSIONS_AMBIGUOUS;
            }
            found = i;               /* v is oldest first: the newest with that content */
        }
    }
    if (found >= 0) return found;
    char kept[512] = "";
    size_t off = 0;
    for (int i = 0; i < n && off < sizeof kept - 32; i++)
        off += snprintf(kept + off, sizeof kept - off, "%s%d (%.12s)", i ? ", " : "", v[i].version, v[i].sha256);
    snprintf(err, errlen, "no kept version is '%s'; kept: %s", spec, n ? kept : "none");
    return VERSIONS_UNKNOWN;
}
