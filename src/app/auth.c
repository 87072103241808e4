/* Handshake authentication for duplex serve (contract in auth.h). */
#include "auth.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TICKET_BYTES 32
#define TICKET_BUCKETS 4096 /* power of two */
#define DEFAULT_TICKET_TTL 30
#define DEFAULT_TICKET_MAX 10000
#define MAX_TOPIC 128

typedef struct ticket {
  uint8_t key[TICKET_BYTES];
  int64_t expires;
  auth_identity id;
  struct ticket *hnext;         /* bucket chain */
  struct ticket *older, *newer; /* issue order (= expiry order) */
} ticket;

struct auth {
  auth_mode mode;
  char *secret;
  size_t secret_len;
  char *pubkey_pem; /* normalised "BEGIN PUBLIC KEY" text for libjwt */
  size_t pubkey_len;
  char *audience, *issuer;
  unsigned leeway, ticket_ttl;
  size_t ticket_max;
  uint8_t (*keys)[SHA256_DIGEST_LENGTH]; /* SHA-256 of each API key */
  size_t nkeys;
  /* Templates copied into identities. */
  auth_identity anon, token_default, everything;

  pthread_mutex_t mu; /* guards everything below */
  ticket *buckets[TICKET_BUCKETS];
  ticket *oldest, *newest;
  size_t ntickets;
};

static const char *const ALL[] = {"*", NULL};
static const char *const NONE[] = {NULL};

/* ---- small helpers --------------------------------------------------------
 */

static void errf(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static size_t list_len(const char *const *l) {
  size_t n = 0;
  while (l && l[n])
    n++;
  return n;
}

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

static bool is_topic_char(int ch) {
  return isalnum(ch) || ch == '_' || ch == '.' || ch == ':' || ch == '/' ||
         ch == '-';
}

bool auth_pattern_valid(const char *p) {
  if (!p) return false;
  if (!strcmp(p, "*")) return true;
  size_t n = strlen(p);
  if (n && p[n - 1] == '*') n--;
  if (n == 0 || n > MAX_TOPIC) return false;
  for (size_t i = 0; i < n; i++)
    if (!is_topic_char((unsigned char)p[i])) return false;
  return true;
}

const char *auth_mode_name(auth_mode m) {
  switch (m) {
  case AUTH_OFF:
    return "off";
  case AUTH_OPTIONAL:
    return "optional";
  case AUTH_REQUIRED:
    return "required";
  }
  return "?";
}

const char *auth_source_name(auth_source s) {
  static const char *const names[] = {"none",  "header", "cookie",
                                      "query", "ticket", "subprotocol"};
  return (unsigned)s < sizeof names / sizeof *names ? names[s] : "?";
}

/* ---- identities: one block each ------------------------------------------ */

/* Lays out [subscribe ptrs][publish ptrs][strings] in one allocation so an
 * identity is freed with one call and copied without walking anything. */
static int ident_make(auth_identity *out, const char *subject,
                      const char *const *sub, size_t nsub,
                      const char *const *pub, size_t npub) {
  memset(out, 0, sizeof *out);
  size_t ptrs = (nsub + 1 + npub + 1) * sizeof(char *);
  size_t bytes = strlen(subject) + 1;
  for (size_t i = 0; i < nsub; i++)
    bytes += strlen(sub[i]) + 1;
  for (size_t i = 0; i < npub; i++)
    bytes += strlen(pub[i]) + 1;
  char *mem = malloc(ptrs + bytes);
  if (!mem) return 500;
  const char **s = (const char **)mem, **p = s + nsub + 1;
  char *str = mem + ptrs;
#define PUT(dst, src)                                                          \
  do {                                                                         \
    size_t l_ = strlen(src) + 1;                                               \
    memcpy(str, (src), l_);                                                    \
    (dst) = str;                                                               \
    str += l_;                                                                 \
  } while (0)
  PUT(out->subject, subject);
  for (size_t i = 0; i < nsub; i++)
    PUT(s[i], sub[i]);
  for (size_t i = 0; i < npub; i++)
    PUT(p[i], pub[i]);
#undef PUT
  s[nsub] = NULL;
  p[npub] = NULL;
  out->subscribe = s;
  out->publish = p;
  out->mem = mem;
  return 0;
}

int auth_identity_copy(auth_identity *dst, const auth_identity *src) {
  int rc = ident_make(dst, src->subject ? src->subject : "", src->subscribe,
                      list_len(src->subscribe), src->publish,
                      list_len(src->publish));
  if (rc) return rc;
  dst->expires = src->expires;
  dst->source = src->source;
  dst->anonymous = src->anonymous;
  dst->reason = src->reason;
  return 0;
}

void auth_identity_clear(auth_identity *id) {
  if (!id) return;
  free(id->mem);
  memset(id, 0, sizeof *id);
}

static bool pattern_match(const char *pat, const char *topic) {
  size_t n = strlen(pat);
  if (n && pat[n - 1] == '*') return strncmp(pat, topic, n - 1) == 0;
  return strcmp(pat, topic) == 0;
}

bool auth_allows(const auth_identity *id, int what, const char *topic) {
  if (!id || !topic || !*topic) return false;
  const char *const *l = what == AUTH_SUBSCRIBE ? id->subscribe
                         : what == AUTH_PUBLISH ? id->publish
                                                : NULL;
  for (; l && *l; l++)
    if (pattern_match(*l, topic)) return true;
  return false;
}

static bool grants_nothing(const auth_identity *id) {
  return list_len(id->subscribe) == 0 && list_len(id->publish) == 0;
}

/* ---- grants from JSON ------------------------------------------------------
 */

typedef struct grant_lists {
  const char *sub[AUTH_MAX_PATTERNS];
  const char *pub[AUTH_MAX_PATTERNS];
  size_t nsub, npub;
} grant_lists;

/* Strings point into the JSON value. Unknown keys are refused: a typo
 * ("publsh") must not pass silently as "no grant". */
static const char *grant_list_json(json_t *arr, const char **out, size_t *n) {
  if (!json_is_array(arr)) return "a grant list is not an array";
  if (json_array_size(arr) > AUTH_MAX_PATTERNS) return "too many patterns";
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) {
    const char *s = json_string_value(v);
    if (!s || !auth_pattern_valid(s)) return "bad topic pattern";
    out[(*n)++] = s;
  }
  return NULL;
}

