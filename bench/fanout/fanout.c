/*
 * fanout — the load tool of bench/run_fanout.sh: N subscribers and one
 * publisher on a pub/sub WebSocket server, measuring how fast and how
 * faithfully the server fans each message out.
 *
 *  1. Opens N subscriber connections (at most 128 handshakes at once) and
 *     subscribes each to one topic; reads the server's VmRSS before and
 *     `--settle` seconds after the last subscription is confirmed (the
 *     memory per subscribed connection).
 *  2. A publisher connection, on a thread of its own so that its schedule
 *     does not wait for the subscribers' reads, publishes M messages at a
 *     fixed rate R (message k is due at start + k/R; the schedule does not
 *     slip when one is late). Each message's data is {"i":k,"t":ns}: its
 *     index and the CLOCK_MONOTONIC time just before the write. With
 *     `--phase R:M` given several times, the phases run one after the
 *     other on the same subscribers (message indices carry on), each
 *     starting once the one before is over.
 *  3. Every subscriber checks each message it receives: index in range, not
 *     seen before (a bitmap of one bit per message), not below the last
 *     one; the latency (receive time minus "t", receive time = the clock
 *     after the read() that brought the message) goes into the phase's
 *     log-linear histogram (64 steps per power of two: under 1.6 % error)
 *     over all deliveries.
 *  4. A phase ends when all N x M deliveries arrived, or when nothing
 *     arrived for `--drain` seconds after its last publish; what did not
 *     arrive is counted missing. Deliveries per second are counted from
 *     the first publish to the last delivery; CPU use (the server's, from
 *     /proc/PID/stat, and this tool's) over the whole phase.
 *
 * Wire protocols (--proto):
 *   duplex  the duplex.v1 ops (docs/protocol.md): {"op":"subscribe",...},
 *           {"op":"publish",...}, delivered as {"op":"message",...}; also
 *           spoken by bench/fanout/ws_broadcast.js.
 *   sio     Socket.IO 4 over its WebSocket transport, spoken directly
 *           (Engine.IO v4 packets "0" open, "2"/"3" ping/pong, "4" message;
 *           Socket.IO "40" connect, "42[event,arg]"): events "subscribe",
 *           "publish", "message", as bench/fanout/sio_broadcast.js expects.
 *
 * Subscribers share one thread, epoll (edge-triggered), one 256 KiB read
 * buffer, and the client framing and handshake of echo/loadgen.c (both
 * in bench/common/wsload.c, which says why not dx_client): messages are
 * parsed in place when whole in the buffer (the usual case), copied only
 * when split. Pings are answered (duplex pings every 25 s, Engine.IO too).
 *
 * Several nodes (bench/run_cluster_fanout.sh): `--sub-port P` (repeatable)
 * spreads the subscribers over those ports, round robin, while the
 * publisher stays on --port; `--server-pid` (repeatable) sums the CPU and
 * VmRSS of every process given. `--redis-port P` reads that Redis's INFO
 * (used_cpu_user + used_cpu_sys, total_net_input_bytes and
 * total_net_output_bytes) before and after each phase, on one connection
 * of its own, and subtracts what the INFO requests and replies themselves
 * added. With --proto duplex each publish carries "id":k, and the time
 * from its write to its "published" reply (the publish acknowledgement:
 * in-process, the local fan-out call; through Redis, the round trip of the
 * publish script) goes into a histogram of its own per phase.
 *
 * Output: progress on stderr; on stdout, "result: phase=0 ..." (setup and
 * memory), then one "result: phase=K key=value ..." line per phase. Exit
 * status 1 on any error (refused connection, bad frame, error reply, a
 * connection closed while setting up), 2 on bad usage. Missing, duplicate
 * or out-of-order deliveries, and subscribers the server drops once the
 * phases have begun, do not change the status: the result line says
 * valid=0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wsload.h"

#define RBUF_SIZE (256u << 10)
#define MAX_EVENTS 1024
#define MAX_CONNECTING 128 /* handshakes in progress at once */
#define MSG_MAX (1u << 20) /* largest message we reassemble */

enum proto { P_DUPLEX, P_SIO };
enum { C_CONNECTING, C_HANDSHAKE, C_OPEN, C_READY, C_LOST };

typedef struct conn {
  int fd;
  int state;
  uint32_t id;
  /* output: bytes not yet written are out[off, len) */
  unsigned char *out;
  size_t out_len, out_off, out_cap;
  struct conn *next_dirty;
  bool dirty;
  /* handshake response until the blank line */
  char *hs;
  size_t hs_len;
  /* frame parser */
  unsigned char hdr[14];
  uint8_t hlen, hneed;
  bool in_payload, fin, in_msg;
  uint8_t opcode;
  uint64_t remain;    /* payload bytes left in this frame */
  unsigned char *msg; /* reassembly, only for messages split across reads */
  size_t msg_len, msg_cap;
  unsigned char ctl[125];
  uint8_t ctl_len;
  /* deliveries */
  uint8_t *seen; /* bitmap of one bit per message */
  int64_t last_i;
} conn;

typedef struct opts {
  const char *host, *path, *topic;
  int port;
  enum proto proto;
  unsigned conns;
  double settle, drain, timeout;
  size_t pad;
  int server_pids[8];
  unsigned nserver_pids;
  int sub_ports[8];
  unsigned nsub_ports;
  int redis_port;
} opts;

static opts o = {.host = "127.0.0.1",
                 .path = "/ws",
                 .topic = "t",
                 .conns = 10000,
                 .settle = 1,
                 .drain = 10,
                 .timeout = 600};

static conn *conns;
static int epfd;
static unsigned char rbuf[RBUF_SIZE];
static conn *dirty_head;
static uint64_t now_ns;
static struct sockaddr_in addr;
static struct sockaddr_in sub_addrs[8]; /* the subscribers' ports */
static char request[1024];
static size_t request_len;
static char sub_req[256];
static size_t sub_req_len;

static unsigned opened, connecting, next_to_open, ready;
static unsigned lost_conns; /* subscribers the server dropped mid-run */
static bool measuring;      /* the phases have begun */

