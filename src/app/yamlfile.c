/* One YAML document from a file, with errors that name the file and line. */
#include "yamlfile.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void parser_error(const char *path, const yaml_parser_t *p, char *err,
                         size_t errlen) {
  const yaml_mark_t *m = p->problem ? &p->problem_mark : &p->context_mark;
  char ctx[128] = "";
  if (p->context)
    snprintf(ctx, sizeof ctx, " (%s at line %zu)", p->context,
             p->context_mark.line + 1);
  snprintf(err, errlen, "%s:%zu: YAML: %s%s", path, m->line + 1,
           p->problem ? p->problem : "cannot parse", ctx);
}

int app_yaml_load(const char *path, size_t max_bytes, yaml_document_t *doc,
                  char *err, size_t errlen) {
  if (errlen) err[0] = 0;
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && (size_t)st.st_size > max_bytes) {
    fclose(f);
    snprintf(err, errlen, "%s: larger than %zu bytes", path, max_bytes);
    return -1;
  }
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) {
    fclose(f);
    snprintf(err, errlen, "%s: out of memory", path);
    return -1;
  }
  yaml_parser_set_input_file(&p, f);
  int rc = -1;
  if (!yaml_parser_load(&p, doc)) {
    parser_error(path, &p, err, errlen);
    goto done;
  }
  if (yaml_document_get_root_node(doc)) {
    yaml_document_t extra;
    if (!yaml_parser_load(&p, &extra)) {
      parser_error(path, &p, err, errlen);
      yaml_document_delete(doc);
      goto done;
    }
    yaml_node_t *r2 = yaml_document_get_root_node(&extra);
    if (r2)
      snprintf(err, errlen, "%s:%zu: a second YAML document ('---'): one only",
               path, r2->start_mark.line + 1);
    yaml_document_delete(&extra);
    if (r2) {
      yaml_document_delete(doc);
      goto done;
    }
  }
  rc = 0;
done:
  yaml_parser_delete(&p);
  fclose(f);
  return rc;
}
