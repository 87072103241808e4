/*
 * TLS as a sans-I/O filter (duplex/tls.h). Ciphertext comes in through a
 * memory BIO (rbio) and goes out through a small sink BIO that appends to
 * our own buffer: OpenSSL writes each record straight into the memory that
 * dx_tls_output() hands out, and dx_tls_consume() only moves an offset. A
 * BIO_s_mem() for output would cost a second copy (BIO_read to drain it) or
 * a memmove on every write after a partial read.
 */
#include <duplex/tls.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/proverr.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* DNS names are at most 253 characters (RFC 1035 2.3.4, dotted form). */
#define HOST_MAX 253
/* First output allocation: one full TLS record (2^14 + 256 of overhead,
 * RFC 8446 5.2) plus its header. */
#define OUT_FIRST (16384 + 256 + 5)

struct dx_tls_ctx {
  SSL_CTX *ssl;
  /* Server: the SNI certificates after the first, each in an SSL_CTX of
   * its own set up like ssl; a ClientHello naming one of them moves the
   * connection over (servername_cb). */
  SSL_CTX **sni;
  size_t nsni;
  BIO_METHOD *sink;
  atomic_uint refs;
  bool server;
  bool insecure;
  /* ALPN in wire format (length byte + name), for the server's choice. */
  uint8_t alpn[256];
  size_t alpn_len;
};

/* Bytes p[off, len) are live; the rest of cap is free. */
typedef struct buf {
  uint8_t *p;
  size_t off, len, cap;
} buf;

