/*
 * duplex/http.h — HTTP/1.1 semantics on top of the zero-copy head parser of
 * duplex/proto.h: request checks, target and path handling, response
 * formatting and static files.
 *
 * This layer decides and formats; it never touches a socket. The server
 * parses a head with dx_http_parse_request(), asks dx_http_request_check()
 * whether the request is acceptable and how the connection continues, then
 * either formats a reply into its own buffer (dx_http_reply_format) or lets
 * dx_static_serve() pick a file: it writes the returned head, then sends
 * the body from the returned fd (sendfile(2)), then closes the fd.
 *
 *   dx_http_info info;
 *   if (dx_http_request_check(&req, &info) < 0) {
 *     dx_http_reply r = {.status = info.status};      // close afterwards
 *     n = dx_http_reply_format(buf, sizeof buf, &r);
 *   } else if (info.is_upgrade) { ... dx_ws_server_handshake ... }
 *   else {
 *     dx_static_result res;
 *     dx_static_serve(st, &req, NULL, 0, &res);
 *     write(res.head, res.head_len); sendfile(res.fd, res.offset, res.length);
 *     dx_static_result_close(&res);
 *   }
 *
 * Errors are negative values from duplex/common.h; each function lists its
 * own. Pointers into a request (dx_http_info, dx_http_target) point into the
 * caller's head buffer and are valid as long as it is.
 *
 * Thread safety: every function is reentrant. A dx_static is immutable after
 * dx_static_new() and may be shared by threads.
 */
#ifndef DUPLEX_HTTP_H
#define DUPLEX_HTTP_H

#include <duplex/common.h>
#include <duplex/proto.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */

/* Methods are case-sensitive (RFC 9110 section 9.1): "get" is OTHER. */
typedef enum dx_http_method {
  DX_HTTP_OTHER = 0,
  DX_HTTP_GET,
  DX_HTTP_HEAD,
  DX_HTTP_POST,
  DX_HTTP_PUT,
  DX_HTTP_DELETE,
  DX_HTTP_OPTIONS,
  DX_HTTP_PATCH,
  DX_HTTP_CONNECT,
  DX_HTTP_TRACE
} dx_http_method;

/* The method of a request line. */
DX_API dx_http_method dx_http_method_of(const char *method, size_t len);

/*
 * A request target split into its parts (RFC 9112 section 3.2). Every
 * pointer points into the target (or at a static "/" for an absolute-form
 * target without a path) and nothing is decoded.
 */
typedef struct dx_http_target {
  const char *path; /* starts with '/'; "*" for the asterisk form */
  size_t path_len;
  const char *query; /* after '?', without it; NULL when there is no '?' */
  size_t query_len;
  const char *authority; /* absolute form only ("host:port"), else NULL */
  size_t authority_len;
  bool asterisk; /* "OPTIONS *" */
} dx_http_target;

/*
 * Splits a request target. Accepted: origin form ("/p?q"), absolute form
 * with an http or https scheme ("http://host/p?q": the path is taken, the
 * authority reported; no userinfo), and the asterisk form "*" for OPTIONS
 * only. Authority form (CONNECT) and anything else is rejected, as is a
 * '#' anywhere (fragments are never sent) and an empty authority.
 * Returns 0; DX_EHTTP (answer 400).
 */
DX_API int dx_http_target_parse(const dx_http_request *req, dx_http_target *t);

/*
 * Percent-decodes a raw path ("/a%20b/../c") and removes dot segments for
 * use as a file path (RFC 3986 sections 2.1, 5.2.4). Strict:
 *   - the path must start with '/';
 *   - every '%' must be followed by two hex digits;
 *   - decoded NUL (%00), other control bytes, '/' (%2F, it would turn one
 *     segment into two) and '\' (raw or %5C) are rejected;
 *   - "." and ".." segments are resolved after decoding ("%2e%2e" is
 *     ".."), and a ".." above the root is rejected, never clamped;
 *   - empty segments ("//") collapse; a trailing '/' is kept ("/d/" and
 *     "/d/." give "/d/") because it tells a directory URL apart.
 * out gets the clean path and a NUL; it never needs more than len + 1
 * bytes. in and out must not overlap.
 * Returns the clean length (>= 1); DX_EHTTP (answer 400); DX_ENOSPC when
 * cap is too small.
 */
