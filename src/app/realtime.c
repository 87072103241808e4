/*
 * The duplex.v1 channel endpoint: JSON ops on /ws over the pub/sub
 * registry, the HTTP publish API, /healthz and /metrics (docs/protocol.md).
 *
 * A published message is framed once, by the registry's frame hook (the
 * WebSocket frame of {"op":"message",...}), and that same buffer is queued
 * to every subscriber on every loop: the registry posts it to each loop
 * that has subscribers, and the loop hands it to its connections.
 */
#include "realtime.h"

#include <duplex/proto.h>

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct rt_pending {
  char topic[DX_PS_TOPIC_MAX + 1];
  uint64_t from, to; /* skipped seqs (RT_SLOW_SKIP) */
  dx_ps_msg *latest; /* RT_SLOW_CONFLATE */
} rt_pending;

/* A subscribe that waits for the backplane to sync its topic. */
typedef struct rt_waiting {
  char topic[DX_PS_TOPIC_MAX + 1];
  json_t *id; /* the request's "id", or NULL */
  bool again; /* it replaced a subscription (no presence join) */
} rt_waiting;

/* Per connection, in the server's per-connection user area. */
typedef struct rt_conn {
  dx_ps_sub *sub;
  auth_identity id;
  bool open_access; /* no auth configured: everything allowed */
  double tokens, btokens;
  uint64_t last_ms;
  unsigned strikes;
  rt_pending *pend;
  size_t npend;
  rt_waiting *wait;
  size_t nwait;
} rt_conn;

enum rt_counter {
  C_BAD_JSON,
  C_BAD_REQUEST,
  C_UNKNOWN_OP,
  C_FORBIDDEN,
  C_RATE_LIMITED,
  C_TOO_MANY_SUBS,
  C_TOO_LARGE,
  C_BAD_TOPIC,
  C_ORIGIN,
  C_AUTH,
  C_SKIPPED,
  C_CONFLATED,
  C_API_PUBLISH,
  C_API_UNAUTHORIZED,
  C_WS_PUBLISH,
  C_UNAVAILABLE,
  C_COUNT
};
static const char *const counter_names[C_COUNT] = {
    "bad_json",    "bad_request",      "unknown_op",
    "forbidden",   "rate_limited",     "too_many_subscriptions",
    "too_large",   "bad_topic",        "origin",
    "auth",        "skipped",          "conflated",
    "api_publish", "api_unauthorized", "ws_publish",
    "unavailable"};

struct realtime {
  dx_server *srv;
  rt_config cfg;
  dx_pubsub *ps;
  /* The Redis backplane (--redis) and the loop its connections run on, on
   * a thread of its own: Redis traffic never waits behind WebSocket work,
   * and the loops never wait for Redis. */
  dx_ps_redis *redis;
  dx_loop *bp_loop;
  pthread_t bp_thread;
  bool bp_running;
  _Atomic uint64_t counters[C_COUNT];
};

/* One registry per process: the loops' posted jobs find it here. */
static realtime *g_rt;
static _Thread_local int tl_shard = -1;

static void count(realtime *rt, enum rt_counter c) {
  atomic_fetch_add_explicit(&rt->counters[c], 1, memory_order_relaxed);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- sending JSON ------------------------------------------------------- */

static void send_json(dx_conn *c, json_t *obj) {
  char *s = json_dumps(obj, JSON_COMPACT);
  if (s) dx_conn_send(c, DX_OP_TEXT, s, strlen(s));
  free(s);
  json_decref(obj);
}

/* Adds the request's "id" to a reply when it had one. */
static json_t *with_id(json_t *reply, json_t *req) {
  json_t *id = req ? json_object_get(req, "id") : NULL;
  if (id) json_object_set(reply, "id", id);
  return reply;
}

static void send_error(realtime *rt, dx_conn *c, json_t *req,
                       enum rt_counter code, const char *message) {
  count(rt, code);
  json_t *e = json_pack("{s:s, s:s, s:s}", "op", "error", "code",
                        counter_names[code], "message", message);
  send_json(c, with_id(e, req));
}

/* ---- the registry's hooks ------------------------------------------------ */

/* The frame every subscriber gets: one unmasked WebSocket text frame. */
static int frame_hook(void *ud, const dx_ps_frame_info *in, dx_ps_buf *out) {
  (void)ud;
  char prefix[64 + DX_PS_TOPIC_MAX];
  int pn = snprintf(prefix, sizeof prefix,
                    "{\"op\":\"message\",\"topic\":\"%s\",\"seq\":%llu,"
                    "\"data\":",
                    in->topic, (unsigned long long)in->seq);
  uint64_t payload = (uint64_t)pn + in->len + 1;
  uint8_t hdr[14];
  size_t hn = dx_frame_header(hdr, DX_OP_TEXT, true, false, payload, NULL);
  int rc = dx_ps_buf_append(out, hdr, hn);
  if (!rc) rc = dx_ps_buf_append(out, prefix, (size_t)pn);
  if (!rc) rc = dx_ps_buf_append(out, in->data, in->len);
  if (!rc) rc = dx_ps_buf_append(out, "}", 1);
  return rc;
}

static void run_dispatch(void *arg);

/* Topics without subscribers and without history are forgotten now and
 * then (and before refusing to make one past max_topics), so topics a
 * client used once do not fill the registry for good. */
static void sweep_topics(realtime *rt, bool force) {
  static _Atomic uint64_t last;
  uint64_t now = now_ms();
  uint64_t prev = atomic_load_explicit(&last, memory_order_relaxed);
  if (!force && now - prev < 1000) return;
  if (!atomic_compare_exchange_strong(&last, &prev, now) && !force) return;
  dx_ps_sweep(rt->ps, now);
}


static int deliver_hook(void *ud, unsigned shard, dx_ps_msg *msg) {
  realtime *rt = ud;
  return dx_server_post(rt->srv, (int)shard, run_dispatch, msg);
}

static void set_shard(void *arg) {
  tl_shard = (int)(intptr_t)arg;
}

/* ---- slow consumers -------------------------------------------------------
 */

static rt_pending *pending_for(rt_conn *rc, const char *topic) {
  for (size_t i = 0; i < rc->npend; i++)
    if (strcmp(rc->pend[i].topic, topic) == 0) return &rc->pend[i];
  rt_pending *p = realloc(rc->pend, (rc->npend + 1) * sizeof *p);
  if (!p) return NULL;
  rc->pend = p;
  p = &rc->pend[rc->npend++];
  memset(p, 0, sizeof *p);
  snprintf(p->topic, sizeof p->topic, "%s", topic);
  return p;
}

/* The queue is too long: skip or conflate instead of queueing more. */
static void hold_back(realtime *rt, dx_conn *c, rt_conn *rc, dx_ps_msg *msg) {
  rt_pending *p = pending_for(rc, dx_ps_msg_topic(msg));
  if (!p) return;
  /* The queue may drain without ever passing the server's high watermark
   * (the kernel took it all): ask to hear when it does, either way. */
  dx_conn_want_drain(c);
  uint64_t seq = dx_ps_msg_seq(msg);
  if (rt->cfg.slow != RT_SLOW_CONFLATE) {
    /* skip, and drop's replay cut short: the client resumes with since. */
    if (!p->from) p->from = seq;
    p->to = seq;
    count(rt, C_SKIPPED);
  } else {
    if (p->latest) {
      /* The replaced message is lost to this client: say so (a gap with
       * reason "dropped" comes before the latest one). */
      uint64_t old = dx_ps_msg_seq(p->latest);
      if (!p->from) p->from = old;
      p->to = old;
      count(rt, C_CONFLATED);
    }
    dx_ps_msg_decref(p->latest);
    dx_ps_msg_incref(msg);
    p->latest = msg;
  }
}

/* The topic's subscription ends or starts over (unsubscribe, subscribe
 * again): what was held back for the old one must not follow the new
 * answer (no message after "unsubscribed", no gap after a replay). */
static void forget_pending(rt_conn *rc, const char *topic) {
  for (size_t i = 0; i < rc->npend; i++) {
    if (strcmp(rc->pend[i].topic, topic) != 0) continue;
    dx_ps_msg_decref(rc->pend[i].latest);
    rc->pend[i] = rc->pend[--rc->npend];
    return;
  }
}

static void release_pending(rt_conn *rc) {
  for (size_t i = 0; i < rc->npend; i++)
    dx_ps_msg_decref(rc->pend[i].latest);
  free(rc->pend);
  rc->pend = NULL;
  rc->npend = 0;
}

static void on_drain(dx_conn *c, void *ud) {
  (void)ud;
  rt_conn *rc = dx_conn_user(c);
  for (size_t i = 0; i < rc->npend; i++) {
    rt_pending *p = &rc->pend[i];
    if (p->from) {
      json_t *g = json_pack("{s:s, s:s, s:I, s:I, s:s}", "op", "gap", "topic",
                            p->topic, "from", (json_int_t)p->from, "to",
                            (json_int_t)p->to, "reason", "dropped");
      send_json(c, g);
    }
    if (p->latest) {
      size_t n;
      const void *f = dx_ps_msg_frame(p->latest, &n);
      dx_conn_send_frame(c, f, n);
    }
  }
  release_pending(rc);
}

static void complete_subscribe(realtime *rt, dx_conn *c, dx_ps_sub *sub,
                               const char *topic);

/* A backplane lost messages of a live subscription (or the topic's stream
 * restarted): the usual gap notice, in order with the messages. */
static void send_live_gap(dx_conn *c, rt_conn *rc, const char *topic,
                          const dx_ps_gap *g) {
  rt_pending *p = NULL;
  for (size_t i = 0; i < rc->npend; i++)
    if (strcmp(rc->pend[i].topic, topic) == 0) p = &rc->pend[i];
  if (p && g->reason == DX_PS_GAP_DROPPED) {
    /* Held back already: one gap covers both, sent when it drains. */
    if (p->latest) {
      uint64_t old = dx_ps_msg_seq(p->latest);
      if (!p->from) p->from = old;
      dx_ps_msg_decref(p->latest);
      p->latest = NULL;
    }
    if (!p->from) p->from = g->from;
    p->to = g->to;
    return;
  }
  if (p) forget_pending(rc, topic); /* the old epoch's: meaningless now */
  json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "op", "gap", "topic",
                        topic, "from", (json_int_t)g->from, "to",
                        (json_int_t)g->to, "epoch", g->epoch, "reason",
                        g->reason == DX_PS_GAP_EPOCH ? "epoch" : "dropped");
  send_json(c, j);
}