struct dx_tls {
  dx_tls_ctx *ctx;
  SSL *ssl;
  BIO *rbio;
  buf out;     /* ciphertext for the peer (the sink BIO fills it) */
  buf pending; /* plaintext written before the handshake completed */
  int err;     /* sticky once failed: DX_ETLS or DX_ENOMEM */
  bool server;
  bool done;   /* handshake completed */
  bool closed; /* the peer's close_notify arrived */
  bool shut;   /* our close_notify is queued */
  bool oom;    /* the sink could not grow: SSL sees a failed write */
  /* The first bytes from the peer: a failed handshake whose peer opened
   * with "GET " or "HTTP/" is explained as such, not as OpenSSL's "wrong
   * version number". */
  uint8_t head[8];
  size_t nhead;
  char host[HOST_MAX + 1]; /* for the hostname-mismatch message */
  char info[96];           /* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
  char msg[256];
};

/* ---- buffers ---------------------------------------------------------- */

static int buf_append(buf *b, const void *data, size_t n) {
  if (b->len + n > b->cap && b->off) {
    /* Reclaim the consumed front before growing. */
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->len + n > b->cap) {
    if (n > SIZE_MAX / 2 - b->len) return DX_ENOMEM;
    size_t cap = b->cap ? b->cap : OUT_FIRST;
    while (cap < b->len + n)
      cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return DX_ENOMEM;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return 0;
}

static void buf_free(buf *b) {
  free(b->p);
  *b = (buf){0};
}

/* ---- the output sink BIO ---------------------------------------------- */

static int sink_write(BIO *bio, const char *data, size_t n, size_t *written) {
  dx_tls *t = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  if (buf_append(&t->out, data, n) < 0) {
    /* No retry flag: SSL fails the call, and fail() reports DX_ENOMEM. */
    t->oom = true;
    return 0;
  }
  *written = n;
  return 1;
}

static long sink_ctrl(BIO *bio, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  dx_tls *t = BIO_get_data(bio);
  switch (cmd) {
  case BIO_CTRL_FLUSH: /* SSL flushes after each flight: nothing to do */
    return 1;
  case BIO_CTRL_WPENDING:
    return t ? (long)(t->out.len - t->out.off) : 0;
  default: /* PENDING, KTLS queries and the rest: "no" */
    return 0;
  }
}

static int sink_create(BIO *bio) {
  BIO_set_init(bio, 1);
  return 1;
}

/* One method for the process: BIO_get_new_index() hands out fewer than 128
 * types, so a method per context would run out after as many certificate
 * reloads. It is never freed (reachable from a static: not a leak). */
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static BIO_METHOD *sink_method;

static BIO_METHOD *sink_get(void) {
  pthread_mutex_lock(&sink_lock);
  if (!sink_method) {
    int type = BIO_get_new_index();
    BIO_METHOD *m =
        type < 0 ? NULL
                 : BIO_meth_new(type | BIO_TYPE_SOURCE_SINK, "duplex output");
    if (m && (!BIO_meth_set_write_ex(m, sink_write) ||
              !BIO_meth_set_ctrl(m, sink_ctrl) ||
              !BIO_meth_set_create(m, sink_create))) {
      BIO_meth_free(m);
      m = NULL;
    }
    sink_method = m;
  }
  BIO_METHOD *m = sink_method;
  pthread_mutex_unlock(&sink_lock);
  return m;
}

/* ---- messages --------------------------------------------------------- */

static void setmsg(char *dst, size_t cap, const char *fmt, ...) {
  if (!dst || !cap) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(dst, cap, fmt, ap);
  va_end(ap);
}

/* OpenSSL's reason for e, in words a user can act on where OpenSSL's own
 * are obscure. */
static const char *reason_text(unsigned long e, char *tmp, size_t cap) {
  if (!e) return "unknown error";
  /* ERR_reason_error_string() returns NULL for system errors. */
  if (ERR_SYSTEM_ERROR(e)) return strerror_r(ERR_GET_REASON(e), tmp, cap);
  int lib = ERR_GET_LIB(e), r = ERR_GET_REASON(e);
  if (lib == ERR_LIB_PEM && r == PEM_R_NO_START_LINE)
    return "no PEM data found";
  if (lib == ERR_LIB_X509 && r == X509_R_NO_CERTIFICATE_OR_CRL_FOUND)
    return "no certificate found";
  const char *s = ERR_reason_error_string(e);
  return s ? s : "unknown error";
}

/* The earliest queued error is the specific one ("no start line"); later
 * ones are the callers wrapping it ("PEM lib"). */
static const char *first_reason(char *tmp, size_t cap) {
  return reason_text(ERR_peek_error(), tmp, cap);
}

/* The same for a private key: OpenSSL 3 decodes keys through providers,
 * whose errors say "unsupported" and "bad decrypt". */
static const char *key_reason(char *tmp, size_t cap) {
  unsigned long e = ERR_peek_error();
  int lib = ERR_GET_LIB(e), r = ERR_GET_REASON(e);
  if (!ERR_SYSTEM_ERROR(e) &&
      ((lib == ERR_LIB_PROV && r == PROV_R_BAD_DECRYPT) ||
       (lib == ERR_LIB_PEM && (r == PEM_R_BAD_PASSWORD_READ ||
                               r == PEM_R_PROBLEMS_GETTING_PASSWORD))))
    return "the key is encrypted (passphrases are not supported)";
  if (!ERR_SYSTEM_ERROR(e) && lib == ERR_LIB_OSSL_DECODER &&
      r == ERR_R_UNSUPPORTED)
    return "no private key found";
  return reason_text(e, tmp, cap);
}

/* A diagnostic pre-check: OpenSSL's own message for a missing file is a
 * stack of "system library" and "BIO routines" errors. */
static bool readable(const char *what, const char *path, char *err,
                     size_t errlen) {
  char tmp[128];
  FILE *f = fopen(path, "r");
  if (!f) {
    setmsg(err, errlen, "cannot read %s %s: %s", what, path,
           strerror_r(errno, tmp, sizeof tmp));
    return false;
  }
  struct stat st;
  bool dir = fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode);
  fclose(f);
  if (dir)
    setmsg(err, errlen, "cannot read %s %s: %s", what, path,
           strerror_r(EISDIR, tmp, sizeof tmp));
  return !dir;
}

/* ---- contexts --------------------------------------------------------- */

/* Never prompt on the terminal for a key passphrase (OpenSSL's default). */
static int no_password(char *pass, int size, int rwflag, void *ud) {
  (void)pass;
  (void)size;
  (void)rwflag;
  (void)ud;
  return 0;
}

static bool is_mismatch(unsigned long e) {
  return ERR_GET_LIB(e) == ERR_LIB_X509 &&
         (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
          ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH);
}

static bool load_cert_and_key(SSL_CTX *ssl, const char *cert, const char *key,
                              char *err, size_t errlen) {
  char tmp[128];
  if (!readable("certificate chain", cert, err, errlen)) return false;
  if (SSL_CTX_use_certificate_chain_file(ssl, cert) != 1) {
    setmsg(err, errlen, "cannot load certificate chain from %s: %s", cert,
           first_reason(tmp, sizeof tmp));
    return false;
  }
  if (!key) key = cert; /* one PEM holding both */
  if (!readable("private key", key, err, errlen)) return false;
  /* SSL_CTX_use_PrivateKey_file already compares the key with a loaded
   * certificate of the same type; SSL_CTX_check_private_key catches a key
   * of another type, which OpenSSL would otherwise file in another slot. */
  if (SSL_CTX_use_PrivateKey_file(ssl, key, SSL_FILETYPE_PEM) != 1) {
    if (is_mismatch(ERR_peek_error())) goto mismatch;
    setmsg(err, errlen, "cannot load private key from %s: %s", key,
           key_reason(tmp, sizeof tmp));
    return false;
  }
  if (SSL_CTX_check_private_key(ssl) != 1) goto mismatch;
  return true;
mismatch:
  setmsg(err, errlen, "private key %s does not match certificate %s", key,
         cert);
  return false;
}

/* The server picks its one protocol if the client offers it, and otherwise
 * carries on without ALPN (lenient: a client offering only "h2" still gets
 * a plain HTTP/1.1 answer it can reject). */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  (void)ssl;
  const dx_tls_ctx *c = arg;
  for (unsigned i = 0; i < inlen;) {
    unsigned n = in[i];
    if (n == 0 || n > inlen - i - 1) break; /* malformed list */
    if (n + 1 == c->alpn_len && memcmp(in + i, c->alpn, n + 1) == 0) {
      *out = in + i + 1;
      *outlen = (unsigned char)n;
      return SSL_TLSEXT_ERR_OK;
    }
    i += n + 1;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

/* SNI (RFC 6066 3): X509_check_host matches the subjectAltName DNS names
 * (the CN only when there are none), case-insensitively, a "*." wildcard
 * standing for exactly one whole label. */
static bool cert_matches(SSL_CTX *ssl, const char *name) {
  X509 *x = SSL_CTX_get0_certificate(ssl);
  return x && X509_check_host(x, name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                              NULL) == 1;
}

/* True when the certificate has a DNS name to match: a subjectAltName DNS
 * entry, or (without any) a subject CN. */
static bool cert_has_names(SSL_CTX *ssl) {
  X509 *x = SSL_CTX_get0_certificate(ssl);
  if (!x) return false;
  GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  if (san) {
    bool dns = false;
    for (int i = 0; i < sk_GENERAL_NAME_num(san) && !dns; i++)
      dns = sk_GENERAL_NAME_value(san, i)->type == GEN_DNS;
    GENERAL_NAMES_free(san);
    if (dns) return true;
  }
  ERR_clear_error();
  return X509_NAME_get_index_by_NID(X509_get_subject_name(x), NID_commonName,
                                    -1) >= 0;
}

/* Picks the certificate for the client's server name: the first pair whose
 * names match, else the first (the default). Runs on the default SSL_CTX;
 * SSL_set_SSL_CTX moves the connection to the chosen one, whose settings
 * (ALPN, session id context) are the same. */
static int servername_cb(SSL *ssl, int *alert, void *arg) {
  const dx_tls_ctx *c = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name || !*name || cert_matches(c->ssl, name)) return SSL_TLSEXT_ERR_OK;
  for (size_t i = 0; i < c->nsni; i++) {
    if (cert_matches(c->sni[i], name)) {
      if (!SSL_set_SSL_CTX(ssl, c->sni[i])) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
      }
      break;
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *ssl_ctx_new(bool server) {
  SSL_CTX *ssl =
      SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ssl) return NULL;
  /* TLS 1.0 and 1.1 are deprecated (RFC 8996). Renegotiation is a DoS and
   * injection surface that nothing here needs. RELEASE_BUFFERS frees the
   * record buffers of idle connections (~34 KiB each). */
  SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
  SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(ssl, no_password);
  return ssl;
}

/* Certificate, key, resumption and ALPN: what every server SSL_CTX of c
 * (the default and the SNI ones) has. */
static bool setup_server_ssl(dx_tls_ctx *c, SSL_CTX *ssl, const char *cert,
                             const char *key, char *err, size_t errlen) {
  if (!load_cert_and_key(ssl, cert, key, err, errlen)) return false;
  /* Resumption (the server's session cache, and TLS 1.3 tickets, which
   * OpenSSL issues by default) saves a full handshake on reconnects. The
   * id context is required for resumption once peers are verified. */
  static const unsigned char sid[] = "duplex";
  SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_SERVER);
  SSL_CTX_set_session_id_context(ssl, sid, sizeof sid - 1);
  if (c->alpn_len) SSL_CTX_set_alpn_select_cb(ssl, alpn_select, c);
  return true;
}

static bool setup_server(dx_tls_ctx *c, const dx_tls_ctx_config *cfg, char *err,
                         size_t errlen) {
  char tmp[128];
  if (!cfg->cert_file) {
    setmsg(err, errlen, "a TLS server needs a certificate (cert_file)");
    return false;
  }
  if (!setup_server_ssl(c, c->ssl, cfg->cert_file, cfg->key_file, err, errlen))
    return false;
  if (!cfg->nsni_certs) return true;
  if (!(c->sni = calloc(cfg->nsni_certs, sizeof *c->sni))) {
    setmsg(err, errlen, "out of memory");
    return false;
  }
  for (size_t i = 0; i < cfg->nsni_certs; i++) {
    const dx_tls_cert *p = &cfg->sni_certs[i];
    if (!p->cert_file) {
      setmsg(err, errlen, "SNI certificate %zu has no certificate file", i + 2);
      return false;
    }
    if (!(c->sni[i] = ssl_ctx_new(true))) {
      setmsg(err, errlen, "cannot create a TLS context: %s",
             first_reason(tmp, sizeof tmp));
      return false;
    }
    c->nsni = i + 1;
    if (!setup_server_ssl(c, c->sni[i], p->cert_file, p->key_file, err, errlen))
      return false;
    if (!cert_has_names(c->sni[i])) {
      setmsg(err, errlen,
             "certificate %s has no DNS name (subjectAltName or CN) to match "
             "a client's server name against",
             p->cert_file);
      return false;
    }
  }
  SSL_CTX_set_tlsext_servername_callback(c->ssl, servername_cb);
  SSL_CTX_set_tlsext_servername_arg(c->ssl, c);
  return true;
}

static bool setup_client(dx_tls_ctx *c, const dx_tls_ctx_config *cfg, char *err,
                         size_t errlen) {
  char tmp[128];
  if (cfg->cert_file &&
      !load_cert_and_key(c->ssl, cfg->cert_file, cfg->key_file, err, errlen))
    return false;
  /* SSL_CTX_set_alpn_protos returns 0 on success. */
  if (c->alpn_len &&
      SSL_CTX_set_alpn_protos(c->ssl, c->alpn, (unsigned)c->alpn_len) != 0) {
    setmsg(err, errlen, "out of memory");
    return false;
  }
  if (c->insecure) {
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    return true;
  }
  SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
  if (cfg->ca_file) {
    if (!readable("CA file", cfg->ca_file, err, errlen)) return false;
    if (SSL_CTX_load_verify_file(c->ssl, cfg->ca_file) != 1) {
      setmsg(err, errlen, "cannot load CA file %s: %s", cfg->ca_file,
             first_reason(tmp, sizeof tmp));
      return false;
    }
  } else if (SSL_CTX_set_default_verify_paths(c->ssl) != 1) {
    setmsg(err, errlen, "cannot load the system trust store: %s",
           first_reason(tmp, sizeof tmp));
    return false;
  }
  return true;
}

dx_tls_ctx *dx_tls_ctx_new(const dx_tls_ctx_config *cfg, char *err,
                           size_t errlen) {
  char tmp[128];
  setmsg(err, errlen, "%s", "");
  if (!cfg) {
    setmsg(err, errlen, "no TLS configuration");
    return NULL;
  }
  size_t alpn_len = cfg->alpn ? strlen(cfg->alpn) : 0;
  if (cfg->alpn && (alpn_len == 0 || alpn_len > 255)) {
    setmsg(err, errlen, "ALPN protocol name must be 1 to 255 bytes");
    return NULL;
  }
  ERR_clear_error();
  dx_tls_ctx *c = calloc(1, sizeof *c);
  if (!c || !(c->sink = sink_get())) {
    free(c);
    setmsg(err, errlen, "out of memory");
    return NULL;
  }
  atomic_init(&c->refs, 1);
  c->server = cfg->server;
  c->insecure = !cfg->server && cfg->insecure;
  if (alpn_len) {
    c->alpn[0] = (uint8_t)alpn_len;
    memcpy(c->alpn + 1, cfg->alpn, alpn_len);
    c->alpn_len = alpn_len + 1;
  }
  c->ssl = ssl_ctx_new(cfg->server);
  if (!c->ssl) {
    setmsg(err, errlen, "cannot create a TLS context: %s",
           first_reason(tmp, sizeof tmp));
    goto fail;
  }
  if (!(cfg->server ? setup_server(c, cfg, err, errlen)
                    : setup_client(c, cfg, err, errlen)))
    goto fail;
  ERR_clear_error();
  return c;
fail:
  ERR_clear_error();
  dx_tls_ctx_unref(c);
  return NULL;
}

void dx_tls_ctx_ref(dx_tls_ctx *ctx) {
  /* Relaxed: a new reference is taken from one already held. */
  atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
}

void dx_tls_ctx_unref(dx_tls_ctx *ctx) {
  if (!ctx) return;
  /* Release, then acquire before freeing: every other holder's last use
   * happens before the free (the usual shared_ptr ordering). */
  if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_release) != 1)
    return;
  atomic_thread_fence(memory_order_acquire);
  SSL_CTX_free(ctx->ssl);
  for (size_t i = 0; i < ctx->nsni; i++)
    SSL_CTX_free(ctx->sni[i]);
  free(ctx->sni);
  free(ctx);
}

