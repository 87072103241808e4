/*
 * Static files. The one job that matters most here is never to serve a
 * file outside the root, whatever the request and whatever the tree does
 * meanwhile. So the path is not handed to the kernel as a string: it is
 * walked one component at a time from the root's directory fd with
 * O_NOFOLLOW, symlinks are read and resolved by us (a target leaving the
 * root is refused), and ".." from a link pops our own stack of directory
 * fds instead of asking the file system for a parent. Renaming or
 * swapping entries during the walk cannot lead outside: every step starts
 * from an fd that was verified to be inside. (openat2 RESOLVE_BENEATH
 * would do the same in one call, but refuses absolute links even when
 * they point inside the root, and is missing under some seccomp filters.)
 */
#include "http/internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 64 /* directories open at once during a walk */
#define MAX_LINKS 40 /* as the kernel's MAXSYMLINKS */
#define MAX_EXTRA 512
#define MAX_LOCATION 1024

struct dx_static {
  int root_fd; /* O_PATH directory */
  const char *root_real;
  size_t root_real_len;
  const char *index;
  const char *extra; /* "" when none */
  uint32_t max_age;
  bool allow_hidden;
  time_t (*now)(void *);
  void *now_ud;
  dx_allocator alloc;
  size_t size; /* of this allocation, strings included */
};

static void *st_realloc(const dx_allocator *a, void *p, size_t old, size_t n) {
  if (a->realloc) return a->realloc(a->ud, p, old, n);
  if (n == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, n);
}

static bool valid_index(const char *s) {
  size_t n = strlen(s);
  return n > 0 && n <= NAME_MAX && !strchr(s, '/') && strcmp(s, ".") != 0 &&
         strcmp(s, "..") != 0;
}

/* Copies s to *p and advances it. */
static const char *put(char **p, const char *s, size_t n) {
  char *d = *p;
  memcpy(d, s, n);
  d[n] = '\0';
  *p += n + 1;
  return d;
}

