/*
 * echo_loadgen — a small, fast WebSocket echo load generator for
 * bench/run_echo.sh. One thread, epoll, its own minimal client framing
 * (RFC 6455 5.2/5.3, shared with fanout in bench/common/wsload.c): it must
 * cost less CPU per message than the servers it measures, so it does the
 * least a correct client can do:
 *
 *  - one read() per readable connection per loop turn (a 256 KiB buffer
 *    for all connections; every frame in it is parsed in place), and one
 *    write() per connection per loop turn: everything queued during the
 *    turn goes out together;
 *  - no copy of what it receives: the parser streams, comparing each
 *    payload slice with the bytes the message must carry, so a frame split
 *    across reads needs no per-connection buffer;
 *  - payloads are slices of one pattern (offset chosen from connection and
 *    sequence number), masked while copied into the output buffer with a
 *    fresh key per frame.
 *
 * Closed loop: each connection sends K messages, and each echo received
 * (in order: TCP keeps it) sends the next. Latency is from the moment a
 * message is queued to the moment its echo is parsed, both taken from the
 * clock read after the read() that triggered them; send times sit in a
 * per-connection ring of K. Latencies go into a log-linear histogram
 * (64 linear steps per power of two: under 1.6% error).
 *
 * Modes:
 *   timed (default)   open N connections, warm up W s, measure D s
 *   --messages M      send exactly M messages in all, then close every
 *                     connection with a close handshake (M = 0: connect,
 *                     handshake, close) — for instruction counting
 *   --idle            open N connections, print "ready N", hold them until
 *                     SIGINT/SIGTERM — for memory per connection
 *   --free-port       print a TCP port free on 127.0.0.1 and exit
 *
 * Output: a human line on stderr and one "result: key=value ..." line on
 * stdout. Exit status 1 on any error (refused connection, bad handshake,
 * wrong echo, unexpected close), 2 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsload.h"

#define RBUF_SIZE (256u << 10)
#define MAX_EVENTS 1024
#define MAX_CONNECTING 128 /* handshakes in progress at once */
#define PATTERN_SPREAD 251 /* distinct payload offsets (prime) */

enum { C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING, C_DONE };

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
  uint64_t remain;            /* payload bytes left in this frame */
  uint64_t msg_off;           /* bytes of the data message so far */
  const unsigned char *exp;   /* what the data message must carry */
  unsigned char ctl[125];
  uint8_t ctl_len;
  /* message flow */
  uint64_t sent, recvd, quota;
  uint64_t *ts; /* send times, ring of `inflight` */
} conn;

typedef struct opts {
  const char *host, *path;
  int port;
  unsigned conns, inflight;
  size_t size;
  double warmup, duration, timeout;
  long long messages; /* -1: timed mode */
  bool idle, binary;
  int server_pid;
} opts;

static opts o = {.host = "127.0.0.1", .path = "/echo", .port = 0,
                 .conns = 100, .inflight = 1, .size = 32, .warmup = 1,
                 .duration = 5, .timeout = 600, .messages = -1};

static conn *conns;
static int epfd;
static unsigned char *pattern; /* size + PATTERN_SPREAD bytes */
static unsigned char rbuf[RBUF_SIZE];
static conn *dirty_head;
static uint64_t now_ns;
static struct sockaddr_in addr;
static char request[1024];
static size_t request_len;

/* counters */
static unsigned opened, connecting, next_to_open, done_conns;
static bool measuring;
static uint64_t window_start, window_end, measured;
static uint64_t hist[WSL_HIST_LEN];
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

/* ---- output ----------------------------------------------------------- */

static void mark_dirty(conn *c) {
  if (!c->dirty) {
    c->dirty = true;
    c->next_dirty = dirty_head;
    dirty_head = c;
  }
}

static unsigned char *out_room(conn *c, size_t n) {
  if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_len + n > c->out_cap) {
    if (c->out_off) { /* reclaim what was written */
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    if (c->out_len + n > c->out_cap) {
      size_t cap = c->out_cap ? c->out_cap * 2 : 256;
      while (cap < c->out_len + n) cap *= 2;
      unsigned char *p = realloc(c->out, cap);
      if (!p) wsl_fail("out of memory");
      c->out = p;
      c->out_cap = cap;
    }
  }
  unsigned char *p = c->out + c->out_len;
  c->out_len += n;
  mark_dirty(c);
  return p;
}

