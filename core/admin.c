/* admin — the admin HTTP server.  See admin.h.  Requests are matched against
 * one route table; a route names a method, a path (exact, or a prefix ending
 * in '/') and the function that answers it.  Everything runs on the daemon's
 * event base, so the handlers must answer from memory without blocking. */
#include "admin.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#define HEALTH_REASON_MAX  512
#define MAX_HEADERS_SIZE   (16 * 1024)
#define MAX_BODY_SIZE      (64 * 1024)   /* POST bodies are ignored today */
#define CONN_TIMEOUT_S     30
#define ADDR_MAX           (INET6_ADDRSTRLEN + 8)

struct admin {
    struct evhttp *http;
    admin_handlers h;
    int port;
    char addr[ADDR_MAX];                 /* "127.0.0.1:9100", "[::1]:9100" */
};

/* ---- replies ------------------------------------------------------------ */

static void send_text(struct evhttp_request *req, int code, const char *ctype, const char *text)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf)
        evbuffer_add(buf, text, strlen(text));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
}

/* Takes ownership of body (NULL sends a 500). */
static void send_json(struct evhttp_request *req, int code, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_INDENT(2) | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!text) {
        send_text(req, 500, "application/json", "{\"error\": \"cannot encode the reply\"}\n");
        return;
    }
    struct evbuffer *buf = evbuffer_new();
    if (buf) {
        evbuffer_add(buf, text, strlen(text));
        evbuffer_add(buf, "\n", 1);
    }
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
}

/* Sends {"error": "<formatted message>"}. */
static void send_error(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    send_json(req, code, json_pack("{s:s}", "error", msg));
}

/* A handler's status, kept to something evhttp can send. */
static int valid_status(int code)
{
    return code >= 200 && code <= 599 ? code : 500;
}

/* ---- routes ------------------------------------------------------------- */

/* path: the whole request path; rest: what follows a prefix route's path
 * ("" for exact routes); query: the raw query string, "" when none. */
typedef void (*route_fn)(admin *a, struct evhttp_request *req, const char *path,
                         const char *rest, const char *query);

static void serve_health(admin *a, struct evhttp_request *req, const char *path,
                         const char *rest, const char *query)
{
    (void)path, (void)rest, (void)query;
    char reason[HEALTH_REASON_MAX] = "";
    if (!a->h.health || a->h.health(a->h.ud, reason, sizeof reason)) {
        send_text(req, 200, "text/plain", "ok\n");
        return;
    }
    size_t n = strnlen(reason, sizeof reason - 1);
    snprintf(reason + n, sizeof reason - n, "\n");
    send_text(req, 503, "text/plain", n ? reason : "unhealthy\n");
}

static void serve_status(admin *a, struct evhttp_request *req, const char *path,
                         const char *rest, const char *query)
{
    (void)path, (void)rest, (void)query;
    if (!a->h.status) {
        send_error(req, 501, "/status is not available");
        return;
    }
    json_t *doc = a->h.status(a->h.ud);
    if (!doc) {
        send_error(req, 500, "the status document could not be built");
        return;
    }
    send_json(req, 200, doc);
}

static void serve_metrics(admin *a, struct evhttp_request *req, const char *path,
                          const char *rest, const char *query)
{
    (void)path, (void)rest, (void)query;
    struct evbuffer *buf = evbuffer_new();
    if (!buf) {
        send_error(req, 500, "out of memory");
        return;
    }
    if (a->h.metrics)
        a->h.metrics(a->h.ud, buf);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, NULL, buf);
    evbuffer_free(buf);
}

/* POST /reload and /savepoint share one shape: a status and a JSON body. */
static void serve_action(struct evhttp_request *req, const char *path, const char *query,
                         json_t *(*fn)(void *, const char *, int *), void *ud)
{
    if (!fn) {
        send_error(req, 501, "%s is not available", path);
        return;
    }
    int code = 200;
    json_t *body = fn(ud, query ? query : "", &code);
    if (!body) {
        send_error(req, 500, "%s failed without saying why", path);
        return;
    }
    send_json(req, valid_status(code), body);
}

