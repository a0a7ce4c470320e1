/* admin — the admin HTTP server (libevent evhttp) on the daemon's event loop:
 * routes GET /health, /status, /metrics, POST /reload, /savepoint and GET
 * /explain/..., /state/... to the handlers the daemon supplies.  Workers
 * never block on it.  Calls libevent, jansson and the daemon's handlers;
 * knows nothing of tasks itself. */
#ifndef EDDY_ADMIN_H
#define EDDY_ADMIN_H

#include <stddef.h>
#include <jansson.h>

struct event_base;
struct evbuffer;
struct evkeyvalq;
typedef struct admin admin;

typedef struct admin_handlers {
    void *ud;
    /* 1 when healthy; else 0 with a reason ("task words-0 failed: ..."). */
    int (*health)(void *ud, char *reason, size_t len);
    /* The /status document; returns an owned json_t. */
    json_t *(*status)(void *ud);
    /* Appends the Prometheus text of every metric to out. */
    void (*metrics)(void *ud, struct evbuffer *out);
    /* POST /reload (query: the raw query string, "" when none): returns an
     * HTTP status (200, 422, 503) and an owned
     * json_t body; NULL handler answers 501. */
    json_t *(*reload)(void *ud, const char *query, int *http_status);
    /* POST /savepoint: same shape as reload; NULL handler answers 501. */
    json_t *(*savepoint)(void *ud, const char *query, int *http_status);
    /* Any GET under /explain/ or /state/: path is the whole request path and
     * query the raw query string ("" when none), both still percent-encoded
     * (split path on '/' first, then evhttp_uridecode each segment, so a KEY
     * may hold "%2F").  Sets *http_status (it starts at 200) and returns an
     * owned json_t (object or array); NULL with no error status set, or a
     * NULL handler, answers 404.  headers: the reply's headers, to which the
     * handler may add (Location with a 307, Retry-After with a 503). */
    json_t *(*get_prefixed)(void *ud, const char *path, const char *query, int *http_status,
                            struct evkeyvalq *headers);
    /* admin.token: POST requests need "Authorization: Bearer <token>" (401
     * otherwise); NULL lets them through.  Borrowed; must outlive the server. */
    const char *token;
    /* admin.hosts: more names Host may carry, comma-separated, or NULL.  Borrowed. */
    const char *hosts;
} admin_handlers;

/* Every request must name this server in Host (an IP address, "localhost",
 * the host of admin.listen or this machine's name, with no port or the bound
 * one), and an Origin header, when there is one, must name the same: a page
 * of another site cannot reach the API through the browser (cross-origin or
 * DNS rebinding); 403 otherwise.  At most ADMIN_MAX_CONNECTIONS connections
 * are open at once (the listener pauses until one closes), and a connection
 * idle for ADMIN_IDLE_S seconds is closed. */
#define ADMIN_MAX_CONNECTIONS 64
#define ADMIN_IDLE_S          10

/* Listens on "host:port", "[v6addr]:port" or "localhost:port" (port 0 picks
 * a free port); a bad string or a failed bind is an error naming
 * admin.listen.  The bound numeric address is logged and, when addr_file is
 * not NULL, written there atomically as "host:port\n" (state.dir/admin.addr).
 * The handlers are copied; h->ud is borrowed and must outlive the server.
 * Returns an owned server, or NULL with err. */
admin *admin_create(struct event_base *base, const char *listen, const char *addr_file,
                    const admin_handlers *h, char *err, size_t errlen);
/* The bound port (useful after port 0), and the bound address as written
 * to addr_file ("127.0.0.1:9100", "[::1]:9100"; borrowed). */
int admin_port(const admin *a);
const char *admin_addr(const admin *a);
void admin_destroy(admin *a);   /* NULL is a no-op */

#endif