/* A phase publishes messages [base, base + messages) at `rate` per second.
 * The publisher thread writes the first four fields, the main thread the
 * rest. */
#define MAX_PHASES 8
typedef struct phase {
  _Atomic uint64_t sent, end_ns, late_max;
  _Atomic int done;
  double rate;
  unsigned long messages, base;
  uint64_t start_ns;
  uint64_t deliveries, unique, duplicates, out_of_order, last_ns, lat_max;
  uint64_t hist[WSL_HIST_LEN];
  /* publish acknowledgements with our id: written by the publisher */
  _Atomic uint64_t acked;
  uint64_t ack_hist[WSL_HIST_LEN];
} phase;
static phase phases[MAX_PHASES];
static unsigned nphases;
static unsigned long total_messages;

static _Atomic int pub_ready, pub_go, pub_stop; /* go: phases released */
static _Atomic uint64_t pub_acks;
static uint64_t *pub_sent_ns; /* per message index: when its write began */

static void build_request(void) {
  const char *path =
      o.proto == P_SIO ? "/socket.io/?EIO=4&transport=websocket" : o.path;
  request_len = wsl_request(request, sizeof request, path, o.host, o.port);
  if (o.proto == P_SIO)
    sub_req_len = (size_t)snprintf(sub_req, sizeof sub_req,
                                   "42[\"subscribe\",\"%s\"]", o.topic);
  else
    sub_req_len =
        (size_t)snprintf(sub_req, sizeof sub_req,
                         "{\"op\":\"subscribe\",\"topic\":\"%s\"}", o.topic);
}

/* ---- subscribers: output ---------------------------------------------- */

static uint64_t sub_rng = 0x9E3779B97F4A7C15u;

static void mark_dirty(conn *c) {
  if (!c->dirty) {
    c->dirty = true;
    c->next_dirty = dirty_head;
    dirty_head = c;
  }
}

static void queue_frame(conn *c, unsigned opcode, const void *data, size_t n) {
  if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_len + n + WSL_FRAME_MAX_HDR > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap * 2 : 256;
    while (cap < c->out_len + n + WSL_FRAME_MAX_HDR)
      cap *= 2;
    unsigned char *p = realloc(c->out, cap);
    if (!p) wsl_fail("out of memory");
    c->out = p;
    c->out_cap = cap;
  }
  c->out_len += wsl_frame(c->out + c->out_len, opcode, data, n, &sub_rng);
  mark_dirty(c);
}

static void queue_text(conn *c, const char *s, size_t n) {
  queue_frame(c, 1, s, n);
}

static void conn_lost(conn *c, const char *why, const char *detail);

static void flush(void) {
  while (dirty_head) {
    conn *c = dirty_head;
    dirty_head = c->next_dirty;
    c->dirty = false;
    size_t n = c->out_len - c->out_off;
    if (!n || c->state == C_LOST) continue;
    ssize_t w = write(c->fd, c->out + c->out_off, n);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) continue; /* EPOLLOUT resumes */
      conn_lost(c, "write: ", strerror(errno));
      continue;
    }
    c->out_off += (size_t)w;
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
  }
}

/* A subscriber the server dropped. While setting up that is an error;
 * once the phases have begun it is a result (what it misses is counted
 * missing), so that one overloaded server does not void the whole run. */
static void conn_lost(conn *c, const char *why, const char *detail) {
  if (!measuring) wsl_fail("conn %u: %s%s", c->id, why, detail);
  if (lost_conns < 3)
    fprintf(stderr, "fanout: conn %u: %s%s%s\n", c->id, why, detail,
            lost_conns == 2 ? " (further ones not shown)" : "");
  close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
  c->state = C_LOST;
  c->dirty = false;
  lost_conns++;
}

/* ---- subscribers: messages -------------------------------------------- */

/* The unsigned integer after `key` in p[0, n), or -1. */
static int64_t json_uint(const char *p, size_t n, const char *key,
                         const char **after) {
  size_t kl = strlen(key);
  const char *k = memmem(p, n, key, kl), *end = p + n;
  if (!k) return -1;
  const char *q = k + kl;
  while (q < end && *q == ' ')
    q++;
  if (q == end || *q < '0' || *q > '9') return -1;
  int64_t v = 0;
  while (q < end && *q >= '0' && *q <= '9')
    v = v * 10 + (*q++ - '0');
  if (after) *after = q;
  return v;
}

static void on_delivery(conn *c, const char *p, size_t n) {
  const char *q;
  int64_t i = json_uint(p, n, "\"i\":", &q);
  int64_t t = i < 0 ? -1 : json_uint(q, (size_t)(p + n - q), "\"t\":", NULL);
  if (i < 0 || t < 0)
    wsl_fail("conn %u: message without i/t: %.*s", c->id,
             (int)(n > 200 ? 200 : n), p);
  if ((uint64_t)i >= total_messages)
    wsl_fail("conn %u: message index %lld out of range", c->id, (long long)i);
  if (c->state != C_READY)
    wsl_fail("conn %u: message before subscribed", c->id);
  phase *ph = phases;
  while ((uint64_t)i >= ph->base + ph->messages)
    ph++;
  uint64_t lat = now_ns > (uint64_t)t ? now_ns - (uint64_t)t : 0;
  ph->hist[wsl_hist_index(lat)]++;
  if (lat > ph->lat_max) ph->lat_max = lat;
  ph->deliveries++;
  ph->last_ns = now_ns;
  uint8_t bit = (uint8_t)(1u << (i & 7));
  if (c->seen[i >> 3] & bit) {
    ph->duplicates++;
    return;
  }
  c->seen[i >> 3] |= bit;
  ph->unique++;
  if (i < c->last_i) ph->out_of_order++;
  c->last_i = i;
}

static void on_subscribed(conn *c) {
  if (c->state == C_READY) wsl_fail("conn %u: subscribed twice", c->id);
  c->state = C_READY;
  if (!(c->seen = calloc((total_messages + 7) / 8, 1)))
    wsl_fail("out of memory");
  c->last_i = -1;
  ready++;
}