static void send_to_sub(void *ud, dx_ps_sub *sub, dx_ps_msg *msg) {
  realtime *rt = ud;
  dx_conn *c = dx_ps_sub_user(sub);
  rt_conn *rc = dx_conn_user(c);
  dx_ps_kind kind = dx_ps_msg_kind(msg);
  if (kind == DX_PS_READY)
    return complete_subscribe(rt, c, sub, dx_ps_msg_topic(msg));
  if (kind == DX_PS_GAP) {
    dx_ps_gap g;
    if (dx_ps_msg_gap(msg, &g) == 0)
      send_live_gap(c, rc, dx_ps_msg_topic(msg), &g);
    return;
  }
  bool held = rc->npend != 0; /* keep order behind what is held back */
  if (kind == DX_PS_MESSAGE &&
      (held || (rt->cfg.slow != RT_SLOW_DROP &&
                dx_conn_buffered(c) > rt->cfg.high_water))) {
    hold_back(rt, c, rc, msg);
    return;
  }
  size_t n;
  const uint8_t *f = dx_ps_msg_frame(msg, &n);
  if (kind == DX_PS_BROADCAST) { /* a presence event: origin id, frame */
    uint64_t origin;
    if (n < sizeof origin) return;
    memcpy(&origin, f, sizeof origin);
    if (origin == dx_conn_id(c)) return;
    f += sizeof origin;
    n -= sizeof origin;
  }
  dx_conn_send_frame(c, f, n);
}

static void run_dispatch(void *arg) {
  dx_ps_msg *msg = arg;
  realtime *rt = g_rt;
  if (rt && tl_shard >= 0)
    dx_ps_dispatch(rt->ps, (unsigned)tl_shard, msg, send_to_sub, rt);
  dx_ps_msg_decref(msg);
}

/* ---- presence ---------------------------------------------------------- */

/* A presence member: {"id": the token's subject, or the connection's id
 * for anonymous members, "name": the subject or null}. */
static json_t *member_json(dx_conn *c) {
  rt_conn *rc = dx_conn_user(c);
  char idbuf[200];
  /* Connection ids are per node: with Redis, the node makes it unique. */
  if (g_rt && g_rt->redis)
    snprintf(idbuf, sizeof idbuf, "c-%llx@%s",
             (unsigned long long)dx_conn_id(c),
             dx_ps_redis_node_id(g_rt->redis));
  else
    snprintf(idbuf, sizeof idbuf, "c-%llx", (unsigned long long)dx_conn_id(c));
  bool named = rc->id.subject && *rc->id.subject;
  return json_pack("{s:s, s:o}", "id", named ? rc->id.subject : idbuf, "name",
                   named ? json_string(rc->id.subject) : json_null());
}

static void broadcast_presence(realtime *rt, dx_conn *c, const char *topic,
                               const char *op) {
  json_t *m = json_pack("{s:s, s:s, s:o}", "op", op, "topic", topic, "member",
                        member_json(c));
  char *s = json_dumps(m, JSON_COMPACT);
  json_decref(m);
  if (!s) return;
  /* Join and leave go to the other subscribers: the broadcast carries the
   * sender's connection id before the frame, and send_to_sub skips it. */
  uint8_t hdr[14];
  size_t len = strlen(s), hn;
  hn = dx_frame_header(hdr, DX_OP_TEXT, true, false, len, NULL);
  uint64_t origin = dx_conn_id(c);
  uint8_t *frame = malloc(sizeof origin + hn + len);
  if (frame) {
    memcpy(frame, &origin, sizeof origin);
    memcpy(frame + sizeof origin, hdr, hn);
    memcpy(frame + sizeof origin + hn, s, len);
    dx_ps_broadcast(rt->ps, topic, frame, sizeof origin + hn + len);
    if (rt->redis) {
      /* Other nodes' subscribers too; there no connection is the origin
       * (ids are per node), so the origin there is 0. */
      memset(frame, 0, sizeof origin);
      dx_ps_redis_broadcast(rt->redis, topic, frame, sizeof origin + hn + len);
      dx_ps_redis_touch(rt->redis, topic);
    }
  }
  free(frame);
  free(s);
}

static void on_left(void *ud, const char *topic, bool left) {
  void **ctx = ud;
  if (left) broadcast_presence(ctx[0], ctx[1], topic, "leave");
}

static void add_member(void *ud, const char *id, const void *info, size_t len) {
  (void)id;
  json_t *arr = ud;
  json_t *m = json_loadb(info, len, 0, NULL);
  if (m) json_array_append_new(arr, m);
}

/* ---- the ops ------------------------------------------------------------- */

static bool allowed(const rt_conn *rc, int what, const char *topic) {
  return rc->open_access || auth_allows(&rc->id, what, topic);
}

static const char *topic_of(realtime *rt, dx_conn *c, json_t *req) {
  const char *t = json_string_value(json_object_get(req, "topic"));
  if (!t || !dx_ps_topic_valid(t)) {
    send_error(rt, c, req, C_BAD_TOPIC,
               "topic must be 1..128 characters of [A-Za-z0-9_.:/-]");
    return NULL;
  }
  return t;
}