static void queue_frame(conn *c, unsigned opcode, const unsigned char *data,
                        size_t n) {
  unsigned char *p = out_room(c, WSL_FRAME_MAX_HDR + n);
  size_t len = wsl_frame(p, opcode, data, n, &rng_state);
  c->out_len -= WSL_FRAME_MAX_HDR + n - len; /* give back unused header room */
}

static const unsigned char *payload_for(const conn *c, uint64_t seq) {
  return pattern + (c->id * 131u + seq * 31u) % PATTERN_SPREAD;
}

static void send_message(conn *c) {
  c->ts[c->sent % o.inflight] = now_ns;
  queue_frame(c, o.binary ? 2 : 1, payload_for(c, c->sent), o.size);
  c->sent++;
}

static void start_close(conn *c) {
  static const unsigned char normal[2] = {0x03, 0xe8}; /* 1000 */
  queue_frame(c, 8, normal, 2);
  c->state = C_CLOSING;
}

static void conn_finish(conn *c) {
  if (c->state == C_DONE) return;
  close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
  c->state = C_DONE;
  c->dirty = false; /* flush() skips it */
  done_conns++;
}

static void flush(void) {
  while (dirty_head) {
    conn *c = dirty_head;
    dirty_head = c->next_dirty;
    if (!c->dirty) continue;
    c->dirty = false;
    size_t n = c->out_len - c->out_off;
    if (!n) continue;
    ssize_t w = write(c->fd, c->out + c->out_off, n);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) continue; /* EPOLLOUT resumes */
      wsl_fail("conn %u: write: %s", c->id, strerror(errno));
    }
    c->out_off += (size_t)w;
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
  }
}

/* ---- input: handshake, then frames ------------------------------------ */

static void on_echo(conn *c) {
  if (c->recvd == c->sent) wsl_fail("conn %u: echo of a message never sent", c->id);
  uint64_t lat = now_ns - c->ts[c->recvd % o.inflight];
  c->recvd++;
  if (measuring) {
    measured++;
    hist[wsl_hist_index(lat)]++;
  }
  if (c->state != C_OPEN) return;
  if (o.messages < 0 || c->sent < c->quota) send_message(c);
  else if (c->recvd == c->quota) start_close(c);
}

static void frame_header_done(conn *c) {
  const unsigned char *h = c->hdr;
  if (h[0] & 0x70) wsl_fail("conn %u: reserved bits set (no extension agreed)", c->id);
  c->fin = h[0] & 0x80;
  c->opcode = h[0] & 0x0f;
  uint64_t len = h[1] & 0x7f;
  if (len == 126) len = (uint64_t)h[2] << 8 | h[3];
  else if (len == 127)
    for (int i = 2; i < 10; i++) len = len << 8 | h[i];
  if (c->opcode >= 8) {
    if (!c->fin || len > 125) wsl_fail("conn %u: bad control frame", c->id);
    c->ctl_len = 0;
  } else if (c->opcode == 0) {
    if (!c->in_msg) wsl_fail("conn %u: continuation without a message", c->id);
  } else if (c->opcode == 1 || c->opcode == 2) {
    if (c->in_msg) wsl_fail("conn %u: new message inside a fragmented one", c->id);
    if (c->opcode != (o.binary ? 2 : 1))
      wsl_fail("conn %u: echo came back as %s", c->id, c->opcode == 1 ? "text" : "binary");
    c->in_msg = true;
    c->msg_off = 0;
    c->exp = payload_for(c, c->recvd);
  } else {
    wsl_fail("conn %u: unknown opcode %u", c->id, c->opcode);
  }
  if (c->opcode < 8 && c->msg_off + len > o.size)
    wsl_fail("conn %u: echo longer than the message sent", c->id);
  c->remain = len;
  c->in_payload = true;
}

