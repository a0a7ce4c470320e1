/* kafka_mock — `eddy kafka-mock`: librdkafka's mock cluster, plus (with
 * --port P) a bootstrap forwarder on 127.0.0.1:P.  librdkafka 2.0 picks the
 * mock brokers' ports itself, so a fixed port is had by relaying every
 * connection to it, byte for byte, to the first broker; clients bootstrap
 * there and then reach the brokers at the addresses these advertise. */
#include "kafka_mock.h"
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* bytes queued toward one side before the other side stops being read */
#define RELAY_MAX_QUEUED (1024 * 1024)

typedef struct topic_arg {
    char name[256];
    int partitions;
} topic_arg;

typedef struct relay relay;

/* one accepted connection and its connection to the broker */
typedef struct relay_pair {
    struct bufferevent *side[2];            /* [0] the client, [1] the broker; NULL once closed */
    relay *r;
    struct relay_pair *prev, *next;
} relay_pair;

/* the forwarder: its listener, where it forwards to, the open pairs */
struct relay {
    struct event_base *base;
    struct evconnlistener *listener;
    struct sockaddr_storage broker;
    int broker_len;
    relay_pair *pairs;
};

static int usage(const char *msg, const char *arg) {
    fprintf(stderr, "eddy kafka-mock: %s%s%s\n"
            "usage: eddy kafka-mock [--brokers N] [--port P] [--topic NAME:PARTITIONS]... [--error REQUEST:ERR[,ERR]...]...\n",
            msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* --error REQUEST:ERR[,ERR...]: the next requests of that kind are answered
 * with these errors, one each, in order (NO_ERROR lets one through):
 * rd_kafka_mock_push_request_errors, to test clients against failures */
#define MAX_ERRS 32
typedef struct error_arg { int16_t api; int n; rd_kafka_resp_err_t errs[MAX_ERRS]; } error_arg;

static const struct { const char *name; int16_t key; } REQUESTS[] = {
    { "Produce", 0 }, { "Fetch", 1 }, { "ListOffsets", 2 }, { "Metadata", 3 }, { "OffsetCommit", 8 },
    { "OffsetFetch", 9 }, { "FindCoordinator", 10 }, { "JoinGroup", 11 }, { "Heartbeat", 12 }, { "LeaveGroup", 13 },
    { "SyncGroup", 14 }, { "InitProducerId", 22 }, { "AddPartitionsToTxn", 24 }, { "AddOffsetsToTxn", 25 },
    { "EndTxn", 26 }, { "TxnOffsetCommit", 28 },
};

/* "EndTxn:NOT_COORDINATOR,PRODUCER_FENCED" into e.  0, or -1 (usage printed). */
static int parse_error_arg(const char *v, error_arg *e) {
    const char *colon = strchr(v, ':');
    size_t nl = colon ? (size_t)(colon - v) : 0;
    e->api = -1;
    for (size_t i = 0; colon && i < sizeof REQUESTS / sizeof REQUESTS[0]; i++)
        if (strlen(REQUESTS[i].name) == nl && strncmp(REQUESTS[i].name, v, nl) == 0) e->api = REQUESTS[i].key;
    if (e->api < 0) {
        usage("--error needs REQUEST:ERR[,ERR...] with a request such as Produce, InitProducerId, "
              "AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit or EndTxn; got", v);
        return -1;
    }
    const struct rd_kafka_err_desc *descs;
    size_t ndescs;
    rd_kafka_get_err_descs(&descs, &ndescs);
    e->n = 0;
    for (const char *p = colon + 1; *p;) {
        size_t len = strcspn(p, ",");
        int found = 0;
        for (size_t i = 0; i < ndescs && !found; i++)
            if (descs[i].name && strlen(descs[i].name) == len && strncmp(descs[i].name, p, len) == 0) {
                if (e->n == MAX_ERRS) { fprintf(stderr, "eddy kafka-mock: --error %s: at most %d errors a request\n", v, MAX_ERRS); return -1; }
                e->errs[e->n++] = descs[i].code;
                found = 1;
            }
        if (!found) {
            fprintf(stderr, "eddy kafka-mock: --error %s: '%.*s' is not a Kafka error name (such as NOT_COORDINATOR, "
                    "PRODUCER_FENCED or NO_ERROR)\n", v, (int)len, p);
            return -1;
        }
        p += len;
        if (*p == ',') p++;
    }
    if (!e->n) { usage("--error needs at least one error after the request", v); return -1; }
    return 0;
}

/* closes both sides of p (whichever are still open) and frees it */
static void pair_free(relay_pair *p) {
    for (int i = 0; i < 2; i++)
        if (p->side[i]) bufferevent_free(p->side[i]);
    if (p->prev) p->prev->next = p->next;
    else p->r->pairs = p->next;
    if (p->next) p->next->prev = p->prev;
    free(p);
}

/* moves what bev read to the other side; stops reading bev while the other
 * side has too much queued (on_write resumes it) */
static void on_read(struct bufferevent *bev, void *arg) {
    relay_pair *p = arg;
    int i = bev == p->side[1];
    struct bufferevent *other = p->side[!i];
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!other) { evbuffer_drain(in, evbuffer_get_length(in)); return; }
    struct evbuffer *out = bufferevent_get_output(other);
    evbuffer_add_buffer(out, in);
    if (evbuffer_get_length(out) >= RELAY_MAX_QUEUED) {
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(other, EV_WRITE, RELAY_MAX_QUEUED / 2, 0);
    }
}

/* bev's queue ran low: read its peer again, or, when the peer has gone and
 * bev was only flushing, close the pair once all is written */
static void on_write(struct bufferevent *bev, void *arg) {
    relay_pair *p = arg;
    int i = bev == p->side[1];
    struct bufferevent *other = p->side[!i];
    if (!other) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) pair_free(p);
        return;
    }
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_enable(other, EV_READ);
}

