/*
 * The Redis backplane: topics shared by several nodes (pubsub.h, "the
 * Redis backplane", has the model and the keys).
 *
 * THREADS
 * Publishers (any thread) and the registry's hooks (shard threads, under a
 * topic lock) only touch what r->mu guards: the publish queue, the topic
 * table's want/sync flags, the dirty list, the status. They never call
 * hiredis: they queue and kick the backplane's loop, whose thread does
 * all the I/O and every call back into the registry. That is why the
 * registry's hooks can be called under its locks: nothing here calls the
 * registry while holding r->mu, and the loop thread holds no registry lock
 * when it takes r->mu.
 *
 * TWO CONNECTIONS, ONE CHANNEL
 * RESP2 allows nothing but (un)subscribing on a subscribed connection, so
 * commands go on one and the channel on the other. Every node subscribes
 * to ONE channel that carries every topic's messages, and drops those of
 * topics it has no subscriber for. Per-topic channels would spare a node
 * the traffic of topics it does not serve, at the price of a SUBSCRIBE
 * and UNSUBSCRIBE for every topic that gains or loses its last local
 * subscriber, and of the window between them (hiredis 0.14 drops a
 * channel's callback when an UNSUBSCRIBE crosses a new SUBSCRIBE). One
 * channel has no window: it is subscribed before any topic syncs.
 *
 * WHY NOTHING IS LOST OR DOUBLED
 * A sync runs one script that reads the topic's epoch, seq and the stream
 * after what this node has, atomically. The channel subscription was
 * confirmed before the script was sent, so every message with a seq past
 * the script's is on the channel after it. Channel messages of a topic
 * that is syncing are held until the script's answer is applied, then
 * ingested: dx_ps_ingest drops the ones the answer already had (seq <=)
 * and the rest follow in order. A lost connection marks every topic stale;
 * the reconnect re-subscribes first, then syncs each again the same way.
 */
#include "pubsub/internal.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define DEFAULT_TTL_MS (24ULL * 3600 * 1000)
#define DEFAULT_INFLIGHT 10000
#define DEFAULT_TIMEOUT_MS 3000
#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000
#define PING_EVERY_MS 1000
#define TICK_MS 250
/* Channel messages held for one topic while it syncs. Past it, the held
 * ones are dropped and the topic syncs again (the history has them). */
#define HOLD_MAX 10000

/* KEYS: hash, stream. ARGV: data, new epoch, history, ttl, channel, topic.
 * The stream is trimmed approximately (MAXLEN ~: whole blocks of entries,
 * so it keeps at least `history` and at most a block more): a third less
 * of Redis's time per publish than an exact trim; the nodes keep exactly
 * `history` of what a sync returns.
 * The epoch is made here when the hash is missing: the only time a topic's
 * stream restarts is when Redis lost (or expired) it. */
