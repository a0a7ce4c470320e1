/* The admin HTTP server answered over real sockets by libevent's own HTTP
 * client on the same event base, and the Prometheus text metrics.c writes. */
#include "test.h"
#include "admin.h"
#include "log.h"
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

static struct event_base *base;

/* ---- fake daemon handlers ------------------------------------------------ */

struct fake {
    int healthy;
    const char *reason;
    int reload_status;
    int reloads;
};

static int fake_health(void *ud, char *reason, size_t len)
{
    struct fake *f = ud;
    if (!f->healthy)
        snprintf(reason, len, "%s", f->reason);
    return f->healthy;
}

static json_t *fake_status(void *ud)
{
    (void)ud;
    return json_pack("{s:s,s:[{s:i,s:i}]}", "app", "words", "tasks", "partition", 0, "records_in", 42);
}

static void fake_metrics(void *ud, struct evbuffer *out)
{
    (void)ud;
    const char *labels[] = { "task", "words-0", NULL };
    metrics_family(out, "eddy_records_in_total", "counter", "Records read.");
    metrics_sample(out, "eddy_records_in_total", labels, 42);
}

static json_t *fake_reload(void *ud, const char *query, int *http_status)
{
    struct fake *f = ud;
    (void)query;
    f->reloads++;
    *http_status = f->reload_status;
    if (f->reload_status == 200)
        return json_pack("{s:i}", "version", 2);
    return json_pack("{s:s}", "error", "pipeline.lua:3: unexpected symbol near 'end'");
}

/* Echoes what it was given; /state/words/missing has no state;
 * /state/words/elsewhere is another instance's (a 307 naming it). */
static json_t *fake_prefixed(void *ud, const char *path, const char *query, int *http_status,
                             struct evkeyvalq *headers)
{
    (void)ud;
    if (strcmp(path, "/state/words/missing") == 0) {
        *http_status = 404;
        return NULL;
    }
    if (strcmp(path, "/state/words/elsewhere") == 0) {
        *http_status = 307;
        evhttp_add_header(headers, "Location", "http://127.0.0.1:1/state/words/elsewhere");
        return json_pack("{s:s}", "owner", "127.0.0.1:1");
    }
    return json_pack("{s:s,s:s}", "path", path, "query", query);
}

static admin_handlers fake_handlers(struct fake *f)
{
    return (admin_handlers){ .ud = f, .health = fake_health, .status = fake_status,
                             .metrics = fake_metrics, .reload = fake_reload,
                             .savepoint = NULL, .get_prefixed = fake_prefixed };
}

/* ---- a tiny HTTP client on the same base ----------------------------------- */

struct reply {
    int done;
    int code;           /* 0: no answer */
    char body[4096];
    char ctype[128];
    char allow[128];
    char location[256];
};

static void copy_header(struct evhttp_request *req, const char *name, char *dst, size_t len)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
    snprintf(dst, len, "%s", v ? v : "");
}

static void on_reply(struct evhttp_request *req, void *arg)
{
    struct reply *r = arg;
    r->done = 1;
    if (req) {
        r->code = evhttp_request_get_response_code(req);
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        int n = evbuffer_remove(in, r->body, sizeof r->body - 1);
        r->body[n < 0 ? 0 : n] = '\0';
        copy_header(req, "Content-Type", r->ctype, sizeof r->ctype);
        copy_header(req, "Allow", r->allow, sizeof r->allow);
        copy_header(req, "Location", r->location, sizeof r->location);
    }
    event_base_loopbreak(base);
}

/* Makes one request to 127.0.0.1:port and runs the base until it is answered. */
static void fetch(int port, enum evhttp_cmd_type method, const char *uri, struct reply *r)
{
    memset(r, 0, sizeof *r);
    struct evhttp_connection *conn = evhttp_connection_base_new(base, NULL, "127.0.0.1", (ev_uint16_t)port);
    evhttp_connection_set_timeout(conn, 5);
    struct evhttp_request *req = evhttp_request_new(on_reply, r);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    if (evhttp_make_request(conn, req, method, uri) == 0)
        while (!r->done && event_base_dispatch(base) == 0)
            ;
    evhttp_connection_free(conn);
}