static const char *grants_json(json_t *obj, grant_lists *g) {
  if (!json_is_object(obj)) return "grants are not an object";
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    const char *why;
    if (!strcmp(key, "subscribe"))
      why = grant_list_json(v, g->sub, &g->nsub);
    else if (!strcmp(key, "publish"))
      why = grant_list_json(v, g->pub, &g->npub);
    else
      why = "unknown key in grants";
    if (why) return why;
  }
  return NULL;
}

static const char *subject_json(json_t *v, const char **out) {
  *out = "";
  if (!v) return NULL;
  const char *s = json_string_value(v);
  if (!s) return "\"sub\" is not a string";
  size_t n = strlen(s);
  if (n > AUTH_MAX_SUBJECT) return "\"sub\" is too long";
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return "\"sub\" has control characters";
  *out = s;
  return NULL;
}

/* Builds an identity from a subject value and a grants value (either may be
 * NULL); grants absent -> the token template. */
static int ident_from_json(const auth *a, json_t *sub, json_t *grants,
                           auth_identity *out, const char **why) {
  const char *subject;
  if ((*why = subject_json(sub, &subject))) return 400;
  if (!grants)
    return ident_make(out, subject, a->token_default.subscribe,
                      list_len(a->token_default.subscribe),
                      a->token_default.publish,
                      list_len(a->token_default.publish));
  grant_lists g = {.nsub = 0};
  if ((*why = grants_json(grants, &g))) return 400;
  return ident_make(out, subject, g.sub, g.nsub, g.pub, g.npub);
}

int auth_identity_from_json(const auth *a, const char *body, size_t len,
                            auth_identity *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  json_error_t je;
  json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
  if (!json_is_object(root)) {
    errf(err, errlen, "body is not a JSON object%s%s", root ? "" : ": ",
         root ? "" : je.text);
    json_decref(root);
    return 400;
  }
  const char *key, *why = NULL;
  json_t *v;
  json_object_foreach(root, key, v) {
    if (strcmp(key, "sub") && strcmp(key, "grants")) {
      errf(err, errlen, "unknown key \"%s\" (sub, grants)", key);
      json_decref(root);
      return 400;
    }
  }
  int rc = ident_from_json(a, json_object_get(root, "sub"),
                           json_object_get(root, "grants"), out, &why);
  if (rc == 400) errf(err, errlen, "%s", why);
  json_decref(root);
  return rc;
}

/* ---- base64url -------------------------------------------------------------
 */

static int b64url_val(int ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9') return ch - '0' + 52;
  if (ch == '-') return 62;
  if (ch == '_') return 63;
  return -1;
}