static const char publish_lua[] =
    "local e = redis.call('HGET', KEYS[1], 'epoch')\n"
    "if not e then\n"
    "  e = ARGV[2]\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  redis.call('HSET', KEYS[1], 'epoch', e, 'seq', 0)\n"
    "end\n"
    "local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)\n"
    "if tonumber(ARGV[3]) > 0 then\n"
    "  local t = redis.call('TIME')\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0',\n"
    "             'd', ARGV[1], 't', t[1] .. string.format('%03d',\n"
    "             math.floor(t[2] / 1000)))\n"
    "  redis.call('PEXPIRE', KEYS[2], ARGV[4])\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "redis.call('PUBLISH', ARGV[5], ARGV[6] .. '\\n' .. e .. '\\n' .. seq ..\n"
    "           '\\n' .. ARGV[1])\n"
    "return {seq, e}\n";

/* KEYS: hash, stream. ARGV: our epoch, our seq, new epoch, ttl, history.
 * Returns {epoch, seq, entries after ours (or all, another epoch), time}.
 * Making the epoch on a read too means every node agrees on it before the
 * first publish. */
static const char sync_lua[] =
    "local e = redis.call('HGET', KEYS[1], 'epoch')\n"
    "if not e then\n"
    "  e = ARGV[3]\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  redis.call('HSET', KEYS[1], 'epoch', e, 'seq', 0)\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))\n"
    "local from = 1\n"
    "if e == ARGV[1] then from = tonumber(ARGV[2]) + 1 end\n"
    "local entries = {}\n"
    "if from <= seq and tonumber(ARGV[5]) > 0 then\n"
    "  redis.call('PEXPIRE', KEYS[2], ARGV[4])\n"
    "  entries = redis.call('XRANGE', KEYS[2], from .. '-0', '+')\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "return {e, seq, entries, t[1] .. string.format('%03d',\n"
    "        math.floor(t[2] / 1000))}\n";

/* KEYS: this node's presence hash for the topic, the topic's zset of
 * nodes. ARGV: node, ttl, then id, info pairs (none: the node has no
 * member there any more). Scores are Redis's clock: no node's clock skew
 * matters. */
static const char presence_put_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "redis.call('DEL', KEYS[1])\n"
    "if #ARGV > 2 then\n"
    "  for i = 3, #ARGV, 2 do\n"
    "    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])\n"
    "  end\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])\n"
    "  redis.call('PEXPIRE', KEYS[2], ARGV[2])\n"
    "else\n"
    "  redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "return 1\n";

/* KEYS: the topic's zset of nodes. ARGV: the presence hash names' prefix
 * (the node is appended). Returns id, info, id, info... of live nodes. */
static const char presence_get_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local out = {}\n"
    "for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) "
    "do\n"
    "  local h = redis.call('HGETALL', ARGV[1] .. n)\n"
    "  for i = 1, #h do out[#out + 1] = h[i] end\n"
    "end\n"
    "return out\n";

/* KEYS: this node's counts hash, the zset of nodes. ARGV: node, ttl, the
 * topic keys' ttl to renew ("0": not this time), the key prefix, then
 * topic, count pairs. Renewing here keeps a topic that has subscribers but
 * no publishes from expiring under them (a new epoch for nothing). */
static const char counts_put_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local touch = tonumber(ARGV[3])\n"
    "redis.call('DEL', KEYS[1])\n"
    "for i = 5, #ARGV, 2 do\n"
    "  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])\n"
    "  if touch > 0 then\n"
    "    redis.call('PEXPIRE', ARGV[4] .. 't:' .. ARGV[i], touch)\n"
    "    redis.call('PEXPIRE', ARGV[4] .. 's:' .. ARGV[i], touch)\n"
    "  end\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])\n"
    "redis.call('PEXPIRE', KEYS[2], ARGV[2])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "return 1\n";

/* KEYS: the zset of nodes. ARGV: the key prefix. Returns {live nodes,
 * {{topic, subscribers, nodes, epoch, seq}...}}. */
static const char topics_get_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')\n"
    "local sum, seen, order = {}, {}, {}\n"
    "for _, n in ipairs(nodes) do\n"
    "  local h = redis.call('HGETALL', ARGV[1] .. 'n:' .. n)\n"
    "  for i = 1, #h, 2 do\n"
    "    local k = h[i]\n"
    "    if not sum[k] then sum[k] = 0; seen[k] = 0; order[#order + 1] = k "
    "end\n"
    "    sum[k] = sum[k] + tonumber(h[i + 1])\n"
    "    seen[k] = seen[k] + 1\n"
    "  end\n"
    "end\n"
    "local out = {}\n"
    "for _, k in ipairs(order) do\n"
    "  local m = redis.call('HMGET', ARGV[1] .. 't:' .. k, 'epoch', 'seq')\n"
    "  out[#out + 1] = {k, sum[k], seen[k], m[1] or '', tonumber(m[2] or "
    "'0')}\n"
    "end\n"
    "return {#nodes, out}\n";

enum { S_PUBLISH, S_SYNC, S_PPUT, S_PGET, S_CPUT, S_TGET, S_COUNT };
static const char *const scripts[S_COUNT] = {
    publish_lua,      sync_lua,       presence_put_lua,
    presence_get_lua, counts_put_lua, topics_get_lua};

/* Presence entries and counts live this long after their last write; they
 * are rewritten well before. */
#define VIEW_TTL_MS 15000
#define COUNTS_EVERY_MS 2000
#define PRESENCE_EVERY_MS 5000

enum { T_IDLE, T_SYNCING, T_LIVE };

typedef struct held {
  struct held *next;
  uint64_t seq;
  size_t len;
  char epoch[DX_PS_EPOCH_MAX + 1];
  uint8_t data[];
} held;

/* The backplane's view of one topic. */
typedef struct rtopic {
  struct rtopic *next;       /* hash chain; r->mu */
  struct rtopic *dirty_next; /* r->mu */
  bool dirty, want, sync_req; /* r->mu */
  /* Loop thread only: */
  uint8_t state;
  bool failed;      /* Redis answered a sync with nonsense: wait for a
                       reconnect rather than ask again at once */
  bool answer_owed; /* the registry waits for dx_ps_synced/_failed */
  bool again;       /* held messages overflowed: sync once more */
  held *hold, *hold_tail;
  size_t nhold;
  uint64_t hash;
  char name[];
} rtopic;

typedef struct pub_req {
  struct pub_req *next;
  dx_ps_done_fn done;
  void *ud;
  size_t len;
  char topic[DX_PS_TOPIC_MAX + 1];
  uint8_t data[];
} pub_req;

typedef struct dx_ps_redis dx_ps_redis;

/* One hiredis connection's event glue, made per connect and freed after
 * the context's cleanup (at the end of that loop iteration: its dx_io may
 * still be in the iteration's event list). */
typedef struct rlink {
  dx_ps_redis *r;
  redisAsyncContext *ac;
  dx_io io;
  bool connected, want_write;
  bool closing; /* we freed it: its disconnect is no news */
  bool dead;    /* hiredis cleaned it up */
} rlink;

struct dx_ps_redis {
  dx_ps_backplane vt;
  dx_pubsub *ps;
  dx_loop *loop;
  char host[256];
  int port, db;
  char user[128], pass[256];
  char prefix[64], channel[80];
  char node[128];
  char sha[S_COUNT][41];
  size_t history;
  uint64_t ttl_ms, timeout_ms;
  char hist_s[24], ttl_s[24]; /* the two as script arguments */
  size_t max_inflight;

  pthread_mutex_t mu;
  bool started, kicked, up, freeing;
  pub_req *pq, *pq_tail; /* queued publishes */
  size_t queued;
  rtopic **buckets; /* 256 chains */
  rtopic *dirty;
  size_t inflight; /* publishes sent, not answered */
  size_t nsyncing;
  dx_ps_redis_status st;
  char (*touched)[DX_PS_TOPIC_MAX + 1]; /* presence to rewrite soon */
  size_t ntouched, touched_cap;

  /* Loop thread only: */
  rlink *cmd, *sub;
  bool sub_ready, cmd_ready;
  unsigned attempt;
  uint64_t connect_started, last_progress, last_ping;
  size_t cmds_waiting; /* commands sent on cmd, not answered */
  uint64_t last_counts, last_presence, last_touch;
  char epoch_seed[DX_PS_EPOCH_MAX + 1]; /* see candidate_epoch */
  uint64_t epoch_n;
  dx_timer tick, retry;
};

#define NBUCKETS 256

/* ---- helpers ---- */

static uint64_t name_hash(const char *s) {
  uint64_t h = 14695981039346656037ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static rtopic *find_topic(dx_ps_redis *r, const char *name, uint64_t h) {
  for (rtopic *t = r->buckets[h % NBUCKETS]; t; t = t->next)
    if (t->hash == h && strcmp(t->name, name) == 0) return t;
  return NULL;
}

static void mark_dirty(dx_ps_redis *r, rtopic *t) {
  if (t->dirty) return;
  t->dirty = true;
  t->dirty_next = r->dirty;
  r->dirty = t;
}

static void kick_cb(void *arg);

/* r->mu held. Wakes the loop once per batch of work. */
static void kick(dx_ps_redis *r) {
  if (r->kicked || !r->started) return;
  if (dx_loop_post(r->loop, kick_cb, r) == 0) r->kicked = true;
  /* else: the tick picks the work up within TICK_MS. */
}

static void set_error(dx_ps_redis *r, const char *what, const char *detail) {
  pthread_mutex_lock(&r->mu);
  snprintf(r->st.error, sizeof r->st.error, "%s%s%s", what,
           detail && *detail ? ": " : "", detail ? detail : "");
  pthread_mutex_unlock(&r->mu);
}

static void hold_free(rtopic *t) {
  for (held *h = t->hold, *n; h; h = n) {
    n = h->next;
    free(h);
  }
  t->hold = t->hold_tail = NULL;
  t->nhold = 0;
}

static uint64_t now_ms(dx_ps_redis *r) {
  return dx_loop_now(r->loop);
}

/* ---- the registry's hooks (shard threads, under a topic lock) ---- */

static void bp_interest(void *ud, const char *topic, bool on) {
  dx_ps_redis *r = ud;
  uint64_t h = name_hash(topic);
  pthread_mutex_lock(&r->mu);
  rtopic *t = find_topic(r, topic, h);
  /* On: the sync call that follows makes the entry. */
  if (t) {
    t->want = on;
    mark_dirty(r, t);
    kick(r);
  }
  pthread_mutex_unlock(&r->mu);
}

static int bp_sync(void *ud, const char *topic) {
  dx_ps_redis *r = ud;
  uint64_t h = name_hash(topic);
  pthread_mutex_lock(&r->mu);
  rtopic *t = find_topic(r, topic, h);
  if (!t) {
    size_t n = strlen(topic) + 1;
    if (!(t = calloc(1, sizeof *t + n))) {
      pthread_mutex_unlock(&r->mu);
      return DX_ENOMEM;
    }
    memcpy(t->name, topic, n);
    t->hash = h;
    t->next = r->buckets[h % NBUCKETS];
    r->buckets[h % NBUCKETS] = t;
  }
  t->want = true;
  t->sync_req = true;
  mark_dirty(r, t);
  kick(r);
  pthread_mutex_unlock(&r->mu);
  return 0;
}

static int bp_publish(void *ud, dx_pubsub *ps, const char *topic,
                      const void *data, size_t len, uint64_t now,
                      dx_ps_done_fn done, void *done_ud) {
  dx_ps_redis *r = ud;
  (void)ps, (void)now;
  if (len > SIZE_MAX - sizeof(pub_req)) return DX_ENOMEM;
  pub_req *q = malloc(sizeof *q + len);
  if (!q) return DX_ENOMEM;
  q->next = NULL;
  q->done = done;
  q->ud = done_ud;
  q->len = len;
  strcpy(q->topic, topic);
  if (len) memcpy(q->data, data, len);
  pthread_mutex_lock(&r->mu);
  /* Fail fast: a seq only Redis can assign, and no queue that grows while
   * it is away. */
  int rc = !r->up ? DX_EUNAVAIL
           : r->queued + r->inflight >= r->max_inflight ? DX_EUNAVAIL
                                                         : 0;
  if (rc == 0) {
    if (r->pq_tail)
      r->pq_tail->next = q;
    else
      r->pq = q;
    r->pq_tail = q;
    r->queued++;
    kick(r);
  } else {
    r->st.publish_failed++;
  }
  pthread_mutex_unlock(&r->mu);
  if (rc) free(q);
  return rc;
}

static void bp_free(void *ud);

/* ---- hiredis event glue ---- */

static void link_io(dx_io *io, unsigned ev);

static void update_events(rlink *l) {
  if (l->dead) return;
  unsigned want = DX_IO_READ | (l->want_write ? DX_IO_WRITE : 0);
  if (!l->io.loop)
    dx_io_start(l->r->loop, &l->io, l->ac->c.fd, want, link_io);
  else if (l->io.events != want)
    dx_io_modify(&l->io, want);
}

static void ev_add_read(void *p) {
  update_events(p);
}
static void ev_del_read(void *p) {
  (void)p; /* reads stay on: a reply or EOF may come at any time */
}
static void ev_add_write(void *p) {
  rlink *l = p;
  l->want_write = true;
  /* Connected: the flush hook writes at the end of the iteration, every
   * command queued in it in one write. Connecting: wait for writability. */
  if (!l->connected) update_events(l);
}
static void ev_del_write(void *p) {
  rlink *l = p;
  l->want_write = false;
  update_events(l);
}

static void link_free(void *p) {
  free(p);
}

static void ev_cleanup(void *p) {
  rlink *l = p;
  l->dead = true;
  dx_io_stop(&l->io);
  dx_loop_on_flush(l->r->loop, NULL, l);
  if (l->r->cmd == l) l->r->cmd = NULL;
  if (l->r->sub == l) l->r->sub = NULL;
  if (dx_loop_defer(l->r->loop, link_free, l) < 0) {
    /* No memory to defer: leak the few bytes rather than risk a stale
     * event on freed memory. */
  }
}

static void link_flush(void *p) {
  rlink *l = p;
  if (l->dead || !l->connected || !l->want_write) return;
  redisAsyncHandleWrite(l->ac);
  if (!l->dead && l->want_write) update_events(l);
}

static void link_io(dx_io *io, unsigned ev) {
  rlink *l = (rlink *)((char *)io - offsetof(rlink, io));
  if (ev & DX_IO_WRITE) {
    redisAsyncHandleWrite(l->ac);
    if (l->dead) return;
  }
  if (ev & (DX_IO_READ | DX_IO_HUP | DX_IO_ERROR)) {
    /* hiredis reads once per call; epoll is edge-triggered here. */
    for (int i = 0; i < 64 && !l->dead; i++) {
      redisAsyncHandleRead(l->ac);
      int avail = 0;
      if (l->dead || ioctl(l->io.fd, FIONREAD, &avail) < 0 || avail <= 0)
        break;
    }
  }
}

/* ---- connection life ---- */

static void teardown(dx_ps_redis *r, const char *why, const char *detail);
static void sync_start(dx_ps_redis *r, rtopic *t);

static void all_stale(dx_ps_redis *r) {
  pthread_mutex_lock(&r->mu);
  for (size_t b = 0; b < NBUCKETS; b++)
    for (rtopic *t = r->buckets[b]; t; t = t->next) {
      if (t->state == T_LIVE) t->state = T_IDLE;
      t->failed = false;
      mark_dirty(r, t);
    }
  pthread_mutex_unlock(&r->mu);
}

static void maybe_up(dx_ps_redis *r) {
  if (!r->sub_ready || !r->cmd_ready) return;
  pthread_mutex_lock(&r->mu);
  bool was = r->up;
  r->up = true;
  r->st.connected = true;
  r->st.error[0] = '\0';
  pthread_mutex_unlock(&r->mu);
  if (!was) {
    r->attempt = 0;
    /* Rewrite the views and renew the keys at once. */
    r->last_counts = r->last_presence = r->last_touch = 0;
    all_stale(r); /* each topic with subscribers syncs again */
    kick_cb(r);
  }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  rlink *l = ac->ev.data;
  (void)status;
  if (l->closing || l->r->freeing) return;
  l->closing = true; /* hiredis frees it after this */
  teardown(l->r, "Redis connection lost",
           ac->errstr[0] ? ac->errstr : "closed by the server");
}

static void on_connect(const redisAsyncContext *ac, int status) {
  rlink *l = ac->ev.data;
  if (status != REDIS_OK) {
    /* hiredis frees the context after this; no disconnect callback. */
    l->closing = true;
    if (!l->r->freeing)
      teardown(l->r, "cannot connect to Redis", ac->errstr);
    return;
  }
  l->connected = true;
  redisEnableKeepAlive((redisContext *)&ac->c);
}

static void setup_reply(redisAsyncContext *ac, void *reply, void *pd) {
  dx_ps_redis *r = pd;
  redisReply *rep = reply;
  rlink *l = ac->ev.data;
  if (l == r->cmd && r->cmds_waiting) r->cmds_waiting--;
  r->last_progress = now_ms(r);
  if (!rep) return;
  if (rep->type == REDIS_REPLY_ERROR) {
    teardown(r, "Redis refused the set-up", rep->str);
    return;
  }
}

static void script_loaded(redisAsyncContext *ac, void *reply, void *pd) {
  dx_ps_redis *r = pd;
  redisReply *rep = reply;
  setup_reply(ac, reply, pd);
  if (!rep || rep->type == REDIS_REPLY_ERROR || !r->cmd) return;
  /* The last set-up command (scripts load in order). */
  if (rep->type == REDIS_REPLY_STRING && rep->len == 40 &&
      memcmp(rep->str, r->sha[S_COUNT - 1], 40) == 0) {
    r->cmd_ready = true;
    maybe_up(r);
  }
}

static void on_channel(redisAsyncContext *ac, void *reply, void *pd);

static int cmd_send(dx_ps_redis *r, redisCallbackFn *fn, void *pd, int argc,
                    const char **argv, const size_t *lens) {
  if (!r->cmd || !r->cmd->ac) return DX_EUNAVAIL;
  if (redisAsyncCommandArgv(r->cmd->ac, fn, pd, argc, argv, lens) != REDIS_OK)
    return DX_EUNAVAIL;
  if (r->cmds_waiting++ == 0) r->last_progress = now_ms(r);
  return 0;
}

static rlink *link_open(dx_ps_redis *r) {
  rlink *l = calloc(1, sizeof *l);
  if (!l) return NULL;
  l->r = r;
  redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
  if (!ac || ac->err) {
    set_error(r, "cannot connect to Redis", ac ? ac->errstr : "out of memory");
    if (ac) redisAsyncFree(ac);
    free(l);
    return NULL;
  }
  l->ac = ac;
  ac->ev.data = l;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  if (dx_loop_on_flush(r->loop, link_flush, l) < 0) {
    redisAsyncFree(ac); /* cleanup defers the free */
    return NULL;
  }
  update_events(l);
  return l;
}

static void auth(dx_ps_redis *r, rlink *l) {
  if (!r->pass[0]) return;
  const char *argv[3] = {"AUTH", r->user, r->pass};
  int argc = r->user[0] ? 3 : 2;
  if (argc == 2) argv[1] = r->pass;
  if (l == r->cmd) {
    cmd_send(r, setup_reply, r, argc, argv, NULL);
  } else {
    redisAsyncCommandArgv(l->ac, setup_reply, r, argc, argv, NULL);
  }
}

static void connect_now(dx_ps_redis *r) {
  r->sub_ready = r->cmd_ready = false;
  if (dx__ps_random_epoch(r->epoch_seed) < 0) {
    teardown(r, "no randomness for new epochs", NULL);
    return;
  }
  r->cmds_waiting = 0;
  r->connect_started = now_ms(r);
  pthread_mutex_lock(&r->mu);
  r->st.reconnects += r->attempt > 0;
  pthread_mutex_unlock(&r->mu);
  if (!(r->cmd = link_open(r)) || !(r->sub = link_open(r))) {
    teardown(r, "cannot connect to Redis", NULL);
    return;
  }
  auth(r, r->cmd);
  char db[16];
  snprintf(db, sizeof db, "%d", r->db);
  const char *sel[2] = {"SELECT", db};
  cmd_send(r, setup_reply, r, 2, sel, NULL);
  for (int i = 0; i < S_COUNT; i++) {
    const char *load[3] = {"SCRIPT", "LOAD", scripts[i]};
    cmd_send(r, i == S_COUNT - 1 ? script_loaded : setup_reply, r, 3, load,
             NULL);
  }
  auth(r, r->sub);
  const char *sub[2] = {"SUBSCRIBE", r->channel};
  if (redisAsyncCommandArgv(r->sub->ac, on_channel, r, 2, sub, NULL) !=
      REDIS_OK)
    teardown(r, "cannot subscribe", r->sub->ac->errstr);
}

static void retry_cb(dx_timer *tm) {
  dx_ps_redis *r = (dx_ps_redis *)((char *)tm - offsetof(dx_ps_redis, retry));
  if (!r->cmd && !r->sub) connect_now(r);
}

/* Full jitter: uniform in [0, min(cap, base * 2^attempt)], at least 50 ms
 * so a dead Redis is not hammered by a tight loop. */
static uint64_t backoff_ms(dx_ps_redis *r) {
  uint64_t ceil = BACKOFF_BASE_MS << (r->attempt < 10 ? r->attempt : 10);
  if (ceil > BACKOFF_CAP_MS) ceil = BACKOFF_CAP_MS;
  uint32_t rnd = 0;
  if (RAND_bytes((unsigned char *)&rnd, sizeof rnd) != 1)
    rnd = (uint32_t)now_ms(r);
  uint64_t d = rnd % (ceil + 1);
  return d < 50 ? 50 : d;
}

/* Drops both connections (their waiting callbacks run now, with no reply)
 * and arms the reconnect. */
static void teardown(dx_ps_redis *r, const char *why, const char *detail) {
  if (why) set_error(r, why, detail);
  pthread_mutex_lock(&r->mu);
  bool was = r->up;
  r->up = false;
  r->st.connected = false;
  pthread_mutex_unlock(&r->mu);
  r->sub_ready = r->cmd_ready = false;
  rlink *links[2] = {r->cmd, r->sub};
  r->cmd = r->sub = NULL;
  for (int i = 0; i < 2; i++) {
    rlink *l = links[i];
    if (l && !l->closing && !l->dead) {
      l->closing = true; /* hiredis may defer the free (inside a callback) */
      redisAsyncFree(l->ac);
    }
  }
  r->cmds_waiting = 0;
  if (was) all_stale(r);
  if (r->freeing) return;
  kick_cb(r); /* fails queued publishes and owed syncs at once */
  if (!dx_timer_active(&r->retry)) {
    dx_timer_start(r->loop, &r->retry, backoff_ms(r), 0, retry_cb);
    r->attempt++;
  }
}

/* ---- publishes ---- */

static void publish_reply(redisAsyncContext *ac, void *reply, void *pd) {
  pub_req *q = pd;
  rlink *l = ac->ev.data;
  dx_ps_redis *r = l->r;
  redisReply *rep = reply;
  if (r->cmds_waiting) r->cmds_waiting--;
  r->last_progress = now_ms(r);
  dx_ps_published out = {0};
  int rc = DX_EUNAVAIL;
  if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
      rep->element[0]->type == REDIS_REPLY_INTEGER &&
      rep->element[1]->type == REDIS_REPLY_STRING &&
      rep->element[1]->len <= DX_PS_EPOCH_MAX) {
    out.seq = (uint64_t)rep->element[0]->integer;
    memcpy(out.epoch, rep->element[1]->str, rep->element[1]->len);
    rc = 0;
  } else if (rep && rep->type == REDIS_REPLY_ERROR) {
    set_error(r, "Redis refused a publish", rep->str);
    if (strncmp(rep->str, "NOSCRIPT", 8) == 0)
      teardown(r, "Redis lost the scripts", rep->str); /* reload them */
  }
  pthread_mutex_lock(&r->mu);
  r->inflight--;
  if (rc == 0)
    r->st.published++;
  else
    r->st.publish_failed++;
  pthread_mutex_unlock(&r->mu);
  if (q->done) q->done(q->ud, rc, &out);
  free(q);
}

/* The epoch a script makes when the topic's hash is missing. Unique
 * without a RAND_bytes per publish: random per connection (epoch_seed,
 * made at each connect), then a count. */
static void candidate_epoch(dx_ps_redis *r, char out[DX_PS_EPOCH_MAX + 1]) {
  snprintf(out, DX_PS_EPOCH_MAX + 1, "%.12s%.16llx", r->epoch_seed,
           (unsigned long long)++r->epoch_n);
}

static void send_publish(dx_ps_redis *r, pub_req *q) {
  char hkey[DX_PS_TOPIC_MAX + 70], skey[DX_PS_TOPIC_MAX + 70];
  snprintf(hkey, sizeof hkey, "%st:%s", r->prefix, q->topic);
  snprintf(skey, sizeof skey, "%ss:%s", r->prefix, q->topic);
  char epoch[DX_PS_EPOCH_MAX + 1];
  candidate_epoch(r, epoch);
  const char *argv[11] = {"EVALSHA", r->sha[S_PUBLISH], "2",    hkey,
                          skey,      (char *)q->data, epoch,  r->hist_s,
                          r->ttl_s,  r->channel,      q->topic};
  size_t lens[11];
  for (int i = 0; i < 11; i++)
    lens[i] = i == 5 ? q->len : strlen(argv[i]); /* the data: any bytes */
  pthread_mutex_lock(&r->mu);
  r->inflight++;
  pthread_mutex_unlock(&r->mu);
  if (cmd_send(r, publish_reply, q, 11, argv, lens) < 0) {
    pthread_mutex_lock(&r->mu);
    r->inflight--;
    r->st.publish_failed++;
    pthread_mutex_unlock(&r->mu);
    if (q->done) q->done(q->ud, DX_EUNAVAIL, &(dx_ps_published){0});
    free(q);
  }
}

/* ---- syncs ---- */

static void answer_failed(dx_ps_redis *r, rtopic *t) {
  if (!t->answer_owed || r->freeing) return;
  t->answer_owed = false;
  dx_ps_sync_failed(r->ps, t->name, DX_EUNAVAIL);
}

static const redisReply *field(const redisReply *fields, const char *name) {
  if (fields->type != REDIS_REPLY_ARRAY) return NULL;
  for (size_t i = 0; i + 1 < fields->elements; i += 2)
    if (fields->element[i]->type == REDIS_REPLY_STRING &&
        strcmp(fields->element[i]->str, name) == 0)
      return fields->element[i + 1];
  return NULL;
}

/* Applies the script's answer; false when it is malformed. */
static bool apply_sync(dx_ps_redis *r, rtopic *t, const redisReply *rep) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4) return false;
  const redisReply *e = rep->element[0], *s = rep->element[1],
                   *ents = rep->element[2], *tm = rep->element[3];
  if (e->type != REDIS_REPLY_STRING || e->len == 0 ||
      e->len > DX_PS_EPOCH_MAX || s->type != REDIS_REPLY_INTEGER ||
      s->integer < 0 || ents->type != REDIS_REPLY_ARRAY ||
      tm->type != REDIS_REPLY_STRING)
    return false;
  char epoch[DX_PS_EPOCH_MAX + 1];
  memcpy(epoch, e->str, e->len);
  epoch[e->len] = '\0';
  uint64_t redis_now = strtoull(tm->str, NULL, 10), now = now_ms(r);
  for (size_t i = 0; i < ents->elements; i++) {
    const redisReply *en = ents->element[i];
    if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
        en->element[0]->type != REDIS_REPLY_STRING)
      return false;
    uint64_t seq = strtoull(en->element[0]->str, NULL, 10);
    const redisReply *d = field(en->element[1], "d"), *ts = field(en->element[1], "t");
    if (!seq || !d || d->type != REDIS_REPLY_STRING) return false;
    /* The message's age in Redis's clock, carried over to ours, so the
     * history age limit holds for replayed messages too. */
    uint64_t when = now;
    if (ts && ts->type == REDIS_REPLY_STRING) {
      uint64_t t_ms = strtoull(ts->str, NULL, 10), age = 0;
      if (redis_now > t_ms) age = redis_now - t_ms;
      when = age < now ? now - age : 0;
    }
    dx_ps_ingest(r->ps, t->name, epoch, seq, d->str, d->len, when);
  }
  dx_ps_synced(r->ps, t->name, epoch, (uint64_t)s->integer, now);
  t->answer_owed = false;
  for (held *h = t->hold; h; h = h->next)
    dx_ps_ingest(r->ps, t->name, h->epoch, h->seq, h->data, h->len, now);
  hold_free(t);
  return true;
}

