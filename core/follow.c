/* follow — see follow.h. */
#include "follow.h"
#include "log.h"
#include <errno.h>
#include <event2/event.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

typedef struct watched { int wd; char *name; } watched;   /* a followed file: its folder's watch, its name */

struct follow {
    int fd;
    struct event *ev;
    void (*wake)(void *ud);
    void *ud;
    watched *files; int nfiles;
};

/* 1 when event e is about a followed file, a file new in a watched folder,
 * or when events were lost. */
static int concerns(const follow *f, const struct inotify_event *e) {
    if (e->mask & (IN_CREATE | IN_MOVED_TO | IN_Q_OVERFLOW)) return 1;     /* (events were lost: maybe ours) */
    if (e->mask & IN_IGNORED) {
        log_warn("follow: a followed folder went away: its files are read every 10 ms");
        return 0;
    }
    if (!e->len) return 0;
    for (int i = 0; i < f->nfiles; i++)
        if (f->files[i].wd == e->wd && strcmp(f->files[i].name, e->name) == 0) return 1;
    return 0;
}

static void on_inotify(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    follow *f = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    int hit = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (!hit) hit = concerns(f, e);
            p += sizeof *e + e->len;
        }
    }
    if (hit) f->wake(f->ud);
}

/* Watches the folder of path and remembers its name.  0, or -1. */
static int watch_file(follow *f, const char *path) {
    char *d = strdup(path), *b = strdup(path);
    watched *nw = realloc(f->files, sizeof *nw * (f->nfiles + 1));
    if (!d || !b || !nw) { free(d); free(b); if (nw) f->files = nw; return -1; }
    f->files = nw;
    int wd = inotify_add_watch(f->fd, dirname(d), IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO);
    if (wd < 0) {
        log_warn("follow: cannot watch the folder of %s (%s): it is read every 10 ms instead", path, strerror(errno));
        free(d);
        free(b);
        return 0;
    }
    f->files[f->nfiles++] = (watched){ .wd = wd, .name = strdup(basename(b)) };
    free(d);
    free(b);
    return f->files[f->nfiles - 1].name ? 0 : -1;
}

follow *follow_open(struct event_base *base, const plan *p, void (*wake)(void *ud), void *ud) {
    int any = 0;
    for (int s = 0; s < p->nsources; s++) any |= p->sources[s].kind == SRC_FILE && p->sources[s].follow;
    if (!any) return NULL;
    follow *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->wake = wake;
    f->ud = ud;
    f->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (f->fd < 0) {
        log_warn("follow: inotify: %s: followed files are read every 10 ms", strerror(errno));
        free(f);
        return NULL;
    }
    for (int s = 0; s < p->nsources; s++) {
        const source_info *si = &p->sources[s];
        if (si->kind != SRC_FILE || !si->follow) continue;
        for (int i = 0; i < si->nfiles; i++)
            if (watch_file(f, si->files[i]) < 0) { follow_close(f); return NULL; }
    }
    f->ev = event_new(base, f->fd, EV_READ | EV_PERSIST, on_inotify, f);
    if (!f->ev || event_add(f->ev, NULL) < 0) { follow_close(f); return NULL; }
    return f;
}

void follow_close(follow *f) {
    if (!f) return;
    if (f->ev) event_free(f->ev);
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->nfiles; i++) free(f->files[i].name);
    free(f->files);
    free(f);
}