static void serve_reload(admin *a, struct evhttp_request *req, const char *path,
                         const char *rest, const char *query)
{
    (void)rest;
    serve_action(req, path, query, a->h.reload, a->h.ud);
}

static void serve_savepoint(admin *a, struct evhttp_request *req, const char *path,
                            const char *rest, const char *query)
{
    (void)rest;
    serve_action(req, path, query, a->h.savepoint, a->h.ud);
}

/* GET /explain/UID, /state/UID/KEY, /state/UID?prefix=... */
static void serve_prefixed(admin *a, struct evhttp_request *req, const char *path,
                           const char *rest, const char *query)
{
    (void)rest;
    int code = 200;
    json_t *body = a->h.get_prefixed ? a->h.get_prefixed(a->h.ud, path, query, &code) : NULL;
    if (!body) {
        send_error(req, code >= 400 ? valid_status(code) : 404, "no such path: %s", path);
        return;
    }
    send_json(req, valid_status(code), body);
}

enum route_match { MATCH_EXACT, MATCH_PREFIX };

static const struct route {
    enum evhttp_cmd_type method;
    enum route_match match;
    const char *path;           /* MATCH_PREFIX: ends in '/' */
    route_fn fn;
} routes[] = {
    { EVHTTP_REQ_GET,  MATCH_EXACT,  "/health",    serve_health },
    { EVHTTP_REQ_GET,  MATCH_EXACT,  "/status",    serve_status },
    { EVHTTP_REQ_GET,  MATCH_EXACT,  "/metrics",   serve_metrics },
    { EVHTTP_REQ_POST, MATCH_EXACT,  "/reload",    serve_reload },
    { EVHTTP_REQ_POST, MATCH_EXACT,  "/savepoint", serve_savepoint },
    { EVHTTP_REQ_GET,  MATCH_PREFIX, "/explain/",  serve_prefixed },
    { EVHTTP_REQ_GET,  MATCH_PREFIX, "/state/",    serve_prefixed },
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* The rest of path after the route's path, or NULL when it does not match. */
static const char *route_rest(const struct route *r, const char *path)
{
    if (r->match == MATCH_EXACT)
        return strcmp(path, r->path) == 0 ? "" : NULL;
    size_t n = strlen(r->path);
    return strncmp(path, r->path, n) == 0 ? path + n : NULL;
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:  return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT:  return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "?";
    }
}

static void on_request(struct evhttp_request *req, void *arg)
{
    admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!path || !*path)
        path = "/";
    if (!query)
        query = "";

    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    char allow[64] = "";
    for (size_t i = 0; i < N_ROUTES; i++) {
        const struct route *r = &routes[i];
        const char *rest = route_rest(r, path);
        if (!rest)
            continue;
        /* HEAD answers as GET does; evhttp leaves out the body. */
        if (r->method == method || (r->method == EVHTTP_REQ_GET && method == EVHTTP_REQ_HEAD)) {
            r->fn(a, req, path, rest, query);
            return;
        }
        size_t n = strlen(allow);
        snprintf(allow + n, sizeof allow - n, "%s%s", n ? ", " : "", method_name(r->method));
    }
    if (*allow) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        send_error(req, 405, "%s %s is not allowed (allowed: %s)", method_name(method), path, allow);
        return;
    }
    send_error(req, 404, "no such path: %s", path);
}

/* ---- listening ---------------------------------------------------------- */

/* Splits "host:port", "[v6]:port" into host (brackets removed) and port. */
static int parse_listen(const char *listen, char *host, size_t hostlen, int *port)
{
    const char *h, *colon;
    size_t hlen;
    if (!listen)
        goto err;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            goto err;
        h = listen + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            goto err;
        h = listen;
        hlen = (size_t)(colon - h);
        if (memchr(h, ':', hlen))       /* a bare IPv6 address needs brackets */
            goto err;
    }
    if (hlen == 0 || hlen >= hostlen)
        goto err;
    memcpy(host, h, hlen);
    host[hlen] = '\0';

    const char *p = colon + 1;
    long v = 0;
    if (!*p || strlen(p) > 5)
        goto err;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            goto err;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        goto err;
    *port = (int)v;
    return 0;