static void sync_reply(redisAsyncContext *ac, void *reply, void *pd) {
  rtopic *t = pd;
  rlink *l = ac->ev.data;
  dx_ps_redis *r = l->r;
  redisReply *rep = reply;
  if (r->cmds_waiting) r->cmds_waiting--;
  r->last_progress = now_ms(r);
  bool ok = rep && !r->freeing && apply_sync(r, t, rep);
  if (!ok) {
    if (rep && !r->freeing) {
      set_error(r, "bad answer from Redis to a sync",
                rep->type == REDIS_REPLY_ERROR ? rep->str : NULL);
      t->failed = true;
    }
    hold_free(t);
    answer_failed(r, t);
  }
  pthread_mutex_lock(&r->mu);
  r->nsyncing--;
  t->state = ok && !t->again && t->want ? T_LIVE : T_IDLE;
  mark_dirty(r, t); /* want may have changed meanwhile; or sync again */
  kick(r);
  pthread_mutex_unlock(&r->mu);
  if (rep && rep->type == REDIS_REPLY_ERROR &&
      strncmp(rep->str, "NOSCRIPT", 8) == 0)
    teardown(r, "Redis lost the scripts", rep->str);
}

static void sync_start(dx_ps_redis *r, rtopic *t) {
  char hkey[DX_PS_TOPIC_MAX + 70], skey[DX_PS_TOPIC_MAX + 70];
  snprintf(hkey, sizeof hkey, "%st:%s", r->prefix, t->name);
  snprintf(skey, sizeof skey, "%ss:%s", r->prefix, t->name);
  char ours[DX_PS_EPOCH_MAX + 1] = "-", fresh[DX_PS_EPOCH_MAX + 1];
  uint64_t seq = 0;
  if (!dx__ps_peek(r->ps, t->name, ours, &seq)) strcpy(ours, "-");
  char seqs[24];
  snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)seq);
  candidate_epoch(r, fresh);
  const char *argv[10] = {"EVALSHA", r->sha[S_SYNC], "2",      hkey,
                          skey,      ours,           seqs,     fresh,
                          r->ttl_s,  r->hist_s};
  hold_free(t);
  if (cmd_send(r, sync_reply, t, 10, argv, NULL) < 0) {
    answer_failed(r, t);
    return;
  }
  t->state = T_SYNCING;
  pthread_mutex_lock(&r->mu);
  r->nsyncing++;
  pthread_mutex_unlock(&r->mu);
}