/* ---- connections: errors ---------------------------------------------- */

static bool http_request_head(const uint8_t *h, size_t n) {
  /* An HTTP method is an uppercase token followed by a space (RFC 9110
   * 9.1 allows more, but every client sends one of the standard ones). */
  size_t i = 0;
  while (i < n && h[i] >= 'A' && h[i] <= 'Z')
    i++;
  return i > 0 && (i == n || h[i] == ' ');
}

static void quote_head(const dx_tls *t, char *dst, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < t->nhead && o + 5 < cap; i++) {
    uint8_t c = t->head[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      dst[o++] = (char)c;
    else
      o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
  }
  dst[o] = '\0';
}

/* True (and the message set) when the peer never spoke TLS at all. */
static bool describe_not_tls(dx_tls *t) {
  /* TLS records open with a content type of 20-24 (RFC 8446 5.1). */
  if (t->done || !t->nhead || (t->head[0] >= 20 && t->head[0] <= 24))
    return false;
  if (t->server && http_request_head(t->head, t->nhead)) {
    setmsg(t->msg, sizeof t->msg, "the client spoke plain HTTP to a TLS port");
  } else if (!t->server && t->nhead >= 5 && !memcmp(t->head, "HTTP/", 5)) {
    setmsg(t->msg, sizeof t->msg,
           "the server answered in plain HTTP: is it a ws:// port?");
  } else {
    char q[48];
    quote_head(t, q, sizeof q);
    setmsg(t->msg, sizeof t->msg, "the %s did not speak TLS (it sent \"%s\")",
           t->server ? "client" : "server", q);
  }
  return true;
}