static dx_ps_sub *sub_of(realtime *rt, dx_conn *c) {
  rt_conn *rc = dx_conn_user(c);
  if (rc->sub) return rc->sub;
  json_t *mi = member_json(c);
  char *info = json_dumps(mi, JSON_COMPACT);
  const char *id = json_string_value(json_object_get(mi, "id"));
  dx_ps_member m = {
      .id = id, .info = info, .info_len = info ? strlen(info) : 0};
  rc->sub = dx_ps_sub_new(rt->ps, (unsigned)dx_conn_loop(c), c,
                          rt->cfg.presence && info ? &m : NULL);
  free(info);
  json_decref(mi);
  return rc->sub;
}

static void send_subscribed(realtime *rt, dx_conn *c, json_t *req,
                            const char *topic, const dx_ps_subscribed *res) {
  json_t *r =
      json_pack("{s:s, s:s, s:I, s:s}", "op", "subscribed", "topic", topic,
                "seq", (json_int_t)res->seq, "epoch", res->epoch);
  send_json(c, with_id(r, req));
  if (res->gap != DX_PS_GAP_NONE) {
    json_t *g =
        json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "op", "gap", "topic", topic,
                  "from", (json_int_t)res->gap_from, "to",
                  (json_int_t)res->gap_to, "epoch", res->epoch, "reason",
                  res->gap == DX_PS_GAP_EPOCH ? "epoch" : "history");
    send_json(c, g);
  }
  for (size_t i = 0; i < res->nreplay; i++) {
    /* A long replay must not outgrow the output limits: write as we go,
     * and if the client cannot take it, stop here and say what is left
     * (a "dropped" gap once the queue drains; it resumes with since). */
    if (dx_conn_buffered(c) > rt->cfg.high_water &&
        dx_conn_flush(c) > rt->cfg.high_water) {
      rt_pending *p = pending_for(dx_conn_user(c), topic);
      if (p) {
        p->from = dx_ps_msg_seq(res->replay[i]);
        p->to = res->seq;
        dx_conn_want_drain(c);
      }
      return;
    }
    size_t n;
    const void *f = dx_ps_msg_frame(res->replay[i], &n);
    dx_conn_send_frame(c, f, n);
  }
}

#define UNAVAILABLE_MSG                                                        \
  "the backplane (Redis) is unreachable; try again shortly"

static void forget_waiting(rt_conn *rc, const char *topic) {
  for (size_t i = 0; i < rc->nwait; i++) {
    if (strcmp(rc->wait[i].topic, topic) != 0) continue;
    json_decref(rc->wait[i].id);
    rc->wait[i] = rc->wait[--rc->nwait];
    return;
  }
}

static int wait_for(rt_conn *rc, const char *topic, json_t *req, bool again) {
  rt_waiting *w = realloc(rc->wait, (rc->nwait + 1) * sizeof *w);
  if (!w) return DX_ENOMEM;
  rc->wait = w;
  w = &rc->wait[rc->nwait++];
  snprintf(w->topic, sizeof w->topic, "%s", topic);
  w->id = json_incref(json_object_get(req, "id"));
  w->again = again;
  return 0;
}

static void release_waiting(rt_conn *rc) {
  for (size_t i = 0; i < rc->nwait; i++)
    json_decref(rc->wait[i].id);
  free(rc->wait);
  rc->wait = NULL;
  rc->nwait = 0;
}

/* The topic is synced (or could not be): answer the waiting subscribe. */
static void complete_subscribe(realtime *rt, dx_conn *c, dx_ps_sub *sub,
                               const char *topic) {
  rt_conn *rc = dx_conn_user(c);
  json_t *req = json_object();
  bool again = false;
  for (size_t i = 0; i < rc->nwait; i++) {
    if (strcmp(rc->wait[i].topic, topic) != 0) continue;
    if (rc->wait[i].id) json_object_set(req, "id", rc->wait[i].id);
    again = rc->wait[i].again;
  }
  char name[DX_PS_TOPIC_MAX + 1];
  snprintf(name, sizeof name, "%s", topic); /* the topic may go below */
  forget_waiting(rc, name);
  dx_ps_subscribed res;
  int r = dx_ps_subscribe_complete(sub, name, now_ms(), &res);
  if (r == 0) {
    send_subscribed(rt, c, req, name, &res);
    if (res.joined && !again) broadcast_presence(rt, c, name, "join");
  } else if (r != DX_ESTATE) {
    send_error(rt, c, req, C_UNAVAILABLE, UNAVAILABLE_MSG);
  }
  dx_ps_subscribed_clear(&res);
  json_decref(req);
}

static void op_subscribe(realtime *rt, dx_conn *c, json_t *req) {
  rt_conn *rc = dx_conn_user(c);
  const char *topic = topic_of(rt, c, req);
  if (!topic) return;
  if (!allowed(rc, AUTH_SUBSCRIBE, topic))
    return send_error(rt, c, req, C_FORBIDDEN, "not allowed to subscribe");
  json_t *since = json_object_get(req, "since");
  json_t *epoch = json_object_get(req, "epoch");
  if ((since && (!json_is_integer(since) || json_integer_value(since) < 0)) ||
      (epoch && !json_is_string(epoch)))
    return send_error(rt, c, req, C_BAD_REQUEST,
                      "since is a non-negative integer, epoch a string");
  dx_ps_sub *sub = sub_of(rt, c);
  if (!sub) return send_error(rt, c, req, C_BAD_REQUEST, "out of memory");
  /* Subscribing again (to resume with since after a "dropped" gap, say)
   * replaces the subscription: same answer as a first subscribe, and no
   * count against the limit. The member is back before this callback
   * returns: no presence leave or join is broadcast for it. */
  int was = dx_ps_unsubscribe(sub, topic);
  bool again = was != DX_ESTATE;
  if (again)
    forget_pending(rc, topic);
  else if (dx_ps_sub_count(sub) >= rt->cfg.max_subscriptions)
    return send_error(rt, c, req, C_TOO_MANY_SUBS,
                      "too many subscriptions on this connection");
  dx_ps_resume resume = {.since =
                             since ? (uint64_t)json_integer_value(since) : 0,
                         .epoch = epoch ? json_string_value(epoch) : NULL};
  dx_ps_subscribed res;
  memset(&res, 0, sizeof res);
  int rc2 = dx_ps_subscribe(sub, topic, since ? &resume : NULL, now_ms(), &res);
  if (rc2 == DX_ENOSPC) {
    sweep_topics(rt, true);
    dx_ps_subscribed_clear(&res);
    rc2 = dx_ps_subscribe(sub, topic, since ? &resume : NULL, now_ms(), &res);
  }
  forget_waiting(rc, topic);
  if (rc2 == 0 && res.pending) {
    /* The backplane syncs the topic first; the answer comes with it. */
    if (wait_for(rc, topic, req, again) < 0) {
      dx_ps_unsubscribe(sub, topic);
      send_error(rt, c, req, C_BAD_REQUEST, "out of memory");
    }
  } else if (rc2 == 0) {
    send_subscribed(rt, c, req, topic, &res);
    if (res.joined && !again) broadcast_presence(rt, c, topic, "join");
  } else if (rc2 == DX_EUNAVAIL) {
    send_error(rt, c, req, C_UNAVAILABLE, UNAVAILABLE_MSG);
    if (was == 1) broadcast_presence(rt, c, topic, "leave");
  } else {
    send_error(rt, c, req, rc2 == DX_ENOSPC ? C_TOO_MANY_SUBS : C_BAD_REQUEST,
               rc2 == DX_ENOSPC ? "the server is at its topic limit"
                                : dx_strerror(rc2));
    /* Subscribing again failed: the member did leave after all. */
    if (was == 1) broadcast_presence(rt, c, topic, "leave");
  }
  dx_ps_subscribed_clear(&res);
}

