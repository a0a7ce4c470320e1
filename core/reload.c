#include "reload.h"
#include "log.h"
#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

struct reload_watch {
    int fd;
    struct event *ev, *timer;
    int debounce_ms;
    void (*cb)(void *ud, const char *file);
    void *ud;
    char last[256];
};

static void on_quiet(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    reload_watch *w = arg;
    w->cb(w->ud, w->last);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    reload_watch *w = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            size_t len = e->len ? strlen(e->name) : 0;
            if (len > 4 && strcmp(e->name + len - 4, ".lua") == 0) {
                snprintf(w->last, sizeof w->last, "%s", e->name);
                struct timeval tv = { w->debounce_ms / 1000, (w->debounce_ms % 1000) * 1000 };
                evtimer_add(w->timer, &tv);      /* re-arming pushes the deadline back */
            }
            p += sizeof *e + e->len;
        }
    }
}

reload_watch *reload_watch_create(struct event_base *base, const char *dir, int debounce_ms,
                                  void (*cb)(void *, const char *), void *ud, char *err, size_t errlen) {
    reload_watch *w = calloc(1, sizeof *w);
    if (!w) { snprintf(err, errlen, "out of memory"); return NULL; }
    w->cb = cb;
    w->ud = ud;
    w->debounce_ms = debounce_ms;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) { snprintf(err, errlen, "reload.watch: inotify: %s", strerror(errno)); free(w); return NULL; }
    if (inotify_add_watch(w->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
        snprintf(err, errlen, "reload.watch: cannot watch %s: %s", dir, strerror(errno));
        close(w->fd);
        free(w);
        return NULL;
    }
    w->ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_inotify, w);
    w->timer = evtimer_new(base, on_quiet, w);
    if (!w->ev || !w->timer || event_add(w->ev, NULL) < 0) {
        snprintf(err, errlen, "reload.watch: cannot register with the event loop");
        reload_watch_destroy(w);
        return NULL;
    }
    return w;
}

void reload_watch_destroy(reload_watch *w) {
    if (!w) return;
    if (w->ev) event_free(w->ev);
    if (w->timer) event_free(w->timer);
    if (w->fd >= 0) close(w->fd);
    free(w);
}

plan *reload_prepare(const config *cfg, const char *lua_dir, const plan *running, task **tasks, int ntasks,
                     int version, int allow_dropped_state, task_vm **tvs, char *err, size_t errlen) {
    plan *p = plan_create(cfg, lua_dir, err, errlen);
    if (!p) return NULL;
    if (plan_copy_kafka(p, running) < 0) { snprintf(err, errlen, "out of memory"); goto err; }
    if (plan_compatible(running, p, allow_dropped_state, err, errlen) < 0) goto err;
    for (int i = 0; i < ntasks; i++) tvs[i] = NULL;
    for (int i = 0; i < ntasks; i++) {
        char terr[1024];
        tvs[i] = task_prepare(tasks[i], p, version, terr, sizeof terr);
        if (!tvs[i]) {
            snprintf(err, errlen, "task %s: %s", tasks[i]->name, terr);
            for (int j = 0; j < i; j++) { task_vm_destroy(tvs[j]); tvs[j] = NULL; }
            /* the refused version's VMs opened window state of its own uids: drop it */
            for (int j = 0; j <= i; j++) task_forget_windows(tasks[j], running, 0);
            goto err;
        }
    }
    return p;
err:
    plan_destroy(p);
    return NULL;
}
