/*
 * duplex/pubsub.h — topics with sequence numbers, a bounded history, resume
 * with gap notices, and presence: the engine under the duplex.v1 channel
 * protocol. It carries opaque bytes; the app formats the JSON.
 *
 *   dx_pubsub_config cfg = {.shards = nloops, .deliver = post_to_loop};
 *   dx_pubsub *ps = dx_pubsub_new(&cfg);
 *
 *   // any thread (a WebSocket handler, the HTTP publish API):
 *   dx_ps_publish(ps, "news", data, len, now_ms, &pub);
 *     // -> cfg.deliver(ud, shard, msg) for each shard with subscribers
 *
 *   // on shard 2's thread, per connection:
 *   dx_ps_sub *sub = dx_ps_sub_new(ps, 2, conn, NULL);
 *   dx_ps_subscribe(sub, "news", &(dx_ps_resume){.since = 41}, now, &res);
 *     // send "subscribed" (res.seq, res.epoch), then the gap notice if
 *     // res.gap, then res.replay[0..nreplay); dx_ps_subscribed_clear(&res)
 *   // when the loop runs a posted message:
 *   dx_ps_dispatch(ps, 2, msg, send_to_conn, NULL); dx_ps_msg_decref(msg);
 *   // when the connection closes:
 *   dx_ps_sub_free(sub);
 *
 * THE MODEL
 * A registry maps topic names to topics, created on first use. A topic has
 * a seq (the last one assigned: 0 before the first message, which gets 1),
 * an epoch (a random token made when the topic is created: a seq means
 * something only together with its epoch) and a history ring of the last
 * `history` messages, no older than `history_ms`.
 *
 * A message (dx_ps_msg) is immutable and reference-counted: the history and
 * every shard queue hold references to one buffer, so a message is framed
 * once for every subscriber on every loop.
 *
 * Subscribers live on shards (the server's event loops, 0..shards-1). A
 * subscription is made, used and ended on its shard's thread. When
 * dx_ps_subscribe returns, the subscriber has been told (through the
 * result) the topic's seq S, the missed messages it can still get (the
 * replay) and those it cannot (the gap); it then receives every message
 * with seq > S exactly once, in seq order: no duplicate of a replayed one,
 * no gap.
 *
 * THREADS
 * Registry functions (publish, topics, presence, sweep, stats) are
 * THREAD-SAFE. Subscriber functions (dx_ps_sub_*, dx_ps_subscribe,
 * dx_ps_unsubscribe*, dx_ps_dispatch) are SHARD-THREAD ONLY: call them on
 * the thread that runs the subscriber's shard, and dispatch a shard's
 * messages on that thread only. The hooks in dx_pubsub_config are called
 * with a topic lock held: they must not call back into the registry.
 *
 * TIME
 * The library reads no clock. Calls that look at history age take now_ms,
 * milliseconds on any monotonic clock the caller keeps (dx_loop_now()).
 *
 * ERRORS are negative values from duplex/common.h, listed per function.
 */
#ifndef DUPLEX_PUBSUB_H
#define DUPLEX_PUBSUB_H

#include <duplex/common.h>
#include <duplex/net.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Topic names: 1..DX_PS_TOPIC_MAX bytes of [A-Za-z0-9_.:/-]. */
#define DX_PS_TOPIC_MAX 128
/* Epoch tokens: 1..DX_PS_EPOCH_MAX printable ASCII characters. */
#define DX_PS_EPOCH_MAX 32
/* dx_pubsub_config.history value that keeps no history at all. */
#define DX_PS_NO_HISTORY ((size_t)-1)

typedef struct dx_pubsub dx_pubsub;
typedef struct dx_ps_sub dx_ps_sub;
typedef struct dx_ps_msg dx_ps_msg;
typedef struct dx_ps_buf dx_ps_buf;

/* What the frame hook is given; pointers are valid during the call. */
typedef struct dx_ps_frame_info {
  const char *topic;
  uint64_t seq;
  const char *epoch;
  const void *data; /* the bytes given to dx_ps_publish / dx_ps_ingest */
  size_t len;
} dx_ps_frame_info;

