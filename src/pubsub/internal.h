/*
 * Internal to pubsub: the registry, topic and message layouts shared by
 * registry.c, msg.c, publish.c, sub.c and presence.c.
 *
 * LOCKS AND WHO TOUCHES WHAT
 * - ps->lock (rwlock) guards the hash table (buckets, hnext, ntopics).
 *   Lookups take it shared, creation and sweep exclusive.
 * - t->lock (mutex) guards the topic's stream: seq, epoch, the history
 *   ring, nsubs, members, removed, and each shard's `count`. Order:
 *   ps->lock before t->lock, never the other way round.
 * - A shard's subscriber list (head, tail, iter in struct dx__ps_shard) is
 *   touched only by that shard's thread: subscribe/unsubscribe link and
 *   unlink there (also holding t->lock, for `count`), dispatch walks it
 *   without any lock. Publishers never look at the list, only at `count`,
 *   under t->lock. The list and its count are distinct memory locations.
 * - Reference counts (t->refs, msg->refs, ps->refs) are atomic.
 *
 * LIFETIMES
 * ps->refs = 1 (the owner) + 1 per topic alive. t->refs = 1 while in the
 * registry + 1 per message + 1 per subscription + temporary lookups. A
 * topic leaves the registry (sweep, free) with its history cleared, which
 * breaks the topic <-> retained-message cycle; its memory goes with its
 * last reference (a message still queued to a shard, say).
 */
#ifndef DX_PUBSUB_INTERNAL_H
#define DX_PUBSUB_INTERNAL_H

#include <duplex/pubsub.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dx__ps_topic dx__ps_topic;
typedef struct dx__ps_node dx__ps_node;
typedef struct dx__ps_member dx__ps_member;

struct dx_pubsub {
  dx_allocator alloc;
  atomic_size_t refs;
  unsigned nshards;
  size_t history; /* 0: none */
  uint64_t history_ms;
  size_t max_topics;
  bool presence;
  int (*deliver)(void *ud, unsigned shard, dx_ps_msg *msg);
  int (*frame)(void *ud, const dx_ps_frame_info *info, dx_ps_buf *out);
  int (*epoch)(void *ud, const char *topic, char *out, size_t cap);
  void *ud;
  const dx_ps_backplane *bp;

  pthread_rwlock_t lock;
  dx__ps_topic **buckets; /* power of two */
  size_t nbuckets;
  size_t ntopics;
  uint64_t seed;

  atomic_size_t nsubs, nmsgs;
  atomic_uint_fast64_t published, delivered, deliver_failed;
};

/* One shard's view of a topic. */
typedef struct dx__ps_shard {
  dx__ps_node *head, *tail; /* shard thread only */
  dx__ps_node *iter;        /* next node of a running dispatch */
  uint32_t count;           /* subscriptions; under t->lock */
} dx__ps_shard;

struct dx__ps_topic {
  dx__ps_topic *hnext; /* ps->lock */
  uint64_t hash;
  atomic_size_t refs;
  dx_pubsub *ps;
  pthread_mutex_t lock;
  bool removed;
  /* A remote backplane's (needs_sync) view: the copy here is trusted
   * while synced; a sync was asked for and has not answered. */
  bool synced, syncing;
  uint32_t npending; /* pending subscriptions */
  int sync_err;      /* the last failed sync's error */
  uint64_t seq;
  /* Counts epoch changes while the topic is in memory: a subscription
   * remembers the one it was made in, so that after a change it takes
   * only the new epoch's messages (whose seqs start again). */
  uint64_t gen;
  char epoch[DX_PS_EPOCH_MAX + 1];
  dx_ps_msg **ring; /* history: rcount messages from rhead, seq order */
  size_t rcap, rhead, rcount;
  size_t nsubs;
  dx__ps_member *members;
  size_t nmembers;
  char name[DX_PS_TOPIC_MAX + 1];
  dx__ps_shard shards[]; /* ps->nshards */
};

/* One subscription: on its topic's shard list and on its sub's list. */
struct dx__ps_node {
  dx_ps_sub *sub;
  dx__ps_topic *topic; /* holds a reference */
  uint64_t start;      /* first seq dispatched live */
  uint64_t gen;        /* the topic's gen when start was set */
  dx__ps_node *prev, *next;
  dx__ps_node *snext;
  bool member; /* counted in the topic's presence entry */
  /* Waiting for the topic's sync (see dx_ps_backplane): the resume it
   * asked for. NULL once answered, as for every in-process subscription. */
  struct dx__ps_wait *wait;
};