/* One server with the fake handlers for the tests below. */
static struct fake fake;
static admin *srv;
static int port;

/* ---- admin ---------------------------------------------------------------- */

TEST(health_answers_200_ok_when_healthy)
{
    struct reply r;
    fake.healthy = 1;
    fetch(port, EVHTTP_REQ_GET, "/health", &r);
    CHECK(r.code == 200);
    CHECK_STR(r.body, "ok\n");
    CHECK_STR(r.ctype, "text/plain");
}

TEST(health_answers_503_with_the_reason_when_unhealthy)
{
    struct reply r;
    fake.healthy = 0;
    fake.reason = "task words-0 failed: sink out: disk full";
    fetch(port, EVHTTP_REQ_GET, "/health", &r);
    CHECK(r.code == 503);
    CHECK_STR(r.body, "task words-0 failed: sink out: disk full\n");
    fake.healthy = 1;
}

TEST(head_health_answers_like_get_without_a_body)
{
    struct reply r;
    fetch(port, EVHTTP_REQ_HEAD, "/health", &r);
    CHECK(r.code == 200);
    CHECK_STR(r.body, "");
}

TEST(status_answers_the_handlers_json)
{
    struct reply r;
    fetch(port, EVHTTP_REQ_GET, "/status", &r);
    CHECK(r.code == 200);
    CHECK_STR(r.ctype, "application/json");
    json_error_t je;
    json_t *doc = json_loads(r.body, 0, &je);
    CHECK(doc != NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "app")), "words");
    CHECK(json_integer_value(json_object_get(json_array_get(json_object_get(doc, "tasks"), 0),
                                             "records_in")) == 42);
    json_decref(doc);
}

TEST(metrics_answers_prometheus_text)
{
    struct reply r;
    fetch(port, EVHTTP_REQ_GET, "/metrics?x=1", &r);
    CHECK(r.code == 200);
    CHECK_STR(r.ctype, "text/plain; version=0.0.4");
    CHECK_STR(r.body, "# HELP eddy_records_in_total Records read.\n"
                      "# TYPE eddy_records_in_total counter\n"
                      "eddy_records_in_total{task=\"words-0\"} 42\n");
}

TEST(reload_answers_200_with_the_new_version)
{
    struct reply r;
    fake.reload_status = 200;
    fake.reloads = 0;
    fetch(port, EVHTTP_REQ_POST, "/reload", &r);
    CHECK(r.code == 200);
    CHECK(fake.reloads == 1);
    CHECK_STR(r.ctype, "application/json");
    json_t *doc = json_loads(r.body, 0, NULL);
    CHECK(json_integer_value(json_object_get(doc, "version")) == 2);
    json_decref(doc);
}

TEST(reload_answers_422_with_the_compile_error)
{
    struct reply r;
    fake.reload_status = 422;
    fetch(port, EVHTTP_REQ_POST, "/reload", &r);
    CHECK(r.code == 422);
    json_t *doc = json_loads(r.body, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "error")),
              "pipeline.lua:3: unexpected symbol near 'end'");
    json_decref(doc);
}

TEST(savepoint_without_a_handler_answers_501_json)
{
    struct reply r;
    fetch(port, EVHTTP_REQ_POST, "/savepoint", &r);
    CHECK(r.code == 501);
    CHECK_STR(r.ctype, "application/json");
    json_t *doc = json_loads(r.body, 0, NULL);
    CHECK(json_is_string(json_object_get(doc, "error")));
    json_decref(doc);
}

TEST(unknown_path_answers_404_json_error)
{
    struct reply r;
    fetch(port, EVHTTP_REQ_GET, "/nope", &r);
    CHECK(r.code == 404);
    CHECK_STR(r.ctype, "application/json");
    json_t *doc = json_loads(r.body, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "error")), "no such path: /nope");
    json_decref(doc);
    fetch(port, EVHTTP_REQ_GET, "/health/", &r);
    CHECK(r.code == 404);
    fetch(port, EVHTTP_REQ_GET, "/state", &r);
    CHECK(r.code == 404);
}

