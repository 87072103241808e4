/* Internal to client/: URL parsing and the reconnection backoff, exposed
 * (dx__ names) so tests/unit/test_client.c can check them directly. */
#ifndef DX_CLIENT_INTERNAL_H
#define DX_CLIENT_INTERNAL_H

#include <duplex/common.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* A parsed ws:// or wss:// URL; every string is owned by the caller's
 * buffer (dx__url_parse writes them into `buf`). */
typedef struct dx__url {
  bool tls;              /* wss */
  const char *host;      /* without brackets: "example.com", "::1" */
  bool ipv6;             /* host is an IPv6 literal (was in brackets) */
  int port;              /* 1..65535; 80/443 by default */
  const char *target;    /* path and query, "/" when empty ("/chat?x=1") */
  const char *authority; /* Host header: host, [v6], plus ":port" unless
                            it is the scheme's default */
} dx__url;

/*
 * Parses url into *out, copying the pieces into buf (DX__URL_BUF(url)
 * bytes are always enough). Accepts ws:// and wss:// (scheme
 * case-insensitive), a registered name, an IPv4 literal or a bracketed IPv6
 * literal, an optional port, and an optional path and query; bytes >= 0x80
 * in the path are percent-encoded. Rejects other schemes, user info
 * ("user@"), fragments (RFC 6455 3: "#" is not allowed), empty hosts, bad
 * ports, and whitespace or control characters anywhere.
 * Returns 0, DX_EINVAL, DX_ENOSPC (buf too small).
 */
#define DX__URL_BUF(url) (strlen(url) * 4 + 32)
int dx__url_parse(const char *url, dx__url *out, char *buf, size_t cap);

/*
 * Reconnection backoff with full jitter (client.h): the delay before
 * attempt n (1-based) is uniform in [0, min(max, base * 2^(n-1))].
 * The attempt count resets when a connection stayed open stable_ms.
 */
typedef struct dx__backoff {
  unsigned base_ms, max_ms; /* already defaulted: > 0 */
  unsigned max_attempts;    /* 0: unlimited */
  unsigned stable_ms;
  unsigned attempt;   /* attempts scheduled since the last stable open */
  uint64_t opened_at; /* dx_loop_now() of the last open; 0: none */
} dx__backoff;

/* min(max, base * 2^(attempt-1)), without overflow; attempt >= 1. */
unsigned dx__backoff_cap(unsigned base_ms, unsigned max_ms, unsigned attempt);

/* Schedules the next attempt: increments the count and picks its delay from
 * the random value rnd (uniform over 64 bits). Returns false (and leaves
 * the count) when max_attempts is reached. */
bool dx__backoff_next(dx__backoff *b, uint64_t rnd, unsigned *attempt,
                      unsigned *delay_ms);

/* A connection opened at `now` / was lost at `now`: a connection that
 * stayed open stable_ms resets the attempt count. */
void dx__backoff_opened(dx__backoff *b, uint64_t now);
void dx__backoff_lost(dx__backoff *b, uint64_t now);

/* 64 random bits: OpenSSL's RAND_bytes, else a splitmix64 sequence seeded
 * from the clock and the address of a stack variable (jitter needs to be
 * spread, not secret). */
uint64_t dx__client_random(void);

#endif