DX_API int dx_http_path_clean(const char *in, size_t len, char *out,
                              size_t cap);

/* What dx_http_request_check() found. */
typedef struct dx_http_info {
  dx_http_method method;
  /* The connection may carry another request after this one: HTTP/1.1
   * unless "Connection: close"; HTTP/1.0 only with "Connection:
   * keep-alive" (RFC 9112 section 9.3). */
  bool keep_alive;
  /* An HTTP/1.1 request with an Upgrade header and "upgrade" among the
   * Connection options (an Upgrade in HTTP/1.0 is ignored, RFC 9110
   * section 7.8). */
  bool is_upgrade;
  /* The body is chunked (Transfer-Encoding: chunked). */
  bool chunked;
  /* A Content-Length was present; content_length is its value (0
   * otherwise). */
  bool has_content_length;
  uint64_t content_length;
  /* "Expect: 100-continue" was present (other expectations are ignored). */
  bool expect_continue;
  /* The authority: the Host value, or the absolute-form authority, which
   * overrides Host (RFC 9112 section 3.2.2). NULL when an HTTP/1.0 request
   * has neither; may be empty. */
  const char *host;
  size_t host_len;
  dx_http_target target;
  /* On failure: the status to answer (400 or 501) and a static reason for
   * logs. 0 and NULL on success. */
  int status;
  const char *reason;
} dx_http_info;

/*
 * Checks a parsed request head and fills *info. The connection must be
 * closed after answering a failure: the framing of what follows is unknown.
 * Fails with status 400 for:
 *   - an HTTP/1.1 request without Host, more than one Host, or a Host that
 *     is not host[:port] (RFC 9112 section 3.2);
 *   - a bad target (dx_http_target_parse);
 *   - a Content-Length that is not digits only (no sign, no space inside,
 *     no overflow of 64 bits); several Content-Length values (lines or a
 *     list) are accepted only when identical (RFC 9112 section 6.3);
 *   - Transfer-Encoding together with Content-Length (request smuggling,
 *     RFC 9112 section 6.3 item 3), in HTTP/1.0, empty, or not ending in
 *     chunked, or chunked more than once (RFC 9112 section 6.1);
 * and with status 501 for a Transfer-Encoding that ends in chunked but has
 * another coding before it ("gzip, chunked"): a coding we do not implement
 * (RFC 9112 section 6.1 SHOULD). Several Transfer-Encoding lines form one
 * list. Methods are not judged here.
 * Returns 0; DX_EHTTP (info->status, info->reason say why).
 */
DX_API int dx_http_request_check(const dx_http_request *req,
                                 dx_http_info *info);

/* ------------------------------------------------------------------------ */
/* Responses                                                                */

/* dx_http_status_text() is declared in duplex/proto.h. */

/* The Content-Type for a file name's extension (case-insensitive):
 * "text/css; charset=utf-8", "application/wasm" ...; text types carry
 * "; charset=utf-8"; "application/octet-stream" when unknown. Static
 * string. */
DX_API const char *dx_http_mime_type(const char *name, size_t len);

/* Writes t as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", RFC 9110
 * section 5.6.7) and a NUL into out. Returns 29; DX_EINVAL when t is not
 * representable (before 1970 or after 9999). */
DX_API int dx_http_date(time_t t, char out[30]);

/* Parses an HTTP date: IMF-fixdate and the two obsolete forms (RFC 850
 * "Sunday, 06-Nov-94 08:49:37 GMT", two-digit years 70-99 are 19xx and
 * the rest 20xx; asctime "Sun Nov  6 08:49:37 1994"). Returns 0 and sets
 * *t; DX_EINVAL when malformed. */
