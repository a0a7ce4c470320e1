/* test_versions — core/versions.c: which kept version `reload --to VERSION`
 * names (a number, a sha256 prefix, ambiguous or malformed), and the kept
 * copies on disk: what a copy holds, that it hashes as the version did in
 * the pipeline's folder, the trim to the newest N, a staged copy. */
#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "versions.h"

static version_info vi(int version, const char *sha) {
    version_info v = { .version = version };
    snprintf(v.sha256, sizeof v.sha256, "%s", sha);
    snprintf(v.script, sizeof v.script, "pipeline.lua");
    return v;
}

#define SHA_A "7b4c3c551d07aa9029eec3f0990eccf27df5ed95be539a37e8532cce1fcfe4d4"
#define SHA_B "fb98c03ec16b867b2e1ee449d953edfec7f612520612ee1fc365d2495076c5c7"
#define SHA_C "7b4c3c000000aa9029eec3f0990eccf27df5ed95be539a37e8532cce1fcfe4d4"
#define SHA_D "1234567890000000000000000000000000000000000000000000000000000000"

TEST(picks_a_version_by_number) {
    version_info v[] = { vi(3, SHA_A), vi(4, SHA_B), vi(12, SHA_C) };
    char err[512];
    CHECK(versions_pick(v, 3, "3", err, sizeof err) == 0);
    CHECK(versions_pick(v, 3, "12", err, sizeof err) == 2);
    CHECK(versions_pick(v, 3, "4", err, sizeof err) == 1);
}

TEST(an_unkept_number_is_unknown_and_the_error_lists_the_kept_ones) {
    version_info v[] = { vi(3, SHA_A), vi(4, SHA_B) };
    char err[512] = "";
    CHECK(versions_pick(v, 2, "1", err, sizeof err) == VERSIONS_UNKNOWN);
    CHECK(strstr(err, "no kept version is '1'") != NULL);
    CHECK(strstr(err, "3 (7b4c3c551d07), 4 (fb98c03ec16b)") != NULL);
    CHECK(versions_pick(v, 0, "1", err, sizeof err) == VERSIONS_UNKNOWN);
    CHECK(strstr(err, "kept: none") != NULL);
}

TEST(picks_a_version_by_sha256_prefix_in_any_case) {
    version_info v[] = { vi(3, SHA_A), vi(4, SHA_B) };
    char err[512];
    CHECK(versions_pick(v, 2, "fb98", err, sizeof err) == 1);
    CHECK(versions_pick(v, 2, "FB98C03E", err, sizeof err) == 1);
    CHECK(versions_pick(v, 2, SHA_A, err, sizeof err) == 0);
    CHECK(versions_pick(v, 2, "fb99", err, sizeof err) == VERSIONS_UNKNOWN);
}

TEST(a_prefix_of_two_contents_is_ambiguous_but_one_content_twice_is_its_newest) {
    version_info v[] = { vi(1, SHA_A), vi(2, SHA_B), vi(3, SHA_A), vi(4, SHA_C) };
    char err[512] = "";
    CHECK(versions_pick(v, 4, "7b4c3c", err, sizeof err) == VERSIONS_AMBIGUOUS);
    CHECK(strstr(err, "more than one kept version") != NULL);
    CHECK(versions_pick(v, 4, "7b4c3c5", err, sizeof err) == 2);   /* versions 1 and 3: the same content */
}

TEST(a_number_that_is_not_kept_is_tried_as_a_prefix_once_long_enough) {
    version_info v[] = { vi(1, SHA_A), vi(2, SHA_D) };
    char err[512];
    CHECK(versions_pick(v, 2, "1234", err, sizeof err) == 1);
    CHECK(versions_pick(v, 2, "1", err, sizeof err) == 0);          /* a kept number first */
    CHECK(versions_pick(v, 2, "123", err, sizeof err) == VERSIONS_UNKNOWN);
}

TEST(malformed_versions_are_refused_as_such) {
    version_info v[] = { vi(1, SHA_A) };
    char err[512] = "";
    const char *bad[] = { "", "v1", "abc", "7b4c-3", "zz", "1.0" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(versions_pick(v, 1, bad[i], err, sizeof err) == VERSIONS_MALFORMED);
        CHECK(strstr(err, "neither a version number nor a sha256 prefix") != NULL);
    }
    char longer[80];
    memset(longer, 'a', 65);
    longer[65] = 0;
    CHECK(versions_pick(v, 1, longer, err, sizeof err) == VERSIONS_MALFORMED);
    CHECK(versions_pick(v, 1, NULL, err, sizeof err) == VERSIONS_MALFORMED);
}