/* Strict: alphabet only, no padding. Returns the decoded length or -1. */
static long b64url_decode(const char *s, size_t n, uint8_t *out, size_t cap) {
  if (n % 4 == 1) return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64url_val((unsigned char)s[i]);
    if (v < 0) return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o == cap) return -1;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  return (long)o;
}

static void b64url_encode(const uint8_t *in, size_t n, char *out) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    acc = (acc << 8) | in[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out[o++] = abc[(acc >> bits) & 63];
    }
  }
  if (bits) out[o++] = abc[(acc << (6 - bits)) & 63];
  out[o] = 0;
}

/* Decodes one JWT segment as a JSON object (duplicate names refused: two
 * "exp" members must not let us and the issuer read different values). */
static json_t *segment_json(const char *s, size_t n) {
  size_t cap = n * 3 / 4 + 3;
  uint8_t *buf = malloc(cap);
  if (!buf) return NULL;
  long len = b64url_decode(s, n, buf, cap);
  json_t *j = NULL;
  if (len > 0)
    j = json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES,
                   NULL);
  free(buf);
  if (j && !json_is_object(j)) {
    json_decref(j);
    j = NULL;
  }
  return j;
}

/* ---- JWT -------------------------------------------------------------------
 */

/* A NumericDate (RFC 7519 2): integer or real seconds. 0 absent, 1 present,
 * -1 wrong type. */
static int num_claim(json_t *claims, const char *name, int64_t *v) {
  json_t *j = json_object_get(claims, name);
  if (!j) return 0;
  if (json_is_integer(j)) {
    *v = (int64_t)json_integer_value(j);
    return 1;
  }
  if (json_is_real(j)) {
    double d = json_real_value(j);
    if (!(d > -9.2e18 && d < 9.2e18)) return -1;
    *v = (int64_t)d;
    return 1;
  }
  return -1;
}

static const char *check_times(const auth *a, json_t *claims, int64_t now,
                               int64_t *expires) {
  int64_t exp = 0, nbf = 0, iat = 0, lw = a->leeway;
  int r = num_claim(claims, "exp", &exp);
  if (r < 0) return "\"exp\" is not a number";
  /* Without exp a stolen token works forever: required. */
  if (r == 0) return "no \"exp\"";
  if (now >= exp + lw) return "expired";
  r = num_claim(claims, "nbf", &nbf);
  if (r < 0) return "\"nbf\" is not a number";
  if (r && now + lw < nbf) return "not valid yet (nbf)";
  r = num_claim(claims, "iat", &iat);
  if (r < 0) return "\"iat\" is not a number";
  if (r && now + lw < iat) return "issued in the future (iat)";
  *expires = exp;
  return NULL;
}

static const char *check_aud_iss(const auth *a, json_t *claims) {
  json_t *aud = json_object_get(claims, "aud");
  if (aud) {
    /* RFC 7519 4.1.3: a principal that does not identify itself with the
     * audience must reject the token, so "aud" without a configured
     * audience is a refusal, not a pass. */
    if (!a->audience) return "\"aud\" present but no audience configured";
    bool ok = false;
    if (json_is_string(aud)) {
      ok = !strcmp(json_string_value(aud), a->audience);
    } else if (json_is_array(aud)) {
      size_t i;
      json_t *v;
      json_array_foreach(aud, i, v) {
        if (!json_is_string(v)) return "\"aud\" is not a string list";
        if (!strcmp(json_string_value(v), a->audience)) ok = true;
      }
    } else {
      return "\"aud\" is not a string";
    }
    if (!ok) return "wrong audience";
  } else if (a->audience) {
    return "no \"aud\"";
  }
  if (a->issuer) {
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || strcmp(iss, a->issuer)) return "wrong issuer";
  }
  return NULL;
}

/* Picks the key from OUR configuration for the header's alg, so the token
 * never chooses how it is verified: HS256 needs a configured secret, RS256 a
 * configured public key, and nothing else is accepted ("none", HS384, ES256,
 * PS256 ...). An RS256 public key is therefore never an HMAC secret. */
static const char *pick_key(const auth *a, json_t *head, jwt_alg_t *alg,
                            const unsigned char **key, int *keylen) {
  const char *s = json_string_value(json_object_get(head, "alg"));
  if (!s) return "no \"alg\"";
  if (json_object_get(head, "crit")) return "\"crit\" header not supported";
  if (!strcmp(s, "HS256") && a->secret) {
    *alg = JWT_ALG_HS256;
    *key = (const unsigned char *)a->secret;
    *keylen = (int)a->secret_len;
    return NULL;
  }
  if (!strcmp(s, "RS256") && a->pubkey_pem) {
    *alg = JWT_ALG_RS256;
    *key = (const unsigned char *)a->pubkey_pem;
    *keylen = (int)a->pubkey_len;
    return NULL;
  }
  return "algorithm not allowed";
}