static void describe_verify(dx_tls *t, long vr) {
  const char *why = X509_verify_cert_error_string(vr);
  switch (vr) {
  case X509_V_ERR_HOSTNAME_MISMATCH:
  case X509_V_ERR_IP_ADDRESS_MISMATCH:
    setmsg(t->msg, sizeof t->msg,
           "certificate verify failed: %s (the certificate is not for %s)", why,
           t->host);
    break;
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    setmsg(t->msg, sizeof t->msg,
           "certificate verify failed: %s (its CA is not trusted here)", why);
    break;
  default:
    setmsg(t->msg, sizeof t->msg, "certificate verify failed: %s", why);
  }
}

static void describe(dx_tls *t) {
  char tmp[128];
  unsigned long e = ERR_peek_error();
  int r = ERR_GET_REASON(e);
  bool ssl = e && !ERR_SYSTEM_ERROR(e) && ERR_GET_LIB(e) == ERR_LIB_SSL;
  const char *what = t->done ? "TLS error" : "TLS handshake failed";
  const char *peer = t->server ? "client" : "server";
  long vr = t->server ? X509_V_OK : SSL_get_verify_result(t->ssl);

  if (ssl && r == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK) {
    describe_verify(t, vr);
  } else if (describe_not_tls(t)) {
  } else if (ssl && r > SSL_AD_REASON_OFFSET &&
             r < SSL_AD_REASON_OFFSET + 256) {
    /* An alert from the peer: OpenSSL files it as 1000 + description. */
    int alert = r - SSL_AD_REASON_OFFSET;
    bool cert = alert == SSL_AD_UNKNOWN_CA || alert == SSL_AD_BAD_CERTIFICATE ||
                alert == SSL_AD_CERTIFICATE_UNKNOWN;
    setmsg(t->msg, sizeof t->msg, "%s: the %s sent alert \"%s\"%s", what, peer,
           SSL_alert_desc_string_long(alert),
           cert ? " (it does not accept our certificate)" : "");
  } else if (e) {
    setmsg(t->msg, sizeof t->msg, "%s: %s", what,
           reason_text(e, tmp, sizeof tmp));
  } else {
    setmsg(t->msg, sizeof t->msg, "%s", what);
  }
}