static bool has(const char *p, size_t n, const char *s) {
  return memmem(p, n, s, strlen(s)) != NULL;
}

static void on_text_duplex(conn *c, const char *p, size_t n) {
  if (has(p, n, "\"op\":\"message\""))
    on_delivery(c, p, n);
  else if (has(p, n, "\"op\":\"subscribed\""))
    on_subscribed(c);
  else if (has(p, n, "\"op\":\"error\""))
    wsl_fail("conn %u: error reply: %.*s", c->id, (int)(n > 200 ? 200 : n), p);
  /* anything else (hello) is not ours to check */
}

static void on_text_sio(conn *c, const char *p, size_t n) {
  if (n >= 2 && p[0] == '4' && p[1] == '2') {
    if (has(p, n, "[\"message\""))
      on_delivery(c, p, n);
    else if (has(p, n, "[\"subscribed\""))
      on_subscribed(c);
  } else if (n == 1 && p[0] == '2') {
    queue_text(c, "3", 1); /* Engine.IO ping -> pong */
  } else if (n >= 1 && p[0] == '0') {
    queue_text(c, "40", 2); /* open -> connect to namespace "/" */
  } else if (n >= 2 && p[0] == '4' && p[1] == '0') {
    queue_text(c, sub_req, sub_req_len);
  } else if (n >= 1 && (p[0] == '1' || (p[0] == '4' && n >= 2 &&
                                        (p[1] == '1' || p[1] == '4')))) {
    char d[64];
    snprintf(d, sizeof d, "%.*s", (int)(n > 60 ? 60 : n), p);
    conn_lost(c, "Socket.IO closed or refused: ", d);
  }
}

static void on_text(conn *c, const unsigned char *p, size_t n) {
  if (o.proto == P_SIO)
    on_text_sio(c, (const char *)p, n);
  else
    on_text_duplex(c, (const char *)p, n);
}

/* ---- subscribers: frames ---------------------------------------------- */

static void frame_header_done(conn *c) {
  const unsigned char *h = c->hdr;
  if (h[0] & 0x70)
    wsl_fail("conn %u: reserved bits set (no extension agreed)", c->id);
  c->fin = h[0] & 0x80;
  c->opcode = h[0] & 0x0f;
  uint64_t len = h[1] & 0x7f;
  if (len == 126)
    len = (uint64_t)h[2] << 8 | h[3];
  else if (len == 127)
    for (int i = 2; i < 10; i++)
      len = len << 8 | h[i];
  if (c->opcode >= 8) {
    if (!c->fin || len > 125) wsl_fail("conn %u: bad control frame", c->id);
    c->ctl_len = 0;
  } else if (c->opcode == 0) {
    if (!c->in_msg) wsl_fail("conn %u: continuation without a message", c->id);
  } else if (c->opcode == 1) {
    if (c->in_msg)
      wsl_fail("conn %u: new message inside a fragmented one", c->id);
    c->in_msg = true;
    c->msg_len = 0;
  } else {
    wsl_fail("conn %u: unexpected opcode %u", c->id, c->opcode);
  }
  if (c->opcode < 8 && c->msg_len + len > MSG_MAX)
    wsl_fail("conn %u: message over %u bytes", c->id, MSG_MAX);
  c->remain = len;
  c->in_payload = true;
}

static void frame_done(conn *c) {
  c->in_payload = false;
  c->hlen = 0;
  c->hneed = 2;
  switch (c->opcode) {
  case 8: {
    char code[32];
    snprintf(code, sizeof code, " (code %u)",
             c->ctl_len >= 2 ? (unsigned)(c->ctl[0] << 8 | c->ctl[1]) : 1005u);
    conn_lost(c, "server sent a close frame", code);
    return;
  }
  case 9:
    queue_frame(c, 10, c->ctl, c->ctl_len);
    return; /* ping -> pong */
  case 10:
    return;
  default:
    if (!c->fin) return;
    c->in_msg = false;
    on_text(c, c->msg, c->msg_len);
    c->msg_len = 0;
  }
}

static void append_msg(conn *c, const unsigned char *p, size_t n) {
  if (c->msg_len + n > c->msg_cap) {
    size_t cap = c->msg_cap ? c->msg_cap * 2 : 256;
    while (cap < c->msg_len + n)
      cap *= 2;
    unsigned char *m = realloc(c->msg, cap);
    if (!m) wsl_fail("out of memory");
    c->msg = m;
    c->msg_cap = cap;
  }
  memcpy(c->msg + c->msg_len, p, n);
  c->msg_len += n;
}

static void parse_frames(conn *c, const unsigned char *p, size_t n) {
  const unsigned char *end = p + n;
  while (p < end && c->state != C_LOST) {
    if (!c->in_payload) {
      c->hdr[c->hlen++] = *p++;
      if (c->hlen == 2) {
        if (c->hdr[1] & 0x80)
          wsl_fail("conn %u: server frame is masked", c->id);
        unsigned l7 = c->hdr[1] & 0x7f;
        c->hneed = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0));
      }
      if (c->hlen == c->hneed) {
        frame_header_done(c);
        if (!c->remain) frame_done(c);
      }
      continue;
    }
    size_t avail = (size_t)(end - p);
    size_t take = avail < c->remain ? avail : (size_t)c->remain;
    if (c->opcode >= 8) {
      memcpy(c->ctl + c->ctl_len, p, take);
      c->ctl_len = (uint8_t)(c->ctl_len + take);
    } else if (c->fin && !c->msg_len && take == c->remain) {
      /* the whole message is in the read buffer: no copy */
      c->in_payload = false;
      c->hlen = 0;
      c->hneed = 2;
      c->in_msg = false;
      c->remain = 0;
      on_text(c, p, take);
      p += take;
      continue;
    } else {
      append_msg(c, p, take);
    }
    p += take;
    c->remain -= take;
    if (!c->remain) frame_done(c);
  }
}