/* ---- the channel ---- */

static void on_broadcast(dx_ps_redis *r, const char *p, size_t n) {
  /* "!\n<node>\n<topic>\n<frame>" ('!' is never a topic's first byte) */
  const char *end = p + n, *a = memchr(p + 2, '\n', n - 2), *b;
  if (!a || !(b = memchr(a + 1, '\n', (size_t)(end - a - 1)))) return;
  size_t nl = (size_t)(a - p - 2), tl = (size_t)(b - a - 1);
  if ((nl == strlen(r->node) && memcmp(p + 2, r->node, nl) == 0) || !tl ||
      tl > DX_PS_TOPIC_MAX)
    return; /* our own: delivered here already */
  char topic[DX_PS_TOPIC_MAX + 1];
  memcpy(topic, a + 1, tl);
  topic[tl] = '\0';
  pthread_mutex_lock(&r->mu);
  rtopic *t = find_topic(r, topic, name_hash(topic));
  pthread_mutex_unlock(&r->mu);
  if (t && t->state == T_LIVE)
    dx_ps_broadcast(r->ps, topic, b + 1, (size_t)(end - b - 1));
}

static void on_message(dx_ps_redis *r, const char *p, size_t n) {
  if (n >= 2 && p[0] == '!' && p[1] == '\n') return on_broadcast(r, p, n);
  /* "<topic>\n<epoch>\n<seq>\n<data>" */
  const char *end = p + n, *a = memchr(p, '\n', n), *b, *c;
  if (!a || !(b = memchr(a + 1, '\n', (size_t)(end - a - 1))) ||
      !(c = memchr(b + 1, '\n', (size_t)(end - b - 1))))
    return;
  char topic[DX_PS_TOPIC_MAX + 1], epoch[DX_PS_EPOCH_MAX + 1];
  size_t tl = (size_t)(a - p), el = (size_t)(b - a - 1);
  if (!tl || tl > DX_PS_TOPIC_MAX || !el || el > DX_PS_EPOCH_MAX) return;
  memcpy(topic, p, tl);
  topic[tl] = '\0';
  memcpy(epoch, a + 1, el);
  epoch[el] = '\0';
  uint64_t seq = strtoull(b + 1, NULL, 10);
  const char *data = c + 1;
  size_t len = (size_t)(end - data);
  pthread_mutex_lock(&r->mu);
  r->st.received++;
  rtopic *t = find_topic(r, topic, name_hash(topic));
  pthread_mutex_unlock(&r->mu);
  if (!t || !seq) return; /* nobody here subscribes to it */
  if (t->state == T_LIVE) {
    dx_ps_ingest(r->ps, topic, epoch, seq, data, len, now_ms(r));
  } else if (t->state == T_SYNCING) {
    if (t->nhold >= HOLD_MAX) {
      hold_free(t); /* the stream has them: sync again after this one */
      t->again = true;
      return;
    }
    if (t->again) return;
    held *h = malloc(sizeof *h + len);
    if (!h) {
      hold_free(t);
      t->again = true;
      return;
    }
    h->next = NULL;
    h->seq = seq;
    h->len = len;
    strcpy(h->epoch, epoch);
    memcpy(h->data, data, len);
    if (t->hold_tail)
      t->hold_tail->next = h;
    else
      t->hold = h;
    t->hold_tail = h;
    t->nhold++;
  }
}