/* A publish's outcome. */
typedef struct dx_ps_published {
  uint64_t seq; /* 0 when a remote backplane assigns it later */
  char epoch[DX_PS_EPOCH_MAX + 1];
} dx_ps_published;

/* Called once with a publish's outcome: rc 0 and *out (seq, epoch), or a
 * negative error (DX_EUNAVAIL: the backplane is unreachable). */
typedef void (*dx_ps_done_fn)(void *ud, int rc, const dx_ps_published *out);

/*
 * THE BACKPLANE SEAM. dx_ps_publish hands every publish to the backplane;
 * whoever sequences a topic is the backplane's business.
 *
 * - in-process (cfg.backplane == NULL, the default): publish sequences the
 *   message here, at once, under the topic lock, and delivers it to the
 *   local shards.
 * - remote (Redis: dx_ps_redis_new, at the end of this header): publish sends
 *   (topic, data) to the shared sequencer and returns 0; the outcome comes
 *   later through `done`. The receive side, on every node including this
 *   one, calls dx_ps_ingest() with the seq and epoch the sequencer
 *   assigned, which retains and delivers it exactly as a local publish
 *   would.
 *
 * A remote backplane sets `needs_sync`: the registry's copy of a topic is
 * then only trusted while this node has subscribers to it. The first
 * subscription to a topic (and any subscription while the topic is not
 * synced) is PENDING: the registry calls `sync`, the backplane brings the
 * topic up to date (dx_ps_ingest for what it missed) and calls
 * dx_ps_synced (or dx_ps_sync_failed); each pending subscriber's shard
 * then dispatches a DX_PS_READY message, on which the app calls
 * dx_ps_subscribe_complete. When the last subscriber leaves, the topic is
 * no longer synced.
 *
 * The vtable is borrowed: it and its ud must outlive the registry.
 */
typedef struct dx_ps_backplane {
  /* Takes one publish (the arguments of dx_ps_publish_async, borrowed for
   * the call). THREAD-SAFE. Returns 0 when it took the publish and will
   * call done(done_ud, ...) exactly once (done may be NULL: nobody waits),
   * or a negative error, and then never calls done. */
  int (*publish)(void *ud, dx_pubsub *ps, const char *topic, const void *data,
                 size_t len, uint64_t now_ms, dx_ps_done_fn done,
                 void *done_ud);
  /* A topic got its first subscriber on this node (on = true) or lost its
   * last (on = false). Called under the topic lock, in order; may be NULL.
   * It must only queue work (never call into the registry). */
  void (*interest)(void *ud, const char *topic, bool on);
  /* needs_sync only: bring topic up to date, then call dx_ps_synced or
   * dx_ps_sync_failed (from any thread, never from inside this call).
   * Called under the topic lock when a subscriber comes while the topic is
   * not synced and no sync is under way (the first subscriber, or the last
   * sync failed). It must only queue work. Returns 0, or a negative error
   * that dx_ps_subscribe returns (the subscription is not made). */
  int (*sync)(void *ud, const char *topic);
  /* Called once by dx_pubsub_free; may be NULL. */
  void (*free)(void *ud);
  void *ud;
  bool needs_sync;
} dx_ps_backplane;

