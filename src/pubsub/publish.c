/*
 * The publish path: the in-process backplane, sequencing, history and
 * delivery to shards.
 *
 * Everything that makes a message part of a topic's stream happens in
 * commit(), under the topic lock, in one step: the seq is assigned, the
 * message enters the history, and each shard with subscribers is handed a
 * reference. A subscribe, under the same lock, therefore sees either all
 * of that (the message is <= its seq: replayed, or reported in the gap) or
 * none of it (> its seq: delivered live, to a list it is already on).
 * Calling deliver under the lock is what keeps one topic's messages in seq
 * order in every shard's queue.
 */
#include "pubsub/internal.h"

#include <string.h>

/* ---- history ---- */

static void ring_drop_oldest(dx__ps_topic *t) {
  dx_ps_msg *m = t->ring[t->rhead];
  t->ring[t->rhead] = NULL;
  t->rhead = (t->rhead + 1) % t->rcap;
  t->rcount--;
  /* Never the topic's last reference: whoever holds the lock holds one. */
  dx_ps_msg_decref(m);
}

void dx__ps_trim(dx__ps_topic *t, uint64_t now_ms) {
  uint64_t age = t->ps->history_ms;
  if (!age) return;
  while (t->rcount) {
    const dx_ps_msg *m = t->ring[t->rhead];
    /* Publishers on other threads read their clocks a little apart, so
     * a message may look younger than now: keep it. */
    if (now_ms < m->time_ms || now_ms - m->time_ms < age) break;
    ring_drop_oldest(t);
  }
}

void dx__ps_clear(dx__ps_topic *t) {
  while (t->rcount)
    ring_drop_oldest(t);
  t->rhead = 0;
}

/* Makes room for one more message before anything is assigned, so that
 * the only failure after the seq is taken is none. The ring grows by
 * doubling up to `history`; a topic that never fills it never pays for
 * the whole of it. */
static int ring_reserve(dx__ps_topic *t) {
  dx_pubsub *ps = t->ps;
  if (!ps->history || t->rcount < t->rcap || t->rcap == ps->history) return 0;
  size_t cap = t->rcap ? t->rcap * 2 : 8;
  if (cap > ps->history) cap = ps->history;
  dx_ps_msg **r = dx__ps_alloc(ps, cap * sizeof *r);
  if (!r) return DX_ENOMEM;
  for (size_t i = 0; i < t->rcount; i++)
    r[i] = dx__ps_ring_at(t, i);
  dx__ps_free(ps, t->ring, t->rcap * sizeof *r);
  t->ring = r;
  t->rcap = cap;
  t->rhead = 0;
  return 0;
}

static void ring_push(dx__ps_topic *t, dx_ps_msg *m) {
  if (!t->ps->history) return;
  if (t->rcount == t->rcap) ring_drop_oldest(t);
  dx_ps_msg_incref(m);
  t->ring[(t->rhead + t->rcount) % t->rcap] = m;
  t->rcount++;
}

/* ---- delivery ---- */

/* Hands m to every shard that has subscribers to t. t locked. */
static void deliver_all(dx__ps_topic *t, dx_ps_msg *m) {
  dx_pubsub *ps = t->ps;
  for (unsigned s = 0; s < ps->nshards; s++) {
    if (!t->shards[s].count) continue;
    dx_ps_msg_incref(m);
    if (ps->deliver(ps->ud, s, m) < 0) {
      atomic_fetch_add(&ps->deliver_failed, 1);
      dx_ps_msg_decref(m); /* not the last: the caller holds one */
    } else {
      atomic_fetch_add(&ps->delivered, 1);
    }
  }
}

static int build_frame(dx__ps_topic *t, dx_ps_msg *m, uint64_t seq) {
  dx_pubsub *ps = t->ps;
  dx_ps_buf b = {.ps = ps};
  dx_ps_frame_info info = {
      .topic = t->name,
      .seq = seq,
      .epoch = t->epoch,
      .data = m->data,
      .len = m->len,
  };
  int rc = ps->frame(ps->ud, &info, &b);
  if (rc < 0 || !b.len) {
    dx__ps_free(ps, b.p, b.cap);
    if (rc < 0) return rc;
    m->frame_len = 0; /* the hook wants nothing sent */
    return 0;
  }
  m->frame = b.p;
  m->frame_len = b.len;
  m->frame_cap = b.cap;
  return 0;
}

