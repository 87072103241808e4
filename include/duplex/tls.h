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
 * defaults. A dx_tls is used by one thread at a time; a dx_tls_ctx is
 * shared (reference-counted) and may be replaced while connections use the
 * old one (certificate reload).
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

typedef struct dx_tls_ctx_config {
  bool server;
  /* Server: PEM certificate (chain allowed: leaf first) and private key.
   * Client: optional client certificate. */
  const char *cert_file;
  const char *key_file;
  /* Client: CA bundle to trust instead of the system store (PEM). NULL:
   * the system trust store (OpenSSL's default paths). */
  const char *ca_file;
  /* Client: do not verify the peer at all (dangerous: anyone can
   * impersonate the server). */
  bool insecure;
  /* ALPN protocol to offer/accept, e.g. "http/1.1"; NULL: none. */
  const char *alpn;
} dx_tls_ctx_config;

/* Creates a context. On failure returns NULL and writes a one-line reason
 * ("cannot read certificate cert.pem: No such file or directory", "private
 * key does not match the certificate", ...) into err. */
DX_API dx_tls_ctx *dx_tls_ctx_new(const dx_tls_ctx_config *cfg, char *err,
                                  size_t errlen);
/* Reference counting: a connection holds a reference to its context. */
DX_API void dx_tls_ctx_ref(dx_tls_ctx *ctx);
DX_API void dx_tls_ctx_unref(dx_tls_ctx *ctx); /* NULL-safe */

/* A connection. sni_host (client only): the name sent in SNI and checked
 * against the certificate (DNS name or IP literal); NULL skips both (only
 * with insecure). Returns NULL when out of memory. */
DX_API dx_tls *dx_tls_new(dx_tls_ctx *ctx, const char *sni_host);
DX_API void dx_tls_free(dx_tls *t); /* NULL-safe */

/* Ciphertext received from the peer. The bytes are copied.
 * Returns 0 or DX_ENOMEM. */
DX_API int dx_tls_feed(dx_tls *t, const uint8_t *data, size_t len);

/*
 * Advances the handshake and decrypts: writes up to cap plaintext bytes.
 * Returns the count (> 0); 0 when nothing more can be read until more
 * ciphertext arrives (check dx_tls_output: the handshake may want to send);
 * DX_ECLOSED when the peer sent close_notify; DX_ETLS on a failed handshake
 * or a corrupt record (dx_tls_error() says why).
 */
DX_API int dx_tls_read(dx_tls *t, uint8_t *out, size_t cap);

/* Encrypts plaintext into the output (all of it, or an error). Before the
 * handshake completes the bytes wait inside OpenSSL's buffers.
 * Returns 0, DX_ETLS, DX_ENOMEM. */
DX_API int dx_tls_write(dx_tls *t, const uint8_t *data, size_t len);

/* Ciphertext waiting to be sent; *out valid until the next call on t.
 * Returns its length (0: none). */
DX_API size_t dx_tls_output(dx_tls *t, const uint8_t **out);
DX_API void dx_tls_consume(dx_tls *t, size_t n);

/* Queues close_notify in the output. */
DX_API void dx_tls_shutdown(dx_tls *t);

DX_API bool dx_tls_handshake_done(const dx_tls *t);
/* After DX_ETLS: a one-line human reason ("certificate verify failed:
 * hostname mismatch", "wrong version number (plain HTTP to a TLS port?)").
 * Valid until dx_tls_free. */
DX_API const char *dx_tls_error(const dx_tls *t);
/* Negotiated version ("TLSv1.3") and cipher, for logs. */
DX_API const char *dx_tls_version(const dx_tls *t);

#ifdef __cplusplus
}
#endif
#endif
