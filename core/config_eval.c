/* config_eval — see config_internal.h: evaluates a config file in a fresh
 * LuaJIT state with a small environment (a few base functions, string, table,
 * math, four os functions), the JIT off and an instruction limit, so a config
 * can compute values but not reach the system.  Calls: LuaJIT,
 * config_value.c (config_describe). */
#include "config_internal.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <luajit.h>

/* Evaluating a config file stops after this many VM instructions: a config
 * is a few dozen lines, so this only ever catches an endless loop. */
#define EVAL_MAX_INSTRUCTIONS 20000000

/* ---- evaluating the file ------------------------------------------------------ */

#define ALLOWED "pairs, ipairs, next, type, tostring, tonumber, select, error, assert, " \
                "pcall, unpack, string, table, math, os.getenv, os.time, os.date, os.clock"

/* __index of the environment: reading a global it lacks is an error that
 * says what a config may use (io, require, a misspelt `ture`). */
static int deny_global(lua_State *L)
{
    return luaL_error(L, "%s is not available in a config file (it may use " ALLOWED ")",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

static int deny_os(lua_State *L)
{
    return luaL_error(L, "os.%s is not available in a config file (it may use " ALLOWED ")",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

static void too_long(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L, "the config file ran for more than %d instructions; is there an endless loop?",
               EVAL_MAX_INSTRUCTIONS);
}

static int open_lib(lua_State *L, lua_CFunction f, const char *name)
{
    lua_pushcfunction(L, f);
    lua_pushstring(L, name);
    return lua_pcall(L, 1, 0, 0);
}

/* Pushes the table the config file at `path` returns.
 * Stack: ... -> ... table   (unchanged on error) */
int config_eval_file(lua_State *L, const char *path, char *err, size_t n)
{
    static const char *const BASE[] = { "pairs", "ipairs", "next", "type", "tostring", "tonumber",
                                         "select", "error", "assert", "pcall", "unpack", NULL };
    static const char *const LIBS[] = { "string", "table", "math", NULL };
    static const char *const OS[] = { "getenv", "time", "date", "clock", NULL };
    char d[128];
    int top = lua_gettop(L);

    if (open_lib(L, luaopen_base, "") || open_lib(L, luaopen_string, LUA_STRLIBNAME)
        || open_lib(L, luaopen_table, LUA_TABLIBNAME) || open_lib(L, luaopen_math, LUA_MATHLIBNAME)
        || open_lib(L, luaopen_os, LUA_OSLIBNAME)) {
        fail(err, n, "%s: cannot set up Lua: %s", path, lua_tostring(L, -1));
        goto err;
    }
    /* Hooks only run in the interpreter: keep the JIT off for this state. */
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);

    if (luaL_loadfile(L, path) != 0) {                /* ... msg */
        fail(err, n, "%s", lua_tostring(L, -1));
        goto err;
    }                                                 /* ... chunk */
    lua_newtable(L);                                  /* ... chunk env */
    for (int i = 0; BASE[i]; i++) {
        lua_getglobal(L, BASE[i]);
        lua_setfield(L, -2, BASE[i]);
    }
    for (int i = 0; LIBS[i]; i++) {
        lua_getglobal(L, LIBS[i]);
        lua_setfield(L, -2, LIBS[i]);
    }
    lua_newtable(L);                                  /* ... chunk env os */
    lua_getglobal(L, LUA_OSLIBNAME);                  /* ... chunk env os realos */
    for (int i = 0; OS[i]; i++) {
        lua_getfield(L, -1, OS[i]);
        lua_setfield(L, -3, OS[i]);
    }
    lua_pop(L, 1);                                    /* ... chunk env os */
    lua_newtable(L);
    lua_pushcfunction(L, deny_os);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "os");                        /* ... chunk env */
    lua_newtable(L);
    lua_pushcfunction(L, deny_global);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfenv(L, -2);                               /* ... chunk */

    lua_sethook(L, too_long, LUA_MASKCOUNT, EVAL_MAX_INSTRUCTIONS);
    int rc = lua_pcall(L, 0, 1, 0);                   /* ... result | msg */
    lua_sethook(L, NULL, 0, 0);
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        fail(err, n, msg ? "%s" : "%s: the config file raised an error that is not a string",
             msg ? msg : path);
        goto err;
    }
    if (!lua_istable(L, -1)) {
        fail(err, n, "%s: the config file must return a table, e.g. return { pipeline = "
             "\"pipeline.lua\" }; it returned %s", path, config_describe(L, -1, -1, d, sizeof d));
        goto err;
    }
    return 0;
err:
    lua_settop(L, top);
    return -1;
}