typedef struct dx_pubsub_config {
  unsigned shards;     /* subscriber shards (event loops); 0: 1 */
  size_t history;      /* messages retained per topic; 0: 100;
                          DX_PS_NO_HISTORY: none */
  uint64_t history_ms; /* drop retained messages this old; 0: no age limit */
  size_t max_topics;   /* 0: 10,000; creating one more fails DX_ENOSPC */
  bool presence;       /* keep member lists (dx_ps_presence) */

  /*
   * REQUIRED. Hands msg to `shard`: the server posts it to that loop's
   * queue, whose thread later calls dx_ps_dispatch(ps, shard, msg, ...)
   * and then dx_ps_msg_decref(msg) (the hook is given that reference).
   * Called under the topic lock, so every shard sees one topic's messages
   * in seq order provided the queue is FIFO. Must not block for long.
   * Returns 0, or a negative error when it could not queue: the reference
   * is then released by the library, the shard misses the message, and
   * dx_pubsub_stats counts it in deliver_failed.
   */
  int (*deliver)(void *ud, unsigned shard, dx_ps_msg *msg);

  /*
   * Builds the bytes sent to subscribers (the framed WebSocket message),
   * once per message, under the topic lock: only there is the seq known.
   * Append with dx_ps_buf_append. Returns 0, or a negative error that fails
   * the publish (no seq is used up). NULL: the frame is the data itself.
   * It is also called for dx_ps_ingest, where the app has no publish call
   * of its own: that is why it is a hook and not a publish argument.
   */
  int (*frame)(void *ud, const dx_ps_frame_info *info, dx_ps_buf *out);

  /* Makes a topic's epoch: writes 1..DX_PS_EPOCH_MAX printable characters
   * and a NUL to out (cap = DX_PS_EPOCH_MAX + 1). Returns 0 or a negative
   * error. NULL: 12 random characters of [A-Za-z0-9] from OpenSSL's
   * RAND_bytes. */
  int (*epoch)(void *ud, const char *topic, char *out, size_t cap);

  void *ud; /* for deliver, frame and epoch */

  const dx_ps_backplane *backplane; /* NULL: in-process */

  /* For everything the registry allocates. Called from any thread: it
   * must be thread-safe (so not dx_loop_allocator). {0}: the C library's. */
  dx_allocator allocator;
} dx_pubsub_config;

/* Creates a registry. cfg is copied (its pointers are borrowed). NULL with
 * errno EINVAL (cfg or cfg->deliver NULL) or ENOMEM. */
DX_API dx_pubsub *dx_pubsub_new(const dx_pubsub_config *cfg);

/* Frees the registry, its topics and their history. Every dx_ps_sub must
 * have been freed first. Message references still held (queued to a
 * shard, kept by the app) stay valid; the last dx_ps_msg_decref frees the
 * remaining memory. dx_pubsub_free(NULL) does nothing. */
DX_API void dx_pubsub_free(dx_pubsub *ps);

/* Whether name is a valid topic name (see DX_PS_TOPIC_MAX). */
DX_API bool dx_ps_topic_valid(const char *name);

/* ---- publishing (THREAD-SAFE) -------------------------------------------- */

/*
 * Publishes a copy of data[0..len) to topic, creating the topic if needed.
 * In-process: assigns the next seq, retains the message, calls the frame
 * hook, and calls deliver for each shard with subscribers; *out (may be
 * NULL) gets the seq and epoch. A remote backplane: sends it and returns
 * 0 with out->seq = 0 (use dx_ps_publish_async to learn the seq). Returns
 * 0, DX_EINVAL (bad name), DX_ENOSPC (max_topics reached), DX_ENOMEM, -EIO
 * (no randomness for a new epoch), or an error of the frame or epoch hook
 * or of the backplane (DX_EUNAVAIL: unreachable, or too many publishes
 * in flight).
 */
DX_API int dx_ps_publish(dx_pubsub *ps, const char *topic, const void *data,
                         size_t len, uint64_t now_ms, dx_ps_published *out);

/*
 * The same, with the outcome through done(ud, rc, out) instead: called
 * exactly once when this returns 0 — before returning in-process, later
 * and from the backplane's thread with a remote one. A negative return
 * (the errors of dx_ps_publish) means done is never called.
 */
DX_API int dx_ps_publish_async(dx_pubsub *ps, const char *topic,
                               const void *data, size_t len, uint64_t now_ms,
                               dx_ps_done_fn done, void *ud);

/*
 * Sends frame[0..len) (copied; the frame hook is not called) to the
 * current subscribers of an existing topic, with seq 0 and without
 * retaining it: for presence join/leave events. It is ordered with the
 * topic's messages; it reaches whoever is subscribed on each shard when
 * that shard dispatches it. Returns 0 (also when the topic does not
 * exist), DX_EINVAL, DX_ENOMEM.
 */
