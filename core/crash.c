#include "crash.h"
#include "pipeline.h"
#include "task.h"
#include "vm.h"
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char poison_path[PATH_MAX];

/* JSON string escaping for the handler: it runs after the heap may have
 * been damaged, so it cannot call an allocating JSON library (jansson); the
 * strings are names from the plan (source, uid, file:line) and a message. */
static size_t json_str(char *out, size_t cap, const char *s) {
    size_t n = 0;
    if (cap < 3) return 0;
    out[n++] = '"';
    for (; s && *s && n + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[n++] = '\\'; out[n++] = (char)c; }
        else if (c < 0x20) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    out[n++] = '"';
    out[n] = 0;
    return n;
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void on_crash(int sig, siginfo_t *si, void *ctx) {
    (void)si, (void)ctx;
    task *t = vm_current_owner();
    if (!t) {                         /* not in a user call: the default action (SA_RESETHAND) */
        raise(sig);
        return;
    }
    const plan *p = task_plan(t);
    const eddy_rec *r = task_current_record(t);
    const node *nd = task_current_node(t);
    const source_info *src = r && r->source < (uint32_t)p->nsources ? &p->sources[r->source] : NULL;
    const char *signame = sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGILL ? "SIGILL" : "SIGFPE";
    char msg[1024], pos[512];
    if (r) plan_describe_input(p, r->source, r->partition, r->line, r->offset, pos, sizeof pos);   /* (snprintf only) */
    else snprintf(pos, sizeof pos, "(no input record: windows firing, or a processing-time tick)");
    snprintf(msg, sizeof msg, "operator %s (uid %s, %s) crashed the process (%s) on input %s",
             nd ? nd->kind_name : "?", nd ? nd->uid : "?", nd ? nd->where : "?", signame, pos);
    int saved = 0;
    if (r && src && poison_path[0]) {
        char doc[4096], a[512], b[512], c[512], d[1200], e[512];
        json_str(a, sizeof a, task_name(t));
        json_str(b, sizeof b, src->name);
        json_str(c, sizeof c, nd ? nd->uid : "");
        json_str(d, sizeof d, msg);
        json_str(e, sizeof e, nd ? nd->where : "");
        int n = snprintf(doc, sizeof doc, "{\"task\": %s, \"source\": %s, \"partition\": %d, \"offset\": %lld, "
                         "\"line\": %lld, \"operator\": %s, \"where\": %s, \"error\": %s}\n", a, b, (int)r->partition,
                         (long long)r->offset, (long long)r->line, c, e, d);
        char tmp[PATH_MAX + 8];
        snprintf(tmp, sizeof tmp, "%s.tmp", poison_path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0 && n > 0 && (size_t)n < sizeof doc) {
            write_all(fd, doc, (size_t)n);
            saved = fsync(fd) == 0 && close(fd) == 0 && rename(tmp, poison_path) == 0;
        } else if (fd >= 0) {
            close(fd);
        }
    }
    char line[2048];
    int n = snprintf(line, sizeof line, "eddy: [task:%s] %s; stopping. %s\n", task_name(t), msg,
                     saved ? "The next start hands this record to the error policy (its position is in "
                             "state.dir/poison.json)." : "");
    if (n > 0) write_all(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    _exit(1);
}

void crash_install(const char *path) {
    snprintf(poison_path, sizeof poison_path, "%s", path);
    crash_thread_init();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_crash;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
}

void crash_thread_init(void) {
    static __thread void *alt;
    if (alt) return;
    stack_t cur;
    /* one the thread has already (AddressSanitizer gives each thread its own,
     * and unmaps it when the thread ends): keep it */
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;
    size_t size = 64 * 1024;
    if (!(alt = malloc(size))) return;     /* lives as long as the thread: the workers' last as long as eddy */
    stack_t st = { .ss_sp = alt, .ss_size = size, .ss_flags = 0 };
    sigaltstack(&st, NULL);
}