static void frame_done(conn *c) {
  c->in_payload = false;
  c->hlen = 0;
  c->hneed = 2;
  switch (c->opcode) {
  case 8: /* close (5.5.1): answer it unless we started it */
    if (c->state != C_CLOSING)
      wsl_fail("conn %u: server sent a close frame (code %u)", c->id,
           c->ctl_len >= 2 ? (unsigned)(c->ctl[0] << 8 | c->ctl[1]) : 1005u);
    conn_finish(c);
    return;
  case 9: queue_frame(c, 10, c->ctl, c->ctl_len); return; /* ping -> pong */
  case 10: return;
  default:
    if (!c->fin) return;
    if (c->msg_off != o.size) wsl_fail("conn %u: echo shorter than the message sent", c->id);
    c->in_msg = false;
    on_echo(c);
  }
}

static void parse_frames(conn *c, const unsigned char *p, size_t n) {
  const unsigned char *end = p + n;
  while (p < end && c->state != C_DONE) {
    if (!c->in_payload) {
      c->hdr[c->hlen++] = *p++;
      if (c->hlen == 2) {
        if (c->hdr[1] & 0x80) wsl_fail("conn %u: server frame is masked", c->id);
        unsigned l7 = c->hdr[1] & 0x7f;
        c->hneed = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0));
      }
      if (c->hlen == c->hneed) {
        frame_header_done(c);
        if (!c->remain) frame_done(c);
      }
      continue;
    }
    size_t take = (size_t)(end - p) < c->remain ? (size_t)(end - p) : (size_t)c->remain;
    if (c->opcode >= 8) {
      memcpy(c->ctl + c->ctl_len, p, take);
      c->ctl_len = (uint8_t)(c->ctl_len + take);
    } else {
      if (memcmp(p, c->exp + c->msg_off, take) != 0)
        wsl_fail("conn %u: echoed payload differs from message %llu", c->id,
             (unsigned long long)c->recvd);
      c->msg_off += take;
    }
    p += take;
    c->remain -= take;
    if (!c->remain) frame_done(c);
  }
}

static void conn_opened(conn *c);

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
      if (c->state == C_CLOSING) {
        conn_finish(c);
        return;
      }
      wsl_fail("conn %u: read: %s", c->id, strerror(errno));
    }
    if (r == 0) {
      if (c->state == C_CLOSING) {
        conn_finish(c);
        return;
      }
      wsl_fail("conn %u: server closed the connection", c->id);
    }
    now_ns = wsl_clock_ns();
    if (c->state == C_HANDSHAKE)
      parse_handshake(c, rbuf, (size_t)r);
    else
      parse_frames(c, rbuf, (size_t)r);
    /* A short read drained the socket; with edge-triggered epoll a new
     * edge comes with the next data. */
    if ((size_t)r < sizeof rbuf || c->state == C_DONE) return;
  }
}

/* ---- connections ------------------------------------------------------ */

static void open_next(void) {
  conn *c = &conns[next_to_open];
  c->id = next_to_open++;
  c->hneed = 2;
  c->fd = wsl_dial(&addr, o.host, epfd, c);
  c->state = C_CONNECTING;
  connecting++;
}

static void on_connected(conn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) wsl_fail("connect to %s:%d: %s", o.host, o.port, strerror(err));
  c->state = C_HANDSHAKE;
  if (!(c->hs = malloc(WSL_HS_MAX))) wsl_fail("out of memory");
  c->hs_len = 0;
  memcpy(out_room(c, request_len), request, request_len);
}

static void conn_opened(conn *c) {
  c->state = C_OPEN;
  connecting--;
  opened++;
  if (o.idle) return;
  if (!(c->ts = calloc(o.inflight, sizeof *c->ts))) wsl_fail("out of memory");
  if (o.messages >= 0) {
    c->quota = (uint64_t)o.messages / o.conns + (c->id < (uint64_t)o.messages % o.conns);
    if (!c->quota) {
      start_close(c);
      return;
    }
  }
  for (unsigned i = 0; i < o.inflight && (o.messages < 0 || c->sent < c->quota); i++)
    send_message(c);
}