/* end of file or an error on one side closes the pair; what that side sent
 * last is still delivered to the other first */
static void on_event(struct bufferevent *bev, short what, void *arg) {
    relay_pair *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return;
    }
    int i = bev == p->side[1];
    struct bufferevent *other = p->side[!i];
    if (!other) { pair_free(p); return; }   /* the flushing side failed too */
    if (what & BEV_EVENT_EOF) evbuffer_add_buffer(bufferevent_get_output(other), bufferevent_get_input(bev));
    bufferevent_free(bev);
    p->side[i] = NULL;
    if (evbuffer_get_length(bufferevent_get_output(other)) == 0) { pair_free(p); return; }
    bufferevent_disable(other, EV_READ);
    bufferevent_setwatermark(other, EV_WRITE, 0, 0);   /* on_write closes it once flushed */
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg) {
    (void)l; (void)sa; (void)salen;
    relay *r = arg;
    relay_pair *p = calloc(1, sizeof *p);
    if (!p) { evutil_closesocket(fd); return; }
    p->r = r;
    p->next = r->pairs;
    if (r->pairs) r->pairs->prev = p;
    r->pairs = p;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p->side[0] = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!p->side[0]) { evutil_closesocket(fd); goto err; }
    p->side[1] = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!p->side[1]) goto err;
    for (int i = 0; i < 2; i++) {
        bufferevent_setcb(p->side[i], on_read, on_write, on_event, p);
        bufferevent_enable(p->side[i], EV_READ | EV_WRITE);
    }
    /* what the client sends before the broker answers the connect waits in the queue */
    if (bufferevent_socket_connect(p->side[1], (struct sockaddr *)&r->broker, r->broker_len) < 0) goto err;
    return;
err:
    fprintf(stderr, "eddy kafka-mock: cannot relay a connection to the broker: %s\n",
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    pair_free(p);
}

