/* config_value — see config_internal.h: a Lua value as an error message shows
 * it, a key's path, and the parsers of durations ("10s"), sizes ("64MB") and
 * paths (relative to the config's folder).  Calls: LuaJIT's stack functions. */
#include "config_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lua.h>


/* `s` between double quotes, with quotes, backslashes and control bytes
 * escaped, cut at 60 bytes. */
void config_quote(char *buf, size_t n, const char *s, size_t len)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < len && o + 8 < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i == 60) {
            o += (size_t)snprintf(buf + o, n - o, "...");
            break;
        }
        if (ch == '"' || ch == '\\')
            o += (size_t)snprintf(buf + o, n - o, "\\%c", ch);
        else if (ch == '\n')
            o += (size_t)snprintf(buf + o, n - o, "\\n");
        else if (ch < 0x20 || ch == 0x7f)
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    snprintf(buf + o, n - o, "\"");
}

/* The value at idx for an error message.  A value of the Lua type the key
 * takes (`same`) is shown bare ("3.5", "\"ten\""); any other with its type
 * ("string \"two\"", "boolean true", "a table"). */
const char *config_describe(lua_State *L, int idx, int same, char *buf, size_t n)
{
    char q[96];
    size_t len;
    int t = lua_type(L, idx);
    const char *pre = t == same ? "" : t == LUA_TNUMBER ? "number " : t == LUA_TSTRING
                      ? "string " : "boolean ";
    switch (t) {
    case LUA_TNUMBER: {
        double x = lua_tonumber(L, idx);
        if (isnan(x))
            snprintf(buf, n, "%snan", pre);
        else
            snprintf(buf, n, "%s%.14g", pre, x);
        break;
    }
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &len);
        config_quote(q, sizeof q, s, len);
        snprintf(buf, n, "%s%s", pre, q);
        break;
    }
    case LUA_TBOOLEAN:
        snprintf(buf, n, "%s%s", pre, lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TNIL:
        snprintf(buf, n, "nil");
        break;
    default:
        snprintf(buf, n, "a %s", lua_typename(L, t));
        break;
    }
    return buf;
}

static int is_ident(const char *s)
{
    if (!(*s == '_' || isalpha((unsigned char)*s)))
        return 0;
    for (s++; *s; s++)
        if (!(*s == '_' || isalnum((unsigned char)*s)))
            return 0;
    return 1;
}

/* The path of the key at idx inside `prefix`: "checkpoint.interval",
 * kafka["bootstrap.servers"], "sources[1]". */
void config_child_path(char *buf, size_t n, const char *prefix, lua_State *L, int idx)
{
    const char *dot = *prefix ? "." : "";
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *k = lua_tolstring(L, idx, &len);
        if (is_ident(k)) {
            snprintf(buf, n, "%s%s%s", prefix, dot, k);
        } else {
            char q[96];
            config_quote(q, sizeof q, k, len);
            snprintf(buf, n, "%s[%s]", prefix, q);
        }
    } else if (lua_type(L, idx) == LUA_TNUMBER) {
        snprintf(buf, n, "%s[%.14g]", prefix, lua_tonumber(L, idx));
    } else if (lua_type(L, idx) == LUA_TBOOLEAN) {
        snprintf(buf, n, "%s[%s]", prefix, lua_toboolean(L, idx) ? "true" : "false");
    } else {
        snprintf(buf, n, "%s[%s]", prefix, lua_typename(L, lua_type(L, idx)));
    }
}

/* ---- durations, sizes, paths ---------------------------------------------- */

/* "12" or "1.5" at the start of s (no sign, no exponent, no leading '.');
 * sets *v and *rest to what follows. */
static int parse_amount(const char *s, double *v, const char **rest)
{
    double x = 0, scale = 1;
    if (!s || *s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++)
        x = x * 10 + (*s - '0');
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -1;
        for (; *s >= '0' && *s <= '9'; s++)
            x += (*s - '0') * (scale /= 10);
    }
    *v = x;
    *rest = s;
    return 0;
}

/* amount * mult rounded, or -1 when it does not fit an int64_t. */
static int scaled(double amount, double mult, int64_t *out)
{
    double v = amount * mult;
    if (!(v < 9.2e18))
        return -1;
    *out = (int64_t)llround(v);
    return 0;
}

int config_parse_duration(const char *s, int64_t *ms)
{
    static const struct { const char *unit; double ms; } UNITS[] = {
        { "", 1 }, { "ms", 1 }, { "s", 1e3 }, { "m", 60e3 }, { "h", 3600e3 }, { "d", 86400e3 },
    };
    double v;
    const char *unit;
    if (parse_amount(s, &v, &unit) < 0)
        return -1;
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++)
        if (strcmp(unit, UNITS[i].unit) == 0)
            return scaled(v, UNITS[i].ms, ms);
    return -1;
}

int config_parse_size(const char *s, int64_t *bytes)
{
    /* Case-insensitive: "64mb" is what people type too.  1KB = 1024 bytes. */
    static const struct { const char *unit; double mult; } UNITS[] = {
        { "", 1 }, { "b", 1 }, { "k", 1024.0 }, { "kb", 1024.0 }, { "m", 1048576.0 },
        { "mb", 1048576.0 }, { "g", 1073741824.0 }, { "gb", 1073741824.0 },
        { "t", 1099511627776.0 }, { "tb", 1099511627776.0 },
    };
    double v;
    const char *unit;
    if (parse_amount(s, &v, &unit) < 0)
        return -1;
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++)
        if (strcasecmp(unit, UNITS[i].unit) == 0)
            return scaled(v, UNITS[i].mult, bytes);
    return -1;
}

/* `p` as an absolute path: kept when absolute, else joined to `dir` (an
 * absolute folder), without leading "./".  Owned, or NULL. */
char *config_path_resolve(const char *dir, const char *p)
{
    char *out = NULL;
    if (p[0] == '/')
        return strdup(p);
    while (p[0] == '.' && p[1] == '/')
        for (p += 2; *p == '/'; p++)
            ;
    if (strcmp(p, ".") == 0)
        p = "";
    size_t dl = strlen(dir);
    const char *sep = (dl && dir[dl - 1] == '/') || !*p ? "" : "/";
    if (asprintf(&out, "%s%s%s", dir, sep, p) < 0)
        return NULL;
    return out;
}
