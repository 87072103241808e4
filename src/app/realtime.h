/*
 * realtime.h — the duplex.v1 channel endpoint of `duplex serve` (docs/
 * protocol.md): pub/sub over JSON on /ws, the HTTP API (/api/publish,
 * /api/topics, /api/ticket), /healthz and /metrics.
 *
 *   realtime *rt = rt_new(srv, &cfg, err, sizeof err);  // before start
 *   dx_server_start(srv); rt_start(rt);                 // after start
 *   dx_server_run(srv); ... rt_free(rt) after dx_server_free? no: before.
 *
 * It sits on the public server API only: a WebSocket route and HTTP routes
 * on the same dx_server, and a dx_pubsub registry whose shards are the
 * server's loops (deliveries are posted to the subscriber's loop).
 */
#ifndef DX_APP_REALTIME_H
#define DX_APP_REALTIME_H

#include "auth.h"

#include <duplex/pubsub.h>
#include <duplex/server.h>

typedef struct realtime realtime;

/* What a subscriber's queue does when it is past the server's high
 * watermark (the client does not read fast enough). */
typedef enum rt_slow_policy {
  RT_SLOW_DROP = 0, /* keep queueing; the server drops the connection at
                       its hard limit (close 1008) */
  RT_SLOW_SKIP,     /* skip messages, then send a gap notice (reason
                       "dropped") when the queue drains: resume with since */
  RT_SLOW_CONFLATE  /* keep only the latest message per topic; send it when
                       the queue drains (tickers) */
} rt_slow_policy;

typedef struct rt_config {
  const char *path;         /* "/ws" when NULL */
  size_t history;           /* per topic; 0: 100 */
  unsigned history_ms;      /* 0: no age limit */
  bool presence;            /* member lists and join/leave events */
  size_t max_subscriptions; /* per connection; 0: 100 */
  size_t max_topics;        /* 0: 10,000 */
  size_t max_frame_json;    /* largest client JSON message; 0: 64 KiB */
  unsigned max_depth;       /* JSON nesting; 0: 32 */
  double rate;              /* messages/s per connection; 0: 50 */
  double burst;             /* bucket size; 0: 2 x rate */
  double bytes_rate;        /* bytes/s per connection; 0: 1 MiB/s */
  rt_slow_policy slow;
  const char *const *origins; /* allowed Origins; NULL: same-origin only */
  auth *auth;                 /* NULL: everyone allowed everything */
  unsigned heartbeat_ms;      /* the server's ping interval, told in hello */
  size_t high_water;          /* the server's soft output limit: past it,
                                 skip/conflate hold messages back; 0: 256 KiB */
  const char *redis_url;      /* the Redis backplane; NULL: in-process */
  const char *redis_prefix;   /* its key prefix; NULL: "dx:" */
  const char *node_id;        /* this node in Redis; NULL: host:pid:random */
  unsigned redis_ttl_ms;      /* topic keys' idle lifetime; 0: 24 h */
} rt_config;

/* Registers the routes on srv (not started yet). NULL with err on failure. */
realtime *rt_new(dx_server *srv, const rt_config *cfg, char *err,
                 size_t errlen);
/* After dx_server_start: ties the registry's shards to the loops. */
int rt_start(realtime *rt);
/* After dx_server_run returned (every connection closed). */
void rt_free(realtime *rt);

#endif