static void op_unsubscribe(realtime *rt, dx_conn *c, json_t *req) {
  rt_conn *rc = dx_conn_user(c);
  const char *topic = topic_of(rt, c, req);
  if (!topic) return;
  int r = rc->sub ? dx_ps_unsubscribe(rc->sub, topic) : DX_ESTATE;
  if (r == DX_ESTATE) {
    count(rt, C_BAD_REQUEST);
    json_t *e =
        json_pack("{s:s, s:s, s:s}", "op", "error", "code", "not_subscribed",
                  "message", "not subscribed to this topic");
    return send_json(c, with_id(e, req));
  }
  forget_pending(rc, topic);
  forget_waiting(rc, topic);
  send_json(
      c, with_id(json_pack("{s:s, s:s}", "op", "unsubscribed", "topic", topic),
                 req));
  if (r == 1) broadcast_presence(rt, c, topic, "leave");
  sweep_topics(rt, false);
}

/*
 * A publish's answer. In-process, the registry calls done before
 * dx_ps_publish_async returns, on this loop: the answer is sent right
 * there. With Redis, done runs later on the backplane's thread, and the
 * answer goes through dx_server_send (or dx_server_http_reply), which
 * post it to the connection's loop. `state` settles which of the two
 * happened, whichever thread gets there first.
 */
enum { PUB_CALLING, PUB_DONE_INLINE, PUB_LATER };

typedef struct pub_wait {
  realtime *rt;
  _Atomic int state;
  uint64_t conn;  /* WebSocket: the connection id */
  bool http;      /* answers POST /api/publish */
  uint64_t token; /* HTTP, answered later: dx_http_defer's token */
  json_t *id;     /* WebSocket: the request's id */
  char topic[DX_PS_TOPIC_MAX + 1];
  int rc;
  dx_ps_published out;
} pub_wait;

static json_t *pub_answer(const pub_wait *w, int *status) {
  *status = 200;
  if (w->rc == 0 && w->http)
    return json_pack("{s:s, s:I, s:s}", "topic", w->topic, "seq",
                     (json_int_t)w->out.seq, "epoch", w->out.epoch);
  if (w->rc == 0) {
    json_t *j = json_pack("{s:s, s:s, s:I}", "op", "published", "topic",
                          w->topic, "seq", (json_int_t)w->out.seq);
    if (w->id) json_object_set(j, "id", w->id);
    return j;
  }
  bool unavail = w->rc == DX_EUNAVAIL;
  count(w->rt, unavail ? C_UNAVAILABLE : C_BAD_REQUEST);
  *status = unavail ? 503 : 500;
  const char *msg = unavail ? UNAVAILABLE_MSG : dx_strerror(w->rc);
  if (w->http)
    return json_pack("{s:s, s:s}", "error",
                     unavail ? "unavailable" : "internal", "message", msg);
  json_t *j = json_pack("{s:s, s:s, s:s}", "op", "error", "code",
                        unavail ? "unavailable" : "bad_request", "message", msg);
  if (w->id) json_object_set(j, "id", w->id);
  return j;
}

/* Answers a request deferred with dx_http_defer, from any thread: obj
 * (taken) as a JSON body and a newline. */
static void defer_reply_json(realtime *rt, uint64_t token, int status,
                             json_t *obj) {
  char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
  json_decref(obj);
  size_t n = s ? strlen(s) : 0;
  if (s) s[n] = '\n';
  dx_server_http_reply(rt->srv, token, s ? status : 500, "application/json",
                       s ? s : "", s ? n + 1 : 0, NULL);
  free(s);
}

/* Where a publish waits for its answer: on the caller's stack in-process
 * (the answer comes before dx_ps_publish_async returns), on the heap with
 * Redis (it comes later, from another thread). NULL: out of memory. */
static pub_wait *pub_new(realtime *rt, pub_wait *local) {
  pub_wait *w = rt->redis ? calloc(1, sizeof *w) : local;
  if (!w) return NULL;
  if (w == local) memset(w, 0, sizeof *w);
  w->rt = rt;
  return w;
}

static void pub_free(pub_wait *w, pub_wait *local) {
  json_decref(w->id);
  if (w != local) free(w);
}

static void pub_done(void *ud, int rc, const dx_ps_published *out) {
  pub_wait *w = ud;
  w->rc = rc;
  if (rc == 0) w->out = *out;
  int expect = PUB_CALLING;
  if (atomic_compare_exchange_strong(&w->state, &expect, PUB_DONE_INLINE))
    return; /* the caller answers */
  /* Later, so from the heap (pub_new): Redis answered. */
  int status;
  json_t *j = pub_answer(w, &status);
  if (w->http) {
    defer_reply_json(w->rt, w->token, status, j);
  } else {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s) dx_server_send(w->rt->srv, w->conn, DX_OP_TEXT, s, strlen(s));
    free(s);
  }
  pub_free(w, NULL);
}

/* Publishes; returns NULL when the answer is already in *w (the caller
 * answers and frees), or w when it comes later (do not touch w). */
static pub_wait *publish_async(realtime *rt, pub_wait *w, const char *s) {
  int r = dx_ps_publish_async(rt->ps, w->topic, s, strlen(s), now_ms(),
                              pub_done, w);
  if (r == DX_ENOSPC) {
    sweep_topics(rt, true);
    r = dx_ps_publish_async(rt->ps, w->topic, s, strlen(s), now_ms(),
                            pub_done, w);
  }
  if (r < 0) {
    w->rc = r;
    return NULL;
  }
  int expect = PUB_CALLING;
  if (atomic_compare_exchange_strong(&w->state, &expect, PUB_LATER)) return w;
  return NULL;
}

static void op_publish(realtime *rt, dx_conn *c, json_t *req) {
  rt_conn *rc = dx_conn_user(c);
  const char *topic = topic_of(rt, c, req);
  if (!topic) return;
  if (!allowed(rc, AUTH_PUBLISH, topic))
    return send_error(rt, c, req, C_FORBIDDEN, "not allowed to publish");
  json_t *data = json_object_get(req, "data");
  if (!data) return send_error(rt, c, req, C_BAD_REQUEST, "publish needs data");
  char *s = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
  pub_wait local, *w = s ? pub_new(rt, &local) : NULL;
  if (!w) {
    free(s);
    return send_error(rt, c, req, C_BAD_REQUEST, "out of memory");
  }
  w->conn = dx_conn_id(c);
  w->id = json_incref(json_object_get(req, "id"));
  snprintf(w->topic, sizeof w->topic, "%s", topic);
  count(rt, C_WS_PUBLISH);
  pub_wait *later = publish_async(rt, w, s);
  free(s);
  if (later) return;
  int status;
  send_json(c, pub_answer(w, &status));
  pub_free(w, &local);
}

typedef struct pres_wait {
  realtime *rt;
  uint64_t conn;
  json_t *id;
  char topic[DX_PS_TOPIC_MAX + 1];
} pres_wait;

static void presence_answer(void *ud, int rc, const dx_ps_member *m,
                            size_t n) {
  pres_wait *w = ud;
  json_t *j;
  if (rc == 0) {
    json_t *members = json_array();
    for (size_t i = 0; i < n; i++)
      add_member(members, m[i].id, m[i].info, m[i].info_len);
    j = json_pack("{s:s, s:s, s:o}", "op", "presence", "topic", w->topic,
                  "members", members);
  } else {
    count(w->rt, C_UNAVAILABLE);
    j = json_pack("{s:s, s:s, s:s}", "op", "error", "code", "unavailable",
                  "message", UNAVAILABLE_MSG);
  }
  if (j && w->id) json_object_set(j, "id", w->id);
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  if (s) dx_server_send(w->rt->srv, w->conn, DX_OP_TEXT, s, strlen(s));
  free(s);
  json_decref(j);
  json_decref(w->id);
  free(w);
}