/* ---- main ------------------------------------------------------------- */

static void usage(int status) {
  fputs("usage: echo_loadgen --port P [options]\n"
        "  --host A        server address (127.0.0.1)\n"
        "  --path P        WebSocket path (/echo)\n"
        "  --conns N       connections (100)\n"
        "  --size S        message size in bytes (32)\n"
        "  --inflight K    messages in flight per connection (1)\n"
        "  --warmup W      seconds before measuring (1)\n"
        "  --duration D    seconds measured (5)\n"
        "  --messages M    send exactly M messages, then close (count mode)\n"
        "  --idle          hold N open connections until SIGINT/SIGTERM\n"
        "  --binary        binary messages (default: text)\n"
        "  --server-pid P  also report that process's CPU use while measuring\n"
        "  --timeout T     give up after T seconds (600)\n"
        "  --free-port     print a free TCP port on 127.0.0.1 and exit\n",
        status ? stderr : stdout);
  exit(status);
}

static double num(const char *s, const char *what) {
  char *end;
  double v = strtod(s, &end);
  if (*end || end == s || v < 0) {
    fprintf(stderr, "echo_loadgen: %s: not a number: '%s'\n", what, s);
    usage(2);
  }
  return v;
}

static void parse_args(int argc, char **argv) {
  static const struct option lo[] = {
      {"host", 1, 0, 'H'},     {"path", 1, 0, 'P'},     {"port", 1, 0, 'p'},
      {"conns", 1, 0, 'c'},    {"size", 1, 0, 's'},     {"inflight", 1, 0, 'k'},
      {"warmup", 1, 0, 'w'},   {"duration", 1, 0, 'd'}, {"messages", 1, 0, 'm'},
      {"idle", 0, 0, 'i'},     {"binary", 0, 0, 'b'},   {"server-pid", 1, 0, 'S'},
      {"timeout", 1, 0, 't'},  {"free-port", 0, 0, 'F'}, {"help", 0, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    switch (ch) {
    case 'H': o.host = optarg; break;
    case 'P': o.path = optarg; break;
    case 'p': o.port = (int)num(optarg, "--port"); break;
    case 'c': o.conns = (unsigned)num(optarg, "--conns"); break;
    case 's': o.size = (size_t)num(optarg, "--size"); break;
    case 'k': o.inflight = (unsigned)num(optarg, "--inflight"); break;
    case 'w': o.warmup = num(optarg, "--warmup"); break;
    case 'd': o.duration = num(optarg, "--duration"); break;
    case 'm': o.messages = (long long)num(optarg, "--messages"); break;
    case 'i': o.idle = true; break;
    case 'b': o.binary = true; break;
    case 'S': o.server_pid = (int)num(optarg, "--server-pid"); break;
    case 't': o.timeout = num(optarg, "--timeout"); break;
    case 'F': exit(wsl_free_port());
    case 'h': usage(0); break;
    default: usage(2);
    }
  }
  if (optind < argc || o.port <= 0 || o.port > 65535 || !o.conns ||
      !o.inflight || o.duration <= 0)
    usage(2);
  if (o.size > (64u << 20)) wsl_fail("--size: at most 64 MiB");
}

static void setup(void) {
  wsl_addr(&addr, o.host, o.port);
  request_len = wsl_request(request, sizeof request, o.path, o.host, o.port);
  /* Printable ASCII: valid UTF-8 for text messages. */
  if (!(pattern = malloc(o.size + PATTERN_SPREAD))) wsl_fail("out of memory");
  for (size_t i = 0; i < o.size + PATTERN_SPREAD; i++)
    pattern[i] = (unsigned char)(0x21 + wsl_rnd32(&rng_state) % 94);
  if (!(conns = calloc(o.conns, sizeof *conns))) wsl_fail("out of memory");
  if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) wsl_fail("epoll: %s", strerror(errno));
  wsl_catch_signals();
}

