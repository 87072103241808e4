/*
 * Subscribers, subscriptions and the shard-side fan-out.
 *
 * WHY EXACTLY ONCE, IN ORDER
 * dx_ps_subscribe runs on shard s under the topic lock L. It reads the
 * topic's seq S, takes the replay from the history (all <= S), links the
 * subscription on s's list with start = S + 1 and counts it in s's
 * `count`, all before releasing L. Every publish commits under L too, so:
 *  - a message with seq <= S committed before: it is in the replay, or in
 *    the gap, never live. If it was handed to s (other subscribers there)
 *    but s dispatches it only now, dispatch skips the new subscription:
 *    start > seq. No duplicate.
 *  - a message with seq > S commits after: the publisher sees count > 0
 *    under L and hands s a reference; s dispatches it later on this
 *    thread, after the link (program order), so the subscription is on
 *    the list. No gap.
 *  - deliver is called under L, so s's FIFO queue holds one topic's
 *    messages in seq order, and dispatch walks them in that order.
 * Unsubscribing unlinks on the shard thread: a message queued before but
 * dispatched after is not handed over. The list is walked and changed only
 * by s's thread; publishers read only `count`, under L.
 */
#include "pubsub/internal.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static void free_node(dx_pubsub *ps, dx__ps_node *n);
static bool end_node(dx__ps_node *n);

static size_t sub_size(size_t id_len, size_t info_len) {
  return sizeof(dx_ps_sub) + (id_len ? id_len + 1 : 0) + info_len;
}

dx_ps_sub *dx_ps_sub_new(dx_pubsub *ps, unsigned shard, void *user,
                         const dx_ps_member *member) {
  if (shard >= ps->nshards || (member && !member->id) ||
      (member && member->info_len && !member->info)) {
    errno = EINVAL;
    return NULL;
  }
  size_t id_len = member ? strlen(member->id) : 0;
  size_t info_len = member ? member->info_len : 0;
  if (member && !id_len) {
    errno = EINVAL;
    return NULL;
  }
  dx_ps_sub *sub = dx__ps_alloc(ps, sub_size(id_len, info_len));
  if (!sub) {
    errno = ENOMEM;
    return NULL;
  }
  memset(sub, 0, sizeof *sub);
  sub->ps = ps;
  sub->shard = shard;
  sub->user = user;
  if (member) {
    sub->member_id = (char *)(sub + 1);
    memcpy(sub->member_id, member->id, id_len + 1);
    sub->member_id_len = id_len;
    sub->member_info = sub->member_id + id_len + 1;
    if (info_len) memcpy(sub->member_info, member->info, info_len);
    sub->member_info_len = info_len;
  }
  return sub;
}

void dx_ps_sub_free(dx_ps_sub *sub) {
  if (!sub) return;
  dx_ps_unsubscribe_all(sub, NULL, NULL);
  dx__ps_free(sub->ps, sub, sub_size(sub->member_id_len, sub->member_info_len));
}

void *dx_ps_sub_user(const dx_ps_sub *sub) {
  return sub->user;
}

size_t dx_ps_sub_count(const dx_ps_sub *sub) {
  return sub->count;
}

static dx__ps_node **find_node(dx_ps_sub *sub, const char *topic) {
  dx__ps_node **pp = &sub->nodes;
  for (; *pp; pp = &(*pp)->snext)
    if (strcmp((*pp)->topic->name, topic) == 0) return pp;
  return NULL;
}

/* What to replay and which gap to report; fills out's gap and returns the
 * first seq to replay (> t->seq: none). t locked. The history holds
 * first..t->seq without holes (commit appends contiguous seqs; ingest
 * clears it at a hole or a new epoch). */
static uint64_t plan(const dx__ps_topic *t, const dx_ps_resume *r,
                     dx_ps_subscribed *out) {
  uint64_t seq = t->seq;
  uint64_t first = t->rcount ? dx__ps_ring_at(t, 0)->seq : seq + 1;
  assert(!t->rcount || dx__ps_ring_at(t, t->rcount - 1)->seq == seq);
  if (!r) return seq + 1;
  if ((r->epoch && strcmp(r->epoch, t->epoch) != 0) || r->since > seq) {
    /* Its since counts another stream's messages: all of this one it
     * cannot get is 1..first-1. */
    out->gap = DX_PS_GAP_EPOCH;
    out->gap_from = 1;
    out->gap_to = first - 1;
    return first;
  }
  if (r->since + 1 >= first) return r->since + 1;
  out->gap = DX_PS_GAP_HISTORY;
  out->gap_from = r->since + 1;
  out->gap_to = first - 1;
  return first;
}

static int take_replay(dx__ps_topic *t, uint64_t from, dx_ps_subscribed *out) {
  if (from > t->seq) return 0;
  size_t n = (size_t)(t->seq - from + 1);
  size_t at = t->rcount - n;
  out->replay = dx__ps_alloc(t->ps, n * sizeof *out->replay);
  if (!out->replay) return DX_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    dx_ps_msg *m = dx__ps_ring_at(t, at + i);
    dx_ps_msg_incref(m);
    out->replay[i] = m;
  }
  out->nreplay = n;
  return 0;
}