TEST(wrong_method_on_a_known_path_answers_405_with_allow)
{
    struct reply r;
    fake.reloads = 0;
    fetch(port, EVHTTP_REQ_GET, "/reload", &r);
    CHECK(r.code == 405);
    CHECK_STR(r.allow, "POST");
    CHECK(fake.reloads == 0);
    json_t *doc = json_loads(r.body, 0, NULL);
    CHECK(json_is_string(json_object_get(doc, "error")));
    json_decref(doc);
    fetch(port, EVHTTP_REQ_POST, "/health", &r);
    CHECK(r.code == 405);
    CHECK_STR(r.allow, "GET");
    fetch(port, EVHTTP_REQ_DELETE, "/status", &r);
    CHECK(r.code == 405);
    fetch(port, EVHTTP_REQ_POST, "/state/words/k", &r);
    CHECK(r.code == 405);
}

TEST(prefixed_gets_reach_get_prefixed_with_path_and_query)
{
    struct reply r;
    fetch(port, EVHTTP_REQ_GET, "/state/words/a%2Fb?from=1&to=2", &r);
    CHECK(r.code == 200);
    json_t *doc = json_loads(r.body, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "path")), "/state/words/a%2Fb");
    CHECK_STR(json_string_value(json_object_get(doc, "query")), "from=1&to=2");
    json_decref(doc);

    fetch(port, EVHTTP_REQ_GET, "/explain/counts", &r);
    CHECK(r.code == 200);
    doc = json_loads(r.body, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "path")), "/explain/counts");
    CHECK_STR(json_string_value(json_object_get(doc, "query")), "");
    json_decref(doc);

    fetch(port, EVHTTP_REQ_GET, "/state/words/missing", &r);
    CHECK(r.code == 404);
    doc = json_loads(r.body, 0, NULL);
    CHECK(json_is_string(json_object_get(doc, "error")));
    json_decref(doc);
}

TEST(prefixed_gets_may_redirect_with_a_location_header)
{
    struct reply r;
    fetch(port, EVHTTP_REQ_GET, "/state/words/elsewhere", &r);
    CHECK(r.code == 307);
    CHECK_STR(r.location, "http://127.0.0.1:1/state/words/elsewhere");
    json_t *doc = json_loads(r.body, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "owner")), "127.0.0.1:1");
    json_decref(doc);
}

TEST(prefixed_gets_answer_404_without_a_handler)
{
    struct fake f = { .healthy = 1 };
    admin_handlers h = { .ud = &f, .health = fake_health };
    char err[256];
    admin *a = admin_create(base, "127.0.0.1:0", NULL, &h, err, sizeof err);
    CHECK(a != NULL);
    if (!a)
        return;
    struct reply r;
    fetch(admin_port(a), EVHTTP_REQ_GET, "/explain/counts", &r);
    CHECK(r.code == 404);
    fetch(admin_port(a), EVHTTP_REQ_POST, "/reload", &r);
    CHECK(r.code == 501);
    fetch(admin_port(a), EVHTTP_REQ_GET, "/status", &r);
    CHECK(r.code == 501);
    admin_destroy(a);
}

TEST(addr_file_holds_the_bound_address_and_nothing_is_left_beside_it)
{
    char dir[] = "/tmp/eddy-admin-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/admin.addr", dir);
    struct fake f = { .healthy = 1 };
    admin_handlers h = fake_handlers(&f);
    char err[256];
    admin *a = admin_create(base, "127.0.0.1:0", path, &h, err, sizeof err);
    CHECK(a != NULL);
    if (a) {
        char want[64], got[64] = "";
        snprintf(want, sizeof want, "127.0.0.1:%d\n", admin_port(a));
        FILE *fp = fopen(path, "r");
        CHECK(fp != NULL);
        if (fp) {
            size_t n = fread(got, 1, sizeof got - 1, fp);
            got[n] = '\0';
            fclose(fp);
        }
        CHECK_STR(got, want);
        int entries = 0;
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d));)
            if (e->d_name[0] != '.')
                entries++;
        if (d)
            closedir(d);
        CHECK(entries == 1);
        admin_destroy(a);
    }
    unlink(path);
    rmdir(dir);
}