/* Makes the failure sticky; the output may still hold an alert worth
 * sending. */
static int fail(dx_tls *t) {
  unsigned long e = ERR_peek_error();
  if (t->oom || (e && !ERR_SYSTEM_ERROR(e) &&
                 ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)) {
    t->err = DX_ENOMEM;
    setmsg(t->msg, sizeof t->msg, "out of memory");
  } else {
    t->err = DX_ETLS;
    describe(t);
  }
  ERR_clear_error();
  return t->err;
}

/* After an SSL call returned r <= 0; code is SSL_get_error's, taken right
 * after that call (another call in between resets the state it reads). */
static int after(dx_tls *t, int code) {
  switch (code) {
  case SSL_ERROR_WANT_READ:
  case SSL_ERROR_WANT_WRITE:
    return 0;
  case SSL_ERROR_ZERO_RETURN:
    t->closed = true;
    return DX_ECLOSED;
  default:
    return fail(t);
  }
}

/* ---- connections ------------------------------------------------------ */

static int write_all(dx_tls *t, const uint8_t *data, size_t len) {
  ERR_clear_error();
  size_t n = 0;
  /* Without SSL_MODE_ENABLE_PARTIAL_WRITE, and with a sink that never
   * blocks, SSL_write_ex either takes everything or fails. */
  int r = SSL_write_ex(t->ssl, data, len, &n);
  if (r == 1) return 0;
  int e = after(t, SSL_get_error(t->ssl, r));
  return e ? e : fail(t); /* a "want": cannot happen, see above */
}