static void conn_opened(conn *c) {
  c->state = C_OPEN;
  connecting--;
  opened++;
  /* Socket.IO: wait for the open packet; duplex.v1: ask at once (the
   * protocol allows requests before the hello). */
  if (o.proto == P_DUPLEX) queue_text(c, sub_req, sub_req_len);
}

static void parse_handshake(conn *c, const unsigned char *p, size_t n) {
  size_t used = wsl_handshake_feed(c->hs, &c->hs_len, p, n, c->id);
  if (!used) return;
  free(c->hs);
  c->hs = NULL;
  conn_opened(c);
  if (n > used) parse_frames(c, p + used, n - used);
}

static void on_readable(conn *c) {
  for (;;) {
    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
    if (r < 0) {
      if (errno == EAGAIN) return;
      if (errno == EINTR) continue;
      conn_lost(c, "read: ", strerror(errno));
      return;
    }
    if (r == 0) {
      conn_lost(c, "server closed the connection", "");
      return;
    }
    now_ns = wsl_clock_ns();
    if (c->state == C_HANDSHAKE)
      parse_handshake(c, rbuf, (size_t)r);
    else
      parse_frames(c, rbuf, (size_t)r);
    /* A short read drained the socket; with edge-triggered epoll a new
     * edge comes with the next data. */
    if ((size_t)r < sizeof rbuf || c->state == C_LOST) return;
  }
}

static void open_next(void) {
  conn *c = &conns[next_to_open];
  c->id = next_to_open++;
  c->hneed = 2;
  const struct sockaddr_in *a =
      o.nsub_ports ? &sub_addrs[c->id % o.nsub_ports] : &addr;
  c->fd = wsl_dial(a, o.host, epfd, c);
  c->state = C_CONNECTING;
  connecting++;
}

static void on_connected(conn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) wsl_fail("connect to %s: %s", o.host, strerror(err));
  c->state = C_HANDSHAKE;
  if (!(c->hs = malloc(WSL_HS_MAX))) wsl_fail("out of memory");
  c->hs_len = 0;
  if (c->out_len + request_len > c->out_cap) {
    free(c->out);
    c->out_cap = 256 > request_len ? 256 : request_len;
    if (!(c->out = malloc(c->out_cap))) wsl_fail("out of memory");
  }
  memcpy(c->out, request, request_len);
  c->out_len = request_len;
  c->out_off = 0;
  mark_dirty(c);
}

/* ---- the publisher (its own thread, blocking socket) ------------------- */

typedef struct pub {
  int fd;
  unsigned char in[64 << 10];
  size_t in_len;
  uint64_t rng;
} pub;

static void pub_write(pub *p, const void *buf, size_t n) {
  const unsigned char *b = buf;
  while (n) {
    ssize_t w = write(p->fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      wsl_fail("publisher: write: %s", strerror(errno));
    }
    b += w;
    n -= (size_t)w;
  }
}

static void pub_send(pub *p, unsigned opcode, const void *data, size_t n) {
  unsigned char f[1024];
  if (n + WSL_FRAME_MAX_HDR > sizeof f) wsl_fail("publisher: message too long");
  pub_write(p, f, wsl_frame(f, opcode, data, n, &p->rng));
}

/* One text message or control frame from the server. */
static void pub_on_frame(pub *p, unsigned opcode, const char *d, size_t n) {
  if (opcode == 8) wsl_fail("publisher: server sent a close frame");
  if (opcode == 9) {
    pub_send(p, 10, d, n);
    return;
  }
  if (opcode != 1) return;
  if (o.proto == P_SIO) {
    if (n == 1 && d[0] == '2')
      pub_send(p, 1, "3", 1);
    else if (n >= 1 && d[0] == '0')
      pub_send(p, 1, "40", 2);
    else if (n >= 2 && d[0] == '4' && d[1] == '0')
      atomic_store(&pub_ready, 1);
    else if (n >= 2 && d[0] == '4' && d[1] == '2' &&
             has(d, n, "[\"published\""))
      atomic_fetch_add(&pub_acks, 1);
    else if (n >= 2 && d[0] == '4' && (d[1] == '1' || d[1] == '4'))
      wsl_fail("publisher: Socket.IO closed or refused: %.*s", (int)n, d);
  } else {
    if (has(d, n, "\"op\":\"published\"")) {
      int64_t k = json_uint(d, n, "\"id\":", NULL);
      if (k >= 0 && (uint64_t)k < total_messages && pub_sent_ns[k]) {
        phase *ph = phases;
        while ((uint64_t)k >= ph->base + ph->messages)
          ph++;
        uint64_t now = wsl_clock_ns();
        ph->ack_hist[wsl_hist_index(now - pub_sent_ns[k])]++;
        atomic_fetch_add(&ph->acked, 1);
      }
      atomic_fetch_add(&pub_acks, 1);
    }
    else if (has(d, n, "\"op\":\"error\""))
      wsl_fail("publisher: error reply: %.*s", (int)(n > 200 ? 200 : n), d);
  }
}

/* Parses every whole frame in p->in (server frames: unmasked, and the
 * replies here are small, so a frame is never larger than the buffer). */
static void pub_parse(pub *p) {
  size_t off = 0;
  for (;;) {
    const unsigned char *h = p->in + off;
    size_t avail = p->in_len - off, hl = 2;
    if (avail < 2) break;
    uint64_t len = h[1] & 0x7f;
    if (len == 126)
      hl = 4;
    else if (len == 127)
      hl = 10;
    if (avail < hl) break;
    if (len == 126)
      len = (uint64_t)h[2] << 8 | h[3];
    else if (len == 127)
      for (size_t i = 2; i < 10; i++)
        len = len << 8 | h[i];
    if (len > sizeof p->in - 14) wsl_fail("publisher: reply too large");
    if (avail < hl + len) break;
    if (!(h[0] & 0x80)) wsl_fail("publisher: fragmented reply");
    pub_on_frame(p, h[0] & 0x0f, (const char *)h + hl, (size_t)len);
    off += hl + (size_t)len;
  }
  memmove(p->in, p->in + off, p->in_len - off);
  p->in_len -= off;
}

