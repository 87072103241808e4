/*
 * Client addresses behind proxies: literal addresses, networks, and the
 * X-Forwarded-For walk (contract in duplex/http.h).
 *
 * X-Forwarded-For has no RFC (RFC 7239 "Forwarded" replaced it, but the
 * load balancers people run send XFF): each proxy appends the address it
 * received the request from. Only the entries added by proxies we trust
 * can be believed, and those are at the right end: a client can write
 * anything at the left. Hence the walk from the right, stopping at the
 * first address that is not one of ours.
 */
#include "http/internal.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

static const uint8_t MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int dx_ip_parse(const char *s, size_t len, dx_ip *out) {
  char buf[64];
  if (len == 0 || len >= sizeof buf) return DX_EINVAL;
  memcpy(buf, s, len);
  buf[len] = 0;
  if (memchr(buf, 0, len)) return DX_EINVAL; /* a NUL inside */
  uint8_t v4[4];
  if (inet_pton(AF_INET, buf, v4) == 1) {
    memcpy(out->b, MAPPED, 12);
    memcpy(out->b + 12, v4, 4);
    return 0;
  }
  /* inet_pton takes no zone ("fe80::1%eth0") and no brackets. */
  return inet_pton(AF_INET6, buf, out->b) == 1 ? 0 : DX_EINVAL;
}

char *dx_ip_format(const dx_ip *ip, char out[46]) {
  if (memcmp(ip->b, MAPPED, 12) == 0)
    inet_ntop(AF_INET, ip->b + 12, out, 46);
  else
    inet_ntop(AF_INET6, ip->b, out, 46);
  return out;
}

static bool is_v4(const dx_ip *ip) {
  return memcmp(ip->b, MAPPED, 12) == 0;
}

int dx_cidr_parse(const char *s, dx_cidr *out, const char **why) {
  const char *dummy;
  if (!why) why = &dummy;
  const char *slash = strchr(s, '/');
  size_t alen = slash ? (size_t)(slash - s) : strlen(s);
  if (dx_ip_parse(s, alen, &out->ip)) {
    *why = "not an IPv4 or IPv6 address (write 10.0.0.0/8, 192.0.2.7 or "
           "2001:db8::/32)";
    return DX_EINVAL;
  }
  bool v4 = is_v4(&out->ip) && memchr(s, ':', alen) == NULL;
  unsigned max = v4 ? 32 : 128, bits = max;
  if (slash) {
    const char *p = slash + 1;
    size_t n = strlen(p);
    if (n == 0 || n > 3 || strspn(p, "0123456789") != n ||
        (n > 1 && p[0] == '0')) {
      *why = "the prefix length after '/' is a decimal number";
      return DX_EINVAL;
    }
    bits = 0;
    for (size_t i = 0; i < n; i++)
      bits = bits * 10 + (unsigned)(p[i] - '0');
    if (bits > max) {
      *why = v4 ? "an IPv4 prefix length is 0..32"
                : "an IPv6 prefix length "
                  "is 0..128";
      return DX_EINVAL;
    }
  }
  out->bits = (uint8_t)(v4 ? 96 + bits : bits);
  for (unsigned i = out->bits; i < 128; i++) {
    if (out->ip.b[i / 8] & (0x80u >> (i % 8))) {
      *why = "address bits are set past the prefix length (for a network, "
             "zero them: 10.0.0.0/8, not 10.0.0.1/8)";
      return DX_EINVAL;
    }
  }
  return 0;
}

static bool in_net(const dx_cidr *net, const dx_ip *ip) {
  unsigned full = net->bits / 8, rest = net->bits % 8;
  if (memcmp(net->ip.b, ip->b, full) != 0) return false;
  if (!rest) return true;
  uint8_t mask = (uint8_t)(0xff00u >> rest);
  return (net->ip.b[full] & mask) == (ip->b[full] & mask);
}

bool dx_cidr_match(const dx_cidr *nets, size_t n, const dx_ip *ip) {
  for (size_t i = 0; i < n; i++)
    if (in_net(&nets[i], ip)) return true;
  return false;
}

/* One list entry, spaces trimmed: an address, "v4:port", "[v6]" or
 * "[v6]:port". Returns 0; DX_EINVAL. */
static int parse_entry(const char *s, size_t n, dx_ip *out) {
  const char *addr = s;
  size_t alen = n;
  const char *port = NULL;
  size_t plen = 0;
  if (n && s[0] == '[') {
    const char *close = memchr(s, ']', n);
    if (!close) return DX_EINVAL;
    addr = s + 1;
    alen = (size_t)(close - addr);
    size_t after = n - (size_t)(close + 1 - s);
    if (after) {
      if (close[1] != ':') return DX_EINVAL;
      port = close + 2;
      plen = after - 1;
    }
    if (!memchr(addr, ':', alen)) return DX_EINVAL; /* "[1.2.3.4]" */
  } else {
    const char *colon = memchr(s, ':', n);
    if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - s))) {
      /* Exactly one colon: IPv4 with a port. */
      alen = (size_t)(colon - s);
      port = colon + 1;
      plen = n - alen - 1;
    }
  }
  if (port) {
    if (plen == 0 || plen > 5) return DX_EINVAL;
    unsigned v = 0;
    for (size_t i = 0; i < plen; i++) {
      if (!dx__is_digit((unsigned char)port[i])) return DX_EINVAL;
      v = v * 10 + (unsigned)(port[i] - '0');
    }
    if (v > 65535) return DX_EINVAL;
  }
  return dx_ip_parse(addr, alen, out);
}

static bool is_ows(char c) {
  return c == ' ' || c == '\t';
}

static bool is_xff(const dx_header *h) {
  static const char name[] = "x-forwarded-for";
  return h->name_len == sizeof name - 1 &&
         strncasecmp(h->name, name, sizeof name - 1) == 0;
}

int dx_http_forwarded_for(const dx_header *headers, size_t n,
                          const dx_cidr *trusted, size_t ntrusted,
                          dx_ip *client) {
  if (!dx_cidr_match(trusted, ntrusted, client)) return 0;
  dx_ip cur = *client;
  bool changed = false;
  /* Several lines are one list in order (RFC 9110 5.3): walking the lines
   * from the last and each line from its end walks that list backwards. */
  for (size_t i = n; i-- > 0;) {
    if (!is_xff(&headers[i])) continue;
    const char *v = headers[i].value;
    size_t end = headers[i].value_len;
    while (end > 0) {
      size_t start = end;
      while (start > 0 && v[start - 1] != ',')
        start--;
      size_t a = start, b = end;
      while (a < b && is_ows(v[a]))
        a++;
      while (b > a && is_ows(v[b - 1]))
        b--;
      end = start ? start - 1 : 0;
      if (a == b) continue; /* empty list element */
      dx_ip ip;
      if (parse_entry(v + a, b - a, &ip)) goto done; /* keep the last good */
      cur = ip;
      changed = true;
      if (!dx_cidr_match(trusted, ntrusted, &ip)) goto done;
    }
  }
done:
  if (changed) *client = cur;
  return changed;
}