DX_API int dx_ps_broadcast(dx_pubsub *ps, const char *topic, const void *frame,
                           size_t len);

/*
 * For backplanes: applies a message that was sequenced elsewhere (seq >= 1
 * in epoch). A different epoch replaces the topic's and clears its
 * history (the stream restarted): live subscribers get a DX_PS_GAP message
 * (reason DX_PS_GAP_EPOCH, 1..seq-1 of the new epoch). seq <= the topic's
 * seq is a duplicate and is ignored (returns 1). A seq past seq + 1 is a
 * hole: the history is cleared (resumes from before it get a gap notice)
 * and live subscribers get a DX_PS_GAP message (DX_PS_GAP_DROPPED, the
 * missing seqs). Returns 0 (applied), 1 (duplicate), DX_EINVAL,
 * DX_ENOSPC, DX_ENOMEM, or an error of the frame hook.
 */
DX_API int dx_ps_ingest(dx_pubsub *ps, const char *topic, const char *epoch,
                        uint64_t seq, const void *data, size_t len,
                        uint64_t now_ms);

/*
 * For backplanes (needs_sync): the topic is up to date: the sequencer's
 * current state is (epoch, seq), and every message of it this node can
 * still get was ingested. An epoch or seq past the topic's is applied as
 * dx_ps_ingest would (gap messages to live subscribers). Marks the topic
 * synced and hands each shard with pending subscribers a DX_PS_READY
 * message. THREAD-SAFE. Returns 0, DX_EINVAL, DX_ENOMEM.
 */
DX_API int dx_ps_synced(dx_pubsub *ps, const char *topic, const char *epoch,
                        uint64_t seq, uint64_t now_ms);

/* For backplanes (needs_sync): the sync of topic failed with err (< 0,
 * DX_EUNAVAIL say); pending subscriptions end with it (DX_PS_READY messages
 * whose dx_ps_subscribe_complete returns err). THREAD-SAFE. Returns 0,
 * DX_EINVAL, DX_ENOMEM. */
DX_API int dx_ps_sync_failed(dx_pubsub *ps, const char *topic, int err);

/* Appends to the frame being built (frame hook only). Returns 0,
 * DX_ENOMEM. */
DX_API int dx_ps_buf_append(dx_ps_buf *buf, const void *p, size_t n);

/* ---- messages (THREAD-SAFE; read-only) ------------------------------------
 */

/* Takes and releases a reference. The last decref frees the message.
 * Atomic: any thread. dx_ps_msg_decref(NULL) does nothing. */
DX_API void dx_ps_msg_incref(dx_ps_msg *msg);
DX_API void dx_ps_msg_decref(dx_ps_msg *msg);

/* What a message handed to dx_ps_dispatch's callback is. */
typedef enum dx_ps_kind {
  DX_PS_MESSAGE = 0, /* a published message: seq >= 1, the frame to send */
  DX_PS_BROADCAST,   /* dx_ps_broadcast: seq 0, the frame to send */
  DX_PS_GAP,         /* live subscribers lost messages: dx_ps_msg_gap */
  DX_PS_READY        /* a pending subscription: dx_ps_subscribe_complete */
} dx_ps_kind;

DX_API dx_ps_kind dx_ps_msg_kind(const dx_ps_msg *msg);
/* The seq (0 for anything but DX_PS_MESSAGE) and topic name. */
DX_API uint64_t dx_ps_msg_seq(const dx_ps_msg *msg);
DX_API const char *dx_ps_msg_topic(const dx_ps_msg *msg);
/* The bytes to send: the frame hook's output, or the data without a hook
 * (and for broadcasts). Valid while the caller holds a reference. */
DX_API const void *dx_ps_msg_frame(const dx_ps_msg *msg, size_t *len);
/* The bytes that were published (for an HTTP history API, say). */
DX_API const void *dx_ps_msg_data(const dx_ps_msg *msg, size_t *len);

/* ---- subscribers (SHARD-THREAD ONLY) --------------------------------------
 */

