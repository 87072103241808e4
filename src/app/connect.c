/*
 * duplex connect — an interactive WebSocket client (like wscat/websocat):
 * stdin lines out as text messages, received messages out on stdout.
 * Public headers only.
 */
#include "app.h"

#include <duplex/client.h>

#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define MAX_LIST 64
#define STDIN_CHUNK (64u << 10)
#define STDIN_HIGH (1u << 20) /* pause stdin above this buffered amount */

/* Exit statuses (also in the help text and README.md). */
enum {
  CX_OK = 0,           /* normal close (1000/1001) either way, or --count met */
  CX_CONNECT = 1,      /* DNS, refused, TLS, non-101, handshake */
  CX_USAGE = 2,        /* bad options */
  CX_PROTOCOL = 3,     /* the peer broke the protocol */
  CX_REMOTE = 4,       /* closed with another code (1006: lost) */
  CX_TIMEOUT = 5,      /* --timeout */
  CX_INTERRUPTED = 130 /* Ctrl-C before the connection opened, or twice */
};

static const char *connect_help =
    "usage: duplex connect [options] URL\n"
    "\n"
    "Connects to a WebSocket server (ws:// or wss://), sends each line read\n"
    "from stdin as a text message and prints each message received on its\n"
    "own line. At the end of stdin it closes normally (1000) and exits once\n"
    "the closing handshake is done.\n"
    "\n"
    "  -H, --header 'Name: value'  extra request header (repeatable)\n"
    "  -s, --subprotocol P   offer subprotocol P (repeatable, in order)\n"
    "  -o, --origin ORIGIN   send an Origin header\n"
    "      --cacert FILE     trust the CAs in FILE (PEM) for wss://\n"
    "  -k, --insecure        do not verify the server's certificate\n"
    "      --no-deflate      do not offer permessage-deflate\n"
    "      --max-message SIZE  largest message accepted (16MiB)\n"
    "  -n, --count N         exit 0 after N messages received (stdin EOF\n"
    "                        then does not close: the messages are awaited)\n"
    "  -t, --timeout DUR     give up after DUR (\"5\", \"1.5s\", \"300ms\"):\n"
    "                        exit 5\n"
    "      --connect-timeout DUR   DNS + TCP deadline (10s)\n"
    "      --ping-interval DUR     keepalive ping; no answer by the next\n"
    "                        one counts as a lost connection (off)\n"
    "      --echo            send every message received back, same type,\n"
    "                        until the peer closes; stdin is not read and\n"
    "                        nothing is printed\n"
    "      --keep-open       do not close at the end of stdin\n"
    "      --json            pretty-print text messages that are JSON\n"
    "      --binary hex|raw  binary messages as hex lines (default) or raw\n"
    "                        bytes (no newline added)\n"
    "  -r, --reconnect       reconnect with exponential backoff and full\n"
    "                        jitter when the connection fails or is lost\n"
    "      --reconnect-base DUR  first backoff cap (500ms)\n"
    "      --reconnect-max DUR   largest backoff cap (30s)\n"
    "      --max-attempts N  give up after N failed attempts in a row\n"
    "                        (default: never)\n"
    "  -v, --verbose         connection details on stderr\n"
    "  -q, --quiet           only the final error on stderr\n"
    "  -h, --help            this text\n"
    "\n"
    "Ctrl-C (or SIGTERM) closes normally; a second one exits at once.\n"
    "\n"
    "Exit status:\n"
    "  0  normal close (1000 or 1001, by either side), or --count reached\n"
    "  1  connection failure: DNS, refused, TLS, non-101 answer, handshake\n"
    "  2  usage error\n"
    "  3  protocol error by the peer\n"
    "  4  closed with another code (1006: lost without a close frame)\n"
    "  5  --timeout expired\n"
    "  130  interrupted before the connection opened, or twice\n";

