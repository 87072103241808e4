/*
 * PROXY protocol, versions 1 (text) and 2 (binary), as specified in
 * haproxy's doc/proxy-protocol.txt. A load balancer that terminates TCP
 * (HAProxy send-proxy, AWS NLB, ...) writes this header before the first
 * byte of the client's stream, so the server learns the client's address.
 * Contract in duplex/http.h; the server decides whom to believe.
 */
#include "http/internal.h"

#include <string.h>

static const uint8_t V1_SIG[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const uint8_t V2_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int bad(const char **why, const char *reason) {
  if (why) *why = reason;
  return DX_EPROXY;
}

/* Whether p (n bytes) agrees with sig over their common length. */
static bool agrees(const uint8_t *p, size_t n, const uint8_t *sig, size_t len) {
  return memcmp(p, sig, n < len ? n : len) == 0;
}

/* A v1 port: 0..65535, decimal, no leading zero. */
static bool v1_port(const char *s, size_t n, uint16_t *out) {
  if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) return false;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!dx__is_digit((unsigned char)s[i])) return false;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535) return false;
  *out = (uint16_t)v;
  return true;
}

/* The fields of a complete v1 line (without "PROXY " and CRLF). */
static int v1_fields(const char *s, size_t n, dx_proxy_header *out,
                     const char **why) {
  const char *f[5];
  size_t len[5], k = 0, start = 0;
  if (n >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (n == 7 || s[7] == ' ')) {
    /* The spec: whatever follows UNKNOWN up to the CRLF is ignored. */
    out->local = true;
    return 0;
  }
  for (size_t i = 0; i <= n; i++) {
    if (i < n && s[i] != ' ') continue;
    if (k == 5) return bad(why, "v1: too many fields");
    if (i == start) return bad(why, "v1: fields are separated by one space");
    f[k] = s + start;
    len[k++] = i - start;
    start = i + 1;
  }
  if (k != 5) return bad(why, "v1: expected TCP4|TCP6 SRC DST SPORT DPORT");
  bool v4 = len[0] == 4 && memcmp(f[0], "TCP4", 4) == 0;
  bool v6 = len[0] == 4 && memcmp(f[0], "TCP6", 4) == 0;
  if (!v4 && !v6) return bad(why, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
  for (int a = 1; a <= 2; a++) {
    dx_ip *ip = a == 1 ? &out->src : &out->dst;
    /* The family must be the one named: an IPv6 literal has a ':'. */
    bool colon = memchr(f[a], ':', len[a]) != NULL;
    if (colon != v6 || dx_ip_parse(f[a], len[a], ip))
      return bad(why, v4 ? "v1: bad IPv4 address" : "v1: bad IPv6 address");
  }
  if (!v1_port(f[3], len[3], &out->src_port) ||
      !v1_port(f[4], len[4], &out->dst_port))
    return bad(why, "v1: a port is a decimal 0..65535");
  return 0;
}

static int parse_v1(const uint8_t *p, size_t n, dx_proxy_header *out,
                    const char **why) {
  size_t lim = n < DX_PROXY_V1_MAX ? n : DX_PROXY_V1_MAX;
  for (size_t i = sizeof V1_SIG; i < lim; i++) {
    if (p[i] == '\r') {
      if (i + 2 > DX_PROXY_V1_MAX)
        return bad(why, "v1: line longer than 107 bytes");
      if (i + 1 >= n) return DX_EAGAIN;
      if (p[i + 1] != '\n') return bad(why, "v1: CR without LF");
      out->version = 1;
      int rc = v1_fields((const char *)p + sizeof V1_SIG, i - sizeof V1_SIG,
                         out, why);
      return rc ? rc : (int)(i + 2);
    }
    if (p[i] < 0x20 || p[i] > 0x7e)
      return bad(why, "v1: a byte that is not printable ASCII");
  }
  return n >= DX_PROXY_V1_MAX ? bad(why, "v1: line longer than 107 bytes")
                              : DX_EAGAIN;
}

static int parse_v2(const uint8_t *p, size_t n, dx_proxy_header *out,
                    const char **why) {
  if (n < 16) return DX_EAGAIN;
  unsigned ver = p[12] >> 4, cmd = p[12] & 0xf;
  unsigned fam = p[13] >> 4, proto = p[13] & 0xf;
  size_t len = (size_t)p[14] << 8 | p[15];
  if (ver != 2) return bad(why, "v2: version is not 2");
  if (cmd > 1) return bad(why, "v2: command is not LOCAL or PROXY");
  if (fam > 3) return bad(why, "v2: unknown address family");
  if (proto > 2) return bad(why, "v2: unknown transport");
  if (16 + len > DX_PROXY_V2_MAX)
    return bad(why, "v2: header longer than 2048 bytes");
  /* Checked before waiting for the body: a short length is wrong whatever
   * follows. */
  static const size_t need[4] = {0, 12, 36, 216};
  if (cmd == 1 && len < need[fam])
    return bad(why, "v2: length too short for the address family");
  if (n < 16 + len) return DX_EAGAIN;
  out->version = 2;
  /* LOCAL (the proxy's own health check), UNSPEC, UNIX sockets and an
   * unspecified transport carry no address we can use: the spec says to
   * keep the real connection endpoints. */
  if (cmd == 0 || fam == 0 || fam == 3 || proto == 0) {
    out->local = true;
  } else if (proto == 2) {
    return bad(why, "v2: a DGRAM (UDP) header on a stream connection");
  } else if (fam == 1) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                       0, 0, 0, 0, 0xff, 0xff};
    memcpy(out->src.b, mapped, 12);
    memcpy(out->src.b + 12, p + 16, 4);
    memcpy(out->dst.b, mapped, 12);
    memcpy(out->dst.b + 12, p + 20, 4);
    out->src_port = (uint16_t)(p[24] << 8 | p[25]);
    out->dst_port = (uint16_t)(p[26] << 8 | p[27]);
  } else {
    memcpy(out->src.b, p + 16, 16);
    memcpy(out->dst.b, p + 32, 16);
    out->src_port = (uint16_t)(p[48] << 8 | p[49]);
    out->dst_port = (uint16_t)(p[50] << 8 | p[51]);
  }
  return (int)(16 + len);
}

int dx_proxy_parse(const uint8_t *p, size_t n, dx_proxy_header *out,
                   const char **why) {
  memset(out, 0, sizeof *out);
  if (n == 0) return DX_EAGAIN;
  if (agrees(p, n, V1_SIG, sizeof V1_SIG))
    return n < sizeof V1_SIG ? DX_EAGAIN : parse_v1(p, n, out, why);
  if (agrees(p, n, V2_SIG, sizeof V2_SIG))
    return n < sizeof V2_SIG ? DX_EAGAIN : parse_v2(p, n, out, why);
  return 0;
}