static void op_presence(realtime *rt, dx_conn *c, json_t *req) {
  rt_conn *rc = dx_conn_user(c);
  const char *topic = topic_of(rt, c, req);
  if (!topic) return;
  if (!allowed(rc, AUTH_SUBSCRIBE, topic))
    return send_error(rt, c, req, C_FORBIDDEN, "not allowed on this topic");
  if (!rt->cfg.presence)
    return send_error(rt, c, req, C_UNKNOWN_OP,
                      "presence is off on this server");
  if (rt->redis) {
    /* Every node's members, from Redis; answered from its thread. */
    pres_wait *w = calloc(1, sizeof *w);
    if (!w) return send_error(rt, c, req, C_BAD_REQUEST, "out of memory");
    w->rt = rt;
    w->conn = dx_conn_id(c);
    w->id = json_incref(json_object_get(req, "id"));
    snprintf(w->topic, sizeof w->topic, "%s", topic);
    int r = dx_ps_redis_presence(rt->redis, topic, presence_answer, w);
    if (r == 0) return;
    json_decref(w->id);
    free(w);
    return send_error(rt, c, req, C_UNAVAILABLE, UNAVAILABLE_MSG);
  }
  json_t *members = json_array();
  dx_ps_presence(rt->ps, topic, add_member, members);
  send_json(c, with_id(json_pack("{s:s, s:s, s:o}", "op", "presence", "topic",
                                 topic, "members", members),
                       req));
}

/* ---- incoming messages ------------------------------------------------------
 */

/* Nesting depth of a JSON text without parsing it: bounded work before
 * the parser sees anything. Returns false past max. */
static bool depth_ok(const uint8_t *p, size_t n, unsigned max) {
  unsigned d = 0;
  bool str = false, esc = false;
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = p[i];
    if (str) {
      if (esc)
        esc = false;
      else if (ch == '\\')
        esc = true;
      else if (ch == '"')
        str = false;
    } else if (ch == '"') {
      str = true;
    } else if (ch == '{' || ch == '[') {
      if (++d > max) return false;
    } else if ((ch == '}' || ch == ']') && d) {
      d--;
    }
  }
  return true;
}

/* Token buckets: messages/s and bytes/s. */
static bool rate_ok(realtime *rt, rt_conn *rc, size_t len) {
  uint64_t now = now_ms();
  double dt = rc->last_ms ? (double)(now - rc->last_ms) / 1000.0 : 0;
  rc->last_ms = now;
  double burst = rt->cfg.burst;
  double bburst = rt->cfg.bytes_rate * 2;
  rc->tokens = rc->tokens + dt * rt->cfg.rate;
  if (rc->tokens > burst) rc->tokens = burst;
  rc->btokens = rc->btokens + dt * rt->cfg.bytes_rate;
  if (rc->btokens > bburst) rc->btokens = bburst;
  if (rc->tokens < 1 || rc->btokens < (double)len) return false;
  rc->tokens -= 1;
  rc->btokens -= (double)len;
  return true;
}

static void on_message(dx_conn *c, dx_opcode op, uint8_t *data, size_t len,
                       void *ud) {
  realtime *rt = ud;
  rt_conn *rc = dx_conn_user(c);
  if (!rate_ok(rt, rc, len)) {
    /* Documented: the message is dropped with an error; a client that
     * keeps going past its limit is closed with 1008. */
    if (++rc->strikes > 20) {
      count(rt, C_RATE_LIMITED);
      dx_conn_close(c, DX_CLOSE_POLICY, "rate limit exceeded");
      return;
    }
    return send_error(rt, c, NULL, C_RATE_LIMITED,
                      "rate limit exceeded: message dropped");
  }
  rc->strikes = 0;
  if (op != DX_OP_TEXT)
    return send_error(rt, c, NULL, C_BAD_REQUEST,
                      "messages are JSON text frames");
  if (len > rt->cfg.max_frame_json)
    return send_error(rt, c, NULL, C_TOO_LARGE, "message too large");
  if (!depth_ok(data, len, rt->cfg.max_depth))
    return send_error(rt, c, NULL, C_BAD_JSON, "JSON nested too deeply");
  json_error_t jerr;
  json_t *req =
      json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!req) return send_error(rt, c, NULL, C_BAD_JSON, jerr.text);
  const char *opname = json_string_value(json_object_get(req, "op"));
  if (!json_is_object(req))
    send_error(rt, c, NULL, C_BAD_JSON, "a request is one JSON object");
  else if (!opname)
    send_error(rt, c, req, C_BAD_REQUEST, "a request needs an op");
  else if (!strcmp(opname, "subscribe"))
    op_subscribe(rt, c, req);
  else if (!strcmp(opname, "unsubscribe"))
    op_unsubscribe(rt, c, req);
  else if (!strcmp(opname, "publish"))
    op_publish(rt, c, req);
  else if (!strcmp(opname, "presence"))
    op_presence(rt, c, req);
  else if (!strcmp(opname, "ping"))
    send_json(c, with_id(json_pack("{s:s}", "op", "pong"), req));
  else
    send_error(rt, c, req, C_UNKNOWN_OP, "unknown op");
  json_decref(req);
}

/* ---- connection lifetime
 * ----------------------------------------------------- */

static const char *header(const dx_upgrade_request *r, const char *name) {
  static _Thread_local char buf[512];
  const dx_header *h = dx_http_header(r->headers, r->num_headers, name);
  if (!h) return NULL;
  snprintf(buf, sizeof buf, "%.*s", (int)h->value_len, h->value);
  return buf;
}

/* Same-origin by default: the Origin's authority must be the Host. */
static bool origin_ok(realtime *rt, const dx_upgrade_request *req) {
  if (!req->origin || rt->cfg.origins) return true; /* the route checks */
  const char *o = strstr(req->origin, "://");
  const char *host = header(req, "Host");
  return o && host && strcasecmp(o + 3, host) == 0;
}

static int on_accept(dx_conn *c, const dx_upgrade_request *req, void *ud) {
  realtime *rt = ud;
  rt_conn *rc = dx_conn_user(c);
  if (!origin_ok(rt, req)) {
    count(rt, C_ORIGIN);
    fprintf(stderr,
            "duplex serve: rejected cross-site WebSocket from Origin "
            "%s (allow it with --origin)\n",
            req->origin);
    return 403;
  }
  rc->tokens = rt->cfg.burst;
  rc->btokens = rt->cfg.bytes_rate * 2;
  if (!rt->cfg.auth) {
    rc->open_access = true;
    return 0;
  }
  int st = auth_check_upgrade(rt->cfg.auth, req, time(NULL), &rc->id);
  if (st) count(rt, C_AUTH);
  return st;
}

static void on_open(dx_conn *c, void *ud) {
  realtime *rt = ud;
  json_t *h = json_pack("{s:s, s:i, s:s, s:i}", "op", "hello", "version", 1,
                        "server", "duplex/" DX_VERSION_STRING, "heartbeat",
                        (int)rt->cfg.heartbeat_ms);
  send_json(c, h);
}

static void on_close(dx_conn *c, uint16_t code, const char *reason, size_t len,
                     void *ud) {
  (void)code, (void)reason, (void)len;
  realtime *rt = ud;
  rt_conn *rc = dx_conn_user(c);
  if (rc->sub) {
    void *ctx[2] = {rt, c};
    dx_ps_unsubscribe_all(rc->sub, rt->cfg.presence ? on_left : NULL, ctx);
    dx_ps_sub_free(rc->sub);
    rc->sub = NULL;
    sweep_topics(rt, false);
  }
  release_pending(rc);
  release_waiting(rc);
  auth_identity_clear(&rc->id);
}

/* ---- the HTTP API -------------------------------------------------------- */

static const char *view_header(const dx_http_view *v, const char *name) {
  static _Thread_local char buf[1024];
  const dx_header *h = dx_http_header(v->headers, v->num_headers, name);
  if (!h) return NULL;
  snprintf(buf, sizeof buf, "%.*s", (int)h->value_len, h->value);
  return buf;
}

