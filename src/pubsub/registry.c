/*
 * The registry: a hash table of topics under a rwlock, topic lifetimes,
 * epochs, listings and the sweep.
 *
 * Lookups take the table lock shared and leave it before taking the topic
 * lock, holding a reference instead: a publish never makes topic creation
 * wait for its deliveries. The price is a re-check: a topic the sweep took
 * out of the table between the two locks is marked removed, and the caller
 * looks again (and finds or makes the new one).
 */
#include "pubsub/internal.h"

#include <assert.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_HISTORY 100
#define DEFAULT_MAX_TOPICS 10000
#define EPOCH_LEN 12

/* ---- allocation ---- */

void *dx__ps_realloc(dx_pubsub *ps, void *p, size_t old, size_t n) {
  if (ps->alloc.realloc) return ps->alloc.realloc(ps->alloc.ud, p, old, n);
  if (n == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, n);
}

void *dx__ps_alloc(dx_pubsub *ps, size_t n) {
  return dx__ps_realloc(ps, NULL, 0, n);
}

void dx__ps_free(dx_pubsub *ps, void *p, size_t n) {
  if (p) dx__ps_realloc(ps, p, n, 0);
}

/* The registry struct outlives dx_pubsub_free while topics (kept by
 * messages still queued) need its allocator. */
void dx__ps_unref(dx_pubsub *ps) {
  if (atomic_fetch_sub(&ps->refs, 1) != 1) return;
  dx_allocator a = ps->alloc;
  if (a.realloc)
    a.realloc(a.ud, ps, sizeof *ps, 0);
  else
    free(ps);
}

/* ---- names and epochs ---- */

bool dx_ps_topic_valid(const char *name) {
  if (!name) return false;
  size_t n = 0;
  for (const char *p = name; *p; p++, n++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
              c == '/' || c == '-';
    if (!ok || n >= DX_PS_TOPIC_MAX) return false;
  }
  return n > 0;
}

int dx__ps_random_epoch(char *out) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char b[EPOCH_LEN];
  if (RAND_bytes(b, sizeof b) != 1) return -EIO;
  /* 256 % 62 leaves a slight bias; 71 bits of it are plenty for a token
   * that only has to differ between two streams of one topic. */
  for (size_t i = 0; i < EPOCH_LEN; i++)
    out[i] = abc[b[i] % 62];
  out[EPOCH_LEN] = '\0';
  return 0;
}

bool dx__ps_epoch_valid(const char *e) {
  size_t n = 0;
  for (; e && e[n]; n++)
    if (e[n] < 0x21 || e[n] > 0x7e || n >= DX_PS_EPOCH_MAX) return false;
  return n > 0;
}

static int make_epoch(dx_pubsub *ps, const char *topic, char *out) {
  if (!ps->epoch) return dx__ps_random_epoch(out);
  memset(out, 0, DX_PS_EPOCH_MAX + 1);
  int rc = ps->epoch(ps->ud, topic, out, DX_PS_EPOCH_MAX + 1);
  if (rc < 0) return rc;
  out[DX_PS_EPOCH_MAX] = '\0';
  return dx__ps_epoch_valid(out) ? 0 : DX_EINVAL;
}

/* ---- the registry ---- */

dx_pubsub *dx_pubsub_new(const dx_pubsub_config *cfg) {
  if (!cfg || !cfg->deliver) {
    errno = EINVAL;
    return NULL;
  }
  dx_pubsub tmp = {.alloc = cfg->allocator};
  dx_pubsub *ps = dx__ps_alloc(&tmp, sizeof *ps);
  if (!ps) goto fail;
  memset(ps, 0, sizeof *ps);
  ps->alloc = cfg->allocator;
  atomic_init(&ps->refs, 1);
  ps->nshards = cfg->shards ? cfg->shards : 1;
  ps->history = cfg->history == DX_PS_NO_HISTORY ? 0
                : cfg->history                   ? cfg->history
                                                 : DEFAULT_HISTORY;
  ps->history_ms = cfg->history_ms;
  ps->max_topics = cfg->max_topics ? cfg->max_topics : DEFAULT_MAX_TOPICS;
  ps->presence = cfg->presence;
  ps->deliver = cfg->deliver;
  ps->frame = cfg->frame;
  ps->epoch = cfg->epoch;
  ps->ud = cfg->ud;
  ps->bp = cfg->backplane;
  ps->nbuckets = 64;
  ps->buckets = dx__ps_alloc(ps, ps->nbuckets * sizeof *ps->buckets);
  if (!ps->buckets) goto fail;
  memset(ps->buckets, 0, ps->nbuckets * sizeof *ps->buckets);
  /* A secret seed so clients cannot aim topic names at one bucket. */
  if (RAND_bytes((unsigned char *)&ps->seed, sizeof ps->seed) != 1)
    ps->seed = (uint64_t)(uintptr_t)ps;
  if (pthread_rwlock_init(&ps->lock, NULL) != 0) goto fail;
  return ps;
fail:
  if (ps) {
    dx__ps_free(ps, ps->buckets, ps->nbuckets * sizeof *ps->buckets);
    dx__ps_free(&tmp, ps, sizeof *ps);
  }
  errno = ENOMEM;
  return NULL;
}