static void on_channel(redisAsyncContext *ac, void *reply, void *pd) {
  dx_ps_redis *r = pd;
  redisReply *rep = reply;
  (void)ac;
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3) {
    if (rep && rep->type == REDIS_REPLY_ERROR)
      teardown(r, "Redis refused the subscription", rep->str);
    return;
  }
  const redisReply *kind = rep->element[0], *body = rep->element[2];
  if (kind->type != REDIS_REPLY_STRING) return;
  if (strcmp(kind->str, "message") == 0 && body->type == REDIS_REPLY_STRING) {
    on_message(r, body->str, body->len);
  } else if (strcmp(kind->str, "subscribe") == 0) {
    r->sub_ready = true;
    maybe_up(r);
  }
}

/* ---- the loop's work ---- */

static void kick_cb(void *arg) {
  dx_ps_redis *r = arg;
  pthread_mutex_lock(&r->mu);
  r->kicked = false;
  pub_req *q = r->pq;
  r->pq = r->pq_tail = NULL;
  r->queued = 0;
  rtopic *d = r->dirty;
  r->dirty = NULL;
  bool up = r->up;
  pthread_mutex_unlock(&r->mu);

  while (q) {
    pub_req *next = q->next;
    if (up) {
      send_publish(r, q);
    } else {
      pthread_mutex_lock(&r->mu);
      r->st.publish_failed++;
      pthread_mutex_unlock(&r->mu);
      if (q->done) q->done(q->ud, DX_EUNAVAIL, &(dx_ps_published){0});
      free(q);
    }
    q = next;
  }

  while (d) {
    pthread_mutex_lock(&r->mu);
    rtopic *t = d;
    d = t->dirty_next;
    t->dirty = false;
    bool want = t->want;
    if (t->sync_req) {
      t->sync_req = false;
      t->answer_owed = true;
    }
    pthread_mutex_unlock(&r->mu);
    if (t->state == T_SYNCING) continue; /* its answer re-marks it dirty */
    bool stale = want && t->state == T_IDLE && !t->failed;
    if (t->answer_owed || t->again || stale) {
      t->again = false;
      if (up)
        sync_start(r, t);
      else
        answer_failed(r, t);
      continue;
    }
    if (want) continue; /* live */
    /* Nobody subscribes here any more: forget it. */
    t->state = T_IDLE;
    hold_free(t);
    pthread_mutex_lock(&r->mu);
    if (!t->want && !t->sync_req && !t->dirty) {
      rtopic **pp = &r->buckets[t->hash % NBUCKETS];
      while (*pp != t)
        pp = &(*pp)->next;
      *pp = t->next;
      pthread_mutex_unlock(&r->mu);
      free(t);
    } else {
      pthread_mutex_unlock(&r->mu);
    }
  }
}