/* Reads whatever the server sent, waiting at most until `until` (ns). */
static void pub_wait(pub *p, uint64_t until) {
  uint64_t now = wsl_clock_ns();
  uint64_t d = until > now ? until - now : 0;
  struct timespec ts = {(time_t)(d / 1000000000u), (long)(d % 1000000000u)};
  struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
  int n = ppoll(&pfd, 1, &ts, NULL);
  if (n < 0 && errno != EINTR) wsl_fail("publisher: poll: %s", strerror(errno));
  if (n <= 0) return;
  ssize_t r =
      recv(p->fd, p->in + p->in_len, sizeof p->in - p->in_len, MSG_DONTWAIT);
  if (r == 0) wsl_fail("publisher: server closed the connection");
  if (r < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    wsl_fail("publisher: read: %s", strerror(errno));
  }
  p->in_len += (size_t)r;
  pub_parse(p);
}

static void pub_connect(pub *p) {
  p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (p->fd < 0) wsl_fail("publisher: socket: %s", strerror(errno));
  int one = 1;
  setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(p->fd, (struct sockaddr *)&addr, sizeof addr) < 0)
    wsl_fail("publisher: connect: %s", strerror(errno));
  pub_write(p, request, request_len);
  const char *body;
  for (;;) {
    ssize_t r = read(p->fd, p->in + p->in_len, WSL_HS_MAX - 1 - p->in_len);
    if (r <= 0)
      wsl_fail("publisher: handshake: %s", r ? strerror(errno) : "closed");
    p->in_len += (size_t)r;
    body = wsl_handshake_end((char *)p->in, p->in_len, 0xffffffffu);
    if (body) break;
  }
  size_t used = (size_t)((const unsigned char *)body - p->in);
  memmove(p->in, p->in + used, p->in_len - used);
  p->in_len -= used;
  if (o.proto == P_DUPLEX) atomic_store(&pub_ready, 1);
  pub_parse(p);
}

static int pub_text(char *text, size_t cap, unsigned long k) {
  static char pad[512];
  if (o.pad && !pad[0]) memset(pad, 'x', o.pad);
  const char *fmt = o.proto == P_SIO ? "42[\"publish\",{\"topic\":\"%s\","
                                       "\"data\":{\"i\":%lu,\"t\":%llu%s%s%s}}]"
                                     : "{\"op\":\"publish\",\"topic\":\"%s\","
                                       "\"data\":{\"i\":%lu,\"t\":%llu%s%s%s},"
                                       "\"id\":%lu}";
  uint64_t now = wsl_clock_ns();
  pub_sent_ns[k] = now;
  return snprintf(text, cap, fmt, o.topic, k, (unsigned long long)now,
                  o.pad ? ",\"p\":\"" : "", pad, o.pad ? "\"" : "", k);
}

/* Publishes one phase on schedule: message k is due at start + k / rate,
 * whatever happened to the ones before. */
static void pub_phase(pub *p, phase *ph) {
  uint64_t late_max = 0;
  double step = 1e9 / ph->rate;
  char text[1024];
  for (unsigned long k = 0; k < ph->messages; k++) {
    uint64_t due = ph->start_ns + (uint64_t)((double)k * step), now;
    while ((now = wsl_clock_ns()) < due)
      pub_wait(p, due);
    if (now - due > late_max) late_max = now - due;
    int n = pub_text(text, sizeof text, ph->base + k);
    pub_send(p, 1, text, (size_t)n);
    atomic_store(&ph->sent, k + 1);
  }
  atomic_store(&ph->late_max, late_max);
  atomic_store(&ph->end_ns, wsl_clock_ns());
  atomic_store(&ph->done, 1);
}

static void *publisher(void *arg) {
  (void)arg;
  static pub p = {.rng = 0xD1B54A32D192ED03u};
  pub_connect(&p);
  for (unsigned i = 0; i < nphases; i++) {
    /* The main thread releases a phase (sets its start_ns, then pub_go)
     * once the subscribers are ready and the previous phase is over. */
    while (atomic_load(&pub_go) <= (int)i || !atomic_load(&pub_ready))
      pub_wait(&p, wsl_clock_ns() + 20000000u);
    pub_phase(&p, &phases[i]);
  }
  while (!atomic_load(&pub_stop))
    pub_wait(&p, wsl_clock_ns() + 50000000u);
  return NULL;
}

/* ---- /proc ------------------------------------------------------------ */

/* The sum of wsl_proc_cpu over every --server-pid; -1 if one is unknown. */
static double servers_cpu(double *sys) {
  double t = 0, st = 0, s1;
  *sys = 0;
  if (!o.nserver_pids) return -1;
  for (unsigned i = 0; i < o.nserver_pids; i++) {
    double c = wsl_proc_cpu(o.server_pids[i], &s1);
    if (c < 0) return -1;
    t += c;
    st += s1;
  }
  *sys = st;
  return t;
}

/* VmRSS of a process in kB; -1 if unknown. */
static long proc_rss_kb(int pid) {
  if (pid <= 0) return -1;
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
  fclose(f);
  return kb;
}

static long servers_rss_kb(void) {
  long t = 0;
  if (!o.nserver_pids) return -1;
  for (unsigned i = 0; i < o.nserver_pids; i++) {
    long kb = proc_rss_kb(o.server_pids[i]);
    if (kb < 0) return -1;
    t += kb;
  }
  return t;
}

/* ---- Redis INFO (--redis-port) ------------------------------------------ */

typedef struct rinfo {
  bool ok;
  double cpu;            /* used_cpu_user + used_cpu_sys, seconds */
  uint64_t in, out;      /* total_net_input_bytes, total_net_output_bytes */
  uint64_t reply_bytes;  /* this INFO's reply, header included */
} rinfo;

static int redis_fd = -1;
static const char redis_req[] = "*1\r\n$4\r\nINFO\r\n";

