/*
 * Real client addresses behind load balancers: the trusted proxy list, the
 * PROXY protocol phase of a new connection, and X-Forwarded-For at each
 * request. The parsing is in http/ (proxyproto.c, forwarded.c); this file
 * decides whom to believe.
 *
 * What a client address is used for: the per-IP WebSocket quota, the
 * accept hook's and HTTP routes' peer, dx_conn_peer and the logs. The
 * per-IP quota is counted at the upgrade (conn.c, upgrade()), not at
 * accept, so the address from X-Forwarded-For is known by then and the
 * quota counts the real client, not the proxy; HTTP requests are not
 * counted. A WebSocket keeps its client address for its lifetime (the
 * count is released under the same address); a plain HTTP request sees
 * the forwarded address only while it is handled, since the next request
 * on a kept-alive proxy connection may come from another client.
 */
#include "server/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <duplex/http.h>

int dx__forwarded_init(dx_server *srv) {
  size_t n = 0;
  for (const char *const *p = srv->cfg.trusted_proxies; p && *p; p++)
    n++;
  if (srv->cfg.proxy_protocol && n == 0) {
    snprintf(srv->error, sizeof srv->error,
             "proxy_protocol needs trusted_proxies: the addresses of the "
             "proxies that send the header");
    return DX_EINVAL;
  }
  if (n == 0) return 0;
  dx_cidr *t = calloc(n, sizeof *t);
  if (!t) return DX_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const char *why = "";
    if (dx_cidr_parse(srv->cfg.trusted_proxies[i], &t[i], &why)) {
      snprintf(srv->error, sizeof srv->error, "trusted proxy '%.64s': %s",
               srv->cfg.trusted_proxies[i], why);
      free(t);
      return DX_EINVAL;
    }
  }
  srv->trusted = t;
  srv->ntrusted = n;
  return 0;
}

void dx__forwarded_free(dx_server *srv) {
  free(srv->trusted);
  srv->trusted = NULL;
  srv->ntrusted = 0;
}

static void refuse(dx_conn *c, const char *detail) {
  DX__INC(c->sl, rejected_http, 1);
  dx__log(c->sl->srv, "reject", c, NULL, 0, 0, detail);
  dx__conn_destroy(c);
}

/* The header is read with MSG_PEEK and then exactly its bytes are taken,
 * so what follows (TLS or HTTP) stays in the socket for the normal read
 * path and nothing needs buffering here. A header that comes in pieces
 * leaves the bytes in the socket; the next arrival wakes us again. The
 * handshake timeout bounds the wait. */
int dx__proxy_read(dx_conn *c) {
  dx_server *srv = c->sl->srv;
  size_t cap;
  uint8_t *buf = dx_loop_recv_buffer(c->sl->loop, &cap);
  if (cap > DX_PROXY_V2_MAX) cap = DX_PROXY_V2_MAX;
  ssize_t n;
  do
    n = recv(c->io.fd, buf, cap, MSG_PEEK);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    if (n == 0 || errno != EAGAIN) dx__conn_destroy(c);
    return 0;
  }
  dx_ip peer;
  memcpy(peer.b, c->addr, 16);
  bool trusted = dx_cidr_match(srv->trusted, srv->ntrusted, &peer);
  dx_proxy_header h;
  const char *why = "";
  int rc = dx_proxy_parse(buf, (size_t)n, &h, &why);
  if (!trusted) {
    /* Anyone may connect directly, but only our proxies may say who the
     * client is: a header from anyone else is refused, never believed.
     * Refuse as soon as the signature is complete. */
    if (rc == 0) {
      c->proxy_wait = false;
      return 1;
    }
    if (rc == DX_EAGAIN && n < (buf[0] == 'P' ? 6 : 12)) return 0;
    refuse(c, "PROXY protocol header from an untrusted peer");
    return 0;
  }
  if (rc == DX_EAGAIN) return 0;
  if (rc == 0) {
    refuse(c, "no PROXY protocol header from a trusted proxy");
    return 0;
  }
  if (rc < 0) {
    char d[128];
    snprintf(d, sizeof d, "bad PROXY protocol header: %s", why);
    refuse(c, d);
    return 0;
  }
  ssize_t k;
  do
    k = recv(c->io.fd, buf, (size_t)rc, 0);
  while (k < 0 && errno == EINTR);
  if (k != rc) { /* peeked bytes are there: this is a broken socket */
    dx__conn_destroy(c);
    return 0;
  }
  DX__INC(c->sl, bytes_in, (uint64_t)k);
  if (!h.local) memcpy(c->addr, h.src.b, 16);
  c->proxy_wait = false;
  return 1;
}

bool dx__forwarded_apply(dx_conn *c, const dx_http_request *req,
                         uint8_t hop[16]) {
  dx_server *srv = c->sl->srv;
  if (!srv->ntrusted) return false;
  dx_ip ip;
  memcpy(ip.b, c->addr, 16);
  if (!dx_http_forwarded_for(req->headers, req->num_headers, srv->trusted,
                             srv->ntrusted, &ip))
    return false;
  memcpy(hop, c->addr, 16);
  memcpy(c->addr, ip.b, 16);
  return true;
}

void dx__forwarded_restore(dx_conn *c, const uint8_t hop[16]) {
  /* A WebSocket, or a rejected upgrade holding a per-IP count, keeps the
   * client address: the count is released under it. */
  if (c->is_ws || c->counted_ip) return;
  memcpy(c->addr, hop, 16);
}
