/*
 * lws_echo — a libwebsockets echo server, the comparison peer for
 * bench/run_echo.sh. Written the way the libwebsockets examples teach
 * (minimal-ws-server-echo): LWS_CALLBACK_RECEIVE copies each message into a
 * per-connection FIFO, LWS_CALLBACK_SERVER_WRITEABLE sends it with
 * lws_write(). Nothing is ever dropped: with many messages in flight the
 * FIFO grows, and past QUEUE_HIGH messages we stop reading from that peer
 * (lws_rx_flow_control) until the queue drains below QUEUE_LOW.
 *
 * Settings chosen for a fair comparison with duplex and Node ws:
 *  - one service thread, bound to 127.0.0.1 only;
 *  - no extensions (permessage-deflate off);
 *  - UTF-8 validation of text messages on (RFC 6455 8.1 requires it;
 *    duplex and ws both validate), LWS_SERVER_OPTION_VALIDATE_UTF8;
 *  - text stays text and binary stays binary; a message that lws hands
 *    over in several pieces (fragments, or frames larger than the rx
 *    buffer) is reassembled and echoed as one frame.
 *
 * Usage: lws_echo PORT        (SIGINT or SIGTERM stops it cleanly, so a
 *                              profiler such as callgrind writes its output)
 */
#include <libwebsockets.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_HIGH 4096 /* queued messages before we pause reading */
#define QUEUE_LOW 1024

typedef struct msg {
  struct msg *next;
  size_t len;
  int binary;
  unsigned char buf[]; /* LWS_PRE bytes of room for the header, then data */
} msg;

typedef struct pss {
  msg *head, *tail;
  unsigned queued;
  int paused;
  msg *part; /* message being reassembled, NULL when none */
  size_t part_cap;
} pss;

static volatile sig_atomic_t interrupted;

static msg *msg_new(size_t cap) {
  msg *m = malloc(sizeof *m + LWS_PRE + cap);
  if (m) {
    m->next = NULL;
    m->len = 0;
  }
  return m;
}

static void enqueue(struct lws *wsi, pss *p, msg *m) {
  if (p->tail)
    p->tail->next = m;
  else
    p->head = m;
  p->tail = m;
  if (++p->queued == QUEUE_HIGH && !p->paused) {
    p->paused = 1;
    lws_rx_flow_control(wsi, 0);
  }
  lws_callback_on_writable(wsi);
}

/* A piece of a message: append it to the message being reassembled,
 * queue that message when the piece is its last. */
static int on_receive(struct lws *wsi, pss *p, const void *in, size_t len) {
  int first = lws_is_first_fragment(wsi);
  int final = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
  if (first && final && !p->part) {
    msg *m = msg_new(len);
    if (!m) return -1;
    memcpy(m->buf + LWS_PRE, in, len);
    m->len = len;
    m->binary = lws_frame_is_binary(wsi);
    enqueue(wsi, p, m);
    return 0;
  }
  if (!p->part) {
    size_t cap = len < 4096 ? 4096 : len;
    if (!(p->part = msg_new(cap))) return -1;
    p->part_cap = cap;
    p->part->binary = lws_frame_is_binary(wsi);
  }
  if (p->part->len + len > p->part_cap) {
    size_t cap = p->part_cap * 2;
    while (cap < p->part->len + len) cap *= 2;
    msg *m = realloc(p->part, sizeof *m + LWS_PRE + cap);
    if (!m) return -1;
    p->part = m;
    p->part_cap = cap;
  }
  memcpy(p->part->buf + LWS_PRE + p->part->len, in, len);
  p->part->len += len;
  if (final) {
    enqueue(wsi, p, p->part);
    p->part = NULL;
  }
  return 0;
}

/* Several writes per WRITEABLE callback are allowed on ws over http/1 as
 * long as lws did not have to buffer the previous one (lws-ws-state.h,
 * lws_partial_buffered); it spares a poll round trip per queued message. */
static int on_writeable(struct lws *wsi, pss *p) {
  while (p->head) {
    msg *m = p->head;
    int n = lws_write(wsi, m->buf + LWS_PRE, m->len,
                      m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    if (n < (int)m->len) return -1;
    if (!(p->head = m->next)) p->tail = NULL;
    free(m);
    if (--p->queued == QUEUE_LOW && p->paused) {
      p->paused = 0;
      lws_rx_flow_control(wsi, 1);
    }
    if (lws_partial_buffered(wsi)) break;
  }
  if (p->head) lws_callback_on_writable(wsi);
  return 0;
}

static void pss_free(pss *p) {
  while (p->head) {
    msg *m = p->head;
    p->head = m->next;
    free(m);
  }
  p->tail = NULL;
  free(p->part);
  p->part = NULL;
}

static int callback_echo(struct lws *wsi, enum lws_callback_reasons reason,
                         void *user, void *in, size_t len) {
  pss *p = user;
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED:
    memset(p, 0, sizeof *p);
    return 0;
  case LWS_CALLBACK_RECEIVE:
    return on_receive(wsi, p, in, len);
  case LWS_CALLBACK_SERVER_WRITEABLE:
    return on_writeable(wsi, p);
  case LWS_CALLBACK_CLOSED:
    pss_free(p);
    return 0;
  default:
    return 0;
  }
}

static const struct lws_protocols protocols[] = {
    /* The first protocol also takes connections that name none. */
    {"echo", callback_echo, sizeof(pss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: lws_echo PORT\n");
    return 2;
  }
  lws_set_log_level(LLL_ERR, NULL);

  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = atoi(argv[1]);
  info.iface = "127.0.0.1";
  info.protocols = protocols;
  info.count_threads = 1;
  info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
                 LWS_SERVER_OPTION_DISABLE_IPV6;
  info.gid = -1;
  info.uid = -1;

  struct lws_context *ctx = lws_create_context(&info);
  if (!ctx) {
    fprintf(stderr, "lws_echo: lws_create_context failed\n");
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  fprintf(stderr, "lws_echo: listening on 127.0.0.1:%d\n", info.port);

  while (!interrupted)
    if (lws_service(ctx, 0) < 0) break;
  lws_context_destroy(ctx);
  return 0;
}