/* Verifies tok (NUL-terminated) and fills out. 0, 401, 403 or 500. */
static int verify_jwt(const auth *a, const char *tok, int64_t now,
                      auth_identity *out) {
  size_t n = strlen(tok);
  const char *d1 = memchr(tok, '.', n);
  const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - tok)) : NULL;
  if (!d2 || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - tok)) ||
      d2 + 1 == tok + n) {
    out->reason = "not a signed JWT";
    return 401;
  }
  json_t *head = segment_json(tok, (size_t)(d1 - tok));
  if (!head) {
    out->reason = "bad JWT header";
    return 401;
  }
  jwt_alg_t alg = JWT_ALG_NONE; /* set by pick_key on success */
  const unsigned char *key = NULL;
  int keylen = 0;
  out->reason = pick_key(a, head, &alg, &key, &keylen);
  json_decref(head);
  if (out->reason) return 401;

  /* libjwt checks the signature (in constant time: jwt_strcmp) ... */
  jwt_t *jwt = NULL;
  if (jwt_decode(&jwt, tok, key, keylen) != 0 || !jwt) {
    out->reason = "bad signature";
    return 401;
  }
  bool same_alg = jwt_get_alg(jwt) == alg;
  jwt_free(jwt);
  if (!same_alg) {
    out->reason = "algorithm mismatch";
    return 401;
  }
  /* ... and we read the claims ourselves from the verified payload, with
   * duplicate names refused and numbers of either JSON kind. */
  json_t *claims = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
  if (!claims) {
    out->reason = "bad JWT payload";
    return 401;
  }
  int64_t expires = 0;
  int rc = 401;
  if ((out->reason = check_times(a, claims, now, &expires)) ||
      (out->reason = check_aud_iss(a, claims)))
    goto done;
  const char *why = NULL;
  /* The grants claim is "grants" (docs/protocol.md); "topics" is read too.
   * Both at once is ambiguous: refused. */
  json_t *grants = json_object_get(claims, "grants");
  json_t *topics = json_object_get(claims, "topics");
  if (grants && topics) {
    out->reason = "both \"grants\" and \"topics\" claims";
    goto done;
  }
  rc = ident_from_json(a, json_object_get(claims, "sub"),
                       grants ? grants : topics, out, &why);
  if (rc == 400) {
    rc = 401;
    out->reason = why;
  } else if (rc == 0) {
    out->expires = expires;
  } else {
    out->reason = "out of memory";
  }
done:
  json_decref(claims);
  return rc;
}

/* ---- finding the credential in the request ----------------------------------
 */

typedef struct span {
  const char *p;
  size_t n;
} span;