struct dx__ps_wait {
  bool resume, has_epoch;
  uint64_t since;
  char epoch[DX_PS_EPOCH_MAX + 1];
};

struct dx_ps_sub {
  dx_pubsub *ps;
  unsigned shard;
  void *user;
  dx__ps_node *nodes;
  size_t count;
  char *member_id; /* NULL: no presence */
  size_t member_id_len;
  void *member_info;
  size_t member_info_len;
};

struct dx__ps_member {
  dx__ps_member *next;
  size_t refs; /* subscriptions of this member to the topic */
  char *id;
  size_t id_len;
  void *info;
  size_t info_len;
};

struct dx_ps_msg {
  atomic_size_t refs;
  uint8_t kind; /* dx_ps_kind */
  int err;      /* DX_PS_READY: the sync's outcome */
  uint64_t gen; /* DX_PS_MESSAGE and DX_PS_GAP: the topic's gen */
  uint64_t seq;
  uint64_t time_ms;
  dx__ps_topic *topic; /* holds a reference */
  uint8_t *frame;      /* data, or its own block when frame_cap */
  size_t frame_len, frame_cap;
  size_t len;
  uint8_t data[];
};

struct dx_ps_buf {
  dx_pubsub *ps;
  uint8_t *p;
  size_t len, cap;
};

/* ---- allocation (registry.c) ---- */
void *dx__ps_alloc(dx_pubsub *ps, size_t n);
void dx__ps_free(dx_pubsub *ps, void *p, size_t n);
void *dx__ps_realloc(dx_pubsub *ps, void *p, size_t old, size_t n);
void dx__ps_unref(dx_pubsub *ps);

/* ---- topics (registry.c) ---- */
/* Finds (or, with create, makes) the topic and returns it LOCKED with a
 * reference the caller owns, or NULL with *err set (DX_ENOSPC, DX_ENOMEM,
 * -EIO, an epoch hook's error; 0 when not found without create). name is
 * valid. */
dx__ps_topic *dx__ps_acquire(dx_pubsub *ps, const char *name, bool create,
                             int *err);
void dx__ps_topic_decref(dx__ps_topic *t);
/* The local copy's epoch (DX_PS_EPOCH_MAX + 1 bytes) and seq; false when
 * the topic is not in the registry. */
bool dx__ps_peek(dx_pubsub *ps, const char *name, char *epoch, uint64_t *seq);
/* 12 random characters of [A-Za-z0-9] and a NUL. 0 or -EIO. */
int dx__ps_random_epoch(char *out);
/* 1..DX_PS_EPOCH_MAX printable ASCII characters, no space. */
bool dx__ps_epoch_valid(const char *epoch);

/* ---- history (publish.c) ---- */
/* Drops retained messages older than history_ms at now_ms. t locked. */
void dx__ps_trim(dx__ps_topic *t, uint64_t now_ms);
/* Drops all retained messages. t locked. */
void dx__ps_clear(dx__ps_topic *t);
/* The i-th retained message, oldest first. */
static inline dx_ps_msg *dx__ps_ring_at(const dx__ps_topic *t, size_t i) {
  return t->ring[(t->rhead + i) % t->rcap];
}

/* ---- notices (publish.c) ---- */
/* Hands every shard with subscribers a message of `kind` (DX_PS_GAP: the
 * gap in *gap; DX_PS_READY: err). t locked. Returns 0, DX_ENOMEM. */
int dx__ps_notice(dx__ps_topic *t, dx_ps_kind kind, const dx_ps_gap *gap,
                  int err);

/* ---- messages (msg.c) ---- */
dx_ps_msg *dx__ps_msg_new(dx_pubsub *ps, const void *data, size_t len);
/* Frees a message that was never shared (its topic not yet set). */
void dx__ps_msg_discard(dx_pubsub *ps, dx_ps_msg *msg);

/* ---- presence (presence.c) ---- */
/* Counts sub's member in t; *joined when it was not there. t locked.
 * Returns 0, DX_ENOMEM. */
int dx__ps_member_join(dx__ps_topic *t, const dx_ps_sub *sub, bool *joined);
/* Returns true when the member left (its last subscription). t locked. */
bool dx__ps_member_leave(dx__ps_topic *t, const dx_ps_sub *sub);
/* Frees every member entry. t locked or unreachable. */
void dx__ps_members_free(dx__ps_topic *t);

#endif
