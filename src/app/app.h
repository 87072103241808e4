/* Shared by the duplex subcommands. Public headers only. */
#ifndef DX_APP_H
#define DX_APP_H

#include <duplex/common.h>
#include <stdbool.h>
#include <stddef.h>

/* Exit statuses shared by every subcommand. */
enum { APP_OK = 0, APP_FAIL = 1, APP_USAGE = 2 };

int app_serve(int argc, char **argv);

/* Parses "16MiB", "64k", "1048576" into bytes. Returns false on error. */
bool app_parse_size(const char *s, size_t *out);
/* Parses "30s", "250ms", "2m", "5" (seconds) into milliseconds. */
bool app_parse_duration(const char *s, unsigned *ms);

#endif