typedef struct cx {
  dx_loop *loop;
  dx_client *client;
  const char *url;
  /* options */
  const char *headers[MAX_LIST + 1];
  int nheaders;
  const char *protos[MAX_LIST + 1];
  int nprotos;
  unsigned long count; /* 0: no limit */
  unsigned timeout_ms;
  bool echo, json, raw, keep_open, quiet, verbose;
  /* run state */
  unsigned long received;
  bool count_done;
  bool protocol_error;
  bool interrupted;
  int status;
  char pending[600]; /* why a reconnection follows, printed with it */
  /* stdin */
  dx_io in_io;
  enum { IN_UNSET, IN_EPOLL, IN_FILE } in_mode;
  bool in_watched, in_eof, in_paused;
  int in_flags;
  dx_timer in_timer; /* reads a regular file (epoll cannot watch one) */
  char *line;
  size_t line_len, line_cap;
  unsigned long lineno;
  size_t max_line;
  /* timers, signals */
  dx_timer deadline;
  dx_io sig_io;
} cx;

static void say(const cx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(const cx *x, const char *fmt, ...) {
  if (x->quiet) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("duplex connect: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void finish(cx *x, int status) {
  x->status = status;
  dx_loop_stop(x->loop);
}

/* ---- output ------------------------------------------------------------- */

/* JSON (RFC 8259), checked before it is reformatted: anything else is
 * printed as received. */
typedef struct jcur {
  const char *p, *end;
  int depth;
} jcur;

static void jws(jcur *c) {
  while (c->p < c->end &&
         (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static bool jlit(jcur *c, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return false;
  c->p += n;
  return true;
}

static bool jdigits(jcur *c) {
  const char *s = c->p;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
    c->p++;
  return c->p > s;
}

static bool jnumber(jcur *c) {
  if (c->p < c->end && *c->p == '-') c->p++;
  if (c->p < c->end && *c->p == '0')
    c->p++;
  else if (!jdigits(c))
    return false;
  if (c->p < c->end && *c->p == '.' && (c->p++, !jdigits(c))) return false;
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    if (!jdigits(c)) return false;
  }
  return true;
}

static bool jstring(jcur *c) {
  if (c->p >= c->end || *c->p != '"') return false;
  for (c->p++; c->p < c->end; c->p++) {
    unsigned char ch = (unsigned char)*c->p;
    if (ch == '"') {
      c->p++;
      return true;
    }
    if (ch < 0x20) return false;
    if (ch == '\\') {
      if (++c->p >= c->end) return false;
      if (*c->p == 'u') {
        for (int i = 0; i < 4; i++)
          if (++c->p >= c->end || !strchr("0123456789abcdefABCDEF", *c->p))
            return false;
      } else if (!strchr("\"\\/bfnrt", *c->p)) {
        return false;
      }
    }
  }
  return false;
}

static bool jvalue(jcur *c);

static bool jcontainer(jcur *c, char close, bool object) {
  if (++c->depth > 512) return false;
  c->p++;
  jws(c);
  if (c->p < c->end && *c->p == close) {
    c->p++;
    c->depth--;
    return true;
  }
  for (;;) {
    jws(c);
    if (object) {
      if (!jstring(c)) return false;
      jws(c);
      if (c->p >= c->end || *c->p++ != ':') return false;
    }
    if (!jvalue(c)) return false;
    jws(c);
    if (c->p >= c->end) return false;
    if (*c->p == close) {
      c->p++;
      c->depth--;
      return true;
    }
    if (*c->p++ != ',') return false;
  }
}

static bool jvalue(jcur *c) {
  jws(c);
  if (c->p >= c->end) return false;
  switch (*c->p) {
  case '{':
    return jcontainer(c, '}', true);
  case '[':
    return jcontainer(c, ']', false);
  case '"':
    return jstring(c);
  case 't':
    return jlit(c, "true");
  case 'f':
    return jlit(c, "false");
  case 'n':
    return jlit(c, "null");
  default:
    return jnumber(c);
  }
}

static bool json_valid(const char *p, size_t n) {
  jcur c = {p, p + n, 0};
  if (!jvalue(&c)) return false;
  jws(&c);
  return c.p == c.end;
}

static void indent(FILE *f, int level) {
  fputc('\n', f);
  for (int i = 0; i < level; i++)
    fputs("  ", f);
}

/* Reformats valid JSON with two-space indentation. */
static void json_pretty(FILE *f, const char *p, size_t n) {
  int level = 0;
  bool in_str = false, esc = false;
  for (size_t i = 0; i < n; i++) {
    char ch = p[i];
    if (in_str) {
      fputc(ch, f);
      if (esc)
        esc = false;
      else if (ch == '\\')
        esc = true;
      else if (ch == '"')
        in_str = false;
      continue;
    }
    switch (ch) {
    case ' ':
    case '\t':
    case '\n':
    case '\r':
      break;
    case '"':
      in_str = true;
      fputc(ch, f);
      break;
    case '{':
    case '[': {
      size_t j = i + 1;
      while (j < n && strchr(" \t\n\r", p[j]))
        j++;
      if (j < n && (p[j] == '}' || p[j] == ']')) {
        fputc(ch, f);
        fputc(p[j], f);
        i = j;
        break;
      }
      fputc(ch, f);
      indent(f, ++level);
      break;
    }
    case '}':
    case ']':
      indent(f, --level);
      fputc(ch, f);
      break;
    case ',':
      fputc(ch, f);
      indent(f, level);
      break;
    case ':':
      fputs(": ", f);
      break;
    default:
      fputc(ch, f);
    }
  }
}

static void print_message(cx *x, dx_opcode op, const uint8_t *data,
                          size_t len) {
  if (op == DX_OP_TEXT) {
    if (x->json && json_valid((const char *)data, len))
      json_pretty(stdout, (const char *)data, len);
    else
      fwrite(data, 1, len, stdout);
    fputc('\n', stdout);
  } else if (x->raw) {
    fwrite(data, 1, len, stdout);
  } else {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
      putc(hex[data[i] >> 4], stdout);
      putc(hex[data[i] & 15], stdout);
    }
    fputc('\n', stdout);
  }
  fflush(stdout);
}

/* ---- stdin -------------------------------------------------------------- */

static void stdin_read(cx *x);
static void on_stdin_timer(dx_timer *t);

static void send_line(cx *x, const char *p, size_t n) {
  if (n && p[n - 1] == '\r') n--;
  x->lineno++;
  int rc = dx_client_send(x->client, DX_OP_TEXT, p, n);
  if (rc == DX_EUTF8)
    say(x, "line %lu is not valid UTF-8: not sent", x->lineno);
  else if (rc && rc != DX_ECLOSED && rc != DX_ESTATE)
    say(x, "cannot send line %lu: %s", x->lineno, dx_strerror(rc));
}

/* Splits what was read into lines; keeps the unfinished one. */
static bool take_input(cx *x, const char *buf, size_t n) {
  const char *p = buf, *end = buf + n;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *stop = nl ? nl : end;
    size_t part = (size_t)(stop - p);
    if (x->line_len + part > x->max_line) {
      say(x, "line %lu is longer than the largest message (%zu bytes)",
          x->lineno + 1, x->max_line);
      return false;
    }
    if (nl && x->line_len == 0) {
      send_line(x, p, part); /* whole line in the buffer: no copy */
    } else {
      if (x->line_len + part > x->line_cap) {
        size_t cap = x->line_cap ? x->line_cap : 256;
        while (cap < x->line_len + part)
          cap *= 2;
        char *l = realloc(x->line, cap);
        if (!l) return false;
        x->line = l;
        x->line_cap = cap;
      }
      memcpy(x->line + x->line_len, p, part);
      x->line_len += part;
      if (nl) {
        send_line(x, x->line, x->line_len);
        x->line_len = 0;
      }
    }
    p = nl ? nl + 1 : end;
  }
  return true;
}

static void stdin_stop(cx *x) {
  if (x->in_watched) dx_io_stop(&x->in_io);
  x->in_watched = false;
  dx_timer_stop(&x->in_timer);
}

static void stdin_eof(cx *x) {
  x->in_eof = true;
  stdin_stop(x);
  if (x->line_len) send_line(x, x->line, x->line_len);
  x->line_len = 0;
  if (x->keep_open || x->count) return;
  if (x->verbose) say(x, "end of input: closing");
  dx_client_close(x->client, DX_CLOSE_NORMAL, NULL);
}

/* Reads while the connection is open and not backed up. */
static void stdin_read(cx *x) {
  static char buf[STDIN_CHUNK];
  for (int rounds = 0; rounds < 16; rounds++) {
    if (x->in_eof || dx_client_state(x->client) != DX_OPEN) return;
    if (dx_client_buffered(x->client) > STDIN_HIGH) {
      x->in_paused = true; /* on_drain resumes */
      return;
    }
    ssize_t n = read(0, buf, sizeof buf);
    if (n > 0) {
      if (!take_input(x, buf, (size_t)n)) {
        stdin_stop(x);
        x->in_eof = true;
        dx_client_close(x->client, DX_CLOSE_TOO_BIG, "line too long");
        return;
      }
      continue;
    }
    if (n == 0) return stdin_eof(x);
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      say(x, "cannot read stdin: %s", strerror(errno));
      return stdin_eof(x);
    }
    return;
  }
  /* Enough for one iteration (a regular file never says EAGAIN, and an
   * edge-triggered pipe would not tell again): go on in the next one. */
  dx_timer_start(x->loop, &x->in_timer, 0, 0, on_stdin_timer);
}

static cx *the_cx; /* for the stdin callbacks (one client per process) */

static void on_stdin(dx_io *io, unsigned events) {
  (void)io;
  (void)events;
  stdin_read(the_cx);
}

static void on_stdin_timer(dx_timer *t) {
  (void)t;
  stdin_read(the_cx);
}

/* Starts (or resumes) reading stdin: through epoll for pipes, terminals
 * and sockets; from a zero-delay timer for regular files and /dev/null,
 * which epoll cannot watch (and which never block). */
static void stdin_start(cx *x) {
  if (x->echo || x->in_eof) return;
  if (x->in_mode == IN_UNSET) {
    x->in_flags = fcntl(0, F_GETFL);
    if (x->in_flags >= 0) fcntl(0, F_SETFL, x->in_flags | O_NONBLOCK);
    x->in_mode = IN_EPOLL;
  }
  if (x->in_mode == IN_EPOLL && !x->in_watched) {
    int rc = dx_io_start(x->loop, &x->in_io, 0, DX_IO_READ, on_stdin);
    x->in_watched = rc == 0;
    if (rc == -EPERM) {
      x->in_mode = IN_FILE;
    } else if (rc) {
      say(x, "cannot watch stdin: %s", dx_strerror(rc));
      x->in_eof = true;
      return;
    }
  }
  x->in_paused = false;
  stdin_read(x);
}

/* ---- client events ------------------------------------------------------ */

static void on_open(dx_client *c, void *ud) {
  cx *x = ud;
  const char *sp = dx_client_subprotocol(c);
  const char *ext = dx_client_extensions(c);
  if (x->verbose)
    say(x, "connected to %s (subprotocol: %s; extensions: %s)", x->url,
        sp ? sp : "none", *ext ? ext : "none");
  else if (x->pending[0])
    say(x, "reconnected to %s", x->url);
  x->pending[0] = 0;
  stdin_start(x);
}

static void on_message(dx_client *c, dx_opcode op, uint8_t *data, size_t len,
                       void *ud) {
  cx *x = ud;
  if (x->count_done) return; /* past --count: not ours to show */
  x->received++;
  if (x->echo) {
    int rc = dx_client_send(c, op, data, len);
    if (rc && rc != DX_ECLOSED)
      say(x, "cannot echo a message: %s", dx_strerror(rc));
  } else {
    print_message(x, op, data, len);
  }
  if (x->count && x->received == x->count && !x->count_done) {
    x->count_done = true;
    if (x->verbose) say(x, "%lu messages received: closing", x->count);
    dx_client_close(c, DX_CLOSE_NORMAL, NULL);
  }
}

static void on_pong(dx_client *c, const uint8_t *data, size_t len, void *ud) {
  (void)c;
  (void)data;
  cx *x = ud;
  if (x->verbose) say(x, "pong (%zu bytes)", len);
}

static void on_drain(dx_client *c, void *ud) {
  (void)c;
  cx *x = ud;
  if (x->in_paused) stdin_start(x);
}

static bool is_protocol_error(int err) {
  return err == DX_EPROTO || err == DX_EUTF8 || err == DX_ETOOBIG ||
         err == DX_EDEFLATE;
}

static void on_error(dx_client *c, const dx_client_error *e, void *ud) {
  cx *x = ud;
  dx_ready_state st = dx_client_state(c);
  if (is_protocol_error(e->err)) x->protocol_error = true;
  if (st != DX_CLOSED) {
    /* A reconnection (CONNECTING) or on_close (CLOSING) follows: the
     * message goes out with it, as one line. */
    snprintf(x->pending, sizeof x->pending, "%s", e->message);
    return;
  }
  /* The final failure: one line, even with -q. */
  fprintf(stderr, "duplex connect: %s\n", e->message);
  finish(x, CX_CONNECT);
}

static bool normal_code(unsigned code) {
  return code == DX_CLOSE_NORMAL || code == DX_CLOSE_GOING_AWAY;
}

static void on_close(dx_client *c, uint16_t code, const char *reason,
                     size_t len, bool clean, void *ud) {
  cx *x = ud;
  stdin_stop(x); /* stdin_start resumes after a reconnection */
  char what[200];
  if (len)
    snprintf(what, sizeof what, "code %u, reason \"%.*s\"", code, (int)len,
             reason);
  else
    snprintf(what, sizeof what, "code %u", code);
  if (dx_client_state(c) == DX_CONNECTING) {
    /* A reconnection follows (on_reconnect prints this). */
    if (!x->pending[0])
      snprintf(x->pending, sizeof x->pending, "connection closed (%s)", what);
    return;
  }
  int status = x->count_done || normal_code(code) ? CX_OK
               : x->protocol_error                ? CX_PROTOCOL
                                                  : CX_REMOTE;
  if (x->pending[0]) /* why it broke, from on_error */
    fprintf(stderr, "duplex connect: %s\n", x->pending);
  else if (status == CX_REMOTE)
    fprintf(stderr, "duplex connect: connection closed (%s%s)\n", what,
            clean ? "" : ", not clean");
  else if (x->verbose)
    say(x, "connection closed (%s%s)", what, clean ? "" : ", not clean");
  x->pending[0] = 0;
  finish(x, status);
}

static void on_reconnect(dx_client *c, unsigned attempt, unsigned delay_ms,
                         void *ud) {
  (void)c;
  cx *x = ud;
  if (x->pending[0])
    say(x, "%s; reconnect attempt %u in %u ms", x->pending, attempt, delay_ms);
  else
    say(x, "reconnect attempt %u in %u ms", attempt, delay_ms);
  if (!x->pending[0]) snprintf(x->pending, sizeof x->pending, "reconnecting");
}

/* ---- deadline and signals ----------------------------------------------- */

static void on_deadline(dx_timer *t) {
  (void)t;
  cx *x = the_cx;
  fprintf(stderr, "duplex connect: timed out after %g s\n",
          x->timeout_ms / 1000.0);
  /* The close frame still leaves in this iteration's flush. */
  dx_client_close(x->client, DX_CLOSE_NORMAL, NULL);
  finish(x, CX_TIMEOUT);
}

static void on_signal(dx_io *io, unsigned events) {
  (void)events;
  cx *x = the_cx;
  struct signalfd_siginfo si;
  while (read(io->fd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (x->interrupted) {
      finish(x, CX_INTERRUPTED);
      return;
    }
    x->interrupted = true;
    say(x, "interrupted: closing (again to quit at once)");
    x->in_eof = true;
    stdin_stop(x);
    dx_client_close(x->client, DX_CLOSE_NORMAL, NULL);
    /* Not open yet: nothing to close, the attempt is abandoned. */
    if (dx_client_state(x->client) == DX_CLOSED) finish(x, CX_INTERRUPTED);
  }
}

static int signals_start(cx *x, sigset_t *old) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  /* Blocked before any thread exists, so the resolver threads inherit it
   * and the signals reach only the signalfd. */
  sigprocmask(SIG_BLOCK, &set, old);
  int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = dx_io_start(x->loop, &x->sig_io, fd, DX_IO_READ, on_signal);
  if (rc) close(fd);
  return rc;
}

/* ---- options ------------------------------------------------------------ */

enum {
  O_CACERT = 256,
  O_NO_DEFLATE,
  O_MAX_MESSAGE,
  O_CONNECT_TIMEOUT,
  O_PING,
  O_ECHO,
  O_KEEP_OPEN,
  O_JSON,
  O_BINARY,
  O_BASE,
  O_MAX,
  O_ATTEMPTS
};

/* All usage errors exit CX_USAGE (= APP_USAGE). */
#define usage_error(...) app_usage_error("connect", __VA_ARGS__)

static bool parse_count(const char *s, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || *s == '-') return false;
  *out = v;
  return true;
}