static bool name_is(const dx_header *h, const char *name) {
  size_t n = strlen(name);
  return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

static span trim(const char *p, size_t n) {
  while (n && (*p == ' ' || *p == '\t'))
    p++, n--;
  while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
    n--;
  return (span){p, n};
}

/* Calls each item of a sep-separated list, trimmed; stops when fn says so. */
static bool each_item(const char *p, size_t n, char sep,
                      bool (*fn)(span item, void *ud), void *ud) {
  while (n) {
    const char *e = memchr(p, sep, n);
    size_t l = e ? (size_t)(e - p) : n;
    if (fn(trim(p, l), ud)) return true;
    if (!e) break;
    p += l + 1;
    n -= l + 1;
  }
  return false;
}

typedef struct find {
  const char *name; /* cookie or query parameter name */
  size_t name_len;
  span value;
  bool found;
} find;

static bool match_pair(span it, void *ud) {
  find *f = ud;
  if (it.n > f->name_len && it.p[f->name_len] == '=' &&
      memcmp(it.p, f->name, f->name_len) == 0) {
    f->value = (span){it.p + f->name_len + 1, it.n - f->name_len - 1};
    /* An empty value (a cleared cookie, "?token=") counts as absent. */
    f->found = f->value.n > 0;
    return f->found;
  }
  return false;
}

static bool match_bearer_proto(span it, void *ud) {
  find *f = ud;
  if (it.n > 7 && memcmp(it.p, "bearer.", 7) == 0) {
    f->value = (span){it.p + 7, it.n - 7};
    f->found = true;
  }
  return f->found;
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  ch |= 0x20;
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;
}

/* Copies v NUL-terminated, percent-decoding if asked; NULL on a bad escape,
 * an embedded NUL or ENOMEM (*oom set). */
static char *copy_value(span v, bool pct, bool *oom) {
  char *s = malloc(v.n + 1);
  if (!s) {
    *oom = true;
    return NULL;
  }
  size_t o = 0;
  for (size_t i = 0; i < v.n; i++) {
    int ch = (unsigned char)v.p[i];
    if (pct && ch == '%') {
      if (i + 2 >= v.n || hexval(v.p[i + 1]) < 0 || hexval(v.p[i + 2]) < 0)
        goto bad;
      ch = hexval(v.p[i + 1]) * 16 + hexval(v.p[i + 2]);
      i += 2;
    }
    if (ch == 0) goto bad;
    s[o++] = (char)ch;
  }
  s[o] = 0;
  return s;
bad:
  free(s);
  return NULL;
}

/* Finds the first credential by precedence (auth.h). Returns its source
 * (AUTH_SRC_NONE when there is none) and a malloc'd copy in *tok; *tok NULL
 * with a source set means it was malformed (or *oom). */
static auth_source find_credential(const dx_upgrade_request *req, char **tok,
                                   bool *oom) {
  *tok = NULL;
  for (size_t i = 0; i < req->num_headers; i++) {
    const dx_header *h = &req->headers[i];
    if (!name_is(h, "Authorization")) continue;
    span v = trim(h->value, h->value_len);
    if (v.n > 7 && strncasecmp(v.p, "Bearer ", 7) == 0) {
      v = trim(v.p + 7, v.n - 7);
      if (v.n) {
        *tok = copy_value(v, false, oom);
        return AUTH_SRC_HEADER;
      }
    }
  }
  find f = {"token", 5, {0}, false};
  for (size_t i = 0; i < req->num_headers && !f.found; i++)
    if (name_is(&req->headers[i], "Cookie"))
      each_item(req->headers[i].value, req->headers[i].value_len, ';',
                match_pair, &f);
  if (f.found) {
    /* RFC 6265 4.1.1: cookie-value may be wrapped in DQUOTEs. */
    if (f.value.n >= 2 && f.value.p[0] == '"' &&
        f.value.p[f.value.n - 1] == '"')
      f.value = (span){f.value.p + 1, f.value.n - 2};
    *tok = copy_value(f.value, false, oom);
    return AUTH_SRC_COOKIE;
  }
  const char *q = req->query ? req->query : "";
  if (each_item(q, strlen(q), '&', match_pair, &f)) {
    *tok = copy_value(f.value, true, oom);
    return AUTH_SRC_QUERY;
  }
  f = (find){"ticket", 6, {0}, false};
  if (each_item(q, strlen(q), '&', match_pair, &f)) {
    *tok = copy_value(f.value, true, oom);
    return AUTH_SRC_TICKET;
  }
  f = (find){NULL, 0, {0}, false};
  for (size_t i = 0; i < req->num_headers && !f.found; i++)
    if (name_is(&req->headers[i], "Sec-WebSocket-Protocol"))
      each_item(req->headers[i].value, req->headers[i].value_len, ',',
                match_bearer_proto, &f);
  if (f.found) {
    *tok = copy_value(f.value, false, oom);
    return AUTH_SRC_SUBPROTOCOL;
  }
  return AUTH_SRC_NONE;
}

/* ---- tickets ----------------------------------------------------------------
 */

static size_t bucket_of(const uint8_t *key) {
  /* The key is uniformly random: its first bytes are a fine hash. */
  uint32_t h;
  memcpy(&h, key, sizeof h);
  return h & (TICKET_BUCKETS - 1);
}

/* Unlinks t from both lists; caller holds mu. */
static void ticket_unlink(auth *a, ticket *t) {
  ticket **pp = &a->buckets[bucket_of(t->key)];
  while (*pp != t)
    pp = &(*pp)->hnext;
  *pp = t->hnext;
  if (t->older)
    t->older->newer = t->newer;
  else
    a->oldest = t->newer;
  if (t->newer)
    t->newer->older = t->older;
  else
    a->newest = t->older;
  a->ntickets--;
}

static void ticket_free(ticket *t) {
  auth_identity_clear(&t->id);
  OPENSSL_cleanse(t->key, sizeof t->key);
  free(t);
}

/* Drops expired tickets from the old end; caller holds mu. The TTL is the
 * same for all, so issue order is expiry order (unless the clock stepped
 * back; then a few linger until reached, and use checks expiry anyway). */
static void ticket_sweep(auth *a, int64_t now) {
  while (a->oldest && a->oldest->expires <= now) {
    ticket *t = a->oldest;
    ticket_unlink(a, t);
    ticket_free(t);
  }
}

bool auth_tickets_allowed(const auth *a) {
  /* Without API keys nobody may mint credentials, except when auth is off:
   * a ticket then grants nothing new, it only names a member. */
  return a->nkeys || a->mode == AUTH_OFF;
}

int auth_ticket_issue(auth *a, const auth_identity *id, int64_t now,
                      char out[AUTH_TICKET_LEN + 1]) {
  out[0] = 0;
  if (!auth_tickets_allowed(a)) return 403;
  ticket *t = calloc(1, sizeof *t);
  if (!t) return 500;
  if (RAND_bytes(t->key, sizeof t->key) != 1 ||
      auth_identity_copy(&t->id, id) != 0) {
    free(t);
    return 500;
  }
  t->id.source = AUTH_SRC_TICKET;
  t->id.anonymous = false;
  t->id.expires = 0;
  t->id.reason = NULL;
  t->expires = now + a->ticket_ttl;
  pthread_mutex_lock(&a->mu);
  ticket_sweep(a, now);
  /* Full: refuse rather than evict. Evicting would silently break a ticket
   * already handed to a client; a 503 is visible to the issuer, who can
   * retry after one TTL. */
  if (a->ntickets >= a->ticket_max) {
    pthread_mutex_unlock(&a->mu);
    ticket_free(t);
    return 503;
  }
  size_t b = bucket_of(t->key);
  t->hnext = a->buckets[b];
  a->buckets[b] = t;
  t->older = a->newest;
  if (a->newest)
    a->newest->newer = t;
  else
    a->oldest = t;
  a->newest = t;
  a->ntickets++;
  pthread_mutex_unlock(&a->mu);
  b64url_encode(t->key, sizeof t->key, out);
  return 0;
}

/* Takes the ticket out of the table (single use) and moves its identity to
 * out. 0 or 401. */
static int ticket_consume(auth *a, const char *s, int64_t now,
                          auth_identity *out) {
  uint8_t key[TICKET_BYTES];
  if (strlen(s) != AUTH_TICKET_LEN ||
      b64url_decode(s, AUTH_TICKET_LEN, key, sizeof key) != TICKET_BYTES) {
    out->reason = "malformed ticket";
    return 401;
  }
  ticket *hit = NULL;
  pthread_mutex_lock(&a->mu);
  ticket_sweep(a, now);
  /* Every entry of the chain is compared in full, in constant time. */
  for (ticket *t = a->buckets[bucket_of(key)]; t; t = t->hnext)
    if (CRYPTO_memcmp(t->key, key, sizeof key) == 0) hit = t;
  if (hit) ticket_unlink(a, hit);
  pthread_mutex_unlock(&a->mu);
  OPENSSL_cleanse(key, sizeof key);
  if (!hit || hit->expires <= now) {
    if (hit) ticket_free(hit);
    out->reason = "unknown, used or expired ticket";
    return 401;
  }
  *out = hit->id;
  hit->id.mem = NULL;
  ticket_free(hit);
  return 0;
}

unsigned auth_ticket_ttl(const auth *a) {
  return a->ticket_ttl;
}

size_t auth_ticket_count(auth *a) {
  pthread_mutex_lock(&a->mu);
  size_t n = a->ntickets;
  pthread_mutex_unlock(&a->mu);
  return n;
}

/* ---- the checks
 * ---------------------------------------------------------------- */

/* Anonymous connections share the template (mem NULL: nothing to free), so
 * they cost no allocation, and a connection dropped between the accept hook
 * and the open without a close callback cannot leak anything. */
static int borrow(auth_identity *out, const auth_identity *tmpl) {
  *out = *tmpl;
  out->mem = NULL;
  return 0;
}

int auth_check_upgrade(auth *a, const dx_upgrade_request *req, int64_t now,
                       auth_identity *out) {
  memset(out, 0, sizeof *out);
  if (a->mode == AUTH_OFF) {
    /* No checks. A ticket, when one is presented, only names the member
     * (presence); a bad one is ignored, never refused. */
    bool oom = false;
    char *tok = NULL;
    if (find_credential(req, &tok, &oom) == AUTH_SRC_TICKET && tok &&
        strlen(tok) <= AUTH_MAX_TOKEN &&
        ticket_consume(a, tok, now, out) == 0) {
      free(tok);
      return 0;
    }
    free(tok);
    memset(out, 0, sizeof *out);
    return borrow(out, &a->everything);
  }
  bool oom = false;
  char *tok = NULL;
  auth_source src = find_credential(req, &tok, &oom);
  int rc;
  if (src == AUTH_SRC_NONE) {
    if (a->mode == AUTH_REQUIRED) {
      out->reason = "no credential";
      return 401;
    }
    if (grants_nothing(&a->anon)) {
      out->reason = "no credential (anonymous access grants nothing)";
      return 401;
    }
    return borrow(out, &a->anon);
  }
  if (!tok) {
    out->reason = oom ? "out of memory" : "malformed credential";
    return oom ? 500 : 401;
  }
  if (strlen(tok) > AUTH_MAX_TOKEN) {
    out->reason = "credential too long";
    rc = 401;
  } else if (src == AUTH_SRC_TICKET) {
    rc = ticket_consume(a, tok, now, out);
  } else {
    rc = verify_jwt(a, tok, now, out);
  }
  OPENSSL_cleanse(tok, strlen(tok));
  free(tok);
  if (rc == 0 && grants_nothing(out)) {
    auth_identity_clear(out);
    out->reason = "the credential grants nothing";
    rc = 403;
  }
  if (rc) {
    const char *why = out->reason;
    auth_identity_clear(out);
    out->reason = why;
    return rc;
  }
  out->source = src;
  out->anonymous = false;
  out->reason = NULL;
  return 0;
}

bool auth_has_api_keys(const auth *a) {
  return a->nkeys > 0;
}

int auth_check_api_key(const auth *a, const char *authorization) {
  if (!a->nkeys) return 0;
  if (!authorization) return 401;
  span v = trim(authorization, strlen(authorization));
  if (v.n <= 7 || strncasecmp(v.p, "Bearer ", 7) != 0) return 401;
  v = trim(v.p + 7, v.n - 7);
  /* Comparing digests hides the key lengths; visiting every key hides
   * which one matched. */
  uint8_t d[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)v.p, v.n, d);
  int miss = 1;
  for (size_t i = 0; i < a->nkeys; i++)
    miss &= CRYPTO_memcmp(d, a->keys[i], sizeof d) != 0;
  OPENSSL_cleanse(d, sizeof d);
  return miss ? 401 : 0;
}