dx_static *dx_static_new(const dx_static_config *cfg) {
  if (!cfg || !cfg->root || !*cfg->root) goto einval;
  const char *index = cfg->index ? cfg->index : "index.html";
  const char *extra = cfg->extra_headers ? cfg->extra_headers : "";
  if (!valid_index(index) || strlen(extra) > MAX_EXTRA ||
      !dx__header_lines_ok(extra))
    goto einval;
  int fd = open(cfg->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return NULL;
  char *real = realpath(cfg->root, NULL);
  if (!real) {
    int e = errno;
    close(fd);
    errno = e;
    return NULL;
  }
  size_t rl = strlen(real), il = strlen(index), el = strlen(extra);
  size_t size = sizeof(dx_static) + rl + il + el + 3;
  dx_static *st = st_realloc(&cfg->alloc, NULL, 0, size);
  if (!st) {
    free(real);
    close(fd);
    errno = ENOMEM;
    return NULL;
  }
  char *p = (char *)(st + 1);
  st->root_fd = fd;
  st->root_real = put(&p, real, rl);
  st->root_real_len = rl;
  st->index = put(&p, index, il);
  st->extra = put(&p, extra, el);
  st->max_age = cfg->max_age;
  st->allow_hidden = cfg->allow_hidden;
  st->now = cfg->now;
  st->now_ud = cfg->now_ud;
  st->alloc = cfg->alloc;
  st->size = size;
  free(real);
  return st;
einval:
  errno = EINVAL;
  return NULL;
}

void dx_static_free(dx_static *st) {
  if (!st) return;
  close(st->root_fd);
  dx_allocator a = st->alloc;
  st_realloc(&a, st, st->size, 0);
}

void dx_static_result_close(dx_static_result *res) {
  if (res->fd >= 0) close(res->fd);
  res->fd = -1;
}

/* ------------------------------------------------------------------------ */
/* The walk                                                                 */

struct walk {
  const dx_static *st;
  int fds[MAX_DEPTH + 1]; /* fds[0] is the root, borrowed */
  int depth;
  int links;
  char rest[PATH_MAX]; /* what is left to resolve */
  char tmp[PATH_MAX];
  /* The result when it is not a directory: an O_PATH fd, its stat, and
   * its name in fds[depth] for the final open. */
  int fd;
  struct stat sb;
  char name[NAME_MAX + 1];
};

static void walk_init(struct walk *w, const dx_static *st) {
  w->st = st;
  w->fds[0] = st->root_fd;
  w->depth = 0;
  w->links = 0;
  w->fd = -1;
}

static void walk_end(struct walk *w) {
  while (w->depth > 0)
    close(w->fds[w->depth--]);
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
}

/* The link at fd, met with `after` still to resolve (empty or starting
 * with '/'): its target replaces it in w->rest. An absolute target must lie
 * under the root's real path (with a '/' boundary: /srv/www-old is not
 * under /srv/www) and restarts the walk at the root. */
static int follow(struct walk *w, int fd, const char *after) {
  if (++w->links > MAX_LINKS) return -ELOOP;
  ssize_t n = readlinkat(fd, "", w->tmp, sizeof w->tmp);
  if (n < 0) return -errno;
  if (n == 0 || (size_t)n >= sizeof w->tmp) return -ENAMETOOLONG;
  const char *rel = w->tmp;
  size_t rlen = (size_t)n, rl = w->st->root_real_len;
  if (rel[0] == '/') {
    if (rl == 1) { /* the root is "/" itself */
    } else if (rlen >= rl && memcmp(rel, w->st->root_real, rl) == 0 &&
               (rlen == rl || rel[rl] == '/')) {
      rel += rl;
      rlen -= rl;
    } else {
      return -EXDEV;
    }
    while (w->depth > 0)
      close(w->fds[w->depth--]);
  }
  size_t alen = strlen(after);
  if (rlen + alen >= sizeof w->rest) return -ENAMETOOLONG;
  /* after points into w->rest and rel into w->tmp: move after first. */
  memmove(w->rest + rlen, after, alen + 1);
  memmove(w->rest, rel, rlen);
  return 0;
}

/* Enters a directory, or keeps the final object in w->fd. */
static int step(struct walk *w, int fd, const char *name, size_t n, bool last) {
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  if (S_ISDIR(sb.st_mode)) {
    if (w->depth == MAX_DEPTH) {
      close(fd);
      return -ENAMETOOLONG;
    }
    w->fds[++w->depth] = fd;
    return 0;
  }
  if (!last) {
    close(fd);
    return -ENOTDIR;
  }
  w->fd = fd;
  w->sb = sb;
  memcpy(w->name, name, n);
  w->name[n] = '\0';
  return 0;
}

/*
 * Resolves path from the current directory (fds[depth]). On success either
 * w->fd >= 0 (a non-directory, O_PATH) or w->fd == -1 and the result is
 * the directory fds[depth]. Returns 0 or a negative errno; -EXDEV means
 * the path would leave the root.
 */
static int walk(struct walk *w, const char *path) {
  size_t plen = strlen(path), pos = 0;
  if (plen >= sizeof w->rest) return -ENAMETOOLONG;
  memcpy(w->rest, path, plen + 1);
  for (;;) {
    while (w->rest[pos] == '/')
      pos++;
    if (!w->rest[pos]) return 0;
    const char *c = w->rest + pos;
    size_t n = strcspn(c, "/"), next = pos + n;
    if (n == 1 && c[0] == '.') {
      pos = next;
      continue;
    }
    if (n == 2 && c[0] == '.' && c[1] == '.') {
      if (w->depth == 0) return -EXDEV;
      close(w->fds[w->depth--]);
      pos = next;
      continue;
    }
    if (n > NAME_MAX) return -ENAMETOOLONG;
    char name[NAME_MAX + 1];
    memcpy(name, c, n);
    name[n] = '\0';
    int fd = openat(w->fds[w->depth], name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat sb;
    if (fstatat(fd, "", &sb, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      int e = -errno;
      close(fd);
      return e;
    }
    if (S_ISLNK(sb.st_mode)) {
      int rc = follow(w, fd, w->rest + next);
      close(fd);
      if (rc) return rc;
      pos = 0;
      continue;
    }
    int rc = step(w, fd, name, n, w->rest[next] == '\0');
    if (rc) return rc;
    if (w->fd >= 0) return 0;
    pos = next;
  }
}

/* Opens the walk's final object for reading, through the name it had in
 * its directory, and checks that it is still the same regular file (the
 * O_PATH fd proved where it is, not that it may be read). O_NONBLOCK keeps
 * a FIFO swapped in meanwhile from blocking the open; it is cleared after,
 * and O_NOFOLLOW keeps a symlink swapped in from being followed. */
static int open_final(struct walk *w) {
  int fd = openat(w->fds[w->depth], w->name,
                  O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return -errno;
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) ||
      sb.st_dev != w->sb.st_dev || sb.st_ino != w->sb.st_ino ||
      fcntl(fd, F_SETFL, 0) != 0) {
    close(fd);
    return -ESTALE;
  }
  w->sb = sb;
  return fd;
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                */

static void head_start(dx__out *o, const dx_static *st, int status) {
  dx__out_fmt(o, "HTTP/1.1 %d %s\r\n", status, dx_http_status_text(status));
  char date[30];
  if (st->now && dx_http_date(st->now(st->now_ud), date) > 0)
    dx__out_fmt(o, "Date: %s\r\n", date);
  dx__out_str(o, "Server: duplex\r\n");
}

static void head_end(dx__out *o, const dx_static *st, bool keep_alive) {
  dx__out_str(o, keep_alive ? "Connection: keep-alive\r\n"
                            : "Connection: close\r\n");
  dx__out_str(o, st->extra);
  dx__out_str(o, "\r\n");
}

static void begin(dx_static_result *res) {
  res->status = 500;
  res->fd = -1;
  res->offset = 0;
  res->length = 0;
  res->keep_alive = false;
  res->err = 0;
  res->head_len = 0;
}

/* A short text/plain page; `extra` holds header lines (Allow, Location). */
static int error_page(const dx_static *st, dx_static_result *res, int status,
                      bool head_only, const char *extra) {
  char body[64];
  int n = snprintf(body, sizeof body, "%d %s\n", status,
                   dx_http_status_text(status));
  dx__out o = {res->head, 0, sizeof res->head, false};
  res->status = status;
  head_start(&o, st, status);
  dx__out_fmt(&o,
              "Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Length: %d\r\n"
              "X-Content-Type-Options: nosniff\r\n",
              n);
  if (extra) dx__out_str(&o, extra);
  head_end(&o, st, res->keep_alive);
  if (!head_only) dx__out_mem(&o, body, (size_t)n);
  if (o.overflow) {
    /* Cannot happen: the Location, extra_headers and everything else are
     * bounded well below DX_STATIC_HEAD_MAX. Still never hand out an
     * empty head. */
    static const char min[] = "HTTP/1.1 500 Internal Server Error\r\n"
                              "Content-Length: 0\r\n"
                              "Connection: close\r\n\r\n";
    memcpy(res->head, min, sizeof min - 1);
    res->head_len = sizeof min - 1;
    res->keep_alive = false;
    return res->status = 500;
  }
  res->head_len = o.len;
  return status;
}

static int sys_error(const dx_static *st, dx_static_result *res, int err,
                     bool head_only) {
  int status = 500;
  if (err == -EACCES || err == -EPERM)
    status = 403;
  else if (err == -ENOENT || err == -ENOTDIR || err == -ELOOP ||
           err == -EXDEV || err == -ENAMETOOLONG || err == -ESTALE)
    status = 404;
  res->err = err;
  return error_page(st, res, status, head_only, NULL);
}

/* A name starting with '.' anywhere in the (clean) path. ".well-known"
 * is public by definition (RFC 8615: ACME challenges, security.txt). */
static bool hidden(const char *clean) {
  for (const char *p = clean; (p = strstr(p, "/.")); p++) {
    size_t n = strcspn(p + 1, "/");
    if (!(n == 11 && memcmp(p + 1, ".well-known", 11) == 0)) return true;
  }
  return false;
}

/* 301 to the path the client asked for plus '/', query kept. Leading
 * slashes collapse to one: "//evil.example/x" must not become a
 * scheme-relative redirect to another host. */
static int redirect(const dx_static *st, dx_static_result *res,
                    const dx_http_target *t, bool head_only) {
  const char *p = t->path;
  size_t n = t->path_len;
  while (n > 0 && *p == '/')
    p++, n--;
  char loc[MAX_LOCATION];
  int len = snprintf(loc, sizeof loc, "Location: /%.*s/%s%.*s\r\n", (int)n, p,
                     t->query ? "?" : "", (int)t->query_len,
                     t->query ? t->query : "");
  if (len < 0 || (size_t)len >= sizeof loc)
    return error_page(st, res, 414, head_only, NULL);
  return error_page(st, res, 301, head_only, loc);
}

/* ------------------------------------------------------------------------ */
/* Conditional requests (RFC 9110 section 13)                               */

/* One If-None-Match value against our tag, weak comparison (13.1.2): the
 * opaque quoted parts are compared, a W/ prefix on either side ignored.
 * A malformed list stops the scan without a match: sending the full 200
 * is always correct. */
static bool inm_match(const char *v, size_t n, const char *tag, size_t tlen) {
  size_t i = 0;
  for (;;) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    if (i == n) return false;
    if (v[i] == '*') return true;
    if (n - i >= 2 && v[i] == 'W' && v[i + 1] == '/') i += 2;
    if (i == n || v[i] != '"') return false;
    size_t b = i++;
    while (i < n && v[i] != '"')
      i++;
    if (i == n) return false;
    i++;
    if (i - b == tlen && memcmp(v + b, tag, tlen) == 0) return true;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
      i++;
    if (i < n && v[i] != ',') return false;
  }
}

/* True when the client's copy is current. tag is the opaque part of our
 * ETag, quotes included. */
static bool not_modified(const dx_http_request *req, const char *tag,
                         size_t tlen, time_t mtime) {
  bool inm = false;
  for (size_t i = 0; i < req->num_headers; i++) {
    const dx_header *h = &req->headers[i];
    if (h->name_len == 13 && dx__ascii_ieq(h->name, "If-None-Match", 13)) {
      inm = true;
      if (inm_match(h->value, h->value_len, tag, tlen)) return true;
    }
  }
  /* If-Modified-Since only counts without If-None-Match (13.2.2), and an
   * invalid date is ignored (13.1.3). */
  if (inm) return false;
  const dx_header *ims =
      dx_http_header(req->headers, req->num_headers, "If-Modified-Since");
  time_t since;
  return ims && dx_http_date_parse(ims->value, ims->value_len, &since) == 0 &&
         mtime <= since;
}

/* HTML is always revalidated: it names the assets, and a stale page would
 * keep pointing at old ones. */
static void cache_control(dx__out *o, const dx_static *st, const char *type) {
  if (st->max_age && strncmp(type, "text/html", 9) != 0)
    dx__out_fmt(o, "Cache-Control: public, max-age=%u\r\n",
                (unsigned)st->max_age);
  else
    dx__out_str(o, "Cache-Control: no-cache\r\n");
}

static int file_response(const dx_static *st, const dx_http_request *req,
                         dx_static_result *res, int fd, const struct stat *sb,
                         const char *name, bool head_only) {
  char tag[80], lm[30];
  int tlen =
      snprintf(tag, sizeof tag, "\"%llx-%llx-%llx\"",
               (unsigned long long)sb->st_ino, (unsigned long long)sb->st_size,
               (unsigned long long)sb->st_mtim.tv_sec * 1000000000ull +
                   (unsigned long long)sb->st_mtim.tv_nsec);
  bool has_lm = dx_http_date(sb->st_mtim.tv_sec, lm) > 0;
  const char *type = dx_http_mime_type(name, strlen(name));
  bool fresh = not_modified(req, tag, (size_t)tlen, sb->st_mtim.tv_sec);
  dx__out o = {res->head, 0, sizeof res->head, false};
  res->status = fresh ? 304 : 200;
  head_start(&o, st, res->status);
  if (!fresh)
    dx__out_fmt(&o,
                "Content-Type: %s\r\n"
                "Content-Length: %llu\r\n"
                "Accept-Ranges: none\r\n"
                "X-Content-Type-Options: nosniff\r\n",
                type, (unsigned long long)sb->st_size);
  if (has_lm) dx__out_fmt(&o, "Last-Modified: %s\r\n", lm);
  dx__out_fmt(&o, "ETag: W/%s\r\n", tag);
  cache_control(&o, st, type);
  head_end(&o, st, res->keep_alive);
  if (o.overflow) { /* cannot happen: every part is bounded */
    close(fd);
    res->err = -ENOSPC;
    return error_page(st, res, 500, head_only, NULL);
  }
  res->head_len = o.len;
  if (fresh || head_only || sb->st_size == 0) {
    close(fd);
  } else {
    res->fd = fd;
    res->length = (uint64_t)sb->st_size;
  }
  return res->status;
}

/* Resolves clean (and the index for a directory) and answers. */
static int serve_path(const dx_static *st, const dx_http_request *req,
                      const dx_http_info *info, const char *clean,
                      dx_static_result *res, bool head_only) {
  /* Two PATH_MAX buffers: too much for the stack of a small thread. */
  struct walk *w = st_realloc(&st->alloc, NULL, 0, sizeof *w);
  if (!w) {
    res->err = -ENOMEM;
    return error_page(st, res, 500, head_only, NULL);
  }
  walk_init(w, st);
  const char *name = clean;
  int rc = walk(w, clean + 1);
  if (rc == 0 && w->fd < 0) {
    if (clean[strlen(clean) - 1] != '/') {
      walk_end(w);
      st_realloc(&st->alloc, w, sizeof *w, 0);
      return redirect(st, res, &info->target, head_only);
    }
    name = st->index;
    rc = walk(w, st->index);
    if (rc == 0 && w->fd < 0) rc = -ENOENT; /* the index is a directory */
  }
  if (rc == 0 && !S_ISREG(w->sb.st_mode)) rc = -ENOENT;
  int fd = rc == 0 ? open_final(w) : rc;
  walk_end(w);
  st_realloc(&st->alloc, w, sizeof *w, 0);
  if (fd < 0) return sys_error(st, res, fd, head_only);
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = -errno;
    close(fd);
    return sys_error(st, res, e, head_only);
  }
  return file_response(st, req, res, fd, &sb, name, head_only);
}

int dx_static_serve(const dx_static *st, const dx_http_request *req,
                    const char *path, size_t path_len, dx_static_result *res) {
  dx_http_info info;
  begin(res);
  if (dx_http_request_check(req, &info) != 0)
    return error_page(st, res, info.status, info.method == DX_HTTP_HEAD, NULL);
  /* A body we do not read would be parsed as the next request. */
  res->keep_alive =
      info.keep_alive && !info.chunked && info.content_length == 0;
  bool head_only = info.method == DX_HTTP_HEAD;
  if (info.method != DX_HTTP_GET && !head_only)
    return error_page(st, res, 405, false, "Allow: GET, HEAD\r\n");
  if (!path) {
    path = info.target.path;
    path_len = info.target.path_len;
  }
  char clean[PATH_MAX];
  int n = dx_http_path_clean(path, path_len, clean, sizeof clean);
  if (n == DX_ENOSPC) return sys_error(st, res, -ENAMETOOLONG, head_only);
  if (n < 0) return error_page(st, res, 400, head_only, NULL);
  if (!st->allow_hidden && hidden(clean))
    return sys_error(st, res, -ENOENT, head_only);
  return serve_path(st, req, &info, clean, res, head_only);
}