/* A presence member: id keys it (a user on two connections is one
 * member); info is the app's bytes (its JSON object), copied. */
typedef struct dx_ps_member {
  const char *id;
  const void *info;
  size_t info_len;
} dx_ps_member;

/* Creates a subscriber (one per connection) on shard. user is the app's
 * (its connection), returned by dx_ps_sub_user. member (copied; NULL: none)
 * puts the subscriber in the presence lists of its topics when the
 * registry has presence on. NULL with errno EINVAL (shard out of range,
 * member without id) or ENOMEM. */
DX_API dx_ps_sub *dx_ps_sub_new(dx_pubsub *ps, unsigned shard, void *user,
                                const dx_ps_member *member);

/* Unsubscribes from everything (silently: see dx_ps_unsubscribe_all for
 * the presence report) and frees. dx_ps_sub_free(NULL) does nothing. Safe
 * inside a dispatch callback. */
DX_API void dx_ps_sub_free(dx_ps_sub *sub);

DX_API void *dx_ps_sub_user(const dx_ps_sub *sub);
/* How many topics sub is subscribed to (the app enforces its limit). */
DX_API size_t dx_ps_sub_count(const dx_ps_sub *sub);

/* Where a resuming client left off. */
typedef struct dx_ps_resume {
  uint64_t since;    /* the last seq it has */
  const char *epoch; /* the epoch of that seq; NULL: trust it is current */
} dx_ps_resume;

typedef enum dx_ps_gap_reason {
  DX_PS_GAP_NONE = 0,
  DX_PS_GAP_HISTORY, /* gap_from..gap_to are no longer retained */
  DX_PS_GAP_EPOCH,   /* the client's epoch is not the topic's */
  DX_PS_GAP_DROPPED  /* a live subscriber's messages the backplane lost */
} dx_ps_gap_reason;

/* A DX_PS_GAP message: live subscribers cannot get seqs from..to (to may
 * be from - 1: nothing of the new epoch was lost). For DX_PS_GAP_EPOCH
 * the topic now has `epoch` and messages continue at to + 1 in it. */
typedef struct dx_ps_gap {
  dx_ps_gap_reason reason;
  uint64_t from, to;
  char epoch[DX_PS_EPOCH_MAX + 1];
} dx_ps_gap;

/* Fills *out from a DX_PS_GAP message. Returns 0, DX_EINVAL (another
 * kind). */
DX_API int dx_ps_msg_gap(const dx_ps_msg *msg, dx_ps_gap *out);

/* What dx_ps_subscribe tells the subscriber, in the order it is sent. */
typedef struct dx_ps_subscribed {
  uint64_t seq; /* the topic's current seq: live messages start at seq + 1 */
  char epoch[DX_PS_EPOCH_MAX + 1];
  dx_ps_gap_reason gap;
  uint64_t gap_from, gap_to; /* inclusive; see dx_ps_subscribe */
  dx_ps_msg **replay;        /* references, in seq order, all < seq + 1 */
  size_t nreplay;
  bool joined;    /* presence: this subscription brought its member in */
  /* A remote backplane is still syncing the topic: nothing else above is
   * filled in; the answer comes with a DX_PS_READY message. */
  bool pending;
  dx_pubsub *ps_; /* private */
} dx_ps_subscribed;

/*
 * Subscribes sub to topic (created if needed), atomically with respect to
 * publishes: fills *out, and from then on dx_ps_dispatch hands sub every
 * message with seq > out->seq. resume NULL: live messages only. Else the
 * missed messages since resume->since:
 *
 *  - since == seq: nothing.
 *  - since < seq and since + 1 still retained: replay since+1..seq.
 *  - since < seq, older than history: gap HISTORY since+1..first-1, then
 *    replay first..seq (first = the oldest retained seq, or seq + 1 when
 *    nothing is retained: then no replay).
 *  - epoch given and not the topic's, or since > seq (a client from a
 *    previous stream of the topic that did not send its epoch): gap EPOCH
 *    1..first-1 (gap_to may be 0: nothing of this stream was lost; the
 *    gap still tells the client its state is stale), then replay
 *    first..seq.
 *
 * Presence on and a member: joins the member (out->joined when it was not
 * in the topic already; the app then broadcasts a join event).
 * *out owns the replay references: release them with
 * dx_ps_subscribed_clear (also after an error, harmless).
 * Returns 0, DX_EINVAL (bad name), DX_ESTATE (already subscribed),
 * DX_ENOSPC (max_topics), DX_ENOMEM, -EIO, or an error of the epoch hook.
 */