/* ---- set-up ----------------------------------------------------------------
 */

static bool check_list(const char *const *l, const char *what, char *err,
                       size_t errlen) {
  size_t n = list_len(l);
  if (n > AUTH_MAX_PATTERNS) {
    errf(err, errlen, "%s: more than %d patterns", what, AUTH_MAX_PATTERNS);
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    if (!auth_pattern_valid(l[i])) {
      errf(err, errlen,
           "%s: bad topic pattern '%s' (topic characters "
           "[A-Za-z0-9_.:/-], one optional trailing '*')",
           what, l[i]);
      return false;
    }
  }
  return true;
}

static int template(auth_identity *t, const auth_grants *g,
                    const char *const *dsub, const char *const *dpub) {
  const char *const *s = g && g->subscribe ? g->subscribe : dsub;
  const char *const *p = g && g->publish ? g->publish : dpub;
  int rc = ident_make(t, "", s, list_len(s), p, list_len(p));
  t->anonymous = true;
  return rc;
}

/* Loads an RSA public key of 2048+ bits and keeps it as normalised PEM. */
static bool load_pubkey(auth *a, const char *path, char *err, size_t errlen) {
  BIO *in = BIO_new_file(path, "r");
  if (!in) {
    errf(err, errlen, "jwt_public_key %s: cannot read it", path);
    return false;
  }
  EVP_PKEY *pk = PEM_read_bio_PUBKEY(in, NULL, NULL, NULL);
  BIO_free(in);
  if (!pk) {
    errf(err, errlen,
         "jwt_public_key %s: not a PEM public key (\"BEGIN PUBLIC KEY\"; "
         "openssl pkey -pubout makes one)",
         path);
    return false;
  }
  bool ok = false;
  BIO *mem = NULL;
  if (!EVP_PKEY_is_a(pk, "RSA")) {
    errf(err, errlen, "jwt_public_key %s: not an RSA key (RS256)", path);
  } else if (EVP_PKEY_get_bits(pk) < 2048) {
    errf(err, errlen, "jwt_public_key %s: %d-bit RSA; at least 2048", path,
         EVP_PKEY_get_bits(pk));
  } else if ((mem = BIO_new(BIO_s_mem())) && PEM_write_bio_PUBKEY(mem, pk)) {
    char *p;
    long n = BIO_get_mem_data(mem, &p);
    if (n > 0 && (a->pubkey_pem = malloc((size_t)n + 1))) {
      memcpy(a->pubkey_pem, p, (size_t)n);
      a->pubkey_pem[n] = 0;
      a->pubkey_len = (size_t)n;
      ok = true;
    }
    if (!ok) errf(err, errlen, "jwt_public_key %s: out of memory", path);
  } else {
    errf(err, errlen, "jwt_public_key %s: out of memory", path);
  }
  BIO_free(mem);
  EVP_PKEY_free(pk);
  return ok;
}