static void reply_json_with(dx_http_exchange *x, int status, json_t *obj,
                            const char *extra_headers) {
  char *s = json_dumps(obj, JSON_COMPACT);
  json_decref(obj);
  if (!s) {
    dx_http_respond(x, 500, "text/plain", "out of memory\n", 14, NULL);
    return;
  }
  size_t n = strlen(s);
  s[n] = '\n';
  dx_http_respond(x, status, "application/json", s, n + 1, extra_headers);
  free(s);
}

static void reply_json(dx_http_exchange *x, int status, json_t *obj) {
  reply_json_with(x, status, obj,
                  status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
}

static const char *status_code_name(int status) {
  switch (status) {
  case 400:
    return "bad_request";
  case 401:
    return "unauthorized";
  case 403:
    return "forbidden";
  case 404:
    return "not_found";
  case 405:
    return "method_not_allowed";
  case 413:
    return "too_large";
  case 503:
    return "unavailable";
  default:
    return "internal";
  }
}

static void reply_code(dx_http_exchange *x, int status, const char *code,
                       const char *msg) {
  reply_json(x, status, json_pack("{s:s, s:s}", "error", code, "message", msg));
}

static void reply_error(dx_http_exchange *x, int status, const char *msg) {
  reply_code(x, status, status_code_name(status), msg);
}

/* RFC 9110 15.5.6: a 405 names the allowed method; the body is JSON like
 * every API error (docs/protocol.md 11). */
static void reply_405(dx_http_exchange *x, const char *allow) {
  char hdr[32], msg[32];
  snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
  snprintf(msg, sizeof msg, "%s only", allow);
  reply_json_with(
      x, 405,
      json_pack("{s:s, s:s}", "error", "method_not_allowed", "message", msg),
      hdr);
}

/* API key check; false after answering 401. */
static bool api_authorized(realtime *rt, dx_http_exchange *x,
                           const dx_http_view *v) {
  if (!rt->cfg.auth) return true;
  if (auth_check_api_key(rt->cfg.auth, view_header(v, "Authorization")) == 0)
    return true;
  count(rt, C_API_UNAUTHORIZED);
  reply_error(x, 401, "a valid API key is required (Authorization: Bearer)");
  return false;
}

static void api_publish(dx_http_exchange *x, const dx_http_view *v, void *ud) {
  realtime *rt = ud;
  if (strcmp(v->method, "POST") != 0) {
    reply_405(x, "POST");
    return;
  }
  if (!api_authorized(rt, x, v)) return;
  json_error_t jerr;
  json_t *body = depth_ok(v->body, v->body_len, rt->cfg.max_depth)
                     ? json_loadb((const char *)v->body, v->body_len,
                                  JSON_REJECT_DUPLICATES, &jerr)
                     : NULL;
  const char *topic = json_string_value(json_object_get(body, "topic"));
  json_t *data = json_object_get(body, "data");
  if (!json_is_object(body)) {
    json_decref(body);
    return reply_code(x, 400, "bad_json", "the body is one JSON object");
  }
  if (!topic || !dx_ps_topic_valid(topic)) {
    json_decref(body);
    return reply_code(x, 400, "bad_topic",
                      "topic must be 1..128 characters of [A-Za-z0-9_.:/-]");
  }
  if (!data) {
    json_decref(body);
    return reply_code(x, 400, "bad_request", "the body needs \"data\"");
  }
  char *s = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
  pub_wait local, *w = s ? pub_new(rt, &local) : NULL;
  if (w) snprintf(w->topic, sizeof w->topic, "%s", topic);
  json_decref(body);
  if (!w) {
    free(s);
    return reply_error(x, 500, "out of memory");
  }
  w->http = true;
  /* With Redis the answer comes later, maybe from the backplane's thread
   * before dx_ps_publish_async has even returned: defer first. */
  if (rt->redis) w->token = dx_http_defer(x);
  count(rt, C_API_PUBLISH);
  pub_wait *later = publish_async(rt, w, s);
  free(s);
  if (later) return;
  int status;
  json_t *j = pub_answer(w, &status);
  if (w->rc == DX_ENOSPC) {
    json_decref(j);
    j = json_pack("{s:s, s:s}", "error", "unavailable", "message",
                  "the server is at its topic limit");
    status = 503;
  }
  if (w->token)
    defer_reply_json(rt, w->token, status, j);
  else
    reply_json(x, status, j);
  pub_free(w, &local);
}

static void add_topic(void *ud, const dx_ps_topic_info *t) {
  json_array_append_new(ud, json_pack("{s:s, s:I, s:s, s:I, s:I}", "topic",
                                      t->topic, "seq", (json_int_t)t->seq,
                                      "epoch", t->epoch, "subscribers",
                                      (json_int_t)t->subscribers, "retained",
                                      (json_int_t)t->retained));
}

typedef struct topics_wait {
  realtime *rt;
  uint64_t token;
} topics_wait;

typedef struct topics_merge {
  json_t *byname, *arr;
} topics_merge;

/* This node's own view is fresher than what it last wrote to Redis (every
 * two seconds): its retained count, its subscribers, and topics it has
 * that Redis's list does not show yet. */
static void local_retained(void *ud, const dx_ps_topic_info *t) {
  topics_merge *m = ud;
  json_t *e = json_object_get(m->byname, t->topic);
  if (!e && !t->subscribers && !t->retained) return;
  if (!e) {
    e = json_pack("{s:s, s:I, s:s, s:I, s:I}", "topic", t->topic, "seq",
                  (json_int_t)t->seq, "epoch", t->epoch, "subscribers",
                  (json_int_t)t->subscribers, "nodes",
                  (json_int_t)(t->subscribers ? 1 : 0));
    json_array_append_new(m->arr, e);
  }
  json_object_set_new(e, "retained", json_integer((json_int_t)t->retained));
  json_object_set_new(e, "local_subscribers",
                      json_integer((json_int_t)t->subscribers));
}

/* With Redis: the topics with subscribers on any live node, their
 * cluster-wide counts, seq and epoch from Redis, and what this node
 * retains of each. */
static void topics_answer(void *ud, int rc, const dx_ps_redis_topic *t,
                          size_t n, size_t nodes) {
  topics_wait *w = ud;
  realtime *rt = w->rt;
  json_t *j;
  int status = 200;
  if (rc == 0) {
    json_t *arr = json_array(), *byname = json_object();
    for (size_t i = 0; i < n; i++) {
      json_t *e = json_pack("{s:s, s:I, s:s, s:I, s:I, s:I, s:I}", "topic",
                            t[i].topic, "seq", (json_int_t)t[i].seq, "epoch",
                            t[i].epoch, "subscribers",
                            (json_int_t)t[i].subscribers, "nodes",
                            (json_int_t)t[i].nodes, "retained", (json_int_t)0,
                            "local_subscribers", (json_int_t)0);
      json_array_append(arr, e);
      json_object_set_new(byname, t[i].topic, e);
    }
    topics_merge m = {byname, arr};
    dx_ps_topics(rt->ps, now_ms(), local_retained, &m);
    json_decref(byname);
    j = json_pack("{s:o, s:I}", "topics", arr, "nodes", (json_int_t)nodes);
  } else {
    count(rt, C_UNAVAILABLE);
    status = 503;
    j = json_pack("{s:s, s:s}", "error", "unavailable", "message",
                  UNAVAILABLE_MSG);
  }
  defer_reply_json(rt, w->token, status, j);
  free(w);
}

static void api_topics(dx_http_exchange *x, const dx_http_view *v, void *ud) {
  realtime *rt = ud;
  if (strcmp(v->method, "GET") != 0) {
    reply_405(x, "GET");
    return;
  }
  if (!api_authorized(rt, x, v)) return;
  if (rt->redis) {
    topics_wait *w = calloc(1, sizeof *w);
    if (!w) return reply_error(x, 500, "out of memory");
    w->rt = rt;
    w->token = dx_http_defer(x);
    int r = dx_ps_redis_topics(rt->redis, topics_answer, w);
    if (r == 0) return;
    topics_answer(w, r, NULL, 0, 0);
    return;
  }
  json_t *arr = json_array();
  dx_ps_topics(rt->ps, now_ms(), add_topic, arr);
  reply_json(x, 200, json_pack("{s:o}", "topics", arr));
}

static void api_ticket(dx_http_exchange *x, const dx_http_view *v, void *ud) {
  realtime *rt = ud;
  if (strcmp(v->method, "POST") != 0) {
    reply_405(x, "POST");
    return;
  }
  if (!rt->cfg.auth || !auth_tickets_allowed(rt->cfg.auth))
    return reply_error(x, 403, "tickets need API keys (or auth off)");
  if (!api_authorized(rt, x, v)) return;
  auth_identity id;
  char err[200];
  int st = auth_identity_from_json(rt->cfg.auth, (const char *)v->body,
                                   v->body_len, &id, err, sizeof err);
  if (st) return reply_error(x, st, st == 400 ? err : "cannot issue");
  char ticket[AUTH_TICKET_LEN + 1];
  st = auth_ticket_issue(rt->cfg.auth, &id, time(NULL), ticket);
  auth_identity_clear(&id);
  if (st) return reply_error(x, st, "cannot issue a ticket now");
  reply_json(x, 200,
             json_pack("{s:s, s:i}", "ticket", ticket, "expires_in",
                       (int)auth_ticket_ttl(rt->cfg.auth)));
}

/* 200 when the node can do everything; 503 "degraded" while the Redis
 * backplane is unreachable or still re-syncing topics after a reconnect
 * (load balancers then send new clients elsewhere). */
static void api_healthz(dx_http_exchange *x, const dx_http_view *v, void *ud) {
  realtime *rt = ud;
  (void)v;
  if (!rt->redis) {
    static const char ok[] = "{\"status\":\"ok\"}\n";
    dx_http_respond(x, 200, "application/json", ok, sizeof ok - 1,
                    "Cache-Control: no-store\r\n");
    return;
  }
  dx_ps_redis_status st;
  dx_ps_redis_status_get(rt->redis, &st);
  json_t *j = json_pack("{s:s, s:{s:s, s:b, s:I, s:I}}", "status",
                        st.healthy ? "ok" : "degraded", "redis", "state",
                        st.healthy     ? "up"
                        : st.connected ? "syncing"
                                       : "down",
                        "connected", st.connected, "syncing",
                        (json_int_t)st.syncing, "inflight",
                        (json_int_t)st.inflight);
  if (j && st.error[0])
    json_object_set_new(json_object_get(j, "redis"), "error",
                        json_string(st.error));
  reply_json_with(x, st.healthy ? 200 : 503, j, "Cache-Control: no-store\r\n");
}

/* ---- /metrics --------------------------------------------------------------
 */

typedef struct mbuf {
  char *p;
  size_t n, cap;
} mbuf;

static void mprintf(mbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void mprintf(mbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < b->cap - b->n) {
      b->n += (size_t)k;
      return;
    }
    size_t ncap = (b->cap + (size_t)k) * 2;
    char *q = realloc(b->p, ncap);
    if (!q) return;
    b->p = q;
    b->cap = ncap;
  }
}