int main(int argc, char **argv) {
  wsl_prog = "echo_loadgen";
  parse_args(argc, argv);
  setup();
  struct epoll_event evs[MAX_EVENTS];
  uint64_t t0 = wsl_clock_ns(), deadline = t0 + (uint64_t)(o.timeout * 1e9);
  double cpu0 = 0, scpu0 = 0, cpu1 = 0, scpu1 = 0;
  bool all_open = false, finished = false;
  now_ns = t0;

  while (!finished) {
    while (next_to_open < o.conns && connecting < MAX_CONNECTING) open_next();
    int timeout = 100;
    if (measuring || (all_open && !o.idle && o.messages < 0)) {
      uint64_t next = measuring ? window_end : window_start;
      timeout = next > now_ns ? (int)((next - now_ns) / 1000000) + 1 : 0;
    }
    int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR) wsl_fail("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      uint32_t e = evs[i].events;
      if (c->state == C_DONE) continue;
      if (c->state == C_CONNECTING && (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        on_connected(c);
      if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
      if ((e & EPOLLOUT) && c->state != C_DONE && c->out_len > c->out_off)
        mark_dirty(c);
    }
    flush();
    now_ns = wsl_clock_ns();
    if (wsl_stop) {
      if (!o.idle) wsl_fail("interrupted");
      break;
    }
    if (now_ns > deadline) wsl_fail("timed out after %.0f s (%u of %u connections open)",
                                o.timeout, opened, o.conns);
    if (!all_open && opened + done_conns >= o.conns) {
      all_open = true;
      if (o.idle) {
        printf("ready %u\n", opened);
        fflush(stdout);
        deadline = UINT64_MAX;
      }
      window_start = now_ns + (uint64_t)(o.warmup * 1e9);
      window_end = window_start + (uint64_t)(o.duration * 1e9);
    }
    if (o.messages >= 0) {
      finished = done_conns == o.conns;
    } else if (all_open && !o.idle) {
      if (!measuring && now_ns >= window_start && now_ns < window_end) {
        measuring = true;
        window_start = now_ns;
        cpu0 = wsl_self_cpu();
        scpu0 = wsl_proc_cpu(o.server_pid, NULL);
      } else if (measuring && now_ns >= window_end) {
        measuring = false;
        window_end = now_ns;
        cpu1 = wsl_self_cpu();
        scpu1 = wsl_proc_cpu(o.server_pid, NULL);
        finished = true;
      }
    }
  }

  if (o.idle) {
    printf("result: mode=idle conns=%u\n", opened);
    return 0;
  }
  if (o.messages >= 0) {
    uint64_t total = 0;
    for (unsigned i = 0; i < o.conns; i++) total += conns[i].recvd;
    double secs = (double)(now_ns - t0) * 1e-9;
    fprintf(stderr, "echo_loadgen: %llu messages echoed on %u connections in %.2f s\n",
            (unsigned long long)total, o.conns, secs);
    printf("result: mode=count conns=%u size=%zu msgs=%llu secs=%.3f\n", o.conns,
           o.size, (unsigned long long)total, secs);
    return 0;
  }
  double secs = (double)(window_end - window_start) * 1e-9;
  double rate = (double)measured / secs;
  double p50 = wsl_hist_pct(hist, WSL_HIST_LEN, 0.50) / 1e3;
  double p99 = wsl_hist_pct(hist, WSL_HIST_LEN, 0.99) / 1e3;
  double lcpu = 100 * (cpu1 - cpu0) / secs;
  double scpu = scpu0 >= 0 && scpu1 >= 0 ? 100 * (scpu1 - scpu0) / secs : -1;
  fprintf(stderr,
          "echo_loadgen: %u conns x %zu B x %u in flight: %.0f msg/s, "
          "p50 %.1f us, p99 %.1f us, loadgen cpu %.0f%%, server cpu %.0f%%\n",
          o.conns, o.size, o.inflight, rate, p50, p99, lcpu, scpu);
  printf("result: mode=timed conns=%u size=%zu inflight=%u msgs=%llu secs=%.3f "
         "msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f loadgen_cpu=%.0f server_cpu=%.0f\n",
         o.conns, o.size, o.inflight, (unsigned long long)measured, secs, rate,
         p50, p99, lcpu, scpu);
  return 0;
}
