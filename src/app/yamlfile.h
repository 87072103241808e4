/* Loading one YAML document from a file, for the config and the probe
 * scenarios: the same limits and the same FILE:LINE error lines. */
#ifndef DX_APP_YAMLFILE_H
#define DX_APP_YAMLFILE_H

#include <stddef.h>
#include <yaml.h>

/* Parses path (at most max_bytes) into *doc. A file holding a second
 * document ('---') is refused: it would be silently ignored. Returns 0
 * (the caller deletes *doc with yaml_document_delete), or -1 with one line
 * in err: "PATH: reason" or "PATH:LINE: YAML: problem (context at line N)". */
int app_yaml_load(const char *path, size_t max_bytes, yaml_document_t *doc,
                  char *err, size_t errlen);

#endif