TEST(addr_file_in_a_missing_directory_is_an_error)
{
    struct fake f = { .healthy = 1 };
    admin_handlers h = fake_handlers(&f);
    char err[256] = "";
    admin *a = admin_create(base, "127.0.0.1:0", "/nonexistent-eddy-dir/admin.addr", &h, err, sizeof err);
    CHECK(a == NULL);
    CHECK(strstr(err, "/nonexistent-eddy-dir/admin.addr") != NULL);
    admin_destroy(a);
}

TEST(bad_listen_strings_are_errors_naming_admin_listen)
{
    const char *bad[] = { "nope", "127.0.0.1", "127.0.0.1:", ":9100", "127.0.0.1:99999",
                          "127.0.0.1:12a", "::1:9100", "[::1:9100", "[::1]9100", "[]:9100",
                          "127.0.0.1:123456", NULL };
    struct fake f = { .healthy = 1 };
    admin_handlers h = fake_handlers(&f);
    for (int i = 0; bad[i]; i++) {
        char err[256] = "";
        admin *a = admin_create(base, bad[i], NULL, &h, err, sizeof err);
        CHECK(a == NULL);
        CHECK(strncmp(err, "admin.listen", 12) == 0);
        if (a || strncmp(err, "admin.listen", 12) != 0)
            printf("  listen \"%s\": %s\n", bad[i], err);
        admin_destroy(a);
    }
    char err[256] = "";
    admin *a = admin_create(base, NULL, NULL, &h, err, sizeof err);
    CHECK(a == NULL);
    CHECK(strncmp(err, "admin.listen", 12) == 0);
}

TEST(a_port_in_use_is_an_error_naming_admin_listen)
{
    struct fake f = { .healthy = 1 };
    admin_handlers h = fake_handlers(&f);
    char listen[64], err[256] = "";
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    admin *a = admin_create(base, listen, NULL, &h, err, sizeof err);
    CHECK(a == NULL);
    CHECK(strncmp(err, "admin.listen", 12) == 0);
    CHECK(strstr(err, "in use") != NULL);
    admin_destroy(a);
}

TEST(localhost_and_bracketed_ipv6_listen)
{
    struct fake f = { .healthy = 1 };
    admin_handlers h = fake_handlers(&f);
    char err[256] = "";
    admin *a = admin_create(base, "localhost:0", NULL, &h, err, sizeof err);
    CHECK(a != NULL);
    CHECK(a && admin_port(a) > 0);
    admin_destroy(a);

    /* Containers without IPv6 cannot bind ::1; then the error must still
     * name the key. */
    a = admin_create(base, "[::1]:0", NULL, &h, err, sizeof err);
    if (a)
        CHECK(admin_port(a) > 0);
    else
        CHECK(strncmp(err, "admin.listen", 12) == 0);
    admin_destroy(a);
}

TEST(destroy_null_is_a_noop)
{
    admin_destroy(NULL);
}

/* ---- metrics -------------------------------------------------------------- */

/* Drains b into a static string. */
static const char *drain(struct evbuffer *b)
{
    static char s[1024];
    int n = evbuffer_remove(b, s, sizeof s - 1);
    s[n < 0 ? 0 : n] = '\0';
    return s;
}

static const char *sample(double v)
{
    struct evbuffer *b = evbuffer_new();
    metrics_sample(b, "m", NULL, v);
    static char s[128];
    snprintf(s, sizeof s, "%s", drain(b));
    evbuffer_free(b);
    return s;
}

TEST(metrics_family_writes_help_and_type_with_help_escaped)
{
    struct evbuffer *b = evbuffer_new();
    metrics_family(b, "eddy_lag", "gauge", "Lag \\ in \"records\"\nper partition.");
    CHECK_STR(drain(b), "# HELP eddy_lag Lag \\\\ in \"records\"\\nper partition.\n"
                        "# TYPE eddy_lag gauge\n");
    evbuffer_free(b);
}