static double info_num(const char *p, size_t n, const char *key) {
  size_t kl = strlen(key);
  const char *end = p + n;
  for (const char *q = p; q && q < end;) {
    if ((size_t)(end - q) > kl && !memcmp(q, key, kl) && q[kl] == ':')
      return strtod(q + kl + 1, NULL);
    q = memchr(q, '\n', (size_t)(end - q));
    if (q) q++;
  }
  return -1;
}

/* One INFO, blocking (a few hundred microseconds on loopback). */
static rinfo redis_info(void) {
  rinfo ri = {0};
  if (!o.redis_port) return ri;
  if (redis_fd < 0) {
    struct sockaddr_in a = addr;
    a.sin_port = htons((uint16_t)o.redis_port);
    redis_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (redis_fd < 0 ||
        connect(redis_fd, (struct sockaddr *)&a, sizeof a) < 0) {
      fprintf(stderr, "fanout: redis port %d: %s\n", o.redis_port,
              strerror(errno));
      if (redis_fd >= 0) close(redis_fd);
      redis_fd = -1;
      o.redis_port = 0;
      return ri;
    }
  }
  if (write(redis_fd, redis_req, sizeof redis_req - 1) !=
      (ssize_t)(sizeof redis_req - 1))
    return ri;
  static char buf[1 << 16];
  size_t len = 0, need = 0, hdr = 0;
  while (!need || len < need) {
    ssize_t r = read(redis_fd, buf + len, sizeof buf - 1 - len);
    if (r <= 0) return ri;
    len += (size_t)r;
    if (!need) {
      char *eol = memmem(buf, len, "\r\n", 2);
      if (!eol) continue;
      if (buf[0] != '$') return ri;
      hdr = (size_t)(eol - buf) + 2;
      need = hdr + (size_t)strtoul(buf + 1, NULL, 10) + 2;
      if (need >= sizeof buf) return ri;
    }
  }
  const char *body = buf + hdr;
  size_t bl = need - hdr - 2;
  double u = info_num(body, bl, "used_cpu_user"),
         sy = info_num(body, bl, "used_cpu_sys"),
         in = info_num(body, bl, "total_net_input_bytes"),
         out = info_num(body, bl, "total_net_output_bytes");
  if (u < 0 || sy < 0 || in < 0 || out < 0) return ri;
  ri.ok = true;
  ri.cpu = u + sy;
  ri.in = (uint64_t)in;
  ri.out = (uint64_t)out;
  ri.reply_bytes = need;
  return ri;
}

/* ---- main ------------------------------------------------------------- */

static void usage(int status) {
  fputs(
      "usage: fanout --port P [options]\n"
      "  --host A          server address (127.0.0.1)\n"
      "  --proto duplex|sio  duplex.v1 ops (also ws_broadcast.js) or Socket.IO "
      "(duplex)\n"
      "  --path P          WebSocket path for --proto duplex (/ws)\n"
      "  --topic T         topic (t)\n"
      "  --conns N         subscriber connections (10000)\n"
      "  --messages M      messages published (1000)\n"
      "  --rate R          publishes per second (100)\n"
      "  --phase R:M       instead: M messages at R per second, then the next\n"
      "                    --phase (repeatable, up to 8; one result line "
      "each)\n"
      "  --pad B           bytes of padding in each message's data (0, at most "
      "400)\n"
      "  --settle S        seconds between the last subscription and the RSS "
      "reading (1)\n"
      "  --drain S         give up S seconds after the last delivery, once "
      "all\n"
      "                    messages are published (10)\n"
      "  --server-pid P    report that process's VmRSS and CPU use "
      "(repeatable: summed)\n"
      "  --sub-port P      subscribers connect to P instead of --port "
      "(repeatable:\n"
      "                    spread round robin; the publisher stays on "
      "--port)\n"
      "  --redis-port P    per phase, that Redis's CPU and network bytes "
      "(INFO)\n"
      "  --timeout T       give up after T seconds (600)\n"
      "  --free-port       print a free TCP port on 127.0.0.1 and exit\n",
      status ? stderr : stdout);
  exit(status);
}

static double num(const char *s, const char *what) {
  char *end;
  double v = strtod(s, &end);
  if (*end || end == s || v < 0) {
    fprintf(stderr, "fanout: %s: not a number: '%s'\n", what, s);
    usage(2);
  }
  return v;
}

