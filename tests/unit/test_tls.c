/*
 * The TLS filter (duplex/tls.h): a client and a server dx_tls talk through
 * memory, no sockets. The certificates are made at start-up with the
 * OpenSSL C API in a temporary directory: a CA, a server certificate for
 * localhost and 127.0.0.1 signed by it, and three bad ones (expired,
 * self-signed, issued for other.example).
 */
#include <duplex/tls.h>

#include "check.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <stdbool.h>
#include <unistd.h>

static char dir[64];
static char p_ca[128], p_cert[128], p_key[128], p_expired[128], p_self[128],
    p_other[128], p_key2[128], p_both[128], p_garbage[128], p_enc[128],
    p_missing[128];
static const char *files[] = {p_ca,    p_cert, p_key,  p_expired, p_self,
                              p_other, p_key2, p_both, p_garbage, p_enc};

/* ---- certificates ----------------------------------------------------- */

static EVP_PKEY *keygen(void) {
  return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static bool add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value) {
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
  bool ok = ext && X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

/* Valid from `from` to `to` seconds from now. issuer NULL: self-signed. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san,
                       X509 *issuer, EVP_PKEY *issuer_key, long from, long to) {
  static long serial = 1;
  X509 *x = X509_new();
  if (!x) return NULL;
  X509_NAME *name = X509_get_subject_name(x);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
  bool ok =
      X509_set_version(x, X509_VERSION_3) &&
      ASN1_INTEGER_set(X509_get_serialNumber(x), serial++) &&
      X509_gmtime_adj(X509_getm_notBefore(x), from) &&
      X509_gmtime_adj(X509_getm_notAfter(x), to) && X509_set_pubkey(x, key) &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 (const unsigned char *)cn, -1, -1, 0) &&
      X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) &&
      add_ext(x, &v3, NID_subject_key_identifier, "hash");
  if (ok && !san) /* the CA */
    ok = add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE") &&
         add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
  if (ok && san)
    ok = add_ext(x, &v3, NID_basic_constraints, "CA:FALSE") &&
         add_ext(x, &v3, NID_ext_key_usage, "serverAuth") &&
         add_ext(x, &v3, NID_subject_alt_name, san);
  if (ok) ok = X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* Writes cert (and key, if given, after it) to path. */
static bool write_pem(const char *path, X509 *cert, EVP_PKEY *key) {
  FILE *f = fopen(path, "w");
  if (!f) return false;
  bool ok = (!cert || PEM_write_X509(f, cert)) &&
            (!key || PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
  return fclose(f) == 0 && ok;
}

static bool make_certs(void) {
  strcpy(dir, "/tmp/dx_tls_XXXXXX");
  if (!mkdtemp(dir)) return false;
#define P(var, name) snprintf(var, sizeof var, "%s/" name, dir)
  P(p_ca, "ca.pem");
  P(p_cert, "cert.pem");
  P(p_key, "key.pem");
  P(p_expired, "expired.pem");
  P(p_self, "self.pem");
  P(p_other, "other.pem");
  P(p_key2, "key2.pem");
  P(p_both, "both.pem");
  P(p_garbage, "garbage.pem");
  P(p_enc, "encrypted.pem");
  P(p_missing, "missing.pem");
#undef P
  const long day = 86400;
  const char *san = "DNS:localhost,IP:127.0.0.1";
  EVP_PKEY *cakey = keygen(), *key = keygen(), *key2 = keygen();
  X509 *ca = cakey ? make_cert(cakey, "duplex test CA", NULL, NULL, NULL, -day,
                               30 * day)
                   : NULL;
  X509 *cert = make_cert(key, "localhost", san, ca, cakey, -day, 30 * day);
  X509 *expired = make_cert(key, "localhost", san, ca, cakey, -30 * day, -day);
  X509 *self = make_cert(key, "localhost", san, NULL, NULL, -day, 30 * day);
  X509 *other = make_cert(key, "other.example", "DNS:other.example", ca, cakey,
                          -day, 30 * day);
  FILE *f;
  bool ok = ca && cert && expired && self && other && key2 &&
            write_pem(p_ca, ca, NULL) && write_pem(p_cert, cert, NULL) &&
            write_pem(p_key, NULL, key) &&
            write_pem(p_expired, expired, NULL) &&
            write_pem(p_self, self, NULL) && write_pem(p_other, other, NULL) &&
            write_pem(p_key2, NULL, key2) && write_pem(p_both, cert, key);
  f = ok ? fopen(p_enc, "w") : NULL;
  ok = ok && f &&
       PEM_write_PrivateKey(f, key, EVP_aes_256_cbc(), NULL, 0, NULL,
                            (void *)"secret");
  if (f) fclose(f);
  f = fopen(p_garbage, "w");
  ok = ok && f && fputs("not a certificate\n", f) >= 0;
  if (f) fclose(f);
  X509_free(ca);
  X509_free(cert);
  X509_free(expired);
  X509_free(self);
  X509_free(other);
  EVP_PKEY_free(cakey);
  EVP_PKEY_free(key);
  EVP_PKEY_free(key2);
  return ok;
}

static void remove_certs(void) {
  for (size_t i = 0; i < sizeof files / sizeof *files; i++)
    unlink(files[i]);
  rmdir(dir);
}

/* ---- helpers ---------------------------------------------------------- */

static char errbuf[256];

static dx_tls_ctx *server_ctx(const char *cert, const char *key) {
  dx_tls_ctx_config cfg = {.server = true, .cert_file = cert, .key_file = key};
  dx_tls_ctx *c = dx_tls_ctx_new(&cfg, errbuf, sizeof errbuf);
  if (!c) fprintf(stderr, "    server ctx: %s\n", errbuf);
  return c;
}

static dx_tls_ctx *client_ctx(const char *ca, bool insecure) {
  dx_tls_ctx_config cfg = {.ca_file = ca, .insecure = insecure};
  dx_tls_ctx *c = dx_tls_ctx_new(&cfg, errbuf, sizeof errbuf);
  if (!c) fprintf(stderr, "    client ctx: %s\n", errbuf);
  return c;
}

/* Moves from's output into to, at most `chunk` bytes per feed (0: whole).
 * Returns the bytes moved. */
static size_t pump(dx_tls *from, dx_tls *to, size_t chunk) {
  const uint8_t *p;
  size_t n = dx_tls_output(from, &p), moved = 0;
  while (n) {
    size_t k = chunk && chunk < n ? chunk : n;
    if (dx_tls_feed(to, p, k) != 0) return moved;
    dx_tls_consume(from, k);
    moved += k;
    n = dx_tls_output(from, &p);
  }
  return moved;
}

/* Reads everything t has into *dst (grown as needed). Returns the last
 * dx_tls_read result: 0, or an error. */
static int drain(dx_tls *t, uint8_t **dst, size_t *len, size_t *cap) {
  uint8_t tmp[16384];
  for (;;) {
    int r = dx_tls_read(t, tmp, sizeof tmp);
    if (r <= 0) return r;
    if (dst) {
      if (*len + (size_t)r > *cap) {
        *cap = (*len + (size_t)r) * 2;
        *dst = realloc(*dst, *cap);
        if (!*dst) return DX_ENOMEM;
      }
      memcpy(*dst + *len, tmp, (size_t)r);
      *len += (size_t)r;
    }
  }
}

typedef struct pair {
  dx_tls *c, *s;
  int rc, rs; /* last read results of client and server */
} pair;

/* Pumps both ways until neither has output; feeds `chunk` bytes at a time
 * (0: whole). Plaintext read on the way is dropped. */
static void run(pair *p, size_t chunk) {
  for (int i = 0; i < 100000; i++) {
    size_t moved = pump(p->c, p->s, chunk);
    p->rs = drain(p->s, NULL, NULL, NULL);
    moved += pump(p->s, p->c, chunk);
    p->rc = drain(p->c, NULL, NULL, NULL);
    if (!moved || p->rs < 0 || p->rc < 0) break;
  }
  /* Deliver a failing side's last words (an alert) to the other. */
  pump(p->c, p->s, 0);
  if (p->rs >= 0) p->rs = drain(p->s, NULL, NULL, NULL);
  pump(p->s, p->c, 0);
  if (p->rc >= 0) p->rc = drain(p->c, NULL, NULL, NULL);
}

/* A handshake between a client trusting ca (or insecure) and a server
 * presenting cert; host is the client's SNI/verified name. */
static bool connect_pair(pair *p, const char *cert, const char *ca,
                         bool insecure, const char *host) {
  *p = (pair){0};
  dx_tls_ctx *sc = server_ctx(cert, p_key);
  dx_tls_ctx *cc = client_ctx(ca, insecure);
  if (sc && cc) {
    p->s = dx_tls_new(sc, NULL);
    p->c = dx_tls_new(cc, host);
  }
  /* The connections hold their own references. */
  dx_tls_ctx_unref(sc);
  dx_tls_ctx_unref(cc);
  if (!p->s || !p->c) return false;
  run(p, 0);
  return true;
}

static void close_pair(pair *p) {
  dx_tls_free(p->c);
  dx_tls_free(p->s);
}

/* Sends data from a to b, reading everything b gets; true when it arrived
 * intact. */
static bool transfer(dx_tls *a, dx_tls *b, const uint8_t *data, size_t len) {
  uint8_t *got = NULL;
  size_t n = 0, cap = 0;
  if (dx_tls_write(a, data, len) != 0) return false;
  pump(a, b, 0);
  int r = drain(b, &got, &n, &cap);
  bool ok = r == 0 && n == len && (!len || memcmp(got, data, len) == 0);
  free(got);
  return ok;
}

static bool contains(const char *s, const char *sub) {
  return s && strstr(s, sub) != NULL;
}

#define CHECK_CONTAINS(s, sub)                                                 \
  do {                                                                         \
    const char *check__s = (s);                                                \
    if (!contains(check__s, sub))                                              \
      CHECK__FAIL("\"%s\" does not contain \"%s\"",                            \
                  check__s ? check__s : "(null)", sub);                        \
  } while (0)

/* ---- tests ------------------------------------------------------------ */

static void test_handshake_and_data(void) {
  pair p;
  bool ok = connect_pair(&p, p_cert, p_ca, false, "localhost");
  if (!ok) close_pair(&p);
  CHECK(ok);
  CHECK_INT(p.rc, 0);
  CHECK_INT(p.rs, 0);
  bool done = dx_tls_handshake_done(p.c) && dx_tls_handshake_done(p.s);
  const char *vc = dx_tls_version(p.c), *vs = dx_tls_version(p.s);
  bool tls13 = !strncmp(vc, "TLSv1.3 ", 8) && !strcmp(vc, vs);
  bool small = transfer(p.c, p.s, (const uint8_t *)"hello", 5) &&
               transfer(p.s, p.c, (const uint8_t *)"world!", 6);
  size_t big = 1u << 20;
  uint8_t *data = malloc(big);
  for (size_t i = 0; data && i < big; i++)
    data[i] = (uint8_t)(i * 31 + 7);
  bool c2s = data && transfer(p.c, p.s, data, big);
  bool s2c = data && transfer(p.s, p.c, data, big);
  free(data);
  close_pair(&p);
  CHECK(done);
  if (!tls13) fprintf(stderr, "    versions: %s / %s\n", vc, vs);
  CHECK(tls13);
  CHECK(small);
  CHECK(c2s);
  CHECK(s2c);
}

static void test_version_empty_before_handshake(void) {
  dx_tls_ctx *cc = client_ctx(p_ca, false);
  CHECK(cc);
  dx_tls *c = dx_tls_new(cc, "localhost");
  dx_tls_ctx_unref(cc);
  CHECK(c);
  const uint8_t *out;
  size_t n = dx_tls_output(c, &out);
  bool hello = n > 5 && out[0] == 22; /* a handshake record: ClientHello */
  bool empty = !strcmp(dx_tls_version(c), "") && !strcmp(dx_tls_error(c), "");
  bool not_done = !dx_tls_handshake_done(c);
  dx_tls_free(c);
  CHECK(hello);
  CHECK(empty);
  CHECK(not_done);
}

/* The handshake fed one byte at a time, then at 7-byte splits. */
static void test_byte_by_byte(void) {
  size_t chunks[] = {1, 7};
  for (size_t k = 0; k < 2; k++) {
    pair p = {0};
    dx_tls_ctx *sc = server_ctx(p_cert, p_key), *cc = client_ctx(p_ca, 0);
    p.s = sc ? dx_tls_new(sc, NULL) : NULL;
    p.c = cc ? dx_tls_new(cc, "localhost") : NULL;
    dx_tls_ctx_unref(sc);
    dx_tls_ctx_unref(cc);
    if (p.s && p.c) run(&p, chunks[k]);
    bool ok = p.s && p.c && p.rc == 0 && p.rs == 0 &&
              dx_tls_handshake_done(p.c) && dx_tls_handshake_done(p.s) &&
              transfer(p.c, p.s, (const uint8_t *)"split", 5);
    close_pair(&p);
    CHECK(ok);
  }
}

/* Written before the handshake: kept, and sent once it completes. */
static void test_write_before_handshake(void) {
  dx_tls_ctx *sc = server_ctx(p_cert, p_key), *cc = client_ctx(p_ca, 0);
  CHECK(sc && cc);
  dx_tls *s = dx_tls_new(sc, NULL), *c = dx_tls_new(cc, "localhost");
  dx_tls_ctx_unref(sc);
  dx_tls_ctx_unref(cc);
  int wc = dx_tls_write(c, (const uint8_t *)"early ", 6);
  int wc2 = dx_tls_write(c, (const uint8_t *)"bird", 4);
  int ws = dx_tls_write(s, (const uint8_t *)"server first", 12);
  uint8_t *gs = NULL, *gc = NULL;
  size_t ns = 0, caps = 0, nc = 0, capc = 0;
  int rs = 0, rc = 0;
  for (int i = 0; i < 10 && rs == 0 && rc == 0; i++) {
    pump(c, s, 0);
    rs = drain(s, &gs, &ns, &caps);
    pump(s, c, 0);
    rc = drain(c, &gc, &nc, &capc);
  }
  if (rc) fprintf(stderr, "    client: %s\n", dx_tls_error(c));
  if (rs) fprintf(stderr, "    server: %s\n", dx_tls_error(s));
  bool ok = ns == 10 && !memcmp(gs, "early bird", 10) && nc == 12 &&
            !memcmp(gc, "server first", 12);
  free(gs);
  free(gc);
  dx_tls_free(c);
  dx_tls_free(s);
  CHECK_INT(wc, 0);
  CHECK_INT(wc2, 0);
  CHECK_INT(ws, 0);
  CHECK_INT(rs, 0);
  CHECK_INT(rc, 0);
  CHECK(ok);
}

static void test_verify_ip_literal(void) {
  pair p;
  bool ok = connect_pair(&p, p_cert, p_ca, false, "127.0.0.1");
  bool done = ok && dx_tls_handshake_done(p.c) && p.rc == 0;
  close_pair(&p);
  CHECK(done);
  /* ::1 is not in the certificate. */
  ok = connect_pair(&p, p_cert, p_ca, false, "[::1]");
  int rc = p.rc;
  char msg[256];
  snprintf(msg, sizeof msg, "%s", p.c ? dx_tls_error(p.c) : "");
  close_pair(&p);
  CHECK(ok);
  CHECK_INT(rc, DX_ETLS);
  CHECK_CONTAINS(msg, "certificate verify failed: IP address mismatch");
  CHECK_CONTAINS(msg, "::1");
}

/* Connects with the given certificate and name, expecting the client to
 * fail with a message containing want; the server learns of it by alert. */
static void expect_verify_failure(const char *cert, const char *ca,
                                  const char *host, const char *want) {
  pair p;
  bool ok = connect_pair(&p, cert, ca, false, host);
  int rc = p.rc, rs = p.rs;
  char msg[256], smsg[256];
  snprintf(msg, sizeof msg, "%s", p.c ? dx_tls_error(p.c) : "");
  snprintf(smsg, sizeof smsg, "%s", p.s ? dx_tls_error(p.s) : "");
  bool done = ok && dx_tls_handshake_done(p.c);
  close_pair(&p);
  CHECK(ok);
  CHECK_INT(rc, DX_ETLS);
  CHECK(!done);
  CHECK_CONTAINS(msg, "certificate verify failed: ");
  CHECK_CONTAINS(msg, want);
  CHECK_INT(rs, DX_ETLS);
  CHECK_CONTAINS(smsg, "TLS handshake failed: the client sent alert");
}

static void test_wrong_hostname(void) {
  expect_verify_failure(p_cert, p_ca, "example.com", "hostname mismatch");
}

static void test_wrong_name_cert(void) {
  expect_verify_failure(p_other, p_ca, "localhost",
                        "hostname mismatch (the certificate is not for "
                        "localhost)");
}

static void test_expired(void) {
  expect_verify_failure(p_expired, p_ca, "localhost",
                        "certificate has expired");
}

static void test_self_signed(void) {
  expect_verify_failure(p_self, p_ca, "localhost", "self-signed certificate");
}

/* The system store does not know the test CA. */
static void test_system_store(void) {
  expect_verify_failure(p_cert, NULL, "localhost",
                        "unable to get local issuer certificate");
}

static void test_insecure(void) {
  const char *certs[] = {p_self, p_expired, p_other};
  for (size_t i = 0; i < 3; i++) {
    pair p;
    bool ok = connect_pair(&p, certs[i], NULL, true, "localhost") &&
              p.rc == 0 && p.rs == 0 && dx_tls_handshake_done(p.c) &&
              transfer(p.c, p.s, (const uint8_t *)"x", 1);
    close_pair(&p);
    CHECK(ok);
  }
  /* insecure needs no host name at all */
  pair p;
  bool ok = connect_pair(&p, p_self, NULL, true, NULL) && p.rc == 0 &&
            dx_tls_handshake_done(p.c);
  close_pair(&p);
  CHECK(ok);
}

/* Verifying without a name would accept any valid certificate. */
static void test_no_host_refused(void) {
  dx_tls_ctx *cc = client_ctx(p_ca, false);
  CHECK(cc);
  dx_tls *c = dx_tls_new(cc, NULL);
  dx_tls_ctx_unref(cc);
  CHECK(c);
  uint8_t b[16];
  const uint8_t *out;
  int r = dx_tls_read(c, b, sizeof b);
  size_t n = dx_tls_output(c, &out);
  char msg[256];
  snprintf(msg, sizeof msg, "%s", dx_tls_error(c));
  dx_tls_free(c);
  CHECK_INT(r, DX_ETLS);
  CHECK_INT(n, 0);
  CHECK_CONTAINS(msg, "no host name");
}

static void expect_ctx_error(const dx_tls_ctx_config *cfg, const char *want) {
  char err[256] = "unset";
  dx_tls_ctx *c = dx_tls_ctx_new(cfg, err, sizeof err);
  dx_tls_ctx_unref(c);
  CHECK(!c);
  CHECK_STR(err, want);
}

static void test_ctx_errors(void) {
  char want[512];
  dx_tls_ctx_config cfg = {
      .server = true, .cert_file = p_missing, .key_file = p_key};
  snprintf(want, sizeof want,
           "cannot read certificate chain %s: No such file or directory",
           p_missing);
  expect_ctx_error(&cfg, want);

  cfg = (dx_tls_ctx_config){
      .server = true, .cert_file = p_cert, .key_file = p_missing};
  snprintf(want, sizeof want,
           "cannot read private key %s: No such file or directory", p_missing);
  expect_ctx_error(&cfg, want);

  cfg = (dx_tls_ctx_config){
      .server = true, .cert_file = p_cert, .key_file = p_key2};
  snprintf(want, sizeof want, "private key %s does not match certificate %s",
           p_key2, p_cert);
  expect_ctx_error(&cfg, want);

  cfg = (dx_tls_ctx_config){
      .server = true, .cert_file = p_garbage, .key_file = p_key};
  snprintf(want, sizeof want,
           "cannot load certificate chain from %s: no PEM data found",
           p_garbage);
  expect_ctx_error(&cfg, want);

  cfg = (dx_tls_ctx_config){
      .server = true, .cert_file = p_cert, .key_file = p_garbage};
  snprintf(want, sizeof want,
           "cannot load private key from %s: no private key found", p_garbage);
  expect_ctx_error(&cfg, want);

  cfg = (dx_tls_ctx_config){
      .server = true, .cert_file = p_cert, .key_file = p_cert};
  snprintf(want, sizeof want,
           "cannot load private key from %s: no private key found", p_cert);
  expect_ctx_error(&cfg, want);

  /* Never a passphrase prompt on the terminal. */
  cfg = (dx_tls_ctx_config){
      .server = true, .cert_file = p_cert, .key_file = p_enc};
  snprintf(want, sizeof want,
           "cannot load private key from %s: the key is encrypted "
           "(passphrases are not supported)",
           p_enc);
  expect_ctx_error(&cfg, want);

  cfg =
      (dx_tls_ctx_config){.server = true, .cert_file = dir, .key_file = p_key};
  snprintf(want, sizeof want,
           "cannot read certificate chain %s: Is a directory", dir);
  expect_ctx_error(&cfg, want);

  cfg = (dx_tls_ctx_config){.server = true};
  expect_ctx_error(&cfg, "a TLS server needs a certificate (cert_file)");

  cfg = (dx_tls_ctx_config){.ca_file = p_missing};
  snprintf(want, sizeof want,
           "cannot read CA file %s: No such file or directory", p_missing);
  expect_ctx_error(&cfg, want);

  cfg = (dx_tls_ctx_config){.ca_file = p_garbage};
  snprintf(want, sizeof want, "cannot load CA file %s: no certificate found",
           p_garbage);
  expect_ctx_error(&cfg, want);

  cfg = (dx_tls_ctx_config){.alpn = ""};
  expect_ctx_error(&cfg, "ALPN protocol name must be 1 to 255 bytes");

  /* A NULL err buffer is allowed. */
  cfg = (dx_tls_ctx_config){.server = true};
  CHECK(!dx_tls_ctx_new(&cfg, NULL, 0));
}

/* Certificate and key in one file: key_file may be left NULL. */
static void test_cert_and_key_in_one_file(void) {
  dx_tls_ctx *c = server_ctx(p_both, NULL);
  dx_tls_ctx_unref(c);
  CHECK(c);
}

static void test_plain_http_to_server(void) {
  const char *req = "GET /chat HTTP/1.1\r\nHost: localhost\r\n"
                    "Upgrade: websocket\r\n\r\n";
  dx_tls_ctx *sc = server_ctx(p_cert, p_key);
  CHECK(sc);
  dx_tls *s = dx_tls_new(sc, NULL);
  dx_tls_ctx_unref(sc);
  CHECK(s);
  uint8_t b[64];
  int f = dx_tls_feed(s, (const uint8_t *)req, strlen(req));
  int r = dx_tls_read(s, b, sizeof b);
  int again = dx_tls_read(s, b, sizeof b); /* sticky */
  char msg[256];
  snprintf(msg, sizeof msg, "%s", dx_tls_error(s));
  dx_tls_free(s);
  CHECK_INT(f, 0);
  CHECK_INT(r, DX_ETLS);
  CHECK_INT(again, DX_ETLS);
  CHECK_STR(msg, "the client spoke plain HTTP to a TLS port");
}

static void test_plain_http_from_server(void) {
  const char *resp = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
  dx_tls_ctx *cc = client_ctx(p_ca, false);
  CHECK(cc);
  dx_tls *c = dx_tls_new(cc, "localhost");
  dx_tls_ctx_unref(cc);
  CHECK(c);
  uint8_t b[64];
  dx_tls_feed(c, (const uint8_t *)resp, strlen(resp));
  int r = dx_tls_read(c, b, sizeof b);
  char msg[256];
  snprintf(msg, sizeof msg, "%s", dx_tls_error(c));
  dx_tls_free(c);
  CHECK_INT(r, DX_ETLS);
  CHECK_STR(msg, "the server answered in plain HTTP: is it a ws:// port?");
}

static void test_not_tls_at_all(void) {
  dx_tls_ctx *sc = server_ctx(p_cert, p_key);
  CHECK(sc);
  dx_tls *s = dx_tls_new(sc, NULL);
  dx_tls_ctx_unref(sc);
  CHECK(s);
  uint8_t b[64];
  const char *ssh = "SSH-2.0-OpenSSH_9.6\r\n";
  dx_tls_feed(s, (const uint8_t *)ssh, strlen(ssh));
  int r = dx_tls_read(s, b, sizeof b);
  char msg[256];
  snprintf(msg, sizeof msg, "%s", dx_tls_error(s));
  dx_tls_free(s);
  CHECK_INT(r, DX_ETLS);
  CHECK_STR(msg, "the client did not speak TLS (it sent \"SSH-2.0-\")");
}

static void test_close_notify(void) {
  pair p;
  bool ok = connect_pair(&p, p_cert, p_ca, false, "localhost") && p.rc == 0 &&
            p.rs == 0;
  if (!ok) close_pair(&p);
  CHECK(ok);
  /* Data queued before close_notify still arrives first. */
  int w = dx_tls_write(p.c, (const uint8_t *)"bye", 3);
  dx_tls_shutdown(p.c);
  int after = dx_tls_write(p.c, (const uint8_t *)"late", 4);
  pump(p.c, p.s, 0);
  uint8_t b[16];
  int r1 = dx_tls_read(p.s, b, sizeof b);
  bool bye = r1 == 3 && !memcmp(b, "bye", 3);
  int r2 = dx_tls_read(p.s, b, sizeof b);
  int r3 = dx_tls_read(p.s, b, sizeof b);
  /* The server may still answer, then close too. */
  bool answer = transfer(p.s, p.c, (const uint8_t *)"ok", 2);
  dx_tls_shutdown(p.s);
  pump(p.s, p.c, 0);
  int rc = dx_tls_read(p.c, b, sizeof b);
  close_pair(&p);
  CHECK_INT(w, 0);
  CHECK_INT(after, DX_ECLOSED);
  CHECK(bye);
  CHECK_INT(r2, DX_ECLOSED);
  CHECK_INT(r3, DX_ECLOSED);
  CHECK(answer);
  CHECK_INT(rc, DX_ECLOSED);
}

/* A flipped bit in a record fails its authentication tag. */
static void test_corrupt_record(void) {
  pair p;
  bool ok = connect_pair(&p, p_cert, p_ca, false, "localhost") && p.rc == 0 &&
            p.rs == 0;
  if (!ok) close_pair(&p);
  CHECK(ok);
  dx_tls_write(p.c, (const uint8_t *)"payload", 7);
  const uint8_t *out;
  size_t n = dx_tls_output(p.c, &out);
  uint8_t *copy = malloc(n);
  if (copy) {
    memcpy(copy, out, n);
    copy[n - 1] ^= 1;
    dx_tls_feed(p.s, copy, n);
  }
  free(copy);
  uint8_t b[16];
  int r = dx_tls_read(p.s, b, sizeof b);
  char msg[256];
  snprintf(msg, sizeof msg, "%s", dx_tls_error(p.s));
  close_pair(&p);
  CHECK(n > 0);
  CHECK_INT(r, DX_ETLS);
  CHECK_STR(msg, "TLS error: decryption failed or bad record mac");
}

/* The client's Finished and a corrupt record arrive in one feed: the
 * record fails, and its reason is the one reported. */
static void test_corrupt_after_finished(void) {
  dx_tls_ctx *sc = server_ctx(p_cert, p_key), *cc = client_ctx(p_ca, 0);
  CHECK(sc && cc);
  dx_tls *s = dx_tls_new(sc, NULL), *c = dx_tls_new(cc, "localhost");
  dx_tls_ctx_unref(sc);
  dx_tls_ctx_unref(cc);
  CHECK(s && c);
  dx_tls_write(c, (const uint8_t *)"early", 5);
  pump(c, s, 0); /* ClientHello */
  int r1 = drain(s, NULL, NULL, NULL);
  pump(s, c, 0); /* ServerHello ... Finished */
  int r2 = drain(c, NULL, NULL, NULL);
  const uint8_t *out;
  size_t n = dx_tls_output(c, &out); /* Finished, then "early" */
  uint8_t *copy = malloc(n);
  if (copy && n) {
    memcpy(copy, out, n);
    copy[n - 1] ^= 1;
    dx_tls_feed(s, copy, n);
  }
  free(copy);
  uint8_t b[16];
  int r = dx_tls_read(s, b, sizeof b);
  char msg[256];
  snprintf(msg, sizeof msg, "%s", dx_tls_error(s));
  dx_tls_free(c);
  dx_tls_free(s);
  CHECK_INT(r1, 0);
  CHECK_INT(r2, 0);
  CHECK_INT(r, DX_ETLS);
  CHECK_CONTAINS(msg, "bad record mac");
}

/* A connection keeps its context alive; the last unref frees it (ASan
 * reports a leak or a use after free otherwise). */
static void test_ctx_refcount(void) {
  dx_tls_ctx *sc = server_ctx(p_cert, p_key), *cc = client_ctx(p_ca, 0);
  CHECK(sc && cc);
  dx_tls_ctx_ref(sc);
  dx_tls *s1 = dx_tls_new(sc, NULL), *s2 = dx_tls_new(sc, NULL);
  dx_tls *c1 = dx_tls_new(cc, "localhost"), *c2 = dx_tls_new(cc, "localhost");
  dx_tls_ctx_unref(sc);
  dx_tls_ctx_unref(sc); /* the connections hold the last references */
  dx_tls_ctx_unref(cc);
  pair p1 = {.c = c1, .s = s1};
  run(&p1, 0);
  dx_tls_free(s1); /* one connection gone: the other still works */
  dx_tls_free(c1);
  pair p2 = {.c = c2, .s = s2};
  run(&p2, 0);
  bool ok = p2.rc == 0 && p2.rs == 0 && dx_tls_handshake_done(p2.s) &&
            transfer(p2.c, p2.s, (const uint8_t *)"still here", 10);
  dx_tls_free(s2);
  dx_tls_free(c2);
  dx_tls_free(NULL);
  dx_tls_ctx_unref(NULL);
  CHECK_INT(p1.rc, 0);
  CHECK(ok);
}

static void test_alpn(void) {
  const char *server_alpn[] = {"http/1.1", "h2"};
  for (size_t i = 0; i < 2; i++) {
    dx_tls_ctx_config scfg = {.server = true,
                              .cert_file = p_cert,
                              .key_file = p_key,
                              .alpn = server_alpn[i]};
    dx_tls_ctx_config ccfg = {.ca_file = p_ca, .alpn = "http/1.1"};
    dx_tls_ctx *sc = dx_tls_ctx_new(&scfg, errbuf, sizeof errbuf);
    dx_tls_ctx *cc = dx_tls_ctx_new(&ccfg, errbuf, sizeof errbuf);
    pair p = {0};
    if (sc && cc) {
      p.s = dx_tls_new(sc, NULL);
      p.c = dx_tls_new(cc, "localhost");
    }
    dx_tls_ctx_unref(sc);
    dx_tls_ctx_unref(cc);
    if (p.s && p.c) run(&p, 0);
    /* A protocol the server does not speak is not fatal: no ALPN. */
    bool ok = p.s && p.c && p.rc == 0 && p.rs == 0 &&
              dx_tls_handshake_done(p.c) && dx_tls_handshake_done(p.s);
    close_pair(&p);
    CHECK(ok);
  }
}

int main(void) {
  if (!make_certs()) {
    fprintf(stderr, "cannot make test certificates in %s\n", dir);
    remove_certs();
    return 1;
  }
  RUN(test_handshake_and_data);
  RUN(test_version_empty_before_handshake);
  RUN(test_byte_by_byte);
  RUN(test_write_before_handshake);
  RUN(test_verify_ip_literal);
  RUN(test_wrong_hostname);
  RUN(test_wrong_name_cert);
  RUN(test_expired);
  RUN(test_self_signed);
  RUN(test_system_store);
  RUN(test_insecure);
  RUN(test_no_host_refused);
  RUN(test_ctx_errors);
  RUN(test_cert_and_key_in_one_file);
  RUN(test_plain_http_to_server);
  RUN(test_plain_http_from_server);
  RUN(test_not_tls_at_all);
  RUN(test_close_notify);
  RUN(test_corrupt_record);
  RUN(test_corrupt_after_finished);
  RUN(test_ctx_refcount);
  RUN(test_alpn);
  remove_certs();
  return CHECK_DONE();
}