static bool load_api_keys(auth *a, const char *const *keys, char *err,
                          size_t errlen) {
  a->nkeys = list_len(keys);
  if (!a->nkeys) return true;
  a->keys = calloc(a->nkeys, sizeof *a->keys);
  if (!a->keys) {
    errf(err, errlen, "out of memory");
    return false;
  }
  for (size_t i = 0; i < a->nkeys; i++) {
    if (strlen(keys[i]) < 16) {
      errf(err, errlen, "api_keys: key %zu is shorter than 16 characters",
           i + 1);
      return false;
    }
    SHA256((const unsigned char *)keys[i], strlen(keys[i]), a->keys[i]);
  }
  return true;
}

auth *auth_new(const auth_config *cfg, char *err, size_t errlen) {
  errf(err, errlen, "%s", "");
  if ((unsigned)cfg->mode > AUTH_REQUIRED) {
    errf(err, errlen, "auth mode: off, optional or required");
    return NULL;
  }
  if (cfg->jwt_secret && strlen(cfg->jwt_secret) < AUTH_MIN_SECRET) {
    errf(err, errlen,
         "jwt_secret: at least %d bytes (RFC 7518 3.2; openssl rand -hex 32)",
         AUTH_MIN_SECRET);
    return NULL;
  }
  if (!check_list(cfg->anonymous.subscribe, "anonymous.subscribe", err,
                  errlen) ||
      !check_list(cfg->anonymous.publish, "anonymous.publish", err, errlen) ||
      !check_list(cfg->token.subscribe, "token_grants.subscribe", err,
                  errlen) ||
      !check_list(cfg->token.publish, "token_grants.publish", err, errlen))
    return NULL;
  if (cfg->mode != AUTH_OFF && !cfg->jwt_secret && !cfg->jwt_public_key &&
      !list_len(cfg->api_keys)) {
    errf(err, errlen,
         "auth mode %s needs jwt_secret, jwt_public_key or api_keys (tickets)",
         auth_mode_name(cfg->mode));
    return NULL;
  }
  auth *a = calloc(1, sizeof *a);
  if (!a) {
    errf(err, errlen, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&a->mu, NULL);
  a->mode = cfg->mode;
  a->leeway = cfg->leeway;
  a->ticket_ttl = cfg->ticket_ttl ? cfg->ticket_ttl : DEFAULT_TICKET_TTL;
  a->ticket_max = cfg->ticket_max ? cfg->ticket_max : DEFAULT_TICKET_MAX;
  if (cfg->jwt_public_key && !load_pubkey(a, cfg->jwt_public_key, err, errlen))
    goto fail;
  if (!load_api_keys(a, cfg->api_keys, err, errlen)) goto fail;
  if (cfg->jwt_secret) {
    a->secret = strdup(cfg->jwt_secret);
    a->secret_len = strlen(cfg->jwt_secret);
    if (!a->secret) goto oom;
  }
  a->audience = dup_or_null(cfg->audience);
  a->issuer = dup_or_null(cfg->issuer);
  if ((cfg->audience && !a->audience) || (cfg->issuer && !a->issuer) ||
      template(&a->anon, &cfg->anonymous, ALL, NONE) ||
      template(&a->token_default, &cfg->token, ALL, ALL) ||
      template(&a->everything, NULL, ALL, ALL))
    goto oom;
  return a;
oom:
  errf(err, errlen, "out of memory");
fail:
  auth_free(a);
  return NULL;
}

void auth_free(auth *a) {
  if (!a) return;
  while (a->oldest) {
    ticket *t = a->oldest;
    ticket_unlink(a, t);
    ticket_free(t);
  }
  pthread_mutex_destroy(&a->mu);
  if (a->secret) OPENSSL_cleanse(a->secret, a->secret_len);
  free(a->secret);
  free(a->pubkey_pem);
  free(a->audience);
  free(a->issuer);
  if (a->keys) OPENSSL_cleanse(a->keys, a->nkeys * sizeof *a->keys);
  free(a->keys);
  auth_identity_clear(&a->anon);
  auth_identity_clear(&a->token_default);
  auth_identity_clear(&a->everything);
  free(a);
}