void dx_pubsub_free(dx_pubsub *ps) {
  if (!ps) return;
  pthread_rwlock_wrlock(&ps->lock);
  for (size_t i = 0; i < ps->nbuckets; i++) {
    dx__ps_topic *t = ps->buckets[i], *next;
    for (; t; t = next) {
      next = t->hnext;
      pthread_mutex_lock(&t->lock);
      assert(t->nsubs == 0 && "dx_ps_sub_free every subscriber first");
      t->removed = true;
      dx__ps_clear(t);
      pthread_mutex_unlock(&t->lock);
      dx__ps_topic_decref(t);
    }
  }
  dx__ps_free(ps, ps->buckets, ps->nbuckets * sizeof *ps->buckets);
  ps->buckets = NULL;
  ps->ntopics = 0;
  pthread_rwlock_unlock(&ps->lock);
  pthread_rwlock_destroy(&ps->lock);
  if (ps->bp && ps->bp->free) ps->bp->free(ps->bp->ud);
  dx__ps_unref(ps);
}

/* FNV-1a over a seeded basis. */
static uint64_t hash_name(const dx_pubsub *ps, const char *name) {
  uint64_t h = 14695981039346656037ULL ^ ps->seed;
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
    h ^= *p;
    h *= 1099511628211ULL;
  }
  return h ^ (h >> 29);
}

static dx__ps_topic *find(const dx_pubsub *ps, const char *name, uint64_t h) {
  dx__ps_topic *t = ps->buckets[h & (ps->nbuckets - 1)];
  for (; t; t = t->hnext)
    if (t->hash == h && strcmp(t->name, name) == 0) return t;
  return NULL;
}

static size_t topic_size(const dx_pubsub *ps) {
  return sizeof(dx__ps_topic) + ps->nshards * sizeof(dx__ps_shard);
}

/* Doubles the table when it is full; a failed allocation only makes the
 * chains longer. ps->lock held exclusively. */
static void maybe_grow(dx_pubsub *ps) {
  if (ps->ntopics < ps->nbuckets) return;
  size_t n = ps->nbuckets * 2;
  dx__ps_topic **b = dx__ps_alloc(ps, n * sizeof *b);
  if (!b) return;
  memset(b, 0, n * sizeof *b);
  for (size_t i = 0; i < ps->nbuckets; i++) {
    dx__ps_topic *t = ps->buckets[i], *next;
    for (; t; t = next) {
      next = t->hnext;
      t->hnext = b[t->hash & (n - 1)];
      b[t->hash & (n - 1)] = t;
    }
  }
  dx__ps_free(ps, ps->buckets, ps->nbuckets * sizeof *b);
  ps->buckets = b;
  ps->nbuckets = n;
}

static dx__ps_topic *topic_new(dx_pubsub *ps, const char *name, uint64_t h,
                               int *err) {
  dx__ps_topic *t = dx__ps_alloc(ps, topic_size(ps));
  if (!t) {
    *err = DX_ENOMEM;
    return NULL;
  }
  memset(t, 0, topic_size(ps));
  if ((*err = make_epoch(ps, name, t->epoch)) < 0 ||
      pthread_mutex_init(&t->lock, NULL) != 0) {
    if (!*err) *err = DX_ENOMEM;
    dx__ps_free(ps, t, topic_size(ps));
    return NULL;
  }
  atomic_init(&t->refs, 1);
  t->ps = ps;
  t->hash = h;
  strcpy(t->name, name);
  atomic_fetch_add(&ps->refs, 1);
  return t;
}

void dx__ps_topic_decref(dx__ps_topic *t) {
  if (atomic_fetch_sub(&t->refs, 1) != 1) return;
  dx_pubsub *ps = t->ps;
  assert(t->nsubs == 0 && t->rcount == 0);
  dx__ps_free(ps, t->ring, t->rcap * sizeof *t->ring);
  dx__ps_members_free(t);
  pthread_mutex_destroy(&t->lock);
  dx__ps_free(ps, t, topic_size(ps));
  dx__ps_unref(ps);
}

/* Looks name up, inserting `fresh` (made outside the lock, so an epoch
 * hook or RAND_bytes never runs under it) when it is missing. Returns the
 * topic with a new reference, or NULL with *err. */