static void parse_args(int argc, char **argv) {
  static const struct option lo[] = {{"host", 1, 0, 'H'},
                                     {"proto", 1, 0, 'x'},
                                     {"path", 1, 0, 'P'},
                                     {"topic", 1, 0, 'T'},
                                     {"port", 1, 0, 'p'},
                                     {"conns", 1, 0, 'c'},
                                     {"messages", 1, 0, 'm'},
                                     {"rate", 1, 0, 'r'},
                                     {"pad", 1, 0, 'z'},
                                     {"settle", 1, 0, 's'},
                                     {"drain", 1, 0, 'd'},
                                     {"server-pid", 1, 0, 'S'},
                                     {"sub-port", 1, 0, 'b'},
                                     {"redis-port", 1, 0, 'R'},
                                     {"timeout", 1, 0, 't'},
                                     {"free-port", 0, 0, 'F'},
                                     {"help", 0, 0, 'h'},
                                     {"phase", 1, 0, 'f'},
                                     {0, 0, 0, 0}};
  double rate = 100;
  unsigned long messages = 1000;
  int ch;
  while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    switch (ch) {
    case 'H':
      o.host = optarg;
      break;
    case 'x':
      if (!strcmp(optarg, "duplex"))
        o.proto = P_DUPLEX;
      else if (!strcmp(optarg, "sio"))
        o.proto = P_SIO;
      else
        usage(2);
      break;
    case 'P':
      o.path = optarg;
      break;
    case 'T':
      o.topic = optarg;
      break;
    case 'p':
      o.port = (int)num(optarg, "--port");
      break;
    case 'c':
      o.conns = (unsigned)num(optarg, "--conns");
      break;
    case 'm':
      messages = (unsigned long)num(optarg, "--messages");
      break;
    case 'r':
      rate = num(optarg, "--rate");
      break;
    case 'f': {
      char *colon = strchr(optarg, ':');
      if (!colon || nphases == MAX_PHASES) usage(2);
      *colon = 0;
      phases[nphases].rate = num(optarg, "--phase rate");
      phases[nphases++].messages =
          (unsigned long)num(colon + 1, "--phase count");
      break;
    }
    case 'z':
      o.pad = (size_t)num(optarg, "--pad");
      break;
    case 's':
      o.settle = num(optarg, "--settle");
      break;
    case 'd':
      o.drain = num(optarg, "--drain");
      break;
    case 'S':
      if (o.nserver_pids == 8) usage(2);
      o.server_pids[o.nserver_pids++] = (int)num(optarg, "--server-pid");
      break;
    case 'b': {
      int sp = (int)num(optarg, "--sub-port");
      if (o.nsub_ports == 8 || sp <= 0 || sp > 65535) usage(2);
      o.sub_ports[o.nsub_ports++] = sp;
      break;
    }
    case 'R':
      o.redis_port = (int)num(optarg, "--redis-port");
      break;
    case 't':
      o.timeout = num(optarg, "--timeout");
      break;
    case 'F':
      exit(wsl_free_port());
    case 'h':
      usage(0);
      break;
    default:
      usage(2);
    }
  }
  if (!nphases) {
    phases[0].rate = rate;
    phases[nphases++].messages = messages;
  }
  for (unsigned i = 0; i < nphases; i++) {
    if (phases[i].rate <= 0 || !phases[i].messages) usage(2);
    phases[i].base = total_messages;
    total_messages += phases[i].messages;
  }
  if (optind < argc || o.port <= 0 || o.port > 65535 || !o.conns ||
      o.pad > 400 || strlen(o.topic) > 128 || strpbrk(o.topic, "\"\\"))
    usage(2);
}

static void setup(void) {
  wsl_addr(&addr, o.host, o.port);
  for (unsigned i = 0; i < o.nsub_ports; i++) {
    sub_addrs[i] = addr;
    sub_addrs[i].sin_port = htons((uint16_t)o.sub_ports[i]);
  }
  build_request();
  if (!(conns = calloc(o.conns, sizeof *conns))) wsl_fail("out of memory");
  if (!(pub_sent_ns = calloc(total_messages, sizeof *pub_sent_ns)))
    wsl_fail("out of memory");
  if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
    wsl_fail("epoll: %s", strerror(errno));
  wsl_catch_signals();
}