/* a listening socket on 127.0.0.1:port (0: any free port), or -1 with err filled */
static int listen_loopback(int port, char *err, size_t errlen) {
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) { snprintf(err, errlen, "socket: %s", strerror(errno)); return -1; }
    /* SO_REUSEADDR lets a restart take a port in TIME_WAIT; a live listener still refuses */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        if (errno == EADDRINUSE)
            snprintf(err, errlen, "--port %d: 127.0.0.1:%d is already in use; choose another port, or 0 for any free one",
                     port, port);
        else
            snprintf(err, errlen, "--port %d: cannot listen on 127.0.0.1:%d: %s", port, port, strerror(errno));
        goto err;
    }
    if (listen(fd, 128) < 0) {
        snprintf(err, errlen, "--port %d: cannot listen on 127.0.0.1:%d: %s", port, port, strerror(errno));
        goto err;
    }
    return fd;
err:
    close(fd);
    return -1;
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)sig; (void)what;
    event_base_loopbreak(arg);
}

/* SIGUSR1 takes every broker down (connections dropped, none accepted),
 * SIGUSR2 brings them back at the same addresses: an outage to test clients
 * against. */
typedef struct outage { rd_kafka_mock_cluster_t *mc; int brokers; } outage;

static void on_outage(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    outage *o = arg;
    for (int b = 1; b <= o->brokers; b++) {
        rd_kafka_resp_err_t e = sig == SIGUSR1 ? rd_kafka_mock_broker_set_down(o->mc, b)
                                               : rd_kafka_mock_broker_set_up(o->mc, b);
        if (e) fprintf(stderr, "eddy kafka-mock: broker %d: %s\n", b, rd_kafka_err2str(e));
    }
    fprintf(stderr, "eddy kafka-mock: brokers %s\n", sig == SIGUSR1 ? "down (SIGUSR1)" : "up again (SIGUSR2)");
}