DX_API int dx_http_date_parse(const char *s, size_t len, time_t *t);

/* A simple response. The zero value with only .status set is a complete
 * response: an error page for status >= 400, an empty body otherwise, and
 * "Connection: close". */
typedef struct dx_http_reply {
  int status; /* 100..599 */
  /* The body, copied into the output. NULL with status >= 400: a short
   * text/plain page "404 Not Found\n". NULL otherwise: no body. */
  const void *body;
  size_t body_len;
  /* NULL: "text/plain; charset=utf-8" when there is a body. */
  const char *content_type;
  /* Header lines, each "Name: value\r\n"; NULL for none. */
  const char *extra_headers;
  bool keep_alive; /* "Connection: keep-alive" instead of close */
  bool head_only;  /* answer to HEAD: Content-Length but no body bytes */
  time_t date;     /* a Date header with this time; 0: no Date */
} dx_http_reply;

/*
 * Formats the whole response (status line, Date, Server: duplex,
 * Content-Type, Content-Length, Connection, the extra lines, the empty
 * line, the body) into buf. 1xx, 204 and 304 get neither body nor
 * Content-Length (RFC 9110 sections 8.6, 15.4.5).
 * Returns the length written (no NUL is added); DX_ENOSPC when it does not
 * fit in cap (buf content is then unspecified); DX_EINVAL for a status
 * outside 100..599, or a content type or extra lines containing CR or LF
 * where they do not belong (header injection).
 */
DX_API int dx_http_reply_format(char *buf, size_t cap, const dx_http_reply *r);

/* ------------------------------------------------------------------------ */
/* Client addresses behind proxies                                          */

/* An IP address in 16 bytes: IPv6 as is, IPv4 as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), so one comparison covers both families. */
typedef struct dx_ip {
  uint8_t b[16];
} dx_ip;

/* A network: an address and a prefix length in bits over the 16 bytes (an
 * IPv4 "/8" is stored as 96 + 8). */
typedef struct dx_cidr {
  dx_ip ip;
  uint8_t bits; /* 0..128 */
} dx_cidr;

/* Parses a literal address: "192.0.2.1", "2001:db8::1", "::ffff:1.2.3.4"
 * (the same as "1.2.3.4"). No brackets, ports, zones or spaces.
 * Returns 0; DX_EINVAL. */
DX_API int dx_ip_parse(const char *s, size_t len, dx_ip *out);

/* Writes ip as text and a NUL ("192.0.2.1" for a mapped IPv4, otherwise
 * RFC 5952 IPv6); out needs 46 bytes. Returns out. */
DX_API char *dx_ip_format(const dx_ip *ip, char out[46]);

/* Parses a network, NUL-terminated: "10.0.0.0/8", "2001:db8::/32", or a
 * plain address for one host ("127.0.0.1" is "127.0.0.1/32"). The
 * prefix is 0..32 for IPv4 and 0..128 for IPv6, in decimal; bits set
 * past the prefix ("10.0.0.1/8") are an error, since they usually mean a
 * typo. Returns 0; DX_EINVAL, with *why (when why is not NULL) set to a
 * static one-line reason. */
DX_API int dx_cidr_parse(const char *s, dx_cidr *out, const char **why);

/* Whether ip lies in one of the n networks. */
DX_API bool dx_cidr_match(const dx_cidr *nets, size_t n, const dx_ip *ip);

/*
 * The client behind trusted proxies, from X-Forwarded-For. On input
 * *client is the address the request came from (the TCP peer, or what a
 * PROXY header said); when it is not in trusted, the header is not
 * believed and nothing changes. Otherwise every X-Forwarded-For line is
 * read as one list, in order, and walked right to left: each address that
 * is trusted is another proxy and the walk goes on; the first one that is
 * not trusted is the client. All trusted: the leftmost. A malformed entry
 * ("unknown", an obfuscated name, a host name) stops the walk: the last
 * good address is kept. Entries are addresses, optionally "1.2.3.4:port"
 * or "[v6]" / "[v6]:port"; spaces around commas and empty entries are
 * ignored.
 * Returns 1 when *client was replaced, 0 when it was not.
 */