static int parse_options(cx *x, dx_client_config *cfg, int argc, char **argv) {
  static const struct option opts[] = {
      {"header", required_argument, NULL, 'H'},
      {"subprotocol", required_argument, NULL, 's'},
      {"origin", required_argument, NULL, 'o'},
      {"cacert", required_argument, NULL, O_CACERT},
      {"insecure", no_argument, NULL, 'k'},
      {"no-deflate", no_argument, NULL, O_NO_DEFLATE},
      {"max-message", required_argument, NULL, O_MAX_MESSAGE},
      {"count", required_argument, NULL, 'n'},
      {"timeout", required_argument, NULL, 't'},
      {"connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT},
      {"ping-interval", required_argument, NULL, O_PING},
      {"echo", no_argument, NULL, O_ECHO},
      {"keep-open", no_argument, NULL, O_KEEP_OPEN},
      {"json", no_argument, NULL, O_JSON},
      {"binary", required_argument, NULL, O_BINARY},
      {"reconnect", no_argument, NULL, 'r'},
      {"reconnect-base", required_argument, NULL, O_BASE},
      {"reconnect-max", required_argument, NULL, O_MAX},
      {"max-attempts", required_argument, NULL, O_ATTEMPTS},
      {"verbose", no_argument, NULL, 'v'},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  unsigned ms;
  unsigned long n;
  while ((ch = getopt_long(argc, argv, "H:s:o:kn:t:rvqh", opts, NULL)) != -1) {
    switch (ch) {
    case 'H':
      if (x->nheaders == MAX_LIST) return usage_error("too many -H");
      if (!strchr(optarg, ':'))
        return usage_error("-H '%s': expected 'Name: value'", optarg);
      x->headers[x->nheaders++] = optarg;
      break;
    case 's':
      if (x->nprotos == MAX_LIST) return usage_error("too many --subprotocol");
      x->protos[x->nprotos++] = optarg;
      break;
    case 'o':
      cfg->origin = optarg;
      break;
    case O_CACERT:
      cfg->ca_file = optarg;
      break;
    case 'k':
      cfg->insecure = true;
      break;
    case O_NO_DEFLATE:
      cfg->deflate = false;
      break;
    case O_MAX_MESSAGE:
      if (!app_parse_size(optarg, &cfg->max_message) || !cfg->max_message)
        return usage_error("--max-message '%s': expected a size", optarg);
      break;
    case 'n':
      if (!parse_count(optarg, &x->count) || !x->count)
        return usage_error("--count '%s': expected a number > 0", optarg);
      break;
    case 't':
      if (!app_parse_duration(optarg, &x->timeout_ms) || !x->timeout_ms)
        return usage_error("--timeout '%s': expected a duration", optarg);
      break;
    case O_CONNECT_TIMEOUT:
      if (!app_parse_duration(optarg, &ms) || !ms)
        return usage_error("--connect-timeout '%s': expected a duration",
                           optarg);
      cfg->connect_timeout_ms = cfg->handshake_timeout_ms = ms;
      break;
    case O_PING:
      if (!app_parse_duration(optarg, &cfg->ping_interval_ms))
        return usage_error("--ping-interval '%s': expected a duration", optarg);
      break;
    case O_ECHO:
      x->echo = true;
      break;
    case O_KEEP_OPEN:
      x->keep_open = true;
      break;
    case O_JSON:
      x->json = true;
      break;
    case O_BINARY:
      if (strcmp(optarg, "raw") && strcmp(optarg, "hex"))
        return usage_error("--binary '%s': expected hex or raw", optarg);
      x->raw = strcmp(optarg, "raw") == 0;
      break;
    case 'r':
      cfg->reconnect = true;
      break;
    case O_BASE:
    case O_MAX:
      if (!app_parse_duration(optarg, &ms) || !ms)
        return usage_error("--reconnect-%s '%s': expected a duration > 0",
                           ch == O_BASE ? "base" : "max", optarg);
      *(ch == O_BASE ? &cfg->backoff_base_ms : &cfg->backoff_max_ms) = ms;
      break;
    case O_ATTEMPTS:
      if (!parse_count(optarg, &n) || !n || n > 1000000)
        return usage_error("--max-attempts '%s': expected a number > 0",
                           optarg);
      cfg->max_attempts = (unsigned)n;
      break;
    case 'v':
      x->verbose = true;
      break;
    case 'q':
      x->quiet = true;
      break;
    case 'h':
      fputs(connect_help, stdout);
      return -1;
    default:
      return usage_error("bad option");
    }
  }
  if (optind != argc - 1)
    return usage_error(optind == argc ? "a URL is needed"
                                      : "one URL only, options first or "
                                        "after it");
  x->url = argv[optind];
  return 0;
}

/* ---- main --------------------------------------------------------------- */

static int check_config(cx *x, dx_client_config *cfg) {
  /* Two probes, so the message says which part is wrong. */
  dx_client_config u = {.url = x->url};
  dx_client *probe = dx_client_new(x->loop, &u);
  if (!probe && errno != ENOMEM)
    return usage_error("invalid URL '%s': expected ws://host[:port][/path] "
                       "or wss://...",
                       x->url);
  dx_client_free(probe);
  if (probe) x->client = dx_client_new(x->loop, cfg);
  if (x->client) return 0;
  if (errno == ENOMEM) {
    fputs("duplex connect: out of memory\n", stderr);
    return CX_CONNECT;
  }
  return usage_error("invalid header: Host, Upgrade, Connection, Origin and "
                     "Sec-WebSocket-* are set by the handshake");
}

static int run(cx *x, dx_client_config *cfg) {
  int rc = check_config(x, cfg);
  if (rc) return rc;
  if (cfg->insecure)
    fputs("warning: --insecure: the server's certificate is NOT verified; "
          "anyone on the path can read and change this connection\n",
          stderr);
  if (x->timeout_ms)
    dx_timer_start(x->loop, &x->deadline, x->timeout_ms, 0, on_deadline);
  rc = dx_client_connect(x->client);
  if (rc) {
    fprintf(stderr, "duplex connect: %s\n", dx_strerror(rc));
    return CX_CONNECT;
  }
  x->status = CX_CONNECT;
  rc = dx_loop_run(x->loop);
  if (rc < 0) fprintf(stderr, "duplex connect: %s\n", dx_strerror(rc));
  return x->status;
}

int app_connect(int argc, char **argv);

int app_connect(int argc, char **argv) {
  static cx x;
  memset(&x, 0, sizeof x);
  the_cx = &x;
  x.in_flags = -1;
  dx_client_config cfg = {.deflate = true,
                          .ud = &x,
                          .on_open = on_open,
                          .on_message = on_message,
                          .on_close = on_close,
                          .on_error = on_error,
                          .on_reconnect = on_reconnect,
                          .on_pong = on_pong,
                          .on_drain = on_drain};
  int rc = parse_options(&x, &cfg, argc, argv);
  if (rc) return rc < 0 ? CX_OK : rc;
  cfg.url = x.url;
  cfg.headers = x.nheaders ? x.headers : NULL;
  cfg.subprotocols = x.nprotos ? x.protos : NULL;
  x.max_line = cfg.max_message ? cfg.max_message : DX_DEFAULT_MAX_MESSAGE;
  x.loop = dx_loop_new(NULL);
  if (!x.loop) {
    fprintf(stderr, "duplex connect: cannot create the event loop: %s\n",
            strerror(errno));
    return CX_CONNECT;
  }
  sigset_t old;
  if (signals_start(&x, &old))
    say(&x, "cannot watch signals; Ctrl-C exits at once");
  int status = run(&x, &cfg);
  stdin_stop(&x);
  dx_timer_stop(&x.deadline);
  dx_client_free(x.client);
  if (x.sig_io.loop) {
    dx_io_stop(&x.sig_io);
    close(x.sig_io.fd);
  }
  dx_loop_free(x.loop);
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (x.in_flags >= 0) fcntl(0, F_SETFL, x.in_flags); /* the shell's tty */
  free(x.line);
  fflush(stdout);
  return status;
}