/* Makes m the topic's message `seq`. t locked; m fresh (one reference, the
 * caller's). On failure nothing changed and m is still the caller's. */
static int commit(dx__ps_topic *t, dx_ps_msg *m, uint64_t seq,
                  uint64_t now_ms) {
  int rc = ring_reserve(t);
  if (rc < 0) return rc;
  if (t->ps->frame) {
    if ((rc = build_frame(t, m, seq)) < 0) return rc;
  }
  m->seq = seq;
  m->gen = t->gen;
  m->time_ms = now_ms;
  m->topic = t;
  atomic_fetch_add(&t->refs, 1);
  t->seq = seq;
  ring_push(t, m);
  deliver_all(t, m);
  atomic_fetch_add(&t->ps->published, 1);
  return 0;
}

/* After commit: the caller's reference, or the whole message. */
static void release(dx_pubsub *ps, dx_ps_msg *m) {
  if (m->topic)
    dx_ps_msg_decref(m);
  else
    dx__ps_msg_discard(ps, m);
}

/* A fresh message holding data[0..len) and the topic, LOCKED with a
 * reference (made when create). NULL with *rc (0: no such topic) and
 * nothing left allocated on failure. */
static dx__ps_topic *prepare(dx_pubsub *ps, const char *topic, bool create,
                             const void *data, size_t len, dx_ps_msg **m,
                             int *rc) {
  if (!(*m = dx__ps_msg_new(ps, data, len))) {
    *rc = DX_ENOMEM;
    return NULL;
  }
  dx__ps_topic *t = dx__ps_acquire(ps, topic, create, rc);
  if (!t) dx__ps_msg_discard(ps, *m);
  return t;
}

/* ---- the in-process backplane ---- */

static int local_publish(void *ud, dx_pubsub *ps, const char *topic,
                         const void *data, size_t len, uint64_t now_ms,
                         dx_ps_done_fn done, void *done_ud) {
  (void)ud;
  dx_ps_msg *m;
  int rc;
  dx__ps_topic *t = prepare(ps, topic, true, data, len, &m, &rc);
  if (!t) return rc;
  dx__ps_trim(t, now_ms);
  rc = commit(t, m, t->seq + 1, now_ms);
  dx_ps_published out = {.seq = t->seq};
  memcpy(out.epoch, t->epoch, sizeof out.epoch);
  pthread_mutex_unlock(&t->lock);
  release(ps, m);
  dx__ps_topic_decref(t);
  if (rc == 0 && done) done(done_ud, 0, &out);
  return rc;
}

static const dx_ps_backplane local_backplane = {.publish = local_publish};

int dx_ps_publish_async(dx_pubsub *ps, const char *topic, const void *data,
                        size_t len, uint64_t now_ms, dx_ps_done_fn done,
                        void *ud) {
  if (!dx_ps_topic_valid(topic) || (len && !data)) return DX_EINVAL;
  const dx_ps_backplane *bp = ps->bp ? ps->bp : &local_backplane;
  return bp->publish(bp->ud, ps, topic, data, len, now_ms, done, ud);
}

static void copy_out(void *ud, int rc, const dx_ps_published *out) {
  if (rc == 0) *(dx_ps_published *)ud = *out;
}

int dx_ps_publish(dx_pubsub *ps, const char *topic, const void *data,
                  size_t len, uint64_t now_ms, dx_ps_published *out) {
  if (out) memset(out, 0, sizeof *out);
  /* In-process, done runs before the return; a remote backplane learns
   * the seq later, when nobody waits for it any more. */
  bool here = !ps->bp;
  return dx_ps_publish_async(ps, topic, data, len, now_ms,
                             here && out ? copy_out : NULL, out);
}

/* ---- from a backplane ---- */

/* Hands an unsequenced message (fresh: the caller's one reference, which
 * this takes) to every shard with subscribers. t locked. */
static void hand_out(dx__ps_topic *t, dx_ps_msg *m, dx_ps_kind kind, int err) {
  m->kind = (uint8_t)kind;
  m->err = err;
  m->gen = t->gen;
  m->topic = t;
  atomic_fetch_add(&t->refs, 1);
  deliver_all(t, m);
  dx_ps_msg_decref(m);
}

int dx__ps_notice(dx__ps_topic *t, dx_ps_kind kind, const dx_ps_gap *gap,
                  int err) {
  dx_ps_msg *m = dx__ps_msg_new(t->ps, gap, gap ? sizeof *gap : 0);
  if (!m) return DX_ENOMEM;
  hand_out(t, m, kind, err);
  return 0;
}