/* ---- cluster-wide views ---- */

typedef struct strv {
  const char **v;
  size_t *len;
  size_t n, cap;
  char **own; /* strings made here */
  size_t nown;
} strv;

static bool strv_add(strv *a, const char *p, size_t len, bool copy) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    const char **v = realloc(a->v, cap * sizeof *v);
    size_t *l = v ? realloc(a->len, cap * sizeof *l) : NULL;
    if (v) a->v = v;
    if (!l) return false;
    a->len = l;
    a->cap = cap;
  }
  if (copy) {
    char *c = malloc(len + 1), **o;
    if (!c || !(o = realloc(a->own, (a->nown + 1) * sizeof *o))) {
      free(c);
      return false;
    }
    memcpy(c, p, len);
    c[len] = '\0';
    a->own = o;
    a->own[a->nown++] = c;
    p = c;
  }
  a->v[a->n] = p;
  a->len[a->n++] = len;
  return true;
}

static void strv_free(strv *a) {
  for (size_t i = 0; i < a->nown; i++)
    free(a->own[i]);
  free(a->own);
  free(a->v);
  free(a->len);
}

static void view_reply(redisAsyncContext *ac, void *reply, void *pd) {
  setup_reply(ac, reply, pd);
}

static void add_member(void *ud, const char *id, const void *info,
                       size_t len) {
  strv *a = ud;
  if (strv_add(a, id, strlen(id), true)) strv_add(a, info, len, true);
}

/* Rewrites this node's presence entry for topic. */
static void presence_put(dx_ps_redis *r, const char *topic) {
  char key[DX_PS_TOPIC_MAX + 200], zkey[DX_PS_TOPIC_MAX + 70], ttl[24];
  snprintf(key, sizeof key, "%sp:%s:%s", r->prefix, topic, r->node);
  snprintf(zkey, sizeof zkey, "%spn:%s", r->prefix, topic);
  snprintf(ttl, sizeof ttl, "%d", VIEW_TTL_MS);
  strv a = {0};
  const char *head[7] = {"EVALSHA", r->sha[S_PPUT], "2", key, zkey, r->node,
                         ttl};
  bool ok = true;
  for (int i = 0; i < 7 && ok; i++)
    ok = strv_add(&a, head[i], strlen(head[i]), false);
  if (ok && dx_ps_presence(r->ps, topic, add_member, &a) >= 0 &&
      a.n % 2 == 1)
    cmd_send(r, view_reply, r, (int)a.n, a.v, a.len);
  strv_free(&a);
}

typedef struct count_ctx {
  strv *a;
  strv *members; /* topics with presence members */
} count_ctx;

static void add_count(void *ud, const dx_ps_topic_info *t) {
  count_ctx *c = ud;
  if (t->subscribers) {
    char n[24];
    snprintf(n, sizeof n, "%zu", t->subscribers);
    if (strv_add(c->a, t->topic, strlen(t->topic), true))
      strv_add(c->a, n, strlen(n), true);
  }
  if (t->members && c->members)
    strv_add(c->members, t->topic, strlen(t->topic), true);
}

static void refresh_views(dx_ps_redis *r, uint64_t now) {
  bool counts = now - r->last_counts >= COUNTS_EVERY_MS;
  bool presence = now - r->last_presence >= PRESENCE_EVERY_MS;
  if (counts || presence) {
    char key[200], zkey[80], ttl[24];
    snprintf(key, sizeof key, "%sn:%s", r->prefix, r->node);
    snprintf(zkey, sizeof zkey, "%snodes", r->prefix);
    snprintf(ttl, sizeof ttl, "%d", VIEW_TTL_MS);
    strv a = {0}, members = {0};
    /* A quarter of the keys' ttl (at most an hour) between renewals. */
    uint64_t every = r->ttl_ms / 4 < 3600000 ? r->ttl_ms / 4 : 3600000;
    bool touch = counts && now - r->last_touch >= every;
    const char *head[9] = {"EVALSHA", r->sha[S_CPUT], "2",
                           key,       zkey,           r->node,
                           ttl,       touch ? r->ttl_s : "0", r->prefix};
    for (int i = 0; i < 9; i++)
      strv_add(&a, head[i], strlen(head[i]), false);
    if (touch) r->last_touch = now;
    count_ctx c = {&a, presence ? &members : NULL};
    dx_ps_topics(r->ps, now, add_count, &c);
    if (counts && a.n % 2 == 1) cmd_send(r, view_reply, r, (int)a.n, a.v, a.len);
    for (size_t i = 0; i < members.n; i++)
      presence_put(r, members.v[i]);
    strv_free(&a);
    strv_free(&members);
    if (counts) r->last_counts = now;
    if (presence) r->last_presence = now;
  }
  pthread_mutex_lock(&r->mu);
  char (*touched)[DX_PS_TOPIC_MAX + 1] = r->touched;
  size_t n = r->ntouched;
  r->touched = NULL;
  r->ntouched = r->touched_cap = 0;
  pthread_mutex_unlock(&r->mu);
  for (size_t i = 0; i < n; i++)
    presence_put(r, touched[i]);
  free(touched);
}

void dx_ps_redis_touch(dx_ps_redis *r, const char *topic) {
  if (!dx_ps_topic_valid(topic)) return;
  pthread_mutex_lock(&r->mu);
  bool seen = false;
  for (size_t i = 0; i < r->ntouched && !seen; i++)
    seen = strcmp(r->touched[i], topic) == 0;
  if (!seen && r->ntouched == r->touched_cap) {
    size_t cap = r->touched_cap ? r->touched_cap * 2 : 8;
    void *t = realloc(r->touched, cap * sizeof *r->touched);
    if (t) {
      r->touched = t;
      r->touched_cap = cap;
    }
  }
  /* Without memory, the periodic rewrite catches up. */
  if (!seen && r->ntouched < r->touched_cap)
    strcpy(r->touched[r->ntouched++], topic);
  pthread_mutex_unlock(&r->mu);
}