DX_API int dx_http_forwarded_for(const dx_header *headers, size_t n,
                                 const dx_cidr *trusted, size_t ntrusted,
                                 dx_ip *client);

/* PROXY protocol (haproxy's proxy-protocol.txt), versions 1 and 2. */
#define DX_PROXY_V1_MAX 107  /* the longest v1 line, CRLF included */
#define DX_PROXY_V2_MAX 2048 /* our bound on a v2 header, TLVs included */

typedef struct dx_proxy_header {
  int version; /* 1 or 2 */
  /* No addresses to use: a v2 LOCAL command (a health check by the proxy
   * itself), a v1 UNKNOWN or a v2 UNSPEC/UNIX family or UNSPEC transport.
   * The connection's own address stands. */
  bool local;
  dx_ip src, dst; /* when !local */
  uint16_t src_port, dst_port;
} dx_proxy_header;

/*
 * Parses a PROXY protocol header at the start of p (what a connection
 * sent first). Strict: v1 is "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n"
 * with single spaces, addresses of the named family and ports 0..65535,
 * or "PROXY UNKNOWN...\r\n", at most DX_PROXY_V1_MAX bytes; v2 is the
 * 12-byte signature, version 2, command LOCAL or PROXY, and a length
 * that holds the addresses of its family and keeps the header within
 * DX_PROXY_V2_MAX (TLVs after the addresses are skipped). Never reads past
 * p + n.
 * Returns the header's length (> 0) with *out filled; 0 when p does not
 * start with a PROXY signature (the connection speaks something else);
 * DX_EAGAIN when p is a prefix of a header (read more); DX_EPROXY when it
 * is a malformed header, with *why (when not NULL) a static reason.
 */
DX_API int dx_proxy_parse(const uint8_t *p, size_t n, dx_proxy_header *out,
                          const char **why);

/* ------------------------------------------------------------------------ */
/* Static files                                                             */

typedef struct dx_static dx_static;

/*
 * The zero value plus .root serves root with index.html, no dotfiles and
 * "Cache-Control: no-cache" (always revalidate, which costs a 304).
 * Strings are copied by dx_static_new(); cfg is borrowed for the call.
 */
typedef struct dx_static_config {
  const char *root; /* required: the directory served */
  /* Served for a directory URL ending in '/'; NULL means "index.html".
   * A single file name. There are no directory listings. */
  const char *index;
  /* 0: "Cache-Control: no-cache" for everything. > 0: "public,
   * max-age=N" for everything but HTML, which stays no-cache so that a
   * page always picks up new asset URLs. */
  uint32_t max_age;
  /* Serve files and directories whose name starts with '.' (default: 404,
   * except ".well-known", RFC 8615). */
  bool allow_hidden;
  /* Extra header lines for every response, each "Name: value\r\n" (for
   * example a Content-Security-Policy); at most 512 bytes. */
  const char *extra_headers;
  /* A Date header with now(now_ud) on every response; NULL: no Date. The
   * layer has no clock of its own. Called from any thread that serves. */
  time_t (*now)(void *now_ud);
  void *now_ud;
  dx_allocator alloc;
} dx_static_config;

/*
 * Opens the root (kept open as a directory fd, and resolved once with
 * realpath() for absolute symlinks) and copies the configuration.
 * Returns NULL with errno set: EINVAL (no root, an index that is not a
 * single file name, extra_headers malformed or too long), ENOENT, ENOTDIR,
 * EACCES ... from opening the root, ENOMEM.
 */
DX_API dx_static *dx_static_new(const dx_static_config *cfg);