/* Sends what was written before the handshake completed (if flush). */
static int handshake_finished(dx_tls *t, bool flush) {
  t->done = true;
  snprintf(t->info, sizeof t->info, "%s %s", SSL_get_version(t->ssl),
           SSL_get_cipher_name(t->ssl));
  if (!flush || t->pending.len == t->pending.off) return 0;
  int e = write_all(t, t->pending.p + t->pending.off,
                    t->pending.len - t->pending.off);
  buf_free(&t->pending);
  return e;
}

/* Sets SNI and the name the certificate must carry. Returns false when out
 * of memory. */
static bool set_host(dx_tls *t, const char *host) {
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') host++, n -= 2;
  if (n && host[n - 1] == '.') n--; /* SNI has no trailing dot (RFC 6066) */
  if (n > HOST_MAX) n = HOST_MAX;   /* the check below then fails */
  memcpy(t->host, host, n);
  t->host[n] = '\0';

  unsigned char addr[16];
  bool ip = inet_pton(AF_INET, t->host, addr) == 1 ||
            inet_pton(AF_INET6, t->host, addr) == 1;
  /* RFC 6066 3: SNI carries DNS names only, never IP literals. */
  if (!ip && !SSL_set_tlsext_host_name(t->ssl, t->host)) return false;
  if (t->ctx->insecure) return true;
  if (ip)
    return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), t->host) == 1;
  /* "*.example.com" matches a whole label only, never "w*.example.com". */
  SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return SSL_set1_host(t->ssl, t->host) == 1;
}

