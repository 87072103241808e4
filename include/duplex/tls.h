/*
 * duplex/tls.h — TLS (OpenSSL 3) as a sans-I/O filter over memory BIOs, so
 * plaintext and TLS connections share one read/write path in the runtime:
 *
 *   ciphertext from the socket -> dx_tls_feed()
 *   dx_tls_read()              -> plaintext for the WebSocket engine
 *   plaintext to send          -> dx_tls_write()
 *   dx_tls_output()/consume()  -> ciphertext for the socket
 *
 * Nothing here touches a socket. Because every received byte goes through
 * the memory BIO and dx_tls_read() is drained until it reports no more,
 * there are no "SSL_pending" bytes hidden from epoll.
 *
 * Protocol versions: TLS 1.2 and 1.3 only; ciphers are OpenSSL's secure
 * defaults; no renegotiation. A dx_tls is used by one thread at a time; a
 * dx_tls_ctx is shared (reference-counted, THREAD-SAFE) and may be replaced
 * while connections use the old one (certificate reload).
 *
 * Memory: the output buffer is allocated while it holds ciphertext and
 * freed once consumed; OpenSSL's record buffers are released when idle
 * (SSL_MODE_RELEASE_BUFFERS). Output and plaintext written before the
 * handshake completes are not bounded here: the runtime's buffered-amount
 * limits apply to them.
 */
#ifndef DUPLEX_TLS_H
#define DUPLEX_TLS_H

#include <duplex/common.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dx_tls_ctx dx_tls_ctx;
typedef struct dx_tls dx_tls;

/* One certificate (PEM chain, leaf first) and its unencrypted key;
 * key_file NULL: the key is in cert_file too. */
typedef struct dx_tls_cert {
  const char *cert_file;
  const char *key_file;
} dx_tls_cert;

typedef struct dx_tls_ctx_config {
  bool server;
  /* Server (required): PEM certificate (chain allowed: leaf first) and
   * unencrypted private key; key_file NULL: the key is in cert_file too.
   * Client: optional client certificate, same rules. */
  const char *cert_file;
  const char *key_file;
  /* Server: more certificates, chosen by the client's SNI server name
   * (RFC 6066 3): the first of cert_file, then these in order, whose
   * names match it (subjectAltName DNS names, the CN only when there are
   * none; case-insensitive; "*.example.com" stands for one whole label).
   * No SNI or no match: cert_file, the default. Each must have a DNS name.
   * The array is read during dx_tls_ctx_new only. Client: unused. */
  const dx_tls_cert *sni_certs;
  size_t nsni_certs;
  /* Client: CA bundle to trust instead of the system store (PEM). NULL:
   * the system trust store (OpenSSL's default paths). Server: unused. */
  const char *ca_file;
  /* Client: do not verify the peer at all (dangerous: anyone can
   * impersonate the server). ca_file is then ignored. */
  bool insecure;
  /* ALPN protocol to offer (client) or accept (server), e.g. "http/1.1";
   * NULL: none. A server whose protocol the client does not offer goes on
   * without ALPN rather than failing the handshake. */
  const char *alpn;
} dx_tls_ctx_config;

/* Creates a context with one reference. On failure returns NULL and writes
 * a one-line reason into err (may be NULL), naming the file:
 *   "cannot read certificate chain cert.pem: No such file or directory"
 *   "cannot load certificate chain from cert.pem: no PEM data found"
 *   "cannot load private key from key.pem: the key is encrypted
 *    (passphrases are not supported)"
 *   "private key key.pem does not match certificate cert.pem"
 *   "certificate b.pem has no DNS name (subjectAltName or CN) to match a
 *    client's server name against" (an SNI certificate)
 *   "cannot read CA file ca.pem: ..." / "cannot load CA file ca.pem: ..."
 * Never prompts for a passphrase. */
DX_API dx_tls_ctx *dx_tls_ctx_new(const dx_tls_ctx_config *cfg, char *err,
                                  size_t errlen);
/* Reference counting (THREAD-SAFE): a connection holds a reference to its
 * context, so the creator may unref it while connections still use it. */
