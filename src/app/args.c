/* Command-line helpers shared by the subcommands: one way to report a usage
 * error, one way to read a count. */
#include "app.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int app_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "duplex %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see duplex %s --help)\n", cmd);
  va_end(ap);
  return APP_USAGE;
}

bool app_parse_ulong(const char *s, unsigned long max, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || *s == '-' || v > max) return false;
  *out = v;
  return true;
}
