#include "client.h"
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct answer {
    int code;
    char *body;
    struct event_base *base;
};

static void on_done(struct evhttp_request *req, void *arg) {
    struct answer *a = arg;
    event_base_loopbreak(a->base);     /* the connection may stay open (keep-alive): the answer is all we wait for */
    if (!req) return;
    a->code = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    a->body = malloc(n + 1);
    if (a->body) {
        evbuffer_remove(in, a->body, n);
        a->body[n] = 0;
    }
}

/* One request to admin ("host:port"); sets *code (0: no answer) and *body
 * (owned, or NULL).  0, or 2 for a bad address, 1 when it cannot be sent. */
static int request(const char *admin, enum evhttp_cmd_type method, const char *path, const char *token, int *code,
                   char **body) {
    char host[256];
    const char *colon = strrchr(admin, ':');
    int port = colon ? atoi(colon + 1) : 0;
    *code = 0;
    *body = NULL;
    if (!colon || port <= 0 || port > 65535 || (size_t)(colon - admin) >= sizeof host || colon == admin) {
        fprintf(stderr, "eddy: --admin: expected HOST:PORT, got '%s'\n", admin);
        return 2;
    }
    memcpy(host, admin, colon - admin);
    host[colon - admin] = 0;
    if (host[0] == '[') {                         /* [::1] */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct answer a = { 0, NULL, NULL };
    struct event_base *base = event_base_new();
    a.base = base;
    struct evhttp_connection *conn = base ? evhttp_connection_base_new(base, NULL, host, (unsigned short)port) : NULL;
    struct evhttp_request *req = conn ? evhttp_request_new(on_done, &a) : NULL;
    int rc = 1;
    if (!req) { fprintf(stderr, "eddy: cannot set up an HTTP request\n"); goto out; }
    evhttp_connection_set_timeout(conn, 60);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host);
    if (token && *token) {
        char auth[600];
        snprintf(auth, sizeof auth, "Bearer %s", token);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Authorization", auth);
    }
    /* an empty body, said so: without a length the server waits for the body until the connection closes */
    if (method == EVHTTP_REQ_POST) evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", "0");
    if (evhttp_make_request(conn, req, method, path) != 0) {
        fprintf(stderr, "eddy: cannot send the request to %s\n", admin);
        goto out;
    }
    event_base_dispatch(base);
    *code = a.code;
    *body = a.body;
    a.body = NULL;
    rc = 0;
out:
    free(a.body);
    if (conn) evhttp_connection_free(conn);
    if (base) event_base_free(base);
    return rc;
}

int client_post(const char *admin, const char *path, const char *field, const char *token) {
    int code;
    char *body;
    int rc = request(admin, EVHTTP_REQ_POST, path, token, &code, &body);
    if (rc) return rc;
    if (code == 0) {
        fprintf(stderr, "eddy: no answer from %s (is eddy running with admin.listen = \"%s\"?)\n", admin, admin);
        return 1;
    }
    json_error_t je;
    json_t *j = body ? json_loads(body, 0, &je) : NULL;
    const char *err = j ? json_string_value(json_object_get(j, "error")) : NULL;
    rc = 1;
    if (code >= 200 && code < 300) {
        const char *f = field && j ? json_string_value(json_object_get(j, field)) : NULL;
        printf("%s\n", f ? f : body ? body : "");
        rc = 0;
    } else {
        fprintf(stderr, "eddy: %s answered %d: %s\n", admin, code, err ? err : (body ? body : ""));
    }
    json_decref(j);
    free(body);
    return rc;
}

int client_dry_run(const char *admin, const char *path, const char *token) {
    int code;
    char *body;
    int rc = request(admin, EVHTTP_REQ_POST, path, token, &code, &body);
    if (rc) return rc;
    json_error_t je;
    json_t *j = NULL;
    char loc[256] = "";
    for (int polls = 0;; polls++) {
        if (code == 0) {
            fprintf(stderr, "eddy: no answer from %s (is eddy running with admin.listen = \"%s\"?)\n", admin, admin);
            rc = 1;
            break;
        }
        json_decref(j);
        j = body ? json_loads(body, 0, &je) : NULL;
        if (code == 202 && !loc[0]) {
            const char *l = j ? json_string_value(json_object_get(j, "location")) : NULL;
            if (!l) { fprintf(stderr, "eddy: %s answered 202 without a location: %s\n", admin, body ? body : ""); rc = 1; break; }
            snprintf(loc, sizeof loc, "%s", l);
        }
        if (code == 200) {
            char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
            printf("%s\n", s ? s : body ? body : "");
            free(s);
            rc = 0;
            break;
        }
        if (code != 202) {
            const char *err = j ? json_string_value(json_object_get(j, "error")) : NULL;
            fprintf(stderr, "eddy: %s answered %d: %s\n", admin, code, err ? err : body ? body : "");
            rc = 1;
            break;
        }
        free(body);
        body = NULL;
        usleep(polls < 20 ? 50000 : 200000);
        if ((rc = request(admin, EVHTTP_REQ_GET, loc, token, &code, &body)) != 0) break;
    }
    json_decref(j);
    free(body);
    return rc;
}