/* The stream restarted (a new epoch whose messages up to `seq` this node
 * will never see): live subscriptions move to it and are told. t locked. */
static int new_epoch(dx__ps_topic *t, const char *epoch, uint64_t seq) {
  dx__ps_clear(t);
  strcpy(t->epoch, epoch);
  t->gen++;
  t->seq = seq;
  dx_ps_gap g = {.reason = DX_PS_GAP_EPOCH, .from = 1, .to = seq};
  strcpy(g.epoch, epoch);
  return dx__ps_notice(t, DX_PS_GAP, &g, 0);
}

/* Messages t->seq+1..seq are lost to this node. t locked. */
static int hole(dx__ps_topic *t, uint64_t seq) {
  dx_ps_gap g = {.reason = DX_PS_GAP_DROPPED, .from = t->seq + 1, .to = seq};
  strcpy(g.epoch, t->epoch);
  /* The history must stay contiguous for the gap arithmetic. */
  dx__ps_clear(t);
  t->seq = seq;
  return dx__ps_notice(t, DX_PS_GAP, &g, 0);
}

int dx_ps_ingest(dx_pubsub *ps, const char *topic, const char *epoch,
                 uint64_t seq, const void *data, size_t len, uint64_t now_ms) {
  if (!dx_ps_topic_valid(topic) || !dx__ps_epoch_valid(epoch) || seq == 0 ||
      (len && !data))
    return DX_EINVAL;
  dx_ps_msg *m;
  int rc;
  dx__ps_topic *t = prepare(ps, topic, true, data, len, &m, &rc);
  if (!t) return rc;
  if (strcmp(t->epoch, epoch) != 0)
    rc = new_epoch(t, epoch, seq - 1);
  else if (seq <= t->seq)
    rc = 1;
  else if (seq > t->seq + 1)
    rc = hole(t, seq - 1);
  if (rc == 0) {
    dx__ps_trim(t, now_ms);
    rc = commit(t, m, seq, now_ms);
  }
  pthread_mutex_unlock(&t->lock);
  release(ps, m);
  dx__ps_topic_decref(t);
  return rc;
}

int dx_ps_synced(dx_pubsub *ps, const char *topic, const char *epoch,
                 uint64_t seq, uint64_t now_ms) {
  if (!dx_ps_topic_valid(topic) || !dx__ps_epoch_valid(epoch)) return DX_EINVAL;
  int rc;
  dx__ps_topic *t = dx__ps_acquire(ps, topic, true, &rc);
  if (!t) return rc;
  dx__ps_trim(t, now_ms);
  if (strcmp(t->epoch, epoch) != 0)
    rc = new_epoch(t, epoch, seq);
  else if (seq > t->seq)
    rc = hole(t, seq);
  t->syncing = false;
  /* Nobody left to keep it current: the next subscriber syncs again. */
  t->synced = t->nsubs > 0;
  if (rc == 0 && t->npending) rc = dx__ps_notice(t, DX_PS_READY, NULL, 0);
  pthread_mutex_unlock(&t->lock);
  dx__ps_topic_decref(t);
  return rc;
}

int dx_ps_sync_failed(dx_pubsub *ps, const char *topic, int err) {
  if (!dx_ps_topic_valid(topic) || err >= 0) return DX_EINVAL;
  int rc;
  dx__ps_topic *t = dx__ps_acquire(ps, topic, false, &rc);
  if (!t) return rc;
  t->syncing = false;
  t->sync_err = err;
  if (t->npending) rc = dx__ps_notice(t, DX_PS_READY, NULL, err);
  pthread_mutex_unlock(&t->lock);
  dx__ps_topic_decref(t);
  return rc;
}

/* ---- unsequenced ---- */

int dx_ps_broadcast(dx_pubsub *ps, const char *topic, const void *frame,
                    size_t len) {
  if (!dx_ps_topic_valid(topic) || (len && !frame)) return DX_EINVAL;
  dx_ps_msg *m;
  int rc;
  dx__ps_topic *t = prepare(ps, topic, false, frame, len, &m, &rc);
  if (!t) return rc;
  hand_out(t, m, DX_PS_BROADCAST, 0);
  pthread_mutex_unlock(&t->lock);
  dx__ps_topic_decref(t);
  return 0;
}