static void poll_once(int timeout_ms) {
  static struct epoll_event evs[MAX_EVENTS];
  int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout_ms);
  if (n < 0 && errno != EINTR) wsl_fail("epoll_wait: %s", strerror(errno));
  for (int i = 0; i < n; i++) {
    conn *c = evs[i].data.ptr;
    uint32_t e = evs[i].events;
    if (c->state == C_LOST) continue;
    if (c->state == C_CONNECTING && (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
      on_connected(c);
    if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    if ((e & EPOLLOUT) && c->out_len > c->out_off) mark_dirty(c);
  }
  flush();
  now_ns = wsl_clock_ns();
  if (wsl_stop) wsl_fail("interrupted");
}

/* Releases phase ph to the publisher and receives until every subscriber
 * has every message of it, or nothing came for --drain seconds after the
 * last publish, or the deadline passed. Prints its result line. */
static void run_phase(unsigned idx, uint64_t deadline) {
  phase *ph = &phases[idx];
  uint64_t expected = (uint64_t)o.conns * ph->messages;
  double ssys0, ssys1;
  rinfo ri0 = redis_info();
  double cpu0 = wsl_self_cpu(), scpu0 = servers_cpu(&ssys0);
  uint64_t t0 = wsl_clock_ns();
  /* The publisher looks for the go every 20 ms: give it the time to see
   * it before the first message is due. */
  ph->start_ns = t0 + 50000000u;
  atomic_store(&pub_go, (int)idx + 1);
  uint64_t progress_ns = t0, last_count = 0;
  bool timed_out = false;
  while (ph->unique < expected) {
    poll_once(100);
    if (ph->deliveries != last_count) {
      last_count = ph->deliveries;
      progress_ns = now_ns;
    }
    if (atomic_load(&ph->done)) {
      uint64_t end = atomic_load(&ph->end_ns);
      if (progress_ns < end) progress_ns = end;
      if (now_ns - progress_ns > (uint64_t)(o.drain * 1e9)) break;
    }
    if (now_ns > deadline) {
      timed_out = true;
      break;
    }
  }
  /* Every publish of the phase answered (a second at most), so that the
   * acknowledgement histogram is whole. */
  uint64_t sent = atomic_load(&ph->sent), acks_due = ph->base + sent;
  uint64_t ack_deadline = wsl_clock_ns() + 1000000000u;
  while (atomic_load(&pub_acks) < acks_due && wsl_clock_ns() < ack_deadline)
    poll_once(10);
  double cpu1 = wsl_self_cpu(), scpu1 = servers_cpu(&ssys1);
  rinfo ri1 = redis_info();
  uint64_t pub_end = atomic_load(&ph->end_ns);
  uint64_t end = ph->last_ns ? ph->last_ns : now_ns;
  uint64_t missing = expected - ph->unique;
  double secs = end > ph->start_ns ? (double)(end - ph->start_ns) * 1e-9 : 0;
  double wall = (double)(now_ns - t0) * 1e-9;
  double rate = secs > 0 ? (double)ph->deliveries / secs : 0;
  double pub_secs =
      pub_end > ph->start_ns ? (double)(pub_end - ph->start_ns) * 1e-9 : 0;
  double pub_rate =
      pub_secs > 0 && sent > 1 ? (double)(sent - 1) / pub_secs : 0;
  size_t hl = sizeof ph->hist / sizeof ph->hist[0];
  double p50 = wsl_hist_pct(ph->hist, hl, 0.50) / 1e3;
  double p99 = wsl_hist_pct(ph->hist, hl, 0.99) / 1e3;
  uint64_t acked = atomic_load(&ph->acked);
  double ack50 = wsl_hist_pct(ph->ack_hist, hl, 0.50) / 1e3;
  double ack99 = wsl_hist_pct(ph->ack_hist, hl, 0.99) / 1e3;
  /* Redis: the deltas, less the first INFO's reply and the second INFO's
   * request (the first request and the second reply fall outside) */
  bool rok = ri0.ok && ri1.ok;
  double rcpu = rok ? ri1.cpu - ri0.cpu : -1;
  long long rin = rok ? (long long)(ri1.in - ri0.in) -
                            (long long)(sizeof redis_req - 1)
                      : -1;
  long long rout =
      rok ? (long long)(ri1.out - ri0.out) - (long long)ri0.reply_bytes : -1;
  double lcpu = 100 * (cpu1 - cpu0) / wall;
  double scpu = scpu0 >= 0 && scpu1 >= 0 ? 100 * (scpu1 - scpu0) / wall : -1;
  double ssys = scpu0 >= 0 && scpu1 >= 0 ? 100 * (ssys1 - ssys0) / wall : -1;
  bool valid = !missing && !ph->duplicates && !ph->out_of_order &&
               !lost_conns && sent == ph->messages;
  fprintf(stderr,
          "fanout: phase %u, %lu messages at %g/s to %u subscribers: %llu of "
          "%llu deliveries in %.2f s: %.0f/s, p50 %.1f us, p99 %.1f us, max "
          "%.1f us; published at %.1f/s, late by up to %.1f ms; missing %llu, "
          "duplicate %llu, out of order %llu; %u subscribers lost%s; cpu "
          "server %.0f%% (kernel "
          "%.0f%%), fanout %.0f%%\n",
          idx + 1, ph->messages, ph->rate, o.conns,
          (unsigned long long)ph->deliveries, (unsigned long long)expected,
          secs, rate, p50, p99, (double)ph->lat_max / 1e3, pub_rate,
          (double)atomic_load(&ph->late_max) / 1e6, (unsigned long long)missing,
          (unsigned long long)ph->duplicates,
          (unsigned long long)ph->out_of_order, lost_conns,
          timed_out ? " (timed out)" : "", scpu, ssys, lcpu);
  printf("result: phase=%u conns=%u rate=%g messages=%lu published=%llu "
         "pub_rate=%.1f pub_late_max_ms=%.1f deliveries=%llu expected=%llu "
         "secs=%.3f deliveries_per_s=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f "
         "missing=%llu duplicate=%llu out_of_order=%llu lost_conns=%u "
         "valid=%d server_cpu=%.0f server_sys=%.0f server_cpu_s=%.2f "
         "fanout_cpu=%.0f acks=%llu ack_p50_us=%.1f ack_p99_us=%.1f "
         "redis_cpu_s=%.4f redis_in_b=%lld redis_out_b=%lld wall_s=%.3f\n",
         idx + 1, o.conns, ph->rate, ph->messages, (unsigned long long)sent,
         pub_rate, (double)atomic_load(&ph->late_max) / 1e6,
         (unsigned long long)ph->deliveries, (unsigned long long)expected, secs,
         rate, p50, p99, (double)ph->lat_max / 1e3, (unsigned long long)missing,
         (unsigned long long)ph->duplicates,
         (unsigned long long)ph->out_of_order, lost_conns, valid, scpu, ssys,
         scpu0 >= 0 && scpu1 >= 0 ? scpu1 - scpu0 : -1, lcpu,
         (unsigned long long)acked, ack50, ack99, rcpu, rin, rout, wall);
  fflush(stdout);
}

int main(int argc, char **argv) {
  wsl_prog = "fanout";
  parse_args(argc, argv);
  setup();
  uint64_t t0 = wsl_clock_ns(), deadline = t0 + (uint64_t)(o.timeout * 1e9);
  now_ns = t0;
  long rss0 = servers_rss_kb();

  pthread_t pt;
  if (pthread_create(&pt, NULL, publisher, NULL)) wsl_fail("pthread_create");

  /* 1. subscribe everyone, then let the server settle and read its RSS */
  while (ready < o.conns || !atomic_load(&pub_ready)) {
    while (next_to_open < o.conns && connecting < MAX_CONNECTING)
      open_next();
    poll_once(100);
    if (now_ns > deadline)
      wsl_fail("timed out: %u of %u subscribed (%u connected)", ready, o.conns,
           opened);
  }
  double setup_secs = (double)(now_ns - t0) * 1e-9;
  measuring = true;
  uint64_t settle_end = now_ns + (uint64_t)(o.settle * 1e9);
  while (now_ns < settle_end)
    poll_once((int)((settle_end - now_ns) / 1000000) + 1);
  long rss1 = servers_rss_kb();
  long per_conn =
      rss0 >= 0 && rss1 >= 0 ? (rss1 - rss0) * 1024 / (long)o.conns : -1;
  fprintf(stderr,
          "fanout: %u subscribers in %.2f s; server VmRSS %ld -> %ld kB "
          "(%ld B per subscribed connection)\n",
          ready, setup_secs, rss0, rss1, per_conn);
  printf("result: phase=0 conns=%u setup_secs=%.2f rss_before_kb=%ld "
         "rss_after_kb=%ld rss_per_conn_b=%ld\n",
         o.conns, setup_secs, rss0, rss1, per_conn);
  fflush(stdout);

  /* 2. the phases, one after the other */
  for (unsigned i = 0; i < nphases; i++) {
    if (i) { /* a breath between phases (Node: its GC) */
      uint64_t pause_end = now_ns + 500000000u;
      while (now_ns < pause_end)
        poll_once(100);
    }
    run_phase(i, deadline);
    if (now_ns > deadline) break;
  }
  atomic_store(&pub_stop, 1);
  /* The publisher thread may sit in ppoll: exit without joining it. The
   * kernel closes every connection (the servers see resets or EOFs). */
  _exit(0);
}
