/* Shared by the duplex subcommands. Public headers only. */
#ifndef DX_APP_H
#define DX_APP_H

#include <duplex/common.h>
#include <stdbool.h>
#include <stddef.h>

/* Exit statuses shared by every subcommand. */
enum { APP_OK = 0, APP_FAIL = 1, APP_USAGE = 2 };

int app_serve(int argc, char **argv);

/* Prints "duplex CMD: <message> (see duplex CMD --help)" on stderr and
 * returns APP_USAGE. */
int app_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A decimal count in 0..max, nothing else on the string. */
bool app_parse_ulong(const char *s, unsigned long max, unsigned long *out);

/* Parses "16MiB", "64k", "1048576" into bytes. Returns false on error. */
bool app_parse_size(const char *s, size_t *out);
/* Parses "30s", "250ms", "2m", "5" (seconds) into milliseconds. */
bool app_parse_duration(const char *s, unsigned *ms);

#endif