/* Links n on its shard's list and counts it. t locked. */
static void link_node(dx__ps_topic *t, dx__ps_node *n) {
  dx_pubsub *ps = t->ps;
  dx__ps_shard *sh = &t->shards[n->sub->shard];
  n->prev = sh->tail;
  n->next = NULL;
  if (sh->tail)
    sh->tail->next = n;
  else
    sh->head = n;
  sh->tail = n;
  sh->count++;
  if (t->nsubs++ == 0 && ps->bp && ps->bp->interest)
    ps->bp->interest(ps->bp->ud, t->name, true);
}

static bool needs_sync(const dx_pubsub *ps) {
  return ps->bp && ps->bp->needs_sync;
}

/* Answers a subscription on a synced topic: the replay, presence, the
 * live range. t locked. */
static int answer(dx__ps_topic *t, dx__ps_node *n, const dx_ps_resume *resume,
                  dx_ps_subscribed *out) {
  int rc = take_replay(t, plan(t, resume, out), out);
  if (rc < 0) return rc;
  dx_ps_sub *sub = n->sub;
  if (t->ps->presence && sub->member_id) {
    if ((rc = dx__ps_member_join(t, sub, &out->joined)) < 0) return rc;
    n->member = true;
  }
  n->start = t->seq + 1;
  n->gen = t->gen;
  out->seq = t->seq;
  memcpy(out->epoch, t->epoch, sizeof out->epoch);
  return 0;
}

/* A subscription that waits for the topic's sync keeps its resume. */
static int park(dx__ps_topic *t, dx__ps_node *n, const dx_ps_resume *resume,
                dx_ps_subscribed *out) {
  struct dx__ps_wait *w = dx__ps_alloc(t->ps, sizeof *w);
  if (!w) return DX_ENOMEM;
  memset(w, 0, sizeof *w);
  if (resume) {
    w->resume = true;
    w->since = resume->since;
    if ((w->has_epoch = resume->epoch != NULL))
      snprintf(w->epoch, sizeof w->epoch, "%s", resume->epoch);
  }
  n->wait = w;
  n->start = UINT64_MAX;
  out->pending = true;
  return 0;
}

int dx_ps_subscribe(dx_ps_sub *sub, const char *topic,
                    const dx_ps_resume *resume, uint64_t now_ms,
                    dx_ps_subscribed *out) {
  dx_pubsub *ps = sub->ps;
  memset(out, 0, sizeof *out);
  out->ps_ = ps;
  if (!dx_ps_topic_valid(topic)) return DX_EINVAL;
  if (find_node(sub, topic)) return DX_ESTATE;
  dx__ps_node *n = dx__ps_alloc(ps, sizeof *n);
  if (!n) return DX_ENOMEM;
  memset(n, 0, sizeof *n);
  n->sub = sub;
  int rc;
  dx__ps_topic *t = dx__ps_acquire(ps, topic, true, &rc);
  if (!t) goto fail;
  dx__ps_trim(t, now_ms);
  bool wait = needs_sync(ps) && !t->synced;
  rc = wait ? park(t, n, resume, out) : answer(t, n, resume, out);
  if (rc == 0 && wait && !t->syncing) {
    if ((rc = ps->bp->sync(ps->bp->ud, t->name)) == 0) t->syncing = true;
  }
  if (rc < 0) goto fail_locked;
  n->topic = t; /* the reference acquire took */
  link_node(t, n);
  if (wait) t->npending++;
  pthread_mutex_unlock(&t->lock);

  n->snext = sub->nodes;
  sub->nodes = n;
  sub->count++;
  atomic_fetch_add(&ps->nsubs, 1);
  return 0;

fail_locked:
  pthread_mutex_unlock(&t->lock);
  dx__ps_topic_decref(t);
fail:
  dx_ps_subscribed_clear(out);
  free_node(ps, n);
  return rc;
}

void dx_ps_subscribed_clear(dx_ps_subscribed *out) {
  for (size_t i = 0; i < out->nreplay; i++)
    dx_ps_msg_decref(out->replay[i]);
  if (out->replay)
    dx__ps_free(out->ps_, out->replay, out->nreplay * sizeof *out->replay);
  memset(out, 0, sizeof *out);
}

static void free_node(dx_pubsub *ps, dx__ps_node *n) {
  dx__ps_free(ps, n->wait, sizeof *n->wait);
  dx__ps_free(ps, n, sizeof *n);
}

