/*
 * auth.h — who may open a WebSocket on `duplex serve`, and what they may do.
 *
 *   auth *a = auth_new(&cfg, err, sizeof err);   // at start; NULL: err says
 *   // in a route's on_accept hook:
 *   auth_identity id;
 *   int st = auth_check_upgrade(a, req, time(NULL), &id);
 *   if (st) return st;                 // 401 or 403; id.reason says why
 *   ... keep id with the connection; auth_allows(&id, AUTH_PUBLISH, "chat:1")
 *   auth_identity_clear(&id);          // when the connection is gone
 *
 * Credentials, looked for in this order; the FIRST one present is the one
 * checked (a bad one is never skipped in favour of the next):
 *   1. Authorization: Bearer <jwt>          (other schemes are ignored)
 *   2. Cookie: token=<jwt>
 *   3. ?token=<jwt>                         (percent-decoded)
 *   4. ?ticket=<one-time ticket>            (see auth_ticket_issue)
 *   5. Sec-WebSocket-Protocol: ..., bearer.<jwt>, ...   (browsers cannot set
 *      headers). The token is never a protocol the server selects: the
 *      route's subprotocol list selects "duplex.v1" when it is offered too.
 *
 * JWTs: HS256 only when a secret is configured, RS256 only when a public key
 * is; every other "alg" ("none", HS384, ES256 ...) is refused before any
 * signature check, so a token can never choose its own verification (an
 * RS256 public key is never used as an HMAC secret). "crit" headers are
 * refused (RFC 7515 4.1.11). Claims: "exp" required, "nbf" and "iat" (not in
 * the future) checked with the leeway; "aud" must contain the configured
 * audience (a token with "aud" is refused when none is configured, RFC 7519
 * 4.1.3); "iss" must equal the configured issuer; "sub" (optional string,
 * at most 256 bytes, no control characters) becomes the subject; "topics":
 * {"subscribe": [...], "publish": [...]} the grants.
 *
 * Grants are topic patterns: an exact topic ("news"), or a prefix followed by
 * one trailing '*' ("chat:*" matches "chat:" and everything that starts with
 * it; "*" matches every topic). At most AUTH_MAX_PATTERNS per list.
 *
 * Statuses: 401 for a missing (mode required), malformed, badly signed,
 * wrong-algorithm, expired, not-yet-valid, wrong-audience/issuer token or an
 * unknown/used/expired ticket; 403 for a valid credential that grants nothing
 * (both lists empty); 500 when memory runs out.
 *
 * Threads: an auth object is shared by every loop (and the HTTP API). All
 * functions are THREAD-SAFE; the ticket table has its own mutex.
 */
#ifndef DX_APP_AUTH_H
#define DX_APP_AUTH_H

#include <duplex/server.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct auth auth;

typedef enum auth_mode {
  AUTH_OFF = 0,  /* no checks; everyone anonymous and allowed everything */
  AUTH_OPTIONAL, /* a token is checked when present; else anonymous */
  AUTH_REQUIRED  /* no valid credential: 401 */
} auth_mode;

/* What a grant is for (auth_allows). */
enum { AUTH_SUBSCRIBE = 1, AUTH_PUBLISH = 2 };

enum {
  AUTH_MAX_PATTERNS = 64, /* per list, in a token, a ticket or the config */
  AUTH_MAX_SUBJECT = 256, /* bytes of "sub" */
  AUTH_MAX_TOKEN = 8192,  /* bytes of a JWT */
  AUTH_TICKET_LEN = 43,   /* base64url of 32 random bytes, no padding */
  AUTH_MIN_SECRET = 32,   /* bytes of an HS256 secret (RFC 7518 3.2) */
};

/* Two NULL-terminated lists of topic patterns. A NULL list means "the
 * default" where the field says so; a list holding only NULL means none. */
typedef struct auth_grants {
  const char *const *subscribe;
  const char *const *publish;
} auth_grants;

/* Every pointer is borrowed for auth_new only (auth_new copies). */
typedef struct auth_config {
  auth_mode mode;
  const char *const *api_keys; /* HTTP API keys, NULL-terminated; NULL: none
                                  (the API is open, tickets are refused) */
  const char *jwt_secret;      /* HS256 secret, >= AUTH_MIN_SECRET bytes;
                                  NULL: HS256 tokens refused */
  const char *jwt_public_key;  /* path to a PEM public key ("BEGIN PUBLIC
                                  KEY", RSA >= 2048 bits); NULL: RS256 refused */
  const char *audience;        /* NULL: tokens must carry no "aud" */
  const char *issuer;          /* NULL: "iss" not checked */
  unsigned leeway;             /* seconds of clock skew on exp/nbf/iat,
                                  literal (0: none; config_defaults: 30) */
  unsigned ticket_ttl;         /* seconds a ticket lives; 0: 30 */
  size_t ticket_max;           /* tickets waiting at once; 0: 10000 */
  /* Grants of a connection without a credential in mode optional.
   * NULL lists: subscribe ["*"], publish none (read-only public access). */
  auth_grants anonymous;
  /* Grants of a token (or ticket) that carries none ("topics" absent).
   * NULL lists: ["*"] (the issuer did not restrict it). */
  auth_grants token;
} auth_config;

