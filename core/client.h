/* client — the subcommands that talk to a running daemon over its admin
 * HTTP API (`eddy reload`), through libevent's HTTP client.  Calls libevent
 * and jansson; nothing of the runtime. */
#ifndef EDDY_CLIENT_H
#define EDDY_CLIENT_H

/* POSTs to http://admin/path (admin is "host:port") and prints the answer
 * (with field, only that string of the JSON answer).  Returns the exit
 * code: 0 on a 2xx answer, 1 otherwise (2 for a bad address). */
/* token (NULL: none) goes as "Authorization: Bearer <token>" (admin.token). */
int client_post(const char *admin, const char *path, const char *field, const char *token);

/* eddy reload --dry-run: POSTs path (/reload?dry_run=1...), then fetches the
 * result where the 202 answer says until it is there, and prints it (JSON).
 * 0 on a result, 1 refused or unreachable, 2 a bad address. */
int client_dry_run(const char *admin, const char *path, const char *token);

#endif