int dx_ps_subscribe_complete(dx_ps_sub *sub, const char *topic,
                             uint64_t now_ms, dx_ps_subscribed *out) {
  dx_pubsub *ps = sub->ps;
  memset(out, 0, sizeof *out);
  out->ps_ = ps;
  dx__ps_node **pp = topic ? find_node(sub, topic) : NULL, *n;
  if (!pp || !(*pp)->wait) return DX_ESTATE;
  n = *pp;
  dx__ps_topic *t = n->topic;
  pthread_mutex_lock(&t->lock);
  int rc = t->synced ? 0 : (t->sync_err ? t->sync_err : DX_EUNAVAIL);
  if (rc == 0) {
    dx__ps_trim(t, now_ms);
    const struct dx__ps_wait *w = n->wait;
    dx_ps_resume r = {.since = w->since,
                      .epoch = w->has_epoch ? w->epoch : NULL};
    rc = answer(t, n, w->resume ? &r : NULL, out);
  }
  if (rc == 0) {
    dx__ps_free(ps, n->wait, sizeof *n->wait);
    n->wait = NULL;
    t->npending--;
  }
  pthread_mutex_unlock(&t->lock);
  if (rc < 0) {
    /* Failed: the subscription ends (the member never joined). */
    *pp = n->snext;
    end_node(n);
    dx_ps_subscribed_clear(out);
    out->ps_ = ps;
  }
  return rc;
}

/* Unlinks and frees n (already off its sub's list). Returns whether its
 * presence member left. */
static bool end_node(dx__ps_node *n) {
  dx__ps_topic *t = n->topic;
  dx_pubsub *ps = t->ps;
  dx__ps_shard *sh = &t->shards[n->sub->shard];
  pthread_mutex_lock(&t->lock);
  /* A dispatch may be walking this list (we are in its callback). */
  if (sh->iter == n) sh->iter = n->next;
  if (n->prev)
    n->prev->next = n->next;
  else
    sh->head = n->next;
  if (n->next)
    n->next->prev = n->prev;
  else
    sh->tail = n->prev;
  sh->count--;
  if (n->wait) t->npending--;
  bool left = n->member && dx__ps_member_leave(t, n->sub);
  if (--t->nsubs == 0) {
    /* Nobody keeps the copy current any more. */
    t->synced = false;
    if (ps->bp && ps->bp->interest) ps->bp->interest(ps->bp->ud, t->name, false);
  }
  pthread_mutex_unlock(&t->lock);
  n->sub->count--;
  free_node(ps, n);
  atomic_fetch_sub(&ps->nsubs, 1);
  dx__ps_topic_decref(t);
  return left;
}

int dx_ps_unsubscribe(dx_ps_sub *sub, const char *topic) {
  if (!topic) return DX_ESTATE;
  dx__ps_node **pp = find_node(sub, topic), *n;
  if (!pp) return DX_ESTATE;
  n = *pp;
  *pp = n->snext;
  return end_node(n) ? 1 : 0;
}

size_t dx_ps_unsubscribe_all(dx_ps_sub *sub,
                             void (*fn)(void *ud, const char *topic, bool left),
                             void *ud) {
  size_t count = 0;
  dx__ps_node *n;
  while ((n = sub->nodes)) {
    sub->nodes = n->snext;
    char name[DX_PS_TOPIC_MAX + 1];
    strcpy(name, n->topic->name); /* the topic may go with the node */
    bool left = end_node(n);
    if (fn) fn(ud, name, left);
    count++;
  }
  return count;
}

/* Whether n should be handed msg; moves n to a new epoch. */
static bool wants(dx__ps_node *n, const dx_ps_msg *msg) {
  if (n->wait) return msg->kind == DX_PS_READY;
  switch ((dx_ps_kind)msg->kind) {
  case DX_PS_MESSAGE:
    return n->gen == msg->gen && n->start <= msg->seq;
  case DX_PS_BROADCAST:
    return true;
  case DX_PS_GAP: {
    dx_ps_gap g;
    dx_ps_msg_gap(msg, &g);
    if (g.reason != DX_PS_GAP_EPOCH)
      return n->gen == msg->gen && n->start <= g.from;
    /* Subscribed before the change (an older gen): told, and moved on. A
     * newer subscription began in the new epoch already. */
    if (n->gen >= msg->gen) return false;
    n->gen = msg->gen;
    n->start = g.to + 1;
    return true;
  }
  case DX_PS_READY:
    return false;
  }
  return false;
}

size_t dx_ps_dispatch(dx_pubsub *ps, unsigned shard, dx_ps_msg *msg,
                      void (*fn)(void *ud, dx_ps_sub *sub, dx_ps_msg *msg),
                      void *ud) {
  assert(shard < ps->nshards && msg->topic && msg->topic->ps == ps);
  (void)ps;
  dx__ps_shard *sh = &msg->topic->shards[shard];
  assert(!sh->iter && "dx_ps_dispatch inside a dispatch callback");
  size_t calls = 0;
  /* iter, not n->next: fn may end n, or the node after it. */
  for (dx__ps_node *n = sh->head; n; n = sh->iter) {
    sh->iter = n->next;
    if (wants(n, msg)) {
      fn(ud, n->sub, msg);
      calls++;
    }
  }
  sh->iter = NULL;
  return calls;
}