static void metric(mbuf *b, const char *name, const char *type,
                   const char *help, uint64_t v) {
  mprintf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type,
          name, (unsigned long long)v);
}

#define MAX_TOPIC_SERIES 50

typedef struct topic_series {
  mbuf *b;
  size_t listed, unlisted;
} topic_series;

static void topic_metric(void *ud, const dx_ps_topic_info *t) {
  topic_series *ts = ud;
  /* Bounded label cardinality: the first MAX_TOPIC_SERIES topics only;
   * the rest are counted in duplex_topics_unlisted. */
  if (ts->listed == MAX_TOPIC_SERIES) {
    ts->unlisted++;
    return;
  }
  ts->listed++;
  mprintf(ts->b, "duplex_topic_subscribers{topic=\"%s\"} %zu\n", t->topic,
          t->subscribers);
  mprintf(ts->b, "duplex_topic_seq{topic=\"%s\"} %llu\n", t->topic,
          (unsigned long long)t->seq);
}

static void server_metrics(mbuf *b, const dx_server_stats *s) {
  metric(b, "duplex_connections", "gauge", "Open TCP connections.",
         s->connections);
  metric(b, "duplex_websockets", "gauge", "Open WebSocket connections.",
         s->websockets);
  metric(b, "duplex_accepted_total", "counter", "Accepted TCP connections.",
         s->accepted);
  metric(b, "duplex_messages_received_total", "counter",
         "WebSocket messages received.", s->messages_in);
  metric(b, "duplex_messages_sent_total", "counter", "WebSocket messages sent.",
         s->messages_out);
  metric(b, "duplex_bytes_received_total", "counter", "Bytes read.",
         s->bytes_in);
  metric(b, "duplex_bytes_sent_total", "counter", "Bytes written.",
         s->bytes_out);
  metric(b, "duplex_http_requests_total", "counter", "HTTP requests.",
         s->http_requests);
  mprintf(b, "# HELP duplex_dropped_connections_total Connections the server "
             "closed, by reason.\n# TYPE duplex_dropped_connections_total "
             "counter\n");
  mprintf(b,
          "duplex_dropped_connections_total{reason=\"slow_consumer\"} "
          "%llu\n",
          (unsigned long long)s->closed_slow);
  mprintf(b,
          "duplex_dropped_connections_total{reason=\"ping_timeout\"} "
          "%llu\n",
          (unsigned long long)s->closed_ping);
  mprintf(b,
          "duplex_dropped_connections_total{reason=\"handshake_timeout\"} "
          "%llu\n",
          (unsigned long long)s->closed_handshake_timeout);
  mprintf(b,
          "duplex_dropped_connections_total{reason=\"protocol_error\"} "
          "%llu\n",
          (unsigned long long)s->protocol_errors);
  static const unsigned bounds[] = DX_HANDSHAKE_BUCKETS_MS;
  mprintf(b, "# HELP duplex_handshake_seconds Accept to 101 (TLS "
             "included).\n# TYPE duplex_handshake_seconds histogram\n");
  uint64_t cum = 0;
  for (int i = 0; i < 12; i++) {
    cum += s->handshake_le[i];
    if (i < 11)
      mprintf(b, "duplex_handshake_seconds_bucket{le=\"%g\"} %llu\n",
              bounds[i] / 1000.0, (unsigned long long)cum);
    else
      mprintf(b, "duplex_handshake_seconds_bucket{le=\"+Inf\"} %llu\n",
              (unsigned long long)cum);
  }
  mprintf(b,
          "duplex_handshake_seconds_sum %g\nduplex_handshake_seconds_count "
          "%llu\n",
          (double)s->handshake_ms_sum / 1000.0, (unsigned long long)cum);
}