/* Closes the root and frees st. dx_static_free(NULL) does nothing. */
DX_API void dx_static_free(dx_static *st);

/* Room for any head dx_static_serve() writes. */
#define DX_STATIC_HEAD_MAX 2048

/*
 * What to send. Write head[0..head_len) first, then `length` bytes of fd
 * from `offset` (sendfile), then close fd (or call dx_static_result_close).
 * fd is -1 whenever there is no body to take from a file (HEAD, 304, empty
 * files, errors). Error pages are short text/plain bodies placed inside
 * head. If the file shrinks before it is sent, the Content-Length can no
 * longer be met: close the connection.
 */
typedef struct dx_static_result {
  int status;      /* 200 301 304 400 403 404 405 414 500 */
  int fd;          /* O_RDONLY|O_CLOEXEC, owned by the result; or -1 */
  uint64_t offset; /* always 0: Range is not supported */
  uint64_t length; /* body bytes to send from fd */
  /* The connection may stay open after this response: the request's
   * keep-alive, and the request carried no body (this layer does not read
   * bodies, so it never leaves one unread on a kept connection). */
  bool keep_alive;
  int err;         /* the negative errno behind a 403/404/500, for logs */
  size_t head_len; /* bytes in head, including any inline error body */
  char head[DX_STATIC_HEAD_MAX];
} dx_static_result;

/*
 * Answers a request for a file under the root and fills *res (always, also
 * on failure: res->status is then the error response).
 *
 * path is the raw (still percent-encoded) path relative to the root, for
 * a server that mounts the files under a prefix ("/static/a.css" routed
 * with path "/a.css"); NULL takes the path of req's target. It is decoded
 * and cleaned by dx_http_path_clean(): never pass an already decoded path.
 *
 *   - GET and HEAD only; others get 405 with "Allow: GET, HEAD".
 *   - A malformed path (see dx_http_path_clean) is 400.
 *   - The path is resolved component by component from the root's fd
 *     (openat with O_NOFOLLOW): a symbolic link is followed only when its
 *     target stays inside the root (a relative target, or an absolute one
 *     under the root's real path); anything that would leave the root is
 *     404, as are dotfiles (unless allow_hidden), missing files, files
 *     that are neither regular files nor directories, and a trailing '/'
 *     after a file. Permission denied is 403. No file outside the root is
 *     ever opened, even if the tree changes during the walk.
 *   - A directory without a trailing '/' is 301 to the request's path plus
 *     '/' (query kept); with it, its index file is served (404 if none).
 *   - Conditional GET (RFC 9110 section 13.1): If-None-Match (weak
 *     comparison, "*") and, only when there is no If-None-Match,
 *     If-Modified-Since; a match is 304 with ETag, Last-Modified and
 *     Cache-Control but no body.
 *   - Range and If-Range are ignored: the whole file is sent with 200 and
 *     "Accept-Ranges: none".
 *   - 200 heads carry Content-Type (dx_http_mime_type), Content-Length,
 *     Last-Modified, a weak ETag (W/"inode-size-mtime_ns" in hex: weak,
 *     since a rewrite within one timestamp tick with the same size would
 *     keep it), Cache-Control, X-Content-Type-Options: nosniff, and
 *     Connection per res->keep_alive.
 *   - A request that dx_http_request_check() rejects gets its status
 *     (400/501) with "Connection: close".
 * req and path are borrowed for the call.
 * Returns res->status (> 0). The HTTP status is the whole answer: there is
 * no negative return.
 */
DX_API int dx_static_serve(const dx_static *st, const dx_http_request *req,
                           const char *path, size_t path_len,
                           dx_static_result *res);

/* Closes res->fd if it is still open and sets it to -1. Safe to call
 * twice. A caller that keeps the fd sets res->fd = -1 first. */
DX_API void dx_static_result_close(dx_static_result *res);

#ifdef __cplusplus
}
#endif
#endif