/* Where the credential came from. */
typedef enum auth_source {
  AUTH_SRC_NONE = 0, /* anonymous */
  AUTH_SRC_HEADER,
  AUTH_SRC_COOKIE,
  AUTH_SRC_QUERY,
  AUTH_SRC_TICKET,
  AUTH_SRC_SUBPROTOCOL
} auth_source;

/* Who is on the other end. An authenticated identity owns one block (mem)
 * holding its strings and lists; an anonymous one (mode off or optional)
 * borrows them from the auth object (mem NULL: no allocation), valid until
 * auth_free. Either way: auth_identity_copy makes an owned copy,
 * auth_identity_clear frees what is owned. A zero identity is valid
 * (anonymous, allowed nothing). */
typedef struct auth_identity {
  const char *subject;          /* "" when anonymous or without "sub" */
  const char *const *subscribe; /* NULL-terminated patterns */
  const char *const *publish;
  int64_t expires; /* the token's "exp" (unix seconds); 0: none */
  auth_source source;
  bool anonymous;
  const char *reason; /* after a failed check: why, for the log (static) */
  void *mem;          /* private */
} auth_identity;

/* Checks cfg (secret length, API keys not empty, the key file is an RSA
 * public key of 2048+ bits, grant patterns, a credential source exists when
 * the mode is not off) and copies it. NULL on error, with one line in err. */
auth *auth_new(const auth_config *cfg, char *err, size_t errlen);
/* auth_free(NULL) does nothing. Authenticated identities (and copies) stay
 * valid after it; anonymous ones from auth_check_upgrade do not. */
void auth_free(auth *a);

/* Authenticates an upgrade request at time now (unix seconds). In mode off
 * everyone is let in with every grant; a valid ticket, if presented, still
 * gives the connection its subject (a bad one is ignored). Returns 0 and
 * fills *out (the caller clears it), or 401/403/500 with *out zeroed except
 * out->reason. A ticket is consumed by the attempt, whatever follows. */
int auth_check_upgrade(auth *a, const dx_upgrade_request *req, int64_t now,
                       auth_identity *out);

/* True when id may do what (AUTH_SUBSCRIBE or AUTH_PUBLISH) on topic. */
bool auth_allows(const auth_identity *id, int what, const char *topic);

/* Checks an HTTP API request's Authorization value (may be NULL) against the
 * API keys: "Bearer <key>", compared in constant time (SHA-256 of both,
 * CRYPTO_memcmp, every key visited). Returns 0 (a match, or no keys are
 * configured) or 401. */
int auth_check_api_key(const auth *a, const char *authorization);
bool auth_has_api_keys(const auth *a);

/* Builds an identity from a POST /api/ticket body:
 *   {"sub": "alice", "grants": {"subscribe": [...], "publish": [...]}}
 * (both optional; grants absent: the config's token grants). Returns 0, 400
 * (with one line in err) or 500. */
int auth_identity_from_json(const auth *a, const char *body, size_t len,
                            auth_identity *out, char *err, size_t errlen);

/* Whether tickets may be issued at all: with API keys (a backend vouches
 * for the user), or with auth off (a ticket only names a member, see
 * auth_check_upgrade). */
bool auth_tickets_allowed(const auth *a);

/* Issues a one-time ticket for id (copied) valid for the ticket TTL from
 * now; writes AUTH_TICKET_LEN characters and a NUL to out. Returns 0, 403
 * (!auth_tickets_allowed: nobody may issue tickets), 503 (ticket_max
 * tickets are waiting: the caller should answer 503 with Retry-After: TTL;
 * waiting tickets are never evicted) or 500. Expired tickets are swept on
 * every issue and every use. */
int auth_ticket_issue(auth *a, const auth_identity *id, int64_t now,
                      char out[AUTH_TICKET_LEN + 1]);
unsigned auth_ticket_ttl(const auth *a);
/* Tickets waiting now (tests, metrics). */
size_t auth_ticket_count(auth *a);

/* Deep copy. Returns 0 or 500 (dst zeroed). */
int auth_identity_copy(auth_identity *dst, const auth_identity *src);
/* Frees the block and zeroes *id. Safe on a zero identity. */
void auth_identity_clear(auth_identity *id);

/* True for a grant pattern: 1..128 topic characters [A-Za-z0-9_.:/-],
 * optionally followed by one '*', or "*" alone. */
bool auth_pattern_valid(const char *pattern);

const char *auth_mode_name(auth_mode m);
const char *auth_source_name(auth_source s);

#endif