/* ---- the copies on disk --------------------------------------------------- */

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static char *slurp(const char *path) {
    static char buf[4096];
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

/* A plan of the pipeline dir/pipeline.lua as far as versions.c reads it. */
static plan fake_plan(const char *dir, char *script) {
    plan p = { 0 };
    p.dir = (char *)dir;
    p.script = script;
    p.script_rel = "pipeline.lua";
    char err[256];
    plan_hash(script, p.hash, err, sizeof err);
    return p;
}

TEST(keeps_the_script_and_modules_hashing_as_in_the_folder_and_trims_to_the_newest) {
    char root[] = "/tmp/eddy-test-versions-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char dir[512], state[512], script[600], path[700], err[512];
    snprintf(dir, sizeof dir, "%s/pipe", root);
    snprintf(state, sizeof state, "%s/state", root);
    mkdir(dir, 0755);
    mkdir(state, 0755);
    snprintf(script, sizeof script, "%s/pipeline.lua", dir);
    snprintf(path, sizeof path, "%s/helper.lua", dir);
    put(path, "return 1\n");
    snprintf(path, sizeof path, "%s/in.txt", dir);
    put(path, "data\n");
    snprintf(path, sizeof path, "%s/eddy.conf.lua", dir);
    put(path, "return { admin = { token = 'secret-secret-secret' } }\n");
    chmod(path, 0600);

    CHECK(versions_reset(state, err, sizeof err) == 0);
    char shas[6][65];
    for (int v = 1; v <= 6; v++) {
        char text[64];
        snprintf(text, sizeof text, "return 'version %d'\n", v);
        put(script, text);
        plan p = fake_plan(dir, script);
        snprintf(shas[v - 1], 65, "%s", p.hash);
        CHECK(versions_keep(state, v, &p, 1000 + v, 3, err, sizeof err) == 0);
    }
    version_info *kept;
    int n = versions_list(state, &kept, err, sizeof err);
    CHECK(n == 3);
    for (int i = 0; i < n && n == 3; i++) {
        CHECK(kept[i].version == 4 + i);
        CHECK_STR(kept[i].sha256, shas[3 + i]);
        CHECK(kept[i].loaded_at_ms == 1004 + i);
        CHECK_STR(kept[i].script, "pipeline.lua");
    }
    snprintf(path, sizeof path, "%s/versions/3", state);
    CHECK(access(path, F_OK) != 0);                              /* trimmed */
    snprintf(path, sizeof path, "%s/versions/5/pipeline.lua", state);
    CHECK_STR(slurp(path), "return 'version 5'\n");
    snprintf(path, sizeof path, "%s/versions/5/helper.lua", state);
    CHECK_STR(slurp(path), "return 1\n");
    struct stat st;
    snprintf(path, sizeof path, "%s/versions/5/eddy.conf.lua", state);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);  /* a config beside the script keeps its mode */
    snprintf(path, sizeof path, "%s/versions/5/in.txt", state);
    CHECK(access(path, F_OK) != 0);                              /* data files are not part of a version */

    /* a staged copy of version 4: not listed until committed, read from its own folder */
    char staged[700];
    CHECK(n == 3 && versions_stage(state, &kept[0], 7, staged, sizeof staged, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/versions/7/pipeline.lua", state);
    CHECK_STR(staged, path);
    CHECK_STR(slurp(staged), "return 'version 4'\n");
    char hash[65];
    CHECK(plan_hash_text(staged, script, hash, err, sizeof err) == 0);
    CHECK_STR(hash, shas[3]);                     /* its script with the folder's (same) modules: version 4 */
    free(kept);
    n = versions_list(state, &kept, err, sizeof err);
    CHECK(n == 3);
    free(kept);
    CHECK(versions_commit(state, 7, shas[3], "pipeline.lua", 2000, 3, err, sizeof err) == 0);
    n = versions_list(state, &kept, err, sizeof err);
    CHECK(n == 3 && kept[0].version == 5 && kept[2].version == 7);
    CHECK(n == 3 && strcmp(kept[2].sha256, shas[3]) == 0);
    free(kept);
    versions_drop(state, 7);
    n = versions_list(state, &kept, err, sizeof err);
    CHECK(n == 2);
    free(kept);

    /* a new run starts again from nothing */
    CHECK(versions_reset(state, err, sizeof err) == 0);
    n = versions_list(state, &kept, err, sizeof err);
    CHECK(n == 0);
    free(kept);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

TEST(a_copy_that_does_not_hash_as_the_version_is_not_kept) {
    char root[] = "/tmp/eddy-test-versions-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char dir[512], state[512], script[600], err[512];
    snprintf(dir, sizeof dir, "%s/pipe", root);
    snprintf(state, sizeof state, "%s/state", root);
    mkdir(dir, 0755);
    mkdir(state, 0755);
    snprintf(script, sizeof script, "%s/pipeline.lua", dir);
    put(script, "return 'a'\n");
    plan p = fake_plan(dir, script);
    put(script, "return 'b'\n");                      /* changed after it was planned */
    CHECK(versions_keep(state, 1, &p, 1, 5, err, sizeof err) == -1);
    CHECK(strstr(err, "changed while they were copied") != NULL);
    version_info *kept;
    CHECK(versions_list(state, &kept, err, sizeof err) == 0);
    free(kept);
    char path[700];
    snprintf(path, sizeof path, "%s/versions/1", state);
    CHECK(access(path, F_OK) != 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

int main(void) {
    RUN(picks_a_version_by_number);
    RUN(an_unkept_number_is_unknown_and_the_error_lists_the_kept_ones);
    RUN(picks_a_version_by_sha256_prefix_in_any_case);
    RUN(a_prefix_of_two_contents_is_ambiguous_but_one_content_twice_is_its_newest);
    RUN(a_number_that_is_not_kept_is_tried_as_a_prefix_once_long_enough);
    RUN(malformed_versions_are_refused_as_such);
    RUN(keeps_the_script_and_modules_hashing_as_in_the_folder_and_trims_to_the_newest);
    RUN(a_copy_that_does_not_hash_as_the_version_is_not_kept);
    return TEST_END();
}