/* A query or broadcast handed to the loop. */
typedef struct job {
  dx_ps_redis *r;
  void (*pfn)(void *ud, int rc, const dx_ps_member *m, size_t n);
  void (*tfn)(void *ud, int rc, const dx_ps_redis_topic *t, size_t n,
              size_t nodes);
  void *ud;
  size_t len;
  char topic[DX_PS_TOPIC_MAX + 1];
  uint8_t data[]; /* broadcast: the frame */
} job;

static void job_fail(job *j) {
  if (j->pfn) j->pfn(j->ud, DX_EUNAVAIL, NULL, 0);
  if (j->tfn) j->tfn(j->ud, DX_EUNAVAIL, NULL, 0, 0);
  free(j);
}

static int job_post(dx_ps_redis *r, job *j, void (*run)(void *)) {
  pthread_mutex_lock(&r->mu);
  bool up = r->up;
  pthread_mutex_unlock(&r->mu);
  if (!up) {
    free(j);
    return DX_EUNAVAIL;
  }
  int rc = dx_loop_post(r->loop, run, j);
  if (rc) free(j);
  return rc;
}

static int by_id(const void *a, const void *b) {
  const dx_ps_member *x = a, *y = b;
  return strcmp(x->id, y->id);
}

static void presence_got(redisAsyncContext *ac, void *reply, void *pd) {
  job *j = pd;
  redisReply *rep = reply;
  setup_reply(ac, reply, j->r);
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements % 2) {
    job_fail(j);
    return;
  }
  size_t n = rep->elements / 2, k = 0;
  dx_ps_member *m = calloc(n ? n : 1, sizeof *m);
  if (!m) {
    job_fail(j);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const redisReply *id = rep->element[2 * i], *in = rep->element[2 * i + 1];
    if (id->type != REDIS_REPLY_STRING || in->type != REDIS_REPLY_STRING)
      continue;
    m[k++] = (dx_ps_member){.id = id->str, .info = in->str,
                            .info_len = in->len};
  }
  /* One member on several nodes (a user with two tabs) is one member. */
  qsort(m, k, sizeof *m, by_id);
  size_t u = 0;
  for (size_t i = 0; i < k; i++)
    if (!u || strcmp(m[u - 1].id, m[i].id) != 0) m[u++] = m[i];
  j->pfn(j->ud, 0, m, u);
  free(m);
  free(j);
}

static void presence_run(void *arg) {
  job *j = arg;
  dx_ps_redis *r = j->r;
  char zkey[DX_PS_TOPIC_MAX + 70], prefix[DX_PS_TOPIC_MAX + 70];
  snprintf(zkey, sizeof zkey, "%spn:%s", r->prefix, j->topic);
  snprintf(prefix, sizeof prefix, "%sp:%s:", r->prefix, j->topic);
  const char *argv[5] = {"EVALSHA", r->sha[S_PGET], "1", zkey, prefix};
  if (cmd_send(r, presence_got, j, 5, argv, NULL) < 0) job_fail(j);
}

int dx_ps_redis_presence(dx_ps_redis *r, const char *topic,
                         void (*fn)(void *ud, int rc,
                                    const dx_ps_member *members, size_t n),
                         void *ud) {
  if (!dx_ps_topic_valid(topic) || !fn) return DX_EINVAL;
  job *j = calloc(1, sizeof *j);
  if (!j) return DX_ENOMEM;
  *j = (job){.r = r, .pfn = fn, .ud = ud};
  strcpy(j->topic, topic);
  return job_post(r, j, presence_run);
}

static void topics_got(redisAsyncContext *ac, void *reply, void *pd) {
  job *j = pd;
  redisReply *rep = reply;
  setup_reply(ac, reply, j->r);
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
      rep->element[0]->type != REDIS_REPLY_INTEGER ||
      rep->element[1]->type != REDIS_REPLY_ARRAY) {
    job_fail(j);
    return;
  }
  const redisReply *list = rep->element[1];
  dx_ps_redis_topic *t = calloc(list->elements ? list->elements : 1, sizeof *t);
  if (!t) {
    job_fail(j);
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < list->elements; i++) {
    const redisReply *e = list->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 5 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[2]->type != REDIS_REPLY_INTEGER ||
        e->element[3]->type != REDIS_REPLY_STRING ||
        e->element[4]->type != REDIS_REPLY_INTEGER)
      continue;
    t[k++] = (dx_ps_redis_topic){
        .topic = e->element[0]->str,
        .subscribers = (size_t)e->element[1]->integer,
        .nodes = (size_t)e->element[2]->integer,
        .epoch = e->element[3]->str,
        .seq = (uint64_t)e->element[4]->integer};
  }
  j->tfn(j->ud, 0, t, k, (size_t)rep->element[0]->integer);
  free(t);
  free(j);
}

static void topics_run(void *arg) {
  job *j = arg;
  dx_ps_redis *r = j->r;
  char zkey[80];
  snprintf(zkey, sizeof zkey, "%snodes", r->prefix);
  const char *argv[5] = {"EVALSHA", r->sha[S_TGET], "1", zkey, r->prefix};
  if (cmd_send(r, topics_got, j, 5, argv, NULL) < 0) job_fail(j);
}

int dx_ps_redis_topics(dx_ps_redis *r,
                       void (*fn)(void *ud, int rc,
                                  const dx_ps_redis_topic *topics, size_t n,
                                  size_t nodes),
                       void *ud) {
  if (!fn) return DX_EINVAL;
  job *j = calloc(1, sizeof *j);
  if (!j) return DX_ENOMEM;
  *j = (job){.r = r, .tfn = fn, .ud = ud};
  return job_post(r, j, topics_run);
}

static void broadcast_run(void *arg) {
  job *j = arg;
  dx_ps_redis *r = j->r;
  size_t nl = strlen(r->node), tl = strlen(j->topic);
  size_t n = 2 + nl + 1 + tl + 1 + j->len;
  char *payload = malloc(n);
  if (payload) {
    char *p = payload;
    memcpy(p, "!\n", 2);
    memcpy(p += 2, r->node, nl);
    p[nl] = '\n';
    memcpy(p += nl + 1, j->topic, tl);
    p[tl] = '\n';
    memcpy(p + tl + 1, j->data, j->len);
    const char *argv[3] = {"PUBLISH", r->channel, payload};
    size_t lens[3] = {7, strlen(r->channel), n};
    cmd_send(r, view_reply, r, 3, argv, lens);
  }
  free(payload);
  free(j);
}

int dx_ps_redis_broadcast(dx_ps_redis *r, const char *topic, const void *frame,
                          size_t len) {
  if (!dx_ps_topic_valid(topic) || (len && !frame)) return DX_EINVAL;
  job *j = malloc(sizeof *j + len);
  if (!j) return DX_ENOMEM;
  *j = (job){.r = r, .len = len};
  strcpy(j->topic, topic);
  if (len) memcpy(j->data, frame, len);
  return job_post(r, j, broadcast_run);
}

static void ping_reply(redisAsyncContext *ac, void *reply, void *pd) {
  setup_reply(ac, reply, pd);
}