static dx__ps_topic *lookup(dx_pubsub *ps, const char *name, uint64_t h,
                            dx__ps_topic **fresh, bool create, int *err) {
  pthread_rwlock_rdlock(&ps->lock);
  dx__ps_topic *t = find(ps, name, h);
  if (t) atomic_fetch_add(&t->refs, 1);
  bool full = ps->ntopics >= ps->max_topics;
  pthread_rwlock_unlock(&ps->lock);
  if (t || !create) return t;
  if (full) { /* spare a flood of creates the epoch and the allocation */
    *err = DX_ENOSPC;
    return NULL;
  }
  if (!*fresh && !(*fresh = topic_new(ps, name, h, err))) return NULL;
  pthread_rwlock_wrlock(&ps->lock);
  if ((t = find(ps, name, h))) {
    atomic_fetch_add(&t->refs, 1);
  } else if (ps->ntopics >= ps->max_topics) {
    *err = DX_ENOSPC;
  } else {
    maybe_grow(ps);
    t = *fresh;
    *fresh = NULL;
    t->hnext = ps->buckets[h & (ps->nbuckets - 1)];
    ps->buckets[h & (ps->nbuckets - 1)] = t;
    ps->ntopics++;
    atomic_fetch_add(&t->refs, 1); /* the registry's and the caller's */
  }
  pthread_rwlock_unlock(&ps->lock);
  return t;
}

dx__ps_topic *dx__ps_acquire(dx_pubsub *ps, const char *name, bool create,
                             int *err) {
  uint64_t h = hash_name(ps, name);
  dx__ps_topic *fresh = NULL, *t;
  *err = 0;
  while ((t = lookup(ps, name, h, &fresh, create, err))) {
    pthread_mutex_lock(&t->lock);
    if (!t->removed) break;
    pthread_mutex_unlock(&t->lock);
    dx__ps_topic_decref(t);
  }
  if (fresh) dx__ps_topic_decref(fresh);
  return t;
}

bool dx__ps_peek(dx_pubsub *ps, const char *name, char *epoch,
                 uint64_t *seq) {
  int err;
  dx__ps_topic *t = dx__ps_acquire(ps, name, false, &err);
  if (!t) return false;
  memcpy(epoch, t->epoch, DX_PS_EPOCH_MAX + 1);
  *seq = t->seq;
  pthread_mutex_unlock(&t->lock);
  dx__ps_topic_decref(t);
  return true;
}

/* ---- listings, sweep, stats ---- */

static void fill_info(const dx__ps_topic *t, dx_ps_topic_info *info) {
  info->topic = t->name;
  info->seq = t->seq;
  info->epoch = t->epoch;
  info->subscribers = t->nsubs;
  info->retained = t->rcount;
  info->members = t->nmembers;
}

size_t dx_ps_topics(dx_pubsub *ps, uint64_t now_ms,
                    void (*fn)(void *ud, const dx_ps_topic_info *info),
                    void *ud) {
  size_t n = 0;
  pthread_rwlock_rdlock(&ps->lock);
  for (size_t i = 0; i < ps->nbuckets; i++) {
    for (dx__ps_topic *t = ps->buckets[i]; t; t = t->hnext, n++) {
      if (!fn) continue;
      dx_ps_topic_info info;
      pthread_mutex_lock(&t->lock);
      dx__ps_trim(t, now_ms);
      fill_info(t, &info);
      fn(ud, &info);
      pthread_mutex_unlock(&t->lock);
    }
  }
  pthread_rwlock_unlock(&ps->lock);
  return n;
}

size_t dx_ps_sweep(dx_pubsub *ps, uint64_t now_ms) {
  size_t n = 0;
  pthread_rwlock_wrlock(&ps->lock);
  for (size_t i = 0; i < ps->nbuckets; i++) {
    dx__ps_topic **pp = &ps->buckets[i], *t;
    while ((t = *pp)) {
      pthread_mutex_lock(&t->lock);
      dx__ps_trim(t, now_ms);
      /* With a remote backplane, an unsynced copy is only a head start
       * for the next sync: not worth its memory. */
      bool stale = ps->bp && ps->bp->needs_sync && !t->synced && !t->syncing;
      bool idle = t->nsubs == 0 && (t->rcount == 0 || stale);
      if (idle) {
        dx__ps_clear(t);
        /* Under both locks: a lookup holding a reference sees it under
         * the topic lock and looks again. */
        t->removed = true;
        *pp = t->hnext;
        ps->ntopics--;
      } else {
        pp = &t->hnext;
      }
      pthread_mutex_unlock(&t->lock);
      if (idle) {
        dx__ps_topic_decref(t);
        n++;
      }
    }
  }
  pthread_rwlock_unlock(&ps->lock);
  return n;
}

void dx_pubsub_stats_get(const dx_pubsub *ps, dx_pubsub_stats *out) {
  dx_pubsub *m = (dx_pubsub *)ps; /* the lock is not part of the value */
  pthread_rwlock_rdlock(&m->lock);
  out->topics = ps->ntopics;
  pthread_rwlock_unlock(&m->lock);
  out->subscriptions = atomic_load(&m->nsubs);
  out->messages = atomic_load(&m->nmsgs);
  out->published = atomic_load(&m->published);
  out->delivered = atomic_load(&m->delivered);
  out->deliver_failed = atomic_load(&m->deliver_failed);
}