DX_API void dx_tls_ctx_ref(dx_tls_ctx *ctx);
DX_API void dx_tls_ctx_unref(dx_tls_ctx *ctx); /* NULL-safe */

/* A connection; takes a reference to ctx. sni_host (client only; servers
 * ignore it): the name sent in SNI and checked against the certificate, a
 * DNS name or an IP literal ("127.0.0.1", "::1" or "[::1]"; IP literals
 * are checked but not sent in SNI, RFC 6066 3). NULL or "" skips both,
 * which only insecure allows: otherwise the first dx_tls_read fails with
 * DX_ETLS ("no host name to check the server certificate against").
 * A client's ClientHello is in the output as soon as this returns.
 * Returns NULL when out of memory. */
DX_API dx_tls *dx_tls_new(dx_tls_ctx *ctx, const char *sni_host);
DX_API void dx_tls_free(dx_tls *t); /* NULL-safe */

/* Ciphertext received from the peer. The bytes are copied. After an error
 * or the peer's close_notify they are dropped. Returns 0 or DX_ENOMEM. */
DX_API int dx_tls_feed(dx_tls *t, const uint8_t *data, size_t len);

/*
 * Advances the handshake and decrypts: writes up to cap plaintext bytes
 * (at most INT_MAX). Call it until it returns 0 after every feed.
 * Returns the count (> 0); 0 when nothing more can be read until more
 * ciphertext arrives (check dx_tls_output: the handshake may want to send);
 * DX_ECLOSED when the peer sent close_notify; DX_ETLS on a failed handshake
 * or a corrupt record (dx_tls_error() says why); DX_ENOMEM; DX_EINVAL when
 * cap is 0. Errors are sticky: every later call returns the same one.
 * After DX_ETLS the output may hold an alert for the peer: send it, then
 * close.
 */
DX_API int dx_tls_read(dx_tls *t, uint8_t *out, size_t cap);

/* Encrypts plaintext into the output (all of it, or an error). Before the
 * handshake completes the bytes are copied and wait in the dx_tls; they
 * are encrypted by the dx_tls_read that completes it.
 * Returns 0, DX_ETLS, DX_ENOMEM, or DX_ECLOSED after dx_tls_shutdown. */
DX_API int dx_tls_write(dx_tls *t, const uint8_t *data, size_t len);

/* Ciphertext waiting to be sent; *out valid until the next call on t.
 * Returns its length (0: none, *out NULL). dx_tls_consume(n) drops the
 * first n bytes of it (n larger than the length drops all). */
DX_API size_t dx_tls_output(dx_tls *t, const uint8_t **out);
DX_API void dx_tls_consume(dx_tls *t, size_t n);

/* Queues close_notify in the output; later writes return DX_ECLOSED and
 * reads still deliver what the peer sends until its own close_notify.
 * Does nothing before the handshake completed or after an error. */
DX_API void dx_tls_shutdown(dx_tls *t);

DX_API bool dx_tls_handshake_done(const dx_tls *t);
/* After an error: a one-line human reason, "" before any. Examples:
 *   "certificate verify failed: hostname mismatch (the certificate is not
 *    for example.com)"
 *   "certificate verify failed: certificate has expired"
 *   "certificate verify failed: self-signed certificate"
 *   "certificate verify failed: unable to get local issuer certificate
 *    (its CA is not trusted here)"
 *   "the client spoke plain HTTP to a TLS port"
 *   "the server answered in plain HTTP: is it a ws:// port?"
 *   "the client did not speak TLS (it sent "SSH-2.0-")"
 *   "TLS handshake failed: the client sent alert "unknown CA" (it does
 *    not accept our certificate)"
 *   "TLS error: decryption failed or bad record mac"
 * Valid until dx_tls_free. */
DX_API const char *dx_tls_error(const dx_tls *t);
/* Negotiated version and cipher for logs, "TLSv1.3 TLS_AES_256_GCM_SHA384";
 * "" until the handshake completes. Valid until dx_tls_free. */
DX_API const char *dx_tls_version(const dx_tls *t);

#ifdef __cplusplus
}
#endif
#endif