DX_API int dx_ps_subscribe(dx_ps_sub *sub, const char *topic,
                           const dx_ps_resume *resume, uint64_t now_ms,
                           dx_ps_subscribed *out);

/* Releases the replay references and array of *out; leaves it zeroed. */
DX_API void dx_ps_subscribed_clear(dx_ps_subscribed *out);

/*
 * Answers a pending subscription, when its shard dispatches the topic's
 * DX_PS_READY message: fills *out as dx_ps_subscribe would have (with the
 * resume given then). Returns 0, DX_ESTATE (not subscribed, or not
 * pending), or the sync's error: the subscription has then ended (the
 * app reports it: the backplane was unreachable, say). Clear *out either
 * way.
 */
DX_API int dx_ps_subscribe_complete(dx_ps_sub *sub, const char *topic,
                                    uint64_t now_ms, dx_ps_subscribed *out);

/*
 * Ends sub's subscription to topic: messages not yet dispatched are no
 * longer handed to it. Safe inside a dispatch callback. Returns 0, 1 (done,
 * and its presence member left the topic: the app broadcasts a leave
 * event), DX_ESTATE (not subscribed).
 */
DX_API int dx_ps_unsubscribe(dx_ps_sub *sub, const char *topic);

/* Ends every subscription of sub (a closing connection). For each, calls
 * fn(ud, topic, left) if fn is not NULL, left as dx_ps_unsubscribe's 1.
 * Returns the number ended. */
DX_API size_t dx_ps_unsubscribe_all(dx_ps_sub *sub,
                                    void (*fn)(void *ud, const char *topic,
                                               bool left),
                                    void *ud);

/*
 * Hands msg to each subscriber of its topic on shard that should have it:
 * fn(ud, sub, msg) for
 *  - DX_PS_MESSAGE: subscribers whose live range starts at or before msg's
 *    seq (one that subscribed after msg was queued to the shard got it in
 *    its replay, or does not want it);
 *  - DX_PS_BROADCAST: every subscriber that is not pending;
 *  - DX_PS_GAP: the live subscribers the gap concerns;
 *  - DX_PS_READY: the pending subscribers (the app calls
 *    dx_ps_subscribe_complete for each).
 * msg is borrowed: fn takes a reference to keep it. fn may unsubscribe or
 * free any subscriber, and subscribe; it must not call dx_ps_dispatch.
 * Returns the number of calls to fn.
 */
DX_API size_t dx_ps_dispatch(dx_pubsub *ps, unsigned shard, dx_ps_msg *msg,
                             void (*fn)(void *ud, dx_ps_sub *sub,
                                        dx_ps_msg *msg),
                             void *ud);

/* ---- listings (THREAD-SAFE) -----------------------------------------------
 */

typedef struct dx_ps_topic_info {
  const char *topic;
  uint64_t seq;
  const char *epoch;
  size_t subscribers; /* subscriptions on this node */
  size_t retained;    /* messages in history */
  size_t members;     /* presence members */
} dx_ps_topic_info;

/* Calls fn once per topic (in no particular order) with a consistent
 * snapshot of each, under that topic's lock: fn must not call into the
 * registry. Drops history older than history_ms first. Returns the number
 * of topics. */
DX_API size_t dx_ps_topics(dx_pubsub *ps, uint64_t now_ms,
                           void (*fn)(void *ud, const dx_ps_topic_info *info),
                           void *ud);

/* Calls fn for each presence member of topic (pointers valid during the
 * call; under the topic lock, so fn must not call into the registry).
 * Returns the number of members (0 for an unknown topic), DX_EINVAL (bad
 * name), DX_ESTATE (presence is off). */