int kafka_mock_main(int argc, char **argv) {
    int brokers = 1, port = -1;              /* -1: no --port */
    topic_arg *topics = calloc(argc > 0 ? argc : 1, sizeof *topics);
    error_arg *errors = calloc(argc > 0 ? argc : 1, sizeof *errors);
    int ntopics = 0, nerrors = 0, rc = 1, lfd = -1;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    relay r = { 0 };
    struct event *sig_ev[4] = { NULL, NULL, NULL, NULL };
    outage og = { 0 };
    char err[512];
    if (!topics || !errors) { free(topics); free(errors); return 1; }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--brokers") == 0 && v) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 64) { rc = usage("--brokers needs a number from 1 to 64, got", v); goto out; }
            brokers = (int)n;
            i++;
        } else if (strcmp(a, "--topic") == 0 && v) {
            const char *colon = strrchr(v, ':');
            char *end = NULL;
            long n = colon ? strtol(colon + 1, &end, 10) : 0;
            if (!colon || colon == v || (size_t)(colon - v) >= sizeof topics[0].name || *end || n < 1 || n > 10000) {
                rc = usage("--topic needs NAME:PARTITIONS, got", v);
                goto out;
            }
            memcpy(topics[ntopics].name, v, colon - v);
            topics[ntopics].partitions = (int)n;
            ntopics++;
            i++;
        } else if (strcmp(a, "--error") == 0 && v) {
            if (parse_error_arg(v, &errors[nerrors]) < 0) { rc = 2; goto out; }
            nerrors++;
            i++;
        } else if (strcmp(a, "--port") == 0 && v) {
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 0 || n > 65535) { rc = usage("--port needs a number from 0 to 65535, got", v); goto out; }
            port = (int)n;
            i++;
        } else {
            rc = usage("unknown argument", a);
            goto out;
        }
    }
    /* Block SIGTERM/SIGINT before librdkafka starts its threads, so that
     * only this thread, which unblocks them for the event loop, takes them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);                /* a client that hangs up is an EPIPE, not a death */

    /* the port first: a taken one fails before a cluster is started */
    if (port >= 0 && (lfd = listen_loopback(port, err, sizeof err)) < 0) {
        fprintf(stderr, "eddy kafka-mock: %s\n", err);
        goto out;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) { fprintf(stderr, "eddy kafka-mock: %s\n", err); goto out; }
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) { fprintf(stderr, "eddy kafka-mock: cannot start the mock cluster\n"); goto out; }
    for (int t = 0; t < ntopics; t++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, topics[t].name, topics[t].partitions, 1);
        if (e) {
            fprintf(stderr, "eddy kafka-mock: topic %s: %s\n", topics[t].name, rd_kafka_err2str(e));
            goto out;
        }
    }
    for (int i = 0; i < nerrors; i++)
        rd_kafka_mock_push_request_errors_array(mc, errors[i].api, (size_t)errors[i].n, errors[i].errs);
    const char *boots = rd_kafka_mock_cluster_bootstraps(mc);

    r.base = event_base_new();
    if (!r.base) { fprintf(stderr, "eddy kafka-mock: cannot create the event loop\n"); goto out; }
    for (int i = 0; i < 2; i++) {
        sig_ev[i] = evsignal_new(r.base, i ? SIGINT : SIGTERM, on_signal, r.base);
        if (!sig_ev[i] || event_add(sig_ev[i], NULL) < 0) {
            fprintf(stderr, "eddy kafka-mock: cannot watch for SIGTERM/SIGINT\n");
            goto out;
        }
    }
    og.mc = mc;
    og.brokers = brokers;
    for (int i = 2; i < 4; i++) {
        sig_ev[i] = evsignal_new(r.base, i == 2 ? SIGUSR1 : SIGUSR2, on_outage, &og);
        if (!sig_ev[i] || event_add(sig_ev[i], NULL) < 0) {
            fprintf(stderr, "eddy kafka-mock: cannot watch for SIGUSR1/SIGUSR2\n");
            goto out;
        }
    }
    char listen_addr[32] = "";
    if (lfd >= 0) {
        char first[256];
        size_t n = strcspn(boots, ",");
        snprintf(first, sizeof first, "%.*s", (int)n, boots);
        r.broker_len = sizeof r.broker;
        if (evutil_parse_sockaddr_port(first, (struct sockaddr *)&r.broker, &r.broker_len) < 0) {
            fprintf(stderr, "eddy kafka-mock: cannot read the first broker's address '%s'\n", first);
            goto out;
        }
        struct sockaddr_in sin;
        socklen_t slen = sizeof sin;
        if (getsockname(lfd, (struct sockaddr *)&sin, &slen) < 0) {
            fprintf(stderr, "eddy kafka-mock: --port %d: %s\n", port, strerror(errno));
            goto out;
        }
        snprintf(listen_addr, sizeof listen_addr, "127.0.0.1:%d", ntohs(sin.sin_port));
        /* backlog 0: the socket already listens */
        r.listener = evconnlistener_new(r.base, on_accept, &r, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, lfd);
        if (!r.listener) { fprintf(stderr, "eddy kafka-mock: cannot listen on %s\n", listen_addr); goto out; }
        lfd = -1;                            /* the listener owns it now */
    }
    printf("%s\n", listen_addr[0] ? listen_addr : boots);
    fflush(stdout);
    if (listen_addr[0])
        fprintf(stderr, "eddy kafka-mock: %d broker%s at %s, bootstrap forwarder at %s; SIGTERM or SIGINT stops it\n",
                brokers, brokers == 1 ? "" : "s", boots, listen_addr);
    else
        fprintf(stderr, "eddy kafka-mock: %d broker%s at %s; SIGTERM or SIGINT stops it\n", brokers,
                brokers == 1 ? "" : "s", boots);
    /* a signal that came while blocked is delivered here, to libevent's handler */
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    if (event_base_dispatch(r.base) < 0) { fprintf(stderr, "eddy kafka-mock: the event loop failed\n"); goto out; }
    rc = 0;
out:
    while (r.pairs) pair_free(r.pairs);
    if (r.listener) evconnlistener_free(r.listener);
    if (lfd >= 0) close(lfd);
    for (int i = 0; i < 4; i++)
        if (sig_ev[i]) event_free(sig_ev[i]);
    if (r.base) event_base_free(r.base);
    if (mc) rd_kafka_mock_cluster_destroy(mc);
    if (rk) rd_kafka_destroy(rk);
    free(topics);
    free(errors);
    return rc;
}
