/*
 * Presence: per topic, the members of its subscribers, keyed by id and
 * counted, so a user with two connections joins once and leaves with the
 * last. A plain list in join order: rooms where presence matters are
 * small, and a join walks the list under the topic lock once.
 */
#include "pubsub/internal.h"

#include <string.h>

static size_t member_size(size_t id_len, size_t info_len) {
  return sizeof(dx__ps_member) + id_len + 1 + info_len;
}

static dx__ps_member **find_member(dx__ps_topic *t, const dx_ps_sub *sub) {
  dx__ps_member **pp = &t->members;
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->id_len == sub->member_id_len &&
        memcmp((*pp)->id, sub->member_id, sub->member_id_len) == 0)
      return pp;
  return pp; /* the end: where a new one goes */
}

int dx__ps_member_join(dx__ps_topic *t, const dx_ps_sub *sub, bool *joined) {
  dx__ps_member **pp = find_member(t, sub);
  *joined = false;
  if (*pp) {
    (*pp)->refs++;
    return 0;
  }
  /* Its own copy: the sub that brought it may leave before the others. */
  dx__ps_member *m = dx__ps_alloc(
      t->ps, member_size(sub->member_id_len, sub->member_info_len));
  if (!m) return DX_ENOMEM;
  m->next = NULL;
  m->refs = 1;
  m->id = (char *)(m + 1);
  m->id_len = sub->member_id_len;
  memcpy(m->id, sub->member_id, m->id_len + 1);
  m->info = m->id + m->id_len + 1;
  m->info_len = sub->member_info_len;
  if (m->info_len) memcpy(m->info, sub->member_info, m->info_len);
  *pp = m;
  t->nmembers++;
  *joined = true;
  return 0;
}

static void member_free(dx__ps_topic *t, dx__ps_member *m) {
  dx__ps_free(t->ps, m, member_size(m->id_len, m->info_len));
}

bool dx__ps_member_leave(dx__ps_topic *t, const dx_ps_sub *sub) {
  dx__ps_member **pp = find_member(t, sub), *m = *pp;
  if (!m || --m->refs > 0) return false;
  *pp = m->next;
  member_free(t, m);
  t->nmembers--;
  return true;
}

void dx__ps_members_free(dx__ps_topic *t) {
  dx__ps_member *m, *next;
  for (m = t->members; m; m = next) {
    next = m->next;
    member_free(t, m);
  }
  t->members = NULL;
  t->nmembers = 0;
}

int dx_ps_presence(dx_pubsub *ps, const char *topic,
                   void (*fn)(void *ud, const char *id, const void *info,
                              size_t info_len),
                   void *ud) {
  if (!dx_ps_topic_valid(topic)) return DX_EINVAL;
  if (!ps->presence) return DX_ESTATE;
  int rc;
  dx__ps_topic *t = dx__ps_acquire(ps, topic, false, &rc);
  if (!t) return rc;
  int n = 0;
  for (const dx__ps_member *m = t->members; m; m = m->next, n++)
    if (fn) fn(ud, m->id, m->info, m->info_len);
  pthread_mutex_unlock(&t->lock);
  dx__ps_topic_decref(t);
  return n;
}