DX_API int dx_ps_presence(dx_pubsub *ps, const char *topic,
                          void (*fn)(void *ud, const char *id, const void *info,
                                     size_t info_len),
                          void *ud);

/* Drops history older than history_ms and forgets topics that have no
 * subscriber and no retained message (their next use makes a new epoch).
 * For a periodic timer. Returns the number of topics forgotten. */
DX_API size_t dx_ps_sweep(dx_pubsub *ps, uint64_t now_ms);

typedef struct dx_pubsub_stats {
  size_t topics;        /* in the registry */
  size_t subscriptions; /* on this node */
  size_t messages;      /* dx_ps_msg alive (history + queues + app) */
  uint64_t published;   /* messages sequenced (publish + ingest) */
  uint64_t delivered;   /* deliver hook calls that succeeded */
  uint64_t deliver_failed;
} dx_pubsub_stats;

/* A snapshot of the counters (each read atomically; together they are
 * approximate while other threads work). */
DX_API void dx_pubsub_stats_get(const dx_pubsub *ps, dx_pubsub_stats *out);

/* ---- the Redis backplane ----------------------------------------------------
 *
 * Several nodes (processes, machines) share topics through Redis:
 *
 *   dx_ps_redis *r = dx_ps_redis_new(&(dx_ps_redis_config){
 *       .url = "redis://10.0.0.5:6379/0", .loop = bp_loop});
 *   dx_pubsub *ps = dx_pubsub_new(&(dx_pubsub_config){
 *       ..., .backplane = dx_ps_redis_backplane(r)});
 *   dx_ps_redis_start(r, ps);   // then run bp_loop on a thread of its own
 *
 * IN REDIS, per topic T (keys under `prefix`, "dx:" by default):
 *   {prefix}t:{T}  a hash: epoch, seq (the last one assigned)
 *   {prefix}s:{T}  a stream: the history, entry id "<seq>-0", fields d
 *                  (the data) and t (Redis time, ms); at least `history`
 *                  entries (trimmed approximately, in whole blocks)
 *   channel {prefix}msg: every publish, "<T>\n<epoch>\n<seq>\n<data>"
 * A publish is one Lua script: it makes the epoch if the hash is missing
 * (a new topic, or Redis lost it: that is the only time the epoch
 * changes), increments seq, appends to the stream and publishes to the
 * channel, atomically, so every node receives one topic's messages in
 * seq order. Keys expire key_ttl_ms after the topic's last publish or
 * sync.
 *
 * ON THE NODE, two connections run on cfg.loop: commands (publishes,
 * syncs) and the subscription to the channel (RESP2 allows nothing else
 * on it). A topic with local subscribers is synced (dx_ps_backplane): one
 * script returns its epoch, seq and the stream entries after what the
 * node has, atomically. While Redis is unreachable, publishes fail at once
 * with DX_EUNAVAIL (a seq only Redis can assign), subscriptions to topics
 * not synced fail too, subscribers of synced topics stay; the node
 * reconnects with full-jitter backoff (up to 5 s), re-syncs every topic
 * it has subscribers for, and live subscribers receive what they missed
 * from the history, or a DX_PS_GAP where it was lost.
 */
typedef struct dx_ps_redis dx_ps_redis;

typedef struct dx_ps_redis_config {
  /* redis://[[user]:password@]host[:port][/db]; port 6379, db 0. */
  const char *url;
  /* The loop that runs both connections; every callback into the
   * registry (ingest, synced) comes from its thread. A loop of its own
   * keeps Redis traffic off the WebSocket loops. Required. */
  dx_loop *loop;
  size_t history;        /* the registry's: 0: 100; DX_PS_NO_HISTORY */
  uint64_t key_ttl_ms;   /* 0: 24 hours */
  size_t max_inflight;   /* publishes sent and not answered; 0: 10,000 */
  uint64_t timeout_ms;   /* connect and command timeout; 0: 3,000 */
  const char *prefix;    /* key prefix; NULL: "dx:" */
  /* This node's name in Redis (presence, counts); NULL: host:pid:random.
   * Two live nodes must not share one. */
  const char *node_id;
} dx_ps_redis_config;