dx_tls *dx_tls_new(dx_tls_ctx *ctx, const char *sni_host) {
  dx_tls *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->server = ctx->server;
  ERR_clear_error();
  t->ssl = SSL_new(ctx->ssl);
  if (!t->ssl) goto fail;
  dx_tls_ctx_ref(ctx);
  t->ctx = ctx;
  t->rbio = BIO_new(BIO_s_mem());
  BIO *wbio = BIO_new(ctx->sink);
  if (!t->rbio || !wbio) {
    BIO_free(t->rbio);
    BIO_free(wbio);
    t->rbio = NULL;
    goto fail;
  }
  /* An empty rbio means "wait for more" (retry), not end of stream. */
  BIO_set_mem_eof_return(t->rbio, -1);
  BIO_set_data(wbio, t);
  SSL_set_bio(t->ssl, t->rbio, wbio);

  if (t->server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (sni_host && *sni_host) {
      if (!set_host(t, sni_host)) goto fail;
    } else if (!ctx->insecure) {
      /* A chain check without a name check accepts any valid certificate
       * for any site: refuse rather than silently skip it. */
      t->err = DX_ETLS;
      setmsg(t->msg, sizeof t->msg,
             "no host name to check the server certificate against");
    }
    /* The ClientHello goes out first: put it in the output now. */
    if (!t->err) {
      int r = SSL_do_handshake(t->ssl);
      if (r != 1) after(t, SSL_get_error(t->ssl, r));
    }
  }
  ERR_clear_error();
  return t;
fail:
  ERR_clear_error();
  dx_tls_free(t);
  return NULL;
}

void dx_tls_free(dx_tls *t) {
  if (!t) return;
  SSL_free(t->ssl); /* frees both BIOs */
  buf_free(&t->out);
  buf_free(&t->pending);
  dx_tls_ctx_unref(t->ctx);
  free(t);
}

int dx_tls_feed(dx_tls *t, const uint8_t *data, size_t len) {
  /* After a failure or close_notify nothing more will be read. */
  if (t->err || t->closed) return 0;
  if (t->nhead < sizeof t->head) {
    size_t n = sizeof t->head - t->nhead;
    if (n > len) n = len;
    memcpy(t->head + t->nhead, data, n);
    t->nhead += n;
  }
  while (len) {
    int n = len > INT_MAX ? INT_MAX : (int)len;
    if (BIO_write(t->rbio, data, n) != n) {
      ERR_clear_error();
      return DX_ENOMEM;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

int dx_tls_read(dx_tls *t, uint8_t *out, size_t cap) {
  if (t->err) return t->err;
  if (t->closed) return DX_ECLOSED;
  if (!cap) return DX_EINVAL;
  ERR_clear_error();
  size_t n = 0;
  int r = SSL_read_ex(t->ssl, out, cap > INT_MAX ? INT_MAX : cap, &n);
  int code = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
  if (!t->done && SSL_is_init_finished(t->ssl)) {
    /* After a fatal error, writing would only bury its reason. */
    bool fatal = code == SSL_ERROR_SSL || code == SSL_ERROR_SYSCALL;
    int e = handshake_finished(t, !fatal);
    if (e) return e;
  }
  if (r == 1) return (int)n;
  return after(t, code);
}

int dx_tls_write(dx_tls *t, const uint8_t *data, size_t len) {
  if (t->err) return t->err;
  if (t->shut) return DX_ECLOSED;
  if (!len) return 0;
  /* Before the handshake completes SSL_write would only say "want read",
   * and must then be retried with the same bytes: keep them here. */
  if (!t->done) return buf_append(&t->pending, data, len);
  return write_all(t, data, len);
}

size_t dx_tls_output(dx_tls *t, const uint8_t **out) {
  size_t n = t->out.len - t->out.off;
  *out = n ? t->out.p + t->out.off : NULL;
  return n;
}

void dx_tls_consume(dx_tls *t, size_t n) {
  size_t have = t->out.len - t->out.off;
  t->out.off += n < have ? n : have;
  /* Drained: give the memory back, so an idle connection holds no output
   * buffer (DESIGN.md, "Performance design"). */
  if (t->out.off == t->out.len) buf_free(&t->out);
}

void dx_tls_shutdown(dx_tls *t) {
  if (t->err || t->shut || !t->done) return;
  ERR_clear_error();
  SSL_shutdown(t->ssl); /* 0: sent, the peer's not yet received; fine */
  ERR_clear_error();
  t->shut = true;
}

bool dx_tls_handshake_done(const dx_tls *t) {
  return t->done;
}

const char *dx_tls_error(const dx_tls *t) {
  return t->msg;
}

const char *dx_tls_version(const dx_tls *t) {
  return t->info;
}