TEST(metrics_sample_escapes_label_values)
{
    struct evbuffer *b = evbuffer_new();
    const char *labels[] = { "path", "C:\\tmp\\\"x\"\nend", "task", "w-0", NULL };
    metrics_sample(b, "eddy_x", labels, 3);
    CHECK_STR(drain(b), "eddy_x{path=\"C:\\\\tmp\\\\\\\"x\\\"\\nend\",task=\"w-0\"} 3\n");
    const char *none[] = { NULL };
    metrics_sample(b, "eddy_up", none, 1);
    CHECK_STR(drain(b), "eddy_up 1\n");
    const char *empty[] = { "k", "", NULL };
    metrics_sample(b, "eddy_e", empty, 0);
    CHECK_STR(drain(b), "eddy_e{k=\"\"} 0\n");
    evbuffer_free(b);
}

TEST(metrics_sample_formats_integral_values_as_integers)
{
    CHECK_STR(sample(0), "m 0\n");
    CHECK_STR(sample(-0.0), "m 0\n");
    CHECK_STR(sample(42), "m 42\n");
    CHECK_STR(sample(-7), "m -7\n");
    CHECK_STR(sample(1e15), "m 1000000000000000\n");
    CHECK_STR(sample(9007199254740993.0), "m 9007199254740992\n");
    CHECK_STR(sample(1e20), "m 1e+20\n");
}

TEST(metrics_sample_formats_fractions_with_17_digits)
{
    CHECK_STR(sample(0.5), "m 0.5\n");
    CHECK_STR(sample(-2.25), "m -2.25\n");
    CHECK_STR(sample(0.1), "m 0.10000000000000001\n");
    CHECK_STR(sample(1.5e-7), "m 1.4999999999999999e-07\n");
}

TEST(metrics_sample_spells_inf_and_nan_as_prometheus_does)
{
    CHECK_STR(sample(INFINITY), "m +Inf\n");
    CHECK_STR(sample(-INFINITY), "m -Inf\n");
    CHECK_STR(sample(NAN), "m NaN\n");
}

int main(void)
{
    log_level_current = LOG_ERROR;    /* keep "listening on" lines out of the TAP */
    base = event_base_new();
    fake.healthy = 1;
    admin_handlers h = fake_handlers(&fake);
    char err[256] = "";
    srv = admin_create(base, "127.0.0.1:0", NULL, &h, err, sizeof err);
    if (!srv) {
        printf("not ok admin_create: %s\n", err);
        return 1;
    }
    port = admin_port(srv);

    RUN(health_answers_200_ok_when_healthy);
    RUN(health_answers_503_with_the_reason_when_unhealthy);
    RUN(head_health_answers_like_get_without_a_body);
    RUN(status_answers_the_handlers_json);
    RUN(metrics_answers_prometheus_text);
    RUN(reload_answers_200_with_the_new_version);
    RUN(reload_answers_422_with_the_compile_error);
    RUN(savepoint_without_a_handler_answers_501_json);
    RUN(unknown_path_answers_404_json_error);
    RUN(wrong_method_on_a_known_path_answers_405_with_allow);
    RUN(prefixed_gets_reach_get_prefixed_with_path_and_query);
    RUN(prefixed_gets_may_redirect_with_a_location_header);
    RUN(prefixed_gets_answer_404_without_a_handler);
    RUN(addr_file_holds_the_bound_address_and_nothing_is_left_beside_it);
    RUN(addr_file_in_a_missing_directory_is_an_error);
    RUN(bad_listen_strings_are_errors_naming_admin_listen);
    RUN(a_port_in_use_is_an_error_naming_admin_listen);
    RUN(localhost_and_bracketed_ipv6_listen);
    RUN(destroy_null_is_a_noop);
    RUN(metrics_family_writes_help_and_type_with_help_escaped);
    RUN(metrics_sample_escapes_label_values);
    RUN(metrics_sample_formats_integral_values_as_integers);
    RUN(metrics_sample_formats_fractions_with_17_digits);
    RUN(metrics_sample_spells_inf_and_nan_as_prometheus_does);

    admin_destroy(srv);
    event_base_free(base);
    return TEST_END();
}