/* Parses the URL and allocates; connects only at dx_ps_redis_start. NULL
 * with errno EINVAL (no loop, bad URL: *err_out, when not NULL, gets a
 * static message) or ENOMEM. */
DX_API dx_ps_redis *dx_ps_redis_new(const dx_ps_redis_config *cfg,
                                    const char **err_out);

/* The vtable for dx_pubsub_config.backplane. dx_pubsub_free frees r
 * through it (call it after cfg.loop stopped running), so r is never
 * freed by itself once given to a registry. */
DX_API const dx_ps_backplane *dx_ps_redis_backplane(dx_ps_redis *r);

/* Starts connecting, from cfg.loop's thread (posted: THREAD-SAFE).
 * Returns 0, DX_ESTATE (started already), DX_ENOMEM. */
DX_API int dx_ps_redis_start(dx_ps_redis *r, dx_pubsub *ps);

typedef struct dx_ps_redis_status {
  bool connected; /* both connections are up */
  bool healthy;   /* connected and every topic with subscribers synced */
  size_t syncing; /* topics being synced */
  size_t inflight;
  uint64_t published, publish_failed, received, reconnects;
  char error[128]; /* the last connection error, "" if none */
} dx_ps_redis_status;

/* A snapshot. THREAD-SAFE. */
DX_API void dx_ps_redis_status_get(dx_ps_redis *r, dx_ps_redis_status *out);

/* This node's name in Redis (cfg.node_id or the one made up). */
DX_API const char *dx_ps_redis_node_id(const dx_ps_redis *r);

/*
 * CLUSTER-WIDE VIEWS. Each node writes, every few seconds (and soon after
 * dx_ps_redis_touch), its presence members per topic and its subscriber
 * count per topic to Redis, in keys that expire 15 s after the last write:
 * a node that dies vanishes from both within that time. The queries read
 * every live node's entries in one script and answer through fn, on the
 * backplane's thread (rc DX_EUNAVAIL, with nothing, when Redis is away).
 */

/* Makes the next refresh (within a quarter second) rewrite topic's
 * presence entry: call it after a member joins or leaves. THREAD-SAFE. */
DX_API void dx_ps_redis_touch(dx_ps_redis *r, const char *topic);

/* The members of topic on every node, each once (a member on two nodes:
 * the first info found). THREAD-SAFE. Returns 0 (fn will be called
 * once), DX_EINVAL, DX_ENOMEM, DX_EUNAVAIL. */
DX_API int dx_ps_redis_presence(dx_ps_redis *r, const char *topic,
                                void (*fn)(void *ud, int rc,
                                           const dx_ps_member *members,
                                           size_t n),
                                void *ud);

typedef struct dx_ps_redis_topic {
  const char *topic;
  uint64_t seq;       /* from Redis; 0 when it has none */
  const char *epoch;  /* "" when Redis has none */
  size_t subscribers; /* on every live node */
  size_t nodes;       /* live nodes with subscribers */
} dx_ps_redis_topic;

/* The topics that have subscribers on some live node. THREAD-SAFE.
 * Returns 0 (fn will be called once), DX_ENOMEM, DX_EUNAVAIL. */
DX_API int dx_ps_redis_topics(dx_ps_redis *r,
                              void (*fn)(void *ud, int rc,
                                         const dx_ps_redis_topic *topics,
                                         size_t n, size_t nodes),
                              void *ud);

/* Hands frame[0..len) to dx_ps_broadcast(topic) on every OTHER node (for
 * presence join/leave events), in order with the topic's messages there.
 * Unsequenced and not retained: lost if Redis is away. THREAD-SAFE.
 * Returns 0, DX_EINVAL, DX_ENOMEM, DX_EUNAVAIL. */
DX_API int dx_ps_redis_broadcast(dx_ps_redis *r, const char *topic,
                                 const void *frame, size_t len);

#ifdef __cplusplus
}
#endif
#endif