static void api_metrics(dx_http_exchange *x, const dx_http_view *v, void *ud) {
  (void)v;
  realtime *rt = ud;
  mbuf b = {0};
  dx_server_stats s;
  dx_server_stats_get(rt->srv, &s);
  server_metrics(&b, &s);
  mprintf(&b, "# HELP duplex_rejections_total Requests and messages "
              "rejected, by reason.\n# TYPE duplex_rejections_total counter\n");
  mprintf(&b, "duplex_rejections_total{reason=\"origin\"} %llu\n",
          (unsigned long long)(s.rejected_origin +
                               atomic_load(&rt->counters[C_ORIGIN])));
  mprintf(&b, "duplex_rejections_total{reason=\"quota\"} %llu\n",
          (unsigned long long)s.rejected_quota);
  mprintf(&b, "duplex_rejections_total{reason=\"auth\"} %llu\n",
          (unsigned long long)s.rejected_auth);
  mprintf(&b, "duplex_rejections_total{reason=\"http\"} %llu\n",
          (unsigned long long)s.rejected_http);
  for (int i = 0; i < C_COUNT; i++)
    if (i != C_ORIGIN && i != C_AUTH && i != C_API_PUBLISH &&
        i != C_WS_PUBLISH && i != C_SKIPPED && i != C_CONFLATED)
      mprintf(&b, "duplex_rejections_total{reason=\"%s\"} %llu\n",
              counter_names[i],
              (unsigned long long)atomic_load(&rt->counters[i]));
  dx_pubsub_stats ps;
  dx_pubsub_stats_get(rt->ps, &ps);
  metric(&b, "duplex_topics", "gauge", "Topics in the registry.", ps.topics);
  metric(&b, "duplex_subscriptions", "gauge", "Topic subscriptions.",
         ps.subscriptions);
  metric(&b, "duplex_published_total", "counter", "Messages published.",
         ps.published);
  metric(&b, "duplex_deliveries_failed_total", "counter",
         "Messages a loop could not be handed.", ps.deliver_failed);
  metric(&b, "duplex_slow_skipped_total", "counter",
         "Messages skipped for slow subscribers (gap notices follow).",
         atomic_load(&rt->counters[C_SKIPPED]));
  metric(&b, "duplex_slow_conflated_total", "counter",
         "Messages replaced by a newer one for slow subscribers.",
         atomic_load(&rt->counters[C_CONFLATED]));
  mprintf(&b,
          "# HELP duplex_topic_subscribers Subscribers per topic (first "
          "%d topics).\n# TYPE duplex_topic_subscribers gauge\n# TYPE "
          "duplex_topic_seq gauge\n",
          MAX_TOPIC_SERIES);
  topic_series ts = {&b, 0, 0};
  dx_ps_topics(rt->ps, now_ms(), topic_metric, &ts);
  metric(&b, "duplex_topics_unlisted", "gauge",
         "Topics left out of the per-topic series.", ts.unlisted);
  if (rt->redis) {
    dx_ps_redis_status st;
    dx_ps_redis_status_get(rt->redis, &st);
    metric(&b, "duplex_redis_up", "gauge",
           "1 while connected to Redis and every topic is synced.",
           st.healthy);
    metric(&b, "duplex_redis_published_total", "counter",
           "Publishes Redis sequenced for this node.", st.published);
    metric(&b, "duplex_redis_publish_failed_total", "counter",
           "Publishes refused or lost because Redis was unreachable.",
           st.publish_failed);
    metric(&b, "duplex_redis_received_total", "counter",
           "Messages received from the Redis channel (all topics).",
           st.received);
    metric(&b, "duplex_redis_reconnects_total", "counter",
           "Reconnections to Redis.", st.reconnects);
    metric(&b, "duplex_redis_inflight", "gauge",
           "Publishes waiting for Redis.", st.inflight);
  }
  dx_http_respond(x, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.n,
                  NULL);
  free(b.p);
}

/* ---- setup ----------------------------------------------------------------
 */

static void fill_defaults(rt_config *c) {
  if (!c->path) c->path = "/ws";
  if (!c->history) c->history = 100;
  if (!c->max_subscriptions) c->max_subscriptions = 100;
  if (!c->max_topics) c->max_topics = 10000;
  if (!c->max_frame_json) c->max_frame_json = 64 << 10;
  if (!c->max_depth) c->max_depth = 32;
  if (c->rate <= 0) c->rate = 50;
  if (c->burst <= 0) c->burst = 2 * c->rate;
  if (c->bytes_rate <= 0) c->bytes_rate = 1 << 20;
  if (!c->high_water) c->high_water = 256 << 10;
}

static const char *const protocols[] = {"duplex.v1", NULL};

realtime *rt_new(dx_server *srv, const rt_config *cfg, char *err,
                 size_t errlen) {
  realtime *rt = calloc(1, sizeof *rt);
  if (!rt) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  rt->srv = srv;
  rt->cfg = *cfg;
  fill_defaults(&rt->cfg);
  if (rt->cfg.redis_url) {
    const char *why = NULL;
    rt->bp_loop = dx_loop_new(&(dx_loop_config){.recv_buffer = 64 << 10});
    rt->redis = rt->bp_loop ? dx_ps_redis_new(
                                  &(dx_ps_redis_config){
                                      .url = rt->cfg.redis_url,
                                      .loop = rt->bp_loop,
                                      .history = rt->cfg.history,
                                      .prefix = rt->cfg.redis_prefix,
                                      .node_id = rt->cfg.node_id,
                                      .key_ttl_ms = rt->cfg.redis_ttl_ms},
                                  &why)
                            : NULL;
    if (!rt->redis) {
      snprintf(err, errlen, "--redis %s: %s", rt->cfg.redis_url,
               why ? why : "out of memory");
      dx_loop_free(rt->bp_loop);
      free(rt);
      return NULL;
    }
  }
  dx_pubsub_config pc = {.shards = (unsigned)dx_server_loop_count(srv),
                         .history = rt->cfg.history,
                         .history_ms = rt->cfg.history_ms,
                         .max_topics = rt->cfg.max_topics,
                         .presence = rt->cfg.presence,
                         .deliver = deliver_hook,
                         .frame = frame_hook,
                         .ud = rt,
                         .backplane = rt->redis
                                          ? dx_ps_redis_backplane(rt->redis)
                                          : NULL};
  rt->ps = dx_pubsub_new(&pc);
  if (!rt->ps && rt->redis) {
    /* Not given to a registry: nothing else frees it. */
    dx_ps_redis_backplane(rt->redis)->free(rt->redis);
    rt->redis = NULL;
  }
  dx_route r = {.path = rt->cfg.path,
                .on_accept = on_accept,
                .on_open = on_open,
                .on_message = on_message,
                .on_close = on_close,
                .on_drain = on_drain,
                .ud = rt,
                .subprotocols = protocols,
                .origins = rt->cfg.origins,
                .deflate = true,
                .user_size = sizeof(rt_conn)};
  int rc = rt->ps ? dx_server_route(srv, &r) : DX_ENOMEM;
  if (!rc) rc = dx_server_http(srv, "/api/publish", api_publish, rt);
  if (!rc) rc = dx_server_http(srv, "/api/topics", api_topics, rt);
  if (!rc) rc = dx_server_http(srv, "/api/ticket", api_ticket, rt);
  if (!rc) rc = dx_server_http(srv, "/healthz", api_healthz, rt);
  if (!rc) rc = dx_server_http(srv, "/metrics", api_metrics, rt);
  if (rc) {
    snprintf(err, errlen, "cannot set up %s: %s", rt->cfg.path,
             rc == DX_EINVAL ? "the path is taken" : dx_strerror(rc));
    rt_free(rt);
    return NULL;
  }
  g_rt = rt;
  return rt;
}

static void *bp_main(void *arg) {
  dx_loop_run(arg);
  return NULL;
}

int rt_start(realtime *rt) {
  /* Loop queues are FIFO: each loop learns its shard before any delivery. */
  for (int i = 0; i < dx_server_loop_count(rt->srv); i++) {
    int rc = dx_server_post(rt->srv, i, set_shard, (void *)(intptr_t)i);
    if (rc) return rc;
  }
  if (rt->redis) {
    int rc = dx_ps_redis_start(rt->redis, rt->ps);
    if (rc) return rc;
    /* The server takes SIGINT/SIGTERM/SIGHUP through a signalfd, which
     * only works while every thread blocks them: this one is made with
     * all signals blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&rt->bp_thread, NULL, bp_main, rt->bp_loop);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) return DX_ENOMEM;
    rt->bp_running = true;
  }
  return 0;
}

void rt_free(realtime *rt) {
  if (!rt) return;
  if (g_rt == rt) g_rt = NULL;
  if (rt->bp_running) {
    dx_loop_stop(rt->bp_loop);
    pthread_join(rt->bp_thread, NULL);
  }
  dx_pubsub_free(rt->ps); /* frees the backplane too */
  dx_loop_free(rt->bp_loop);
  free(rt);
}