err:
    return -1;
}

/* Fills a->port and a->addr from the listening socket (the real port after
 * port 0, and the numeric address "localhost" resolved to). */
static int read_bound(admin *a, struct evhttp_bound_socket *bound)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) != 0)
        goto err;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        if (!inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip))
            goto err;
        a->port = ntohs(sin->sin_port);
        snprintf(a->addr, sizeof a->addr, "%s:%d", ip, a->port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
        if (!inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip))
            goto err;
        a->port = ntohs(sin6->sin6_port);
        snprintf(a->addr, sizeof a->addr, "[%s]:%d", ip, a->port);
    } else {
        errno = EAFNOSUPPORT;
        goto err;
    }
    return 0;
err:
    return -1;
}

/* Writes "addr\n" to path through a temporary file and a rename, so a reader
 * sees either no file or the whole line. */
static int write_addr_file(const char *path, const char *addr, char *err, size_t errlen)
{
    char tmp[4096];
    int fd = -1, created = 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        snprintf(err, errlen, "admin: address file path too long: %s", path);
        goto err;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "admin: cannot create %s: %s", tmp, strerror(errno));
        goto err;
    }
    created = 1;
    char line[ADDR_MAX + 1];
    int n = snprintf(line, sizeof line, "%s\n", addr);
    if (write(fd, line, (size_t)n) != n) {
        snprintf(err, errlen, "admin: cannot write %s: %s", tmp, strerror(errno ? errno : EIO));
        goto err;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "admin: cannot write %s: %s", tmp, strerror(errno));
        goto err;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "admin: cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto err;
    }
    return 0;
err:
    if (fd >= 0)
        close(fd);
    if (created)
        unlink(tmp);
    return -1;
}

admin *admin_create(struct event_base *base, const char *listen, const char *addr_file,
                    const admin_handlers *h, char *err, size_t errlen)
{
    admin *a = NULL;
    struct addrinfo *ai = NULL;
    char host[256];
    int port;

    if (parse_listen(listen, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "admin.listen: \"%s\" is not host:port "
                 "(e.g. \"127.0.0.1:9100\", \"[::1]:9100\", \"localhost:0\")",
                 listen ? listen : "(null)");
        goto err;
    }
    /* Resolve once here only to name the fault well; evhttp resolves again
     * with the same hints and binds the first answer. */
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    int rc = getaddrinfo(host, NULL, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "admin.listen: cannot resolve \"%s\": %s", host, gai_strerror(rc));
        goto err;
    }

    a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "admin: out of memory");
        goto err;
    }
    if (h)
        a->h = *h;
    a->http = evhttp_new(base);
    if (!a->http) {
        snprintf(err, errlen, "admin: cannot create the HTTP server");
        goto err;
    }
    /* Let every common method reach on_request, which answers 405 itself
     * (evhttp would answer 501 for methods outside its default set). */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                               EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                               EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(a->http, MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(a->http, MAX_BODY_SIZE);
    evhttp_set_timeout(a->http, CONN_TIMEOUT_S);
    evhttp_set_gencb(a->http, on_request, a);

    errno = 0;
    struct evhttp_bound_socket *bound =
        evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
    if (!bound) {
        snprintf(err, errlen, "admin.listen: cannot listen on %s: %s", listen,
                 errno ? strerror(errno) : "bind failed");
        goto err;
    }
    if (read_bound(a, bound) != 0) {
        snprintf(err, errlen, "admin.listen: cannot read the bound address of %s: %s",
                 listen, strerror(errno));
        goto err;
    }
    if (addr_file && write_addr_file(addr_file, a->addr, err, errlen) != 0)
        goto err;

    freeaddrinfo(ai);
    log_info("admin: listening on http://%s", a->addr);
    return a;
err:
    if (ai)
        freeaddrinfo(ai);
    admin_destroy(a);
    return NULL;
}

int admin_port(const admin *a)
{
    return a->port;
}

void admin_destroy(admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    free(a);
}
