/*
 * Content types by extension. A short fixed table rather than
 * /etc/mime.types: the answer must not depend on the host, and browsers
 * enforce some of these (module scripts need a JavaScript type,
 * WebAssembly.instantiateStreaming needs application/wasm), which is why
 * every response also says "X-Content-Type-Options: nosniff".
 */
#include "http/internal.h"

#include <string.h>

#define UTF8 "; charset=utf-8"

static const struct {
  const char *ext;
  const char *type;
} types[] = {
    {"html", "text/html" UTF8},
    {"htm", "text/html" UTF8},
    {"css", "text/css" UTF8},
    /* RFC 9239: text/javascript is the one type for JavaScript. */
    {"js", "text/javascript" UTF8},
    {"mjs", "text/javascript" UTF8},
    /* RFC 8259 section 11: application/json has no charset parameter. */
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain" UTF8},
    {"md", "text/markdown" UTF8},
    {"csv", "text/csv" UTF8},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"wasm", "application/wasm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},
    {"wav", "audio/wav"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
};

const char *dx_http_mime_type(const char *name, size_t len) {
  size_t i = len;
  while (i > 0 && name[i - 1] != '.' && name[i - 1] != '/')
    i--;
  if (i > 0 && name[i - 1] == '.') {
    const char *ext = name + i;
    size_t n = len - i;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
      if (strlen(types[k].ext) == n && dx__ascii_ieq(ext, types[k].ext, n))
        return types[k].type;
  }
  return "application/octet-stream";
}
