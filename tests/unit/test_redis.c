/*
 * The Redis backplane's set-up, without a Redis: URL parsing (every error
 * a user can make gets its message), node ids, and what a backplane that
 * is not connected does (publishes and views fail fast with DX_EUNAVAIL,
 * the status says so). The backplane against a real redis-server is
 * tests/scripts/cluster_redis.sh.
 */
#include "check.h"

#include <duplex/pubsub.h>

static dx_loop *loop;

static const char *new_err(const char *url, const char *node) {
  const char *err = NULL;
  dx_ps_redis *r = dx_ps_redis_new(
      &(dx_ps_redis_config){.url = url, .loop = loop, .node_id = node}, &err);
  if (r) {
    dx_ps_redis_backplane(r)->free(r);
    return NULL;
  }
  return err ? err : "(no message)";
}

static void test_urls(void) {
  CHECK(new_err("redis://127.0.0.1", NULL) == NULL);
  CHECK(new_err("redis://127.0.0.1:6380/3", NULL) == NULL);
  CHECK(new_err("redis://:secret@redis.internal:6379/0", NULL) == NULL);
  CHECK(new_err("redis://alice:secret@[::1]:7000", NULL) == NULL);
  CHECK(new_err("redis://localhost/", NULL) == NULL);
  CHECK_STR(new_err("http://127.0.0.1", NULL),
            "the Redis URL must start with redis://");
  CHECK_STR(new_err(NULL, NULL), "the Redis URL must start with redis://");
  CHECK_STR(new_err("redis://", NULL), "the Redis URL has no host");
  CHECK_STR(new_err("redis://:6379", NULL), "the Redis URL has no host");
  CHECK_STR(new_err("redis://h:0", NULL),
            "the Redis URL's port must be 1..65535");
  CHECK_STR(new_err("redis://h:70000", NULL),
            "the Redis URL's port must be 1..65535");
  CHECK_STR(new_err("redis://h:x", NULL),
            "the Redis URL's port must be 1..65535");
  CHECK_STR(new_err("redis://h/abc", NULL),
            "the Redis URL's database must be a number");
  CHECK_STR(new_err("redis://h:1/2/3", NULL),
            "the Redis URL's database must be a number");
  CHECK_STR(new_err("redis://nopass@h", NULL),
            "credentials in a Redis URL are [user]:password@");
  CHECK_STR(new_err("redis://user:@h", NULL),
            "the Redis URL's user or password is empty or too long");
  CHECK_STR(new_err("redis://[::1", NULL), "unclosed [ in the Redis URL");
  CHECK_STR(new_err("redis://h?x", NULL),
            "the Redis URL's host has a character no host name has");
  CHECK_STR(new_err("redis://[::1]x", NULL),
            "unexpected text after the Redis URL's host and port");
  const char *err = NULL;
  CHECK(!dx_ps_redis_new(&(dx_ps_redis_config){.url = "redis://h"}, &err));
  CHECK_STR(err, "no loop for the Redis connections");
}

static void test_node_ids(void) {
  CHECK(new_err("redis://h", "web-1") == NULL);
  CHECK_STR(new_err("redis://h", ""),
            "the node id must be 1..127 characters without spaces");
  CHECK_STR(new_err("redis://h", "two words"),
            "the node id must be 1..127 characters without spaces");
  dx_ps_redis *r = dx_ps_redis_new(
      &(dx_ps_redis_config){.url = "redis://h", .loop = loop}, NULL);
  CHECK(r);
  /* Made up: unique per process and start (host:pid:random). */
  const char *id = dx_ps_redis_node_id(r);
  CHECK(strlen(id) > 4 && strchr(id, ':') && !strchr(id, ' '));
  dx_ps_redis_backplane(r)->free(r);
}

static int deliver(void *ud, unsigned shard, dx_ps_msg *msg) {
  (void)ud, (void)shard, (void)msg;
  return DX_ENOMEM;
}

static void never(void *ud, int rc, const dx_ps_member *m, size_t n) {
  (void)rc, (void)m, (void)n;
  ++*(int *)ud;
}

static void test_not_connected(void) {
  dx_ps_redis *r = dx_ps_redis_new(
      &(dx_ps_redis_config){.url = "redis://127.0.0.1:1", .loop = loop},
      NULL);
  CHECK(r);
  dx_pubsub *ps = dx_pubsub_new(&(dx_pubsub_config){
      .deliver = deliver, .backplane = dx_ps_redis_backplane(r)});
  CHECK(ps);
  /* Not started (so not connected): nothing queues, everything says why. */
  CHECK_INT(dx_ps_publish(ps, "t", "x", 1, 0, NULL), DX_EUNAVAIL);
  int calls = 0;
  CHECK_INT(dx_ps_redis_presence(r, "t", never, &calls), DX_EUNAVAIL);
  CHECK_INT(dx_ps_redis_broadcast(r, "t", "f", 1), DX_EUNAVAIL);
  CHECK_INT(dx_ps_redis_presence(r, "bad topic", never, &calls), DX_EINVAL);
  CHECK_INT(calls, 0);
  dx_ps_redis_status st;
  dx_ps_redis_status_get(r, &st);
  CHECK(!st.connected && !st.healthy);
  CHECK_INT(st.publish_failed, 1);
  CHECK_INT(st.inflight, 0);
  CHECK_STR(dx_strerror(DX_EUNAVAIL), "the backplane (Redis) is unreachable");
  dx_pubsub_free(ps); /* frees r */
}

int main(void) {
  loop = dx_loop_new(NULL);
  RUN(test_urls);
  RUN(test_node_ids);
  RUN(test_not_connected);
  dx_loop_free(loop);
  return CHECK_DONE();
}