static void tick_cb(dx_timer *tm) {
  dx_ps_redis *r = (dx_ps_redis *)((char *)tm - offsetof(dx_ps_redis, tick));
  uint64_t now = now_ms(r);
  if (r->cmd || r->sub) {
    bool ready = r->cmd_ready && r->sub_ready;
    if (!ready && now - r->connect_started > r->timeout_ms) {
      teardown(r, "Redis did not answer in time (connecting)", NULL);
    } else if (r->cmds_waiting && now - r->last_progress > r->timeout_ms) {
      /* A stuck Redis (or network): its answers would come too late for
       * anyone waiting; reconnect and re-sync instead. */
      teardown(r, "Redis did not answer in time", NULL);
    } else if (ready && !r->cmds_waiting && now - r->last_ping >= PING_EVERY_MS) {
      r->last_ping = now;
      const char *ping[1] = {"PING"};
      cmd_send(r, ping_reply, r, 1, ping, NULL);
    }
    if (ready) refresh_views(r, now);
  }
  /* Work whose kick could not be posted (no memory). */
  pthread_mutex_lock(&r->mu);
  bool work = r->pq || r->dirty;
  pthread_mutex_unlock(&r->mu);
  if (work) kick_cb(r);
}

static void start_cb(void *arg) {
  dx_ps_redis *r = arg;
  dx_timer_start(r->loop, &r->tick, TICK_MS, TICK_MS, tick_cb);
  connect_now(r);
}

/* ---- the API ---- */

static void sha1_hex(const char *s, char out[41]) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1((const unsigned char *)s, strlen(s), md);
  for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
    sprintf(out + 2 * i, "%02x", md[i]);
}

/* redis://[[user]:password@]host[:port][/db] */
static const char *parse_url(dx_ps_redis *r, const char *url) {
  static const char scheme[] = "redis://";
  if (!url || strncmp(url, scheme, sizeof scheme - 1) != 0)
    return "the Redis URL must start with redis://";
  const char *p = url + sizeof scheme - 1, *at = strrchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon) return "credentials in a Redis URL are [user]:password@";
    size_t ul = (size_t)(colon - p), pl = (size_t)(at - colon - 1);
    if (ul >= sizeof r->user || pl >= sizeof r->pass || !pl)
      return "the Redis URL's user or password is empty or too long";
    memcpy(r->user, p, ul);
    memcpy(r->pass, colon + 1, pl);
    p = at + 1;
  }
  const char *hend = p;
  if (*p == '[') { /* [v6 address] */
    hend = strchr(p, ']');
    if (!hend) return "unclosed [ in the Redis URL";
    p++;
  } else {
    while (*hend && *hend != ':' && *hend != '/')
      hend++;
  }
  size_t hl = (size_t)(hend - p);
  if (!hl || hl >= sizeof r->host) return "the Redis URL has no host";
  for (size_t i = 0; i < hl; i++) {
    char c = p[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
              (c == ':' && hend[0] == ']');
    if (!ok) return "the Redis URL's host has a character no host name has";
  }
  memcpy(r->host, p, hl);
  p = hend + (*hend == ']');
  r->port = 6379;
  if (*p == ':') {
    char *e;
    long v = strtol(p + 1, &e, 10);
    if (e == p + 1 || v < 1 || v > 65535)
      return "the Redis URL's port must be 1..65535";
    r->port = (int)v;
    p = e;
  }
  if (*p == '/' && p[1]) {
    char *e;
    long v = strtol(p + 1, &e, 10);
    if (e == p + 1 || *e || v < 0 || v > 1000000)
      return "the Redis URL's database must be a number";
    r->db = (int)v;
  } else if (*p && strcmp(p, "/") != 0) {
    return "unexpected text after the Redis URL's host and port";
  }
  return NULL;
}

dx_ps_redis *dx_ps_redis_new(const dx_ps_redis_config *cfg,
                             const char **err_out) {
  const char *err = NULL;
  dx_ps_redis *r = NULL;
  if (!cfg || !cfg->loop) {
    err = "no loop for the Redis connections";
    goto fail;
  }
  if (!(r = calloc(1, sizeof *r)) ||
      !(r->buckets = calloc(NBUCKETS, sizeof *r->buckets))) {
    free(r);
    errno = ENOMEM;
    return NULL;
  }
  if ((err = parse_url(r, cfg->url))) goto fail;
  const char *prefix = cfg->prefix ? cfg->prefix : "dx:";
  if (strlen(prefix) >= sizeof r->prefix - 8) {
    err = "the Redis key prefix is too long";
    goto fail;
  }
  strcpy(r->prefix, prefix);
  snprintf(r->channel, sizeof r->channel, "%smsg", prefix);
  r->loop = cfg->loop;
  r->history = cfg->history == DX_PS_NO_HISTORY ? 0
               : cfg->history                   ? cfg->history
                                                : 100;
  r->ttl_ms = cfg->key_ttl_ms ? cfg->key_ttl_ms : DEFAULT_TTL_MS;
  r->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
  r->max_inflight = cfg->max_inflight ? cfg->max_inflight : DEFAULT_INFLIGHT;
  snprintf(r->hist_s, sizeof r->hist_s, "%zu", r->history);
  snprintf(r->ttl_s, sizeof r->ttl_s, "%llu", (unsigned long long)r->ttl_ms);
  for (int i = 0; i < S_COUNT; i++)
    sha1_hex(scripts[i], r->sha[i]);
  if (cfg->node_id && (!*cfg->node_id || strlen(cfg->node_id) >= sizeof r->node ||
                       strpbrk(cfg->node_id, " \n\r\t"))) {
    err = "the node id must be 1..127 characters without spaces";
    goto fail;
  }
  if (cfg->node_id) {
    strcpy(r->node, cfg->node_id);
  } else {
    char host[64] = "node", rnd[DX_PS_EPOCH_MAX + 1] = "x";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    dx__ps_random_epoch(rnd);
    snprintf(r->node, sizeof r->node, "%.60s:%ld:%.8s", host, (long)getpid(),
             rnd);
  }
  pthread_mutex_init(&r->mu, NULL);
  r->vt = (dx_ps_backplane){.publish = bp_publish,
                            .interest = bp_interest,
                            .sync = bp_sync,
                            .free = bp_free,
                            .ud = r,
                            .needs_sync = true};
  return r;
fail:
  if (r) {
    free(r->buckets);
    free(r);
  }
  if (err_out) *err_out = err;
  errno = EINVAL;
  return NULL;
}

const char *dx_ps_redis_node_id(const dx_ps_redis *r) {
  return r->node;
}

const dx_ps_backplane *dx_ps_redis_backplane(dx_ps_redis *r) {
  return &r->vt;
}

int dx_ps_redis_start(dx_ps_redis *r, dx_pubsub *ps) {
  pthread_mutex_lock(&r->mu);
  if (r->started) {
    pthread_mutex_unlock(&r->mu);
    return DX_ESTATE;
  }
  r->ps = ps;
  r->started = true;
  pthread_mutex_unlock(&r->mu);
  return dx_loop_post(r->loop, start_cb, r);
}

void dx_ps_redis_status_get(dx_ps_redis *r, dx_ps_redis_status *out) {
  pthread_mutex_lock(&r->mu);
  *out = r->st;
  out->connected = r->up;
  out->syncing = r->nsyncing;
  out->inflight = r->inflight + r->queued;
  out->healthy = r->up && r->nsyncing == 0;
  pthread_mutex_unlock(&r->mu);
}

/* From dx_pubsub_free, with the loop no longer running. */
static void bp_free(void *ud) {
  dx_ps_redis *r = ud;
  r->freeing = true;
  teardown(r, NULL, NULL);
  dx_timer_stop(&r->tick);
  dx_timer_stop(&r->retry);
  for (pub_req *q = r->pq, *n; q; q = n) {
    n = q->next;
    if (q->done) q->done(q->ud, DX_ECLOSED, &(dx_ps_published){0});
    free(q);
  }
  for (size_t b = 0; b < NBUCKETS; b++)
    for (rtopic *t = r->buckets[b], *n; t; t = n) {
      n = t->next;
      hold_free(t);
      free(t);
    }
  free(r->buckets);
  free(r->touched);
  pthread_mutex_destroy(&r->mu);
  free(r);
}
