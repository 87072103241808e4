/*
 * Messages: one allocation holds the header and the published bytes; the
 * frame, when a hook builds one, is a second block grown by
 * dx_ps_buf_append. References are atomic because a message is shared by
 * the history (under its topic lock) and by every shard's queue.
 */
#include "pubsub/internal.h"

#include <assert.h>
#include <string.h>

static size_t msg_size(size_t len) {
  return sizeof(dx_ps_msg) + len;
}

dx_ps_msg *dx__ps_msg_new(dx_pubsub *ps, const void *data, size_t len) {
  if (len > SIZE_MAX - sizeof(dx_ps_msg)) return NULL;
  dx_ps_msg *m = dx__ps_alloc(ps, msg_size(len));
  if (!m) return NULL;
  memset(m, 0, sizeof *m);
  atomic_init(&m->refs, 1);
  m->len = len;
  if (len) memcpy(m->data, data, len);
  m->frame = m->data;
  m->frame_len = len;
  atomic_fetch_add(&ps->nmsgs, 1);
  return m;
}

static void msg_free(dx_pubsub *ps, dx_ps_msg *m) {
  if (m->frame_cap) dx__ps_free(ps, m->frame, m->frame_cap);
  dx__ps_free(ps, m, msg_size(m->len));
  atomic_fetch_sub(&ps->nmsgs, 1);
}

void dx__ps_msg_discard(dx_pubsub *ps, dx_ps_msg *m) {
  assert(!m->topic);
  msg_free(ps, m);
}

void dx_ps_msg_incref(dx_ps_msg *m) {
  atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void dx_ps_msg_decref(dx_ps_msg *m) {
  if (!m) return;
  /* Release on every decref, acquire before the free: the last owner sees
   * everything the others did (the usual reference-count fences). */
  if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_release) != 1) return;
  atomic_thread_fence(memory_order_acquire);
  dx__ps_topic *t = m->topic;
  msg_free(t->ps, m);
  dx__ps_topic_decref(t);
}

dx_ps_kind dx_ps_msg_kind(const dx_ps_msg *m) {
  return (dx_ps_kind)m->kind;
}

int dx_ps_msg_gap(const dx_ps_msg *m, dx_ps_gap *out) {
  if (m->kind != DX_PS_GAP || m->len != sizeof *out) return DX_EINVAL;
  memcpy(out, m->data, sizeof *out);
  return 0;
}

uint64_t dx_ps_msg_seq(const dx_ps_msg *m) {
  return m->seq;
}

const char *dx_ps_msg_topic(const dx_ps_msg *m) {
  return m->topic->name;
}

const void *dx_ps_msg_frame(const dx_ps_msg *m, size_t *len) {
  if (len) *len = m->frame_len;
  return m->frame;
}

const void *dx_ps_msg_data(const dx_ps_msg *m, size_t *len) {
  if (len) *len = m->len;
  return m->data;
}

int dx_ps_buf_append(dx_ps_buf *b, const void *p, size_t n) {
  if (n == 0) return 0;
  if (n > SIZE_MAX / 2 - b->len) return DX_ENOMEM;
  if (b->cap - b->len < n) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    uint8_t *q = dx__ps_realloc(b->ps, b->p, b->cap, cap);
    if (!q) return DX_ENOMEM;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}
