/* The load tools' shared client plumbing: see wsload.h for what and why. */
#include "wsload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const char *wsl_prog = "wsload";
volatile sig_atomic_t wsl_stop;

void wsl_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", wsl_prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

uint64_t wsl_clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint32_t wsl_rnd32(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return (uint32_t)(*s >> 16);
}

/* ---- latency histogram ------------------------------------------------ */

unsigned wsl_hist_index(uint64_t v) {
  if (v < 128) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 7 */
  unsigned shift = e - 6;
  return (shift + 1) * 64 + (unsigned)((v >> shift) & 63);
}

double wsl_hist_value(unsigned i) {
  if (i < 128) return i;
  unsigned shift = i / 64 - 1;
  uint64_t low = (uint64_t)(64 + i % 64) << shift;
  return (double)low + (double)((uint64_t)1 << shift) / 2;
}

double wsl_hist_pct(const uint64_t *hist, size_t len, double p) {
  uint64_t n = 0;
  for (size_t i = 0; i < len; i++)
    n += hist[i];
  if (!n) return 0;
  uint64_t want = (uint64_t)(p * (double)n + 0.999999);
  if (want < 1) want = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < len; i++)
    if ((seen += hist[i]) >= want) return wsl_hist_value((unsigned)i);
  return 0;
}

/* ---- client framing (RFC 6455 5.2, 5.3) -------------------------------- */

/* Eight bytes at a time: the load tools mask every payload they send. */
void wsl_mask_copy(unsigned char *dst, const unsigned char *src, size_t n,
                   uint32_t key) {
  uint64_t k8 = (uint64_t)key | (uint64_t)key << 32; /* key bytes in order */
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, src + i, 8);
    w ^= k8;
    memcpy(dst + i, &w, 8);
  }
  const unsigned char *kb = (const unsigned char *)&key;
  for (; i < n; i++)
    dst[i] = src[i] ^ kb[i & 3];
}

size_t wsl_frame(unsigned char *dst, unsigned opcode, const void *data,
                 size_t n, uint64_t *rng) {
  unsigned char *p = dst;
  *p++ = (unsigned char)(0x80 | opcode);
  if (n < 126) {
    *p++ = (unsigned char)(0x80 | n);
  } else if (n < 65536) {
    *p++ = 0x80 | 126;
    *p++ = (unsigned char)(n >> 8);
    *p++ = (unsigned char)n;
  } else {
    *p++ = 0x80 | 127;
    for (int s = 56; s >= 0; s -= 8)
      *p++ = (unsigned char)((uint64_t)n >> s);
  }
  uint32_t key = wsl_rnd32(rng);
  memcpy(p, &key, 4);
  p += 4;
  wsl_mask_copy(p, data, n, key);
  return (size_t)(p + n - dst);
}

/* ---- opening handshake (RFC 6455 4.1) ---------------------------------- */

size_t wsl_request(char *buf, size_t cap, const char *path, const char *host,
                   int port) {
  return (size_t)snprintf(
      buf, cap,
      "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: " WSL_KEY "\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n",
      path, host, port);
}

const char *wsl_handshake_end(const char *hs, size_t len, unsigned id) {
  const char *eoh = memmem(hs, len, "\r\n\r\n", 4);
  if (!eoh) {
    if (len >= WSL_HS_MAX - 1)
      wsl_fail("conn %u: handshake response too long", id);
    return NULL;
  }
  if (strncmp(hs, "HTTP/1.1 101", 12) != 0) {
    const char *eol = memmem(hs, len, "\r\n", 2);
    wsl_fail("conn %u: handshake refused: %.*s", id, (int)(eol - hs), hs);
  }
  if (!memmem(hs, (size_t)(eoh - hs), WSL_ACCEPT, strlen(WSL_ACCEPT)))
    wsl_fail("conn %u: wrong Sec-WebSocket-Accept", id);
  return eoh + 4;
}

size_t wsl_handshake_feed(char *hs, size_t *len, const unsigned char *p,
                          size_t n, unsigned id) {
  size_t old = *len, room = WSL_HS_MAX - 1 - old;
  size_t take = n < room ? n : room;
  memcpy(hs + old, p, take);
  *len = old + take;
  const char *body = wsl_handshake_end(hs, *len, id);
  /* Never 0 when found: the end was not in the old bytes. */
  return body ? (size_t)(body - hs) - old : 0;
}

/* ---- sockets ----------------------------------------------------------- */

void wsl_addr(struct sockaddr_in *a, const char *host, int port) {
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
    wsl_fail("--host: not an IPv4 address: %s", host);
}

int wsl_dial(const struct sockaddr_in *a, const char *host, int epfd,
             void *ptr) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) wsl_fail("socket: %s (raise ulimit -n?)", strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (const struct sockaddr *)a, sizeof *a) < 0 &&
      errno != EINPROGRESS)
    wsl_fail("connect to %s:%d: %s", host, ntohs(a->sin_port), strerror(errno));
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                           .data.ptr = ptr};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
    wsl_fail("epoll_ctl: %s", strerror(errno));
  return fd;
}

static void on_signal(int sig) {
  (void)sig;
  wsl_stop = 1;
}

void wsl_catch_signals(void) {
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

int wsl_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0)
    wsl_fail("free port: %s", strerror(errno));
  printf("%d\n", ntohs(a.sin_port));
  close(fd);
  return 0;
}

/* ---- CPU --------------------------------------------------------------- */

double wsl_self_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

double wsl_proc_cpu(int pid, double *sys) {
  if (sys) *sys = 0;
  if (pid <= 0) return -1;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* the name may hold spaces */
  if (!p) return -1;
  unsigned long long ut, st;
  /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt
   * majflt cmajflt utime stime */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &ut, &st) != 2)
    return -1;
  if (sys) *sys = (double)st / (double)sysconf(_SC_CLK_TCK);
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}
