/*
 * Client addresses behind proxies: addresses and networks, the
 * X-Forwarded-For walk, the PROXY protocol parser (v1 and v2 vectors, each
 * whole, at every split point and against a guard page), and the server
 * end to end: who is believed, the per-IP quota counting the real client,
 * and untrusted peers that send a PROXY header.
 */
#include <duplex/http.h>
#include <duplex/server.h>

#include "check.h"
#include "guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *fmt(const dx_ip *ip) {
  static char buf[46];
  return dx_ip_format(ip, buf);
}

/* ---- addresses and networks --------------------------------------------- */

static void test_ip(void) {
  dx_ip ip;
  CHECK_INT(dx_ip_parse("192.0.2.1", 9, &ip), 0);
  CHECK_STR(fmt(&ip), "192.0.2.1");
  CHECK_INT(dx_ip_parse("::ffff:192.0.2.1", 16, &ip), 0);
  CHECK_STR(fmt(&ip), "192.0.2.1"); /* mapped is the same address */
  CHECK_INT(dx_ip_parse("2001:DB8::1", 11, &ip), 0);
  CHECK_STR(fmt(&ip), "2001:db8::1");
  const char *bad[] = {"",           "1.2.3",       "1.2.3.4.5",  "256.1.1.1",
                       "01.2.3.4",   " 1.2.3.4",    "1.2.3.4 ",   "[::1]",
                       "fe80::1%lo", "example.com", "1.2.3.4:80", "unknown"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK_INT(dx_ip_parse(bad[i], strlen(bad[i]), &ip), DX_EINVAL);
  CHECK_INT(dx_ip_parse("1.2.3.4\0", 8, &ip), DX_EINVAL); /* NUL inside */
}

static void test_cidr(void) {
  dx_cidr n[3];
  const char *why = NULL;
  CHECK_INT(dx_cidr_parse("10.0.0.0/8", &n[0], &why), 0);
  CHECK_INT(n[0].bits, 104);
  CHECK_INT(dx_cidr_parse("2001:db8::/32", &n[1], NULL), 0);
  CHECK_INT(dx_cidr_parse("127.0.0.1", &n[2], NULL), 0);
  CHECK_INT(n[2].bits, 128);
  dx_ip ip;
  dx_ip_parse("10.200.3.4", 10, &ip);
  CHECK(dx_cidr_match(n, 3, &ip));
  dx_ip_parse("11.0.0.1", 8, &ip);
  CHECK(!dx_cidr_match(n, 3, &ip));
  dx_ip_parse("2001:db8:ffff::9", 16, &ip);
  CHECK(dx_cidr_match(n, 3, &ip));
  dx_ip_parse("2001:db9::", 10, &ip);
  CHECK(!dx_cidr_match(n, 3, &ip));
  dx_ip_parse("127.0.0.1", 9, &ip);
  CHECK(dx_cidr_match(n, 3, &ip));
  dx_ip_parse("127.0.0.2", 9, &ip);
  CHECK(!dx_cidr_match(n, 3, &ip));
  /* Odd prefixes, and /0 of each family. */
  CHECK_INT(dx_cidr_parse("192.168.0.0/23", &n[0], NULL), 0);
  dx_ip_parse("192.168.1.255", 13, &ip);
  CHECK(dx_cidr_match(n, 1, &ip));
  dx_ip_parse("192.168.2.0", 11, &ip);
  CHECK(!dx_cidr_match(n, 1, &ip));
  CHECK_INT(dx_cidr_parse("0.0.0.0/0", &n[0], NULL), 0);
  CHECK(dx_cidr_match(n, 1, &ip));
  dx_ip_parse("::1", 3, &ip);
  CHECK(!dx_cidr_match(n, 1, &ip)); /* all IPv4 is not all IPv6 */
  CHECK_INT(dx_cidr_parse("::/0", &n[0], NULL), 0);
  CHECK(dx_cidr_match(n, 1, &ip));
  CHECK(!dx_cidr_match(n, 0, &ip));
  struct {
    const char *s, *why;
  } bad[] = {{"10.0.0.1/8", "bits are set past"},
             {"10.0.0.0/33", "0..32"},
             {"::/129", "0..128"},
             {"10.0.0.0/", "decimal"},
             {"10.0.0.0/08", "decimal"},
             {"10.0.0.0/8x", "decimal"},
             {"10.0.0.0/-1", "decimal"},
             {"10.0.0/8", "not an IPv4 or IPv6"},
             {"localhost", "not an IPv4 or IPv6"},
             {"", "not an IPv4 or IPv6"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    why = NULL;
    CHECK_INT(dx_cidr_parse(bad[i].s, &n[0], &why), DX_EINVAL);
    CHECK(why && strstr(why, bad[i].why));
  }
}

/* ---- X-Forwarded-For ---------------------------------------------------- */

/* The client for a peer and XFF lines (NULL-terminated), trusting
 * 10.0.0.0/8 and 2001:db8::/32. */
static const char *xff(const char *peer, const char *const *lines) {
  static dx_cidr t[2];
  dx_cidr_parse("10.0.0.0/8", &t[0], NULL);
  dx_cidr_parse("2001:db8::/32", &t[1], NULL);
  dx_header h[8];
  size_t n = 0;
  h[n++] = (dx_header){"Host", 4, "x", 1};
  for (; *lines; lines++) {
    h[n++] = (dx_header){n % 2 ? "X-Forwarded-For" : "x-forwarded-for", 15,
                         *lines, strlen(*lines)};
    h[n++] = (dx_header){"X-Other", 7, "1.1.1.1", 7};
  }
  dx_ip ip;
  dx_ip_parse(peer, strlen(peer), &ip);
  dx_http_forwarded_for(h, n, t, 2, &ip);
  return fmt(&ip);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_xff(void) {
  /* Untrusted peer: ignored, whatever it says. */
  CHECK_STR(xff("192.0.2.9", L("198.51.100.1")), "192.0.2.9");
  /* Trusted peer, no header: the peer. */
  CHECK_STR(xff("10.0.0.1", L(NULL)), "10.0.0.1");
  CHECK_STR(xff("10.0.0.1", L("198.51.100.1")), "198.51.100.1");
  /* Right to left past trusted proxies; a forged left part is not read. */
  CHECK_STR(xff("10.0.0.1", L("6.6.6.6, 198.51.100.1, 10.1.1.1")),
            "198.51.100.1");
  /* Several lines are one list, in order. */
  CHECK_STR(xff("10.0.0.1", L("6.6.6.6, 198.51.100.1", "10.2.2.2")),
            "198.51.100.1");
  CHECK_STR(xff("10.0.0.1", L("6.6.6.6", "198.51.100.1,10.2.2.2")),
            "198.51.100.1");
  /* All trusted: the leftmost. */
  CHECK_STR(xff("10.0.0.1", L("10.9.9.9, 10.8.8.8")), "10.9.9.9");
  /* Malformed stops the walk: the last good one. */
  CHECK_STR(xff("10.0.0.1", L("198.51.100.1, unknown")), "10.0.0.1");
  CHECK_STR(xff("10.0.0.1", L("198.51.100.1, garbage, 10.3.3.3")), "10.3.3.3");
  CHECK_STR(xff("10.0.0.1", L("_hidden, 10.3.3.3")), "10.3.3.3");
  /* Ports and brackets, IPv6, spaces and empty elements. */
  CHECK_STR(xff("10.0.0.1", L("198.51.100.1:4711")), "198.51.100.1");
  CHECK_STR(xff("10.0.0.1", L("[2001:db9::5]:443")), "2001:db9::5");
  CHECK_STR(xff("10.0.0.1", L("[2001:db9::5]")), "2001:db9::5");
  CHECK_STR(xff("10.0.0.1", L("2001:db9::5 ,\t2001:db8::1")), "2001:db9::5");
  CHECK_STR(xff("2001:db8::7", L(" ,198.51.100.1,, ")), "198.51.100.1");
  CHECK_STR(xff("10.0.0.1", L("1.2.3.4:99999")), "10.0.0.1");
  CHECK_STR(xff("10.0.0.1", L("[1.2.3.4]")), "10.0.0.1");
  CHECK_STR(xff("10.0.0.1", L("[2001:db9::5]x")), "10.0.0.1");
  CHECK_STR(xff("10.0.0.1", L("1.2.3.4:")), "10.0.0.1");
}

/* ---- PROXY protocol ----------------------------------------------------- */

typedef struct vec {
  const char *name;
  const uint8_t *p;
  size_t n;
  int rc;          /* whole: length, 0 or DX_EPROXY */
  const char *src; /* expected source, or NULL for local */
  uint16_t sport;
} vec;

#define V1(name, s, rc, src, port)                                             \
  { name, (const uint8_t *)s, sizeof s - 1, rc, src, port }

static const uint8_t V2SIG[] = "\r\n\r\n\0\r\nQUIT\n";

/* A v2 header: command, family/transport, then body bytes. */
static size_t v2(uint8_t *out, uint8_t cmd, uint8_t fam, const uint8_t *body,
                 size_t len) {
  memcpy(out, V2SIG, 12);
  out[12] = (uint8_t)(0x20 | cmd);
  out[13] = fam;
  out[14] = (uint8_t)(len >> 8);
  out[15] = (uint8_t)len;
  if (len) memcpy(out + 16, body, len);
  return 16 + len;
}

/* Checks one vector whole, then every prefix: a valid header's prefixes
 * are all incomplete; an invalid one's never give another verdict than
 * "incomplete" or the same error. */
static int check_vec(const vec *v) {
  dx_proxy_header h;
  const char *why = NULL;
  int rc = dx_proxy_parse(guarded(v->p, v->n), v->n, &h, &why);
  if (rc != v->rc) {
    fprintf(stderr, "  %s: whole gave %d (%s), want %d\n", v->name, rc,
            why ? why : "", v->rc);
    return -1;
  }
  if (rc > 0 && (v->src ? h.local || strcmp(fmt(&h.src), v->src) != 0 ||
                              h.src_port != v->sport
                        : !h.local)) {
    fprintf(stderr, "  %s: address %s:%u local=%d\n", v->name, fmt(&h.src),
            h.src_port, h.local);
    return -1;
  }
  for (size_t k = 0; k < v->n; k++) {
    int r = dx_proxy_parse(guarded(v->p, k), k, &h, NULL);
    bool ok = rc > 0   ? r == DX_EAGAIN
              : rc < 0 ? r == DX_EAGAIN || r == rc
                       : r == DX_EAGAIN || r == 0;
    if (!ok) {
      fprintf(stderr, "  %s: prefix of %zu gave %d\n", v->name, k, r);
      return -1;
    }
  }
  /* Bytes after the header (the TLS or HTTP stream) are not read. */
  if (rc > 0) {
    uint8_t more[2200];
    memcpy(more, v->p, v->n);
    memcpy(more + v->n, "GET / HTTP/1.1\r\n", 16);
    if (dx_proxy_parse(guarded(more, v->n + 16), v->n + 16, &h, NULL) != rc)
      return -1;
  }
  return 0;
}

static void test_proxy_v1(void) {
  static const vec vs[] = {
      V1("tcp4", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", 45,
         "192.0.2.1", 56324),
      V1("tcp6", "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", 44,
         "2001:db8::1", 1),
      V1("unknown", "PROXY UNKNOWN\r\n", 15, NULL, 0),
      V1("unknown+", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", 35, NULL, 0),
      V1("port 0", "PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\n", 32, "1.2.3.4", 0),
      V1("longest",
         "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
         104, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
      V1("not proxy", "GET / HTTP/1.1\r\n", 0, NULL, 0),
      V1("propfind", "PROPFIND / HTTP/1.1\r\n", 0, NULL, 0),
      V1("tls", "\x16\x03\x01\x02\x00", 0, NULL, 0),
      V1("lowercase", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 0, NULL, 0),
      V1("tcp4 v6 addr", "PROXY TCP4 ::1 ::2 1 2\r\n", DX_EPROXY, NULL, 0),
      V1("tcp6 v4 addr", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", DX_EPROXY, NULL,
         0),
      V1("two spaces", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", DX_EPROXY, NULL,
         0),
      V1("trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", DX_EPROXY,
         NULL, 0),
      V1("missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", DX_EPROXY, NULL,
         0),
      V1("extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", DX_EPROXY, NULL,
         0),
      V1("port range", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", DX_EPROXY,
         NULL, 0),
      V1("port zero-led", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", DX_EPROXY,
         NULL, 0),
      V1("port sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", DX_EPROXY, NULL,
         0),
      V1("bad addr", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", DX_EPROXY, NULL,
         0),
      V1("udp", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", DX_EPROXY, NULL, 0),
      V1("LF only", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", DX_EPROXY, NULL, 0),
      V1("CR alone", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", DX_EPROXY, NULL, 0),
      V1("NUL", "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", DX_EPROXY, NULL, 0),
      V1("empty", "PROXY \r\n", DX_EPROXY, NULL, 0),
  };
  for (size_t i = 0; i < sizeof vs / sizeof *vs; i++)
    CHECK_INT(check_vec(&vs[i]), 0);
  /* 107 bytes with the CRLF is the limit; one more is refused, and so is a
   * line without a CRLF in the first 107 bytes. */
  char line[200];
  memset(line, 'x', sizeof line);
  memcpy(line, "PROXY UNKNOWN ", 14);
  memcpy(line + 105, "\r\n", 2);
  vec ok = {"107", (uint8_t *)line, 107, 107, NULL, 0};
  CHECK_INT(check_vec(&ok), 0);
  memcpy(line + 105, "x\r\n", 3);
  vec over = {"108", (uint8_t *)line, 108, DX_EPROXY, NULL, 0};
  CHECK_INT(check_vec(&over), 0);
  vec nocr = {"no CRLF", (uint8_t *)line, 150, DX_EPROXY, NULL, 0};
  memset(line + 14, 'x', 150);
  CHECK_INT(check_vec(&nocr), 0);
}

static void test_proxy_v2(void) {
  uint8_t b[4][2100];
  uint8_t in4[12] = {192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb};
  uint8_t in6[36 + 7] = {
      0x20, 0x01, 0x0d, 0xb8, [15] = 1, [16] = 0x20, [17] = 0x01, [18] = 0x0d,
      [19] = 0xb8, [31] = 2, [32] = 0x12, [33] = 0x34, [34] = 0x00, [35] = 0x50,
      /* a TLV: type 0x04 (NOOP), length 4 */
      [36] = 0x04, [37] = 0, [38] = 4};
  uint8_t unix_[216] = {0};
  struct {
    const char *name;
    uint8_t cmd, fam;
    const uint8_t *body;
    size_t len;
    int rc;
    const char *src;
    uint16_t sport;
  } cs[] = {
      {"inet", 1, 0x11, in4, 12, 28, "192.0.2.1", 0xdc04},
      {"inet6+tlv", 1, 0x21, in6, 43, 59, "2001:db8::1", 0x1234},
      {"local", 0, 0x00, NULL, 0, 16, NULL, 0},
      {"local+junk", 0, 0x11, in4, 12, 28, NULL, 0},
      {"unspec", 1, 0x00, in4, 5, 21, NULL, 0},
      {"unix", 1, 0x31, unix_, 216, 232, NULL, 0},
      {"inet unspec proto", 1, 0x10, in4, 12, 28, NULL, 0},
      {"inet short", 1, 0x11, in4, 11, DX_EPROXY, NULL, 0},
      {"inet6 short", 1, 0x21, in6, 35, DX_EPROXY, NULL, 0},
      {"unix short", 1, 0x31, unix_, 100, DX_EPROXY, NULL, 0},
      {"dgram", 1, 0x12, in4, 12, DX_EPROXY, NULL, 0},
      {"bad family", 1, 0x41, in4, 12, DX_EPROXY, NULL, 0},
      {"bad proto", 1, 0x13, in4, 12, DX_EPROXY, NULL, 0},
      {"bad command", 2, 0x11, in4, 12, DX_EPROXY, NULL, 0},
  };
  for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
    size_t n = v2(b[0], cs[i].cmd, cs[i].fam, cs[i].body, cs[i].len);
    vec v = {cs[i].name, b[0], n, cs[i].rc, cs[i].src, cs[i].sport};
    CHECK_INT(check_vec(&v), 0);
  }
  /* Version 1 in the v2 header, and a length past our bound (refused
   * from its 16 bytes: never waited for). */
  size_t n = v2(b[1], 1, 0x11, in4, 12);
  b[1][12] = 0x11;
  vec badver = {"version", b[1], n, DX_EPROXY, NULL, 0};
  CHECK_INT(check_vec(&badver), 0);
  n = v2(b[2], 1, 0x11, in4, 12);
  b[2][14] = 0xff;
  vec huge = {"huge", b[2], 16, DX_EPROXY, NULL, 0};
  CHECK_INT(check_vec(&huge), 0);
  uint8_t tlvs[2032] = {0};
  memcpy(tlvs, in4, 12);
  n = v2(b[3], 1, 0x11, tlvs, sizeof tlvs);
  vec max = {"max", b[3], n, DX_PROXY_V2_MAX, "192.0.2.1", 0xdc04};
  CHECK_INT(check_vec(&max), 0);
  b[3][15]++; /* 2049 */
  vec max1 = {"max+1", b[3], 16, DX_EPROXY, NULL, 0};
  CHECK_INT(check_vec(&max1), 0);
  /* A signature that breaks off is not a header. */
  vec almost = {"almost", (const uint8_t *)"\r\n\r\n\0\r\nQUIX", 12, 0, NULL,
                0};
  CHECK_INT(check_vec(&almost), 0);
  dx_proxy_header h;
  CHECK_INT(dx_proxy_parse((const uint8_t *)"", 0, &h, NULL), DX_EAGAIN);
}

/* ---- the server ----------------------------------------------------------
 * Loopback addresses stand for the network: 127.0.0.2 is the trusted proxy,
 * 127.0.0.1 an untrusted direct client. */

static char accept_peer[64];

static int on_accept(dx_conn *c, const dx_upgrade_request *r, void *ud) {
  (void)c, (void)ud;
  snprintf(accept_peer, sizeof accept_peer, "%s", r->peer);
  return 0;
}

static void api_peer(dx_http_exchange *x, const dx_http_view *v, void *ud) {
  (void)ud;
  char body[80];
  int n = snprintf(body, sizeof body, "peer=%s\n", v->peer);
  dx_http_respond(x, 200, "text/plain", body, (size_t)n, NULL);
}

static void *run_server(void *arg) {
  return (void *)(intptr_t)dx_server_run(arg);
}

static int connect_from(const char *src, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  inet_pton(AF_INET, src, &sa.sin_addr);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa)) abort();
  sa.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) abort();
  return fd;
}

/* Whether s holds a whole response (head, and the body its Content-Length
 * announces; a 101 has none). */
static bool complete(const char *s) {
  const char *e = strstr(s, "\r\n\r\n");
  if (!e) return false;
  if (strncmp(s, "HTTP/1.1 101", 12) == 0) return true;
  const char *cl = strstr(s, "Content-Length: ");
  return !cl || strlen(e + 4) >= strtoul(cl + 16, NULL, 10);
}

/* Reads one response, or until EOF or ms of silence; returns the length. */
static size_t read_for(int fd, char *out, size_t cap, int ms) {
  size_t n = 0;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  out[0] = 0;
  while (n + 1 < cap && !complete(out) && poll(&p, 1, ms) == 1) {
    ssize_t k = read(fd, out + n, cap - 1 - n);
    if (k <= 0) break;
    n += (size_t)k;
    out[n] = 0;
  }
  return n;
}

/* Sends pieces (each a string with its length) with a pause between, then
 * returns what came back. */
static const char *exchange(int fd, const void *const *p, const size_t *len,
                            size_t k) {
  static char buf[4096];
  for (size_t i = 0; i < k; i++) {
    if (write(fd, p[i], len[i]) < 0) break;
    if (i + 1 < k) usleep(10000);
  }
  read_for(fd, buf, sizeof buf, 2000);
  return buf;
}

static const char *send_str(int fd, const char *s) {
  const void *p[] = {s};
  size_t l[] = {strlen(s)};
  return exchange(fd, p, l, 1);
}

#define GET_PEER "GET /peer HTTP/1.1\r\nHost: h\r\n\r\n"
#define UPGRADE(xff)                                                           \
  "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"                      \
  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"                       \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" xff "\r\n"

static dx_server *start(dx_server_config *cfg, pthread_t *th) {
  dx_server *srv = dx_server_new(cfg);
  dx_route r = {.path = "/ws", .on_accept = on_accept};
  if (dx_server_route(srv, &r) || dx_server_http(srv, "/peer", api_peer, NULL))
    abort();
  if (dx_server_start(srv)) {
    fprintf(stderr, "  start: %s\n", dx_server_error(srv));
    abort();
  }
  pthread_create(th, NULL, run_server, srv);
  return srv;
}

static void stop(dx_server *srv, pthread_t th) {
  dx_server_shutdown(srv, 500);
  pthread_join(th, NULL);
  dx_server_free(srv);
}

static void test_server_config(void) {
  const char *bad[] = {"10.0.0.0/8", "10.0.0.1/8", NULL};
  dx_server_config cfg = {
      .host = "127.0.0.1", .threads = 1, .trusted_proxies = bad};
  dx_server *srv = dx_server_new(&cfg);
  CHECK_INT(dx_server_start(srv), DX_EINVAL);
  CHECK(strstr(dx_server_error(srv), "'10.0.0.1/8'") != NULL);
  dx_server_free(srv);
  dx_server_config pp = {
      .host = "127.0.0.1", .threads = 1, .proxy_protocol = true};
  srv = dx_server_new(&pp);
  CHECK_INT(dx_server_start(srv), DX_EINVAL);
  CHECK(strstr(dx_server_error(srv), "needs trusted_proxies") != NULL);
  dx_server_free(srv);
}

static void test_server_xff(void) {
  const char *trusted[] = {"127.0.0.2/32", NULL};
  dx_server_config cfg = {.host = "127.0.0.1",
                          .threads = 2,
                          .max_per_ip = 1,
                          .trusted_proxies = trusted};
  pthread_t th;
  dx_server *srv = start(&cfg, &th);
  int port = dx_server_port(srv);
  /* HTTP: the forwarded client, then on the same kept-alive connection a
   * request without XFF is the proxy again. */
  int fd = connect_from("127.0.0.2", port);
  CHECK(strstr(send_str(fd, "GET /peer HTTP/1.1\r\nHost: h\r\n"
                            "X-Forwarded-For: 6.6.6.6, 198.51.100.1\r\n\r\n"),
               "peer=198.51.100.1\n"));
  CHECK(strstr(send_str(fd, GET_PEER), "peer=127.0.0.2\n"));
  close(fd);
  /* Untrusted: the header is ignored. */
  fd = connect_from("127.0.0.1", port);
  CHECK(strstr(send_str(fd, "GET /peer HTTP/1.1\r\nHost: h\r\n"
                            "X-Forwarded-For: 198.51.100.1\r\n\r\n"),
               "peer=127.0.0.1\n"));
  close(fd);
  /* The per-IP quota (1) counts forwarded clients: two clients behind the
   * proxy are both accepted, a second from the same one is refused. */
  int a = connect_from("127.0.0.2", port);
  CHECK(strstr(send_str(a, UPGRADE("X-Forwarded-For: 198.51.100.1\r\n")),
               "HTTP/1.1 101"));
  CHECK_STR(accept_peer, "198.51.100.1");
  int b = connect_from("127.0.0.2", port);
  CHECK(strstr(send_str(b, UPGRADE("X-Forwarded-For: 198.51.100.2\r\n")),
               "HTTP/1.1 101"));
  int c = connect_from("127.0.0.2", port);
  CHECK(strstr(send_str(c, UPGRADE("X-Forwarded-For: 198.51.100.1\r\n")),
               "HTTP/1.1 429"));
  close(c);
  /* A forged XFF from an untrusted peer does not get it another count. */
  int d = connect_from("127.0.0.1", port);
  CHECK(strstr(send_str(d, UPGRADE("X-Forwarded-For: 203.0.113.1\r\n")),
               "HTTP/1.1 101"));
  CHECK_STR(accept_peer, "127.0.0.1");
  int e = connect_from("127.0.0.1", port);
  CHECK(strstr(send_str(e, UPGRADE("X-Forwarded-For: 203.0.113.2\r\n")),
               "HTTP/1.1 429"));
  close(e);
  /* Released under the client address: 198.51.100.1 may come back. */
  close(a);
  usleep(100000);
  a = connect_from("127.0.0.2", port);
  CHECK(strstr(send_str(a, UPGRADE("X-Forwarded-For: 198.51.100.1\r\n")),
               "HTTP/1.1 101"));
  close(a);
  close(b);
  close(d);
  stop(srv, th);
}

static void test_server_proxy_protocol(void) {
  const char *trusted[] = {"127.0.0.2", "10.0.0.0/8", NULL};
  dx_server_config cfg = {.host = "127.0.0.1",
                          .threads = 1,
                          .max_per_ip = 1,
                          .trusted_proxies = trusted,
                          .proxy_protocol = true};
  pthread_t th;
  dx_server *srv = start(&cfg, &th);
  int port = dx_server_port(srv);
  /* v1, in pieces (the header split, and joined with the request). */
  int fd = connect_from("127.0.0.2", port);
  const char *v1[] = {"PROXY TCP4 198.51.1", "00.7 127.0.0.1 5000 80\r\nGET /p",
                      "eer HTTP/1.1\r\nHost: h\r\n\r\n"};
  size_t l1[] = {strlen(v1[0]), strlen(v1[1]), strlen(v1[2])};
  CHECK(strstr(exchange(fd, (const void *const *)v1, l1, 3),
               "peer=198.51.100.7\n"));
  close(fd);
  /* v2 byte by byte for its first 16, then the rest with the request. */
  uint8_t hdr[64];
  uint8_t in4[12] = {203, 0, 113, 9, 127, 0, 0, 1, 0x13, 0x88, 0, 80};
  size_t hn = v2(hdr, 1, 0x11, in4, 12);
  fd = connect_from("127.0.0.2", port);
  for (size_t i = 0; i < 16; i++) {
    if (write(fd, hdr + i, 1) != 1) abort();
    usleep(2000);
  }
  const void *p2[] = {hdr + 16, GET_PEER};
  size_t l2[] = {hn - 16, strlen(GET_PEER)};
  CHECK(strstr(exchange(fd, p2, l2, 2), "peer=203.0.113.9\n"));
  close(fd);
  /* LOCAL: the socket's address. */
  fd = connect_from("127.0.0.2", port);
  hn = v2(hdr, 0, 0, NULL, 0);
  memcpy(hdr + hn, GET_PEER, strlen(GET_PEER));
  const void *p3[] = {hdr};
  size_t l3[] = {hn + strlen(GET_PEER)};
  CHECK(strstr(exchange(fd, p3, l3, 1), "peer=127.0.0.2\n"));
  close(fd);
  /* A proxy address from the header that is itself trusted: XFF counts. */
  fd = connect_from("127.0.0.2", port);
  CHECK(strstr(send_str(fd, "PROXY TCP4 10.1.2.3 127.0.0.1 1 80\r\n"
                            "GET /peer HTTP/1.1\r\nHost: h\r\n"
                            "X-Forwarded-For: 192.0.2.44\r\n\r\n"),
               "peer=192.0.2.44\n"));
  close(fd);
  /* A trusted peer must send one: closed without an answer. */
  fd = connect_from("127.0.0.2", port);
  CHECK_STR(send_str(fd, GET_PEER), "");
  close(fd);
  fd = connect_from("127.0.0.2", port);
  CHECK_STR(send_str(fd, "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n" GET_PEER), "");
  close(fd);
  /* Untrusted: direct requests work; a PROXY header is refused. */
  fd = connect_from("127.0.0.1", port);
  CHECK(strstr(send_str(fd, GET_PEER), "peer=127.0.0.1\n"));
  close(fd);
  fd = connect_from("127.0.0.1", port);
  CHECK_STR(
      send_str(fd, "PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n" GET_PEER),
      "");
  close(fd);
  fd = connect_from("127.0.0.1", port);
  const void *p4[] = {V2SIG};
  size_t l4[] = {12};
  CHECK_STR(exchange(fd, p4, l4, 1), "");
  close(fd);
  /* The quota counts the client the header named. */
  int a = connect_from("127.0.0.2", port);
  CHECK(strstr(
      send_str(a, "PROXY TCP4 198.51.100.7 127.0.0.1 1 80\r\n" UPGRADE("")),
      "HTTP/1.1 101"));
  CHECK_STR(accept_peer, "198.51.100.7");
  int b = connect_from("127.0.0.2", port);
  CHECK(strstr(
      send_str(b, "PROXY TCP4 198.51.100.8 127.0.0.1 1 80\r\n" UPGRADE("")),
      "HTTP/1.1 101"));
  int c = connect_from("127.0.0.2", port);
  CHECK(strstr(
      send_str(c, "PROXY TCP4 198.51.100.7 127.0.0.1 2 80\r\n" UPGRADE("")),
      "HTTP/1.1 429"));
  close(a);
  close(b);
  close(c);
  dx_server_stats st;
  dx_server_stats_get(srv, &st);
  CHECK_INT(st.rejected_http, 4); /* missing, bad, 2 untrusted */
  stop(srv, th);
}

int main(void) {
  RUN(test_ip);
  RUN(test_cidr);
  RUN(test_xff);
  RUN(test_proxy_v1);
  RUN(test_proxy_v2);
  RUN(test_server_config);
  RUN(test_server_xff);
  RUN(test_server_proxy_protocol);
  return CHECK_DONE();
}
