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
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#define HEALTH_REASON_MAX  512
#define MAX_HEADERS_SIZE   (16 * 1024)
#define MAX_BODY_SIZE      (64 * 1024)   /* POST bodies are ignored today */
#define ADDR_MAX           (INET6_ADDRSTRLEN + 8)

struct admin {
    struct evhttp *http;
    struct evconnlistener *listener;     /* the bound socket's, paused while conns is at the bound */
    admin_handlers h;
    int port;
    char addr[ADDR_MAX];                 /* "127.0.0.1:9100", "[::1]:9100" */
    char listen_host[256];               /* admin.listen's host ("localhost", "0.0.0.0", ...) */
    char hostname[256];                  /* this machine's name (gethostname) */
    struct event *resume;                /* checks whether to accept again, while paused */
    int paused;
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
    json_t *body = a->h.get_prefixed
                   ? a->h.get_prefixed(a->h.ud, path, query, &code, evhttp_request_get_output_headers(req))
                   : NULL;
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
    { EVHTTP_REQ_GET,  MATCH_PREFIX, "/reload/",   serve_prefixed },     /* /reload/dry-run/ID */
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

/* ---- who may ask ---------------------------------------------------------- */

/* 1 when the host part of a Host header or an Origin ("h", "h:port",
 * "[v6]:port") names this server: an IP address (a DNS-rebinding page
 * always comes through a name), "localhost", admin.listen's host or the
 * machine's name, and no port or the bound one. */
static int host_ok(const admin *a, const char *hp)
{
    char host[256];
    const char *port = NULL;
    size_t hlen;
    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        if (!close)
            return 0;
        hlen = (size_t)(close - hp - 1);
        if (hlen == 0 || hlen >= sizeof host)
            return 0;
        memcpy(host, hp + 1, hlen);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1])
            return 0;
    } else {
        const char *colon = strchr(hp, ':');
        hlen = colon ? (size_t)(colon - hp) : strlen(hp);
        if (hlen == 0 || hlen >= sizeof host)
            return 0;
        memcpy(host, hp, hlen);
        if (colon)
            port = colon + 1;
    }
    host[hlen] = 0;
    if (port) {
        char *end;
        long v = strtol(port, &end, 10);
        if (!*port || *end || v != a->port)
            return 0;
    }
    unsigned char bin[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1)
        return 1;
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, a->listen_host) == 0 ||
        (a->hostname[0] && strcasecmp(host, a->hostname) == 0))
        return 1;
    for (const char *h = a->h.hosts; h && *h;) {          /* admin.hosts */
        size_t n = strcspn(h, ",");
        if (n == hlen && strncasecmp(h, host, n) == 0)
            return 1;
        h += n + (h[n] == ',');
    }
    return 0;
}

/* 0 when the request may go on; else answers it (403, 401) and returns -1. */
static int check_caller(admin *a, struct evhttp_request *req, enum evhttp_cmd_type method)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *host = evhttp_find_header(in, "Host");
    const char *origin = evhttp_find_header(in, "Origin");
    if (host && !host_ok(a, host)) {
        send_error(req, 403, "Host \"%.200s\" does not name this server (an address, localhost, or "
                   "admin.listen's host): refused, as a request a web page made through a name it "
                   "resolves to this machine would be", host);
        return -1;
    }
    if (origin) {
        const char *hp = strncmp(origin, "http://", 7) == 0 ? origin + 7
                       : strncmp(origin, "https://", 8) == 0 ? origin + 8 : NULL;
        if (!hp || !host_ok(a, hp)) {
            send_error(req, 403, "Origin \"%.200s\" is another site: the admin API does not answer "
                       "requests web pages make", origin);
            return -1;
        }
    }
    if (a->h.token && method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        const char *auth = evhttp_find_header(in, "Authorization");
        size_t tl = strlen(a->h.token);
        /* compared in constant time over the token's length */
        int ok = auth && strncmp(auth, "Bearer ", 7) == 0 && strlen(auth + 7) == tl;
        unsigned char diff = 0;
        for (size_t i = 0; ok && i < tl; i++)
            diff |= (unsigned char)(auth[7 + i] ^ a->h.token[i]);
        if (!ok || diff) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
            send_error(req, 401, "this request needs \"Authorization: Bearer <admin.token>\" "
                       "(eddy reload and eddy savepoint send it with --token or EDDY_ADMIN_TOKEN)");
            return -1;
        }
    }
    return 0;
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
    if (check_caller(a, req, method) < 0)
        return;
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

/* ---- connections ------------------------------------------------------- */

/* The admin connections open now: the sockets of this process bound to the
 * admin port and connected to a peer (the listening socket has none).  Read
 * from /proc/self/fd, so nothing of evhttp's internals is needed; an admin
 * API takes few connections, so the scan is cheap. */
static int open_conns(const admin *a)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return 0;
    int n = 0, self = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd == self)
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname((int)fd, (struct sockaddr *)&ss, &sl) != 0)
            continue;
        int port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                 : ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) : -1;
        if (port != a->port)
            continue;
        sl = sizeof ss;
        if (getpeername((int)fd, (struct sockaddr *)&ss, &sl) == 0)
            n++;
    }
    closedir(dir);
    return n;
}

/* Once a second while paused: accept again when connections have gone. */
static void on_resume_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    admin *a = arg;
    if (open_conns(a) < ADMIN_MAX_CONNECTIONS) {
        evconnlistener_enable(a->listener);
        a->paused = 0;
        return;
    }
    struct timeval tv = { 1, 0 };
    evtimer_add(a->resume, &tv);
}

/* evhttp asks for each accepted connection's bufferevent: the moment to
 * count.  At ADMIN_MAX_CONNECTIONS the listener stops accepting (new
 * connections wait in the kernel's backlog, holding none of our file
 * descriptors) until idle ones have closed. */
static struct bufferevent *new_conn(struct event_base *base, void *arg)
{
    admin *a = arg;
    if (a->listener && a->resume && !a->paused && open_conns(a) >= ADMIN_MAX_CONNECTIONS) {
        evconnlistener_disable(a->listener);
        a->paused = 1;
        struct timeval tv = { 1, 0 };
        evtimer_add(a->resume, &tv);
        log_warn("admin: %d connections are open: new ones wait until some close (idle ones close after %d s)",
                 ADMIN_MAX_CONNECTIONS, ADMIN_IDLE_S);
    }
    return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
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
    evhttp_set_timeout(a->http, ADMIN_IDLE_S);
    evhttp_set_gencb(a->http, on_request, a);
    evhttp_set_bevcb(a->http, new_conn, a);
    a->resume = evtimer_new(base, on_resume_check, a);
    snprintf(a->listen_host, sizeof a->listen_host, "%s", host);
    if (gethostname(a->hostname, sizeof a->hostname) != 0)
        a->hostname[0] = 0;
    a->hostname[sizeof a->hostname - 1] = 0;

    errno = 0;
    struct evhttp_bound_socket *bound =
        evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
    if (!bound) {
        snprintf(err, errlen, "admin.listen: cannot listen on %s: %s", listen,
                 errno ? strerror(errno) : "bind failed");
        goto err;
    }
    a->listener = evhttp_bound_socket_get_listener(bound);
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

const char *admin_addr(const admin *a)
{
    return a->addr;
}

void admin_destroy(admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    if (a->resume)
        event_free(a->resume);
    free(a);
}
