/*
 * TCP helpers end to end: listeners on 127.0.0.1 and ::1 (port 0), a
 * client on one loop and a server on another loop in its own thread, 1 MiB
 * pushed through with partial writes and edge-triggered reads, a digest
 * sent back. Also SO_REUSEPORT, the dual-stack listener (inside a private
 * network namespace, so that it binds "all addresses" of a namespace that
 * has only loopback), connect errors and dx_addr_format.
 */
#include <duplex/net.h>

#include "check.h"
#include "net/internal.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the server: counts and hashes what it reads, replies at EOF -------- */

typedef struct sconn {
  dx_io io;
  uint64_t bytes, hash;
} sconn;

typedef struct server {
  dx_loop *loop;
  dx_io listen_io;
  char peer[4][DX_ADDRSTRLEN]; /* accepted peers, in order */
  int accepted;
  pthread_t thread;
} server;

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

static void sconn_free(void *arg) {
  free(arg);
}

static void on_sconn(dx_io *io, unsigned ev) {
  sconn *c = (sconn *)io;
  dx_loop *loop = io->loop;
  (void)ev;
  size_t cap;
  uint8_t *buf = dx_loop_recv_buffer(loop, &cap);
  for (;;) { /* edge-triggered: read until EAGAIN */
    ssize_t n = read(io->fd, buf, cap);
    if (n > 0) {
      c->bytes += (uint64_t)n;
      c->hash = fnv(c->hash, buf, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EAGAIN) return;
    if (n == 0) {
      uint64_t reply[2] = {c->bytes, c->hash};
      if (write(io->fd, reply, sizeof reply) != (ssize_t)sizeof reply) {
        /* 16 bytes into an empty socket buffer cannot be short */
      }
    }
    int fd = io->fd;
    dx_io_stop(io);
    close(fd);
    dx_loop_defer(loop, sconn_free, c);
    return;
  }
}

static void on_accept(dx_io *io, unsigned ev) {
  server *s = (server *)((char *)io - offsetof(server, listen_io));
  (void)ev;
  for (;;) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4(io->fd, (struct sockaddr *)&ss, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN: drained */
    /* The listener's TCP_NODELAY is inherited. */
    int nodelay = 0;
    socklen_t nl = sizeof nodelay;
    getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &nl);
    if (!nodelay) fprintf(stderr, "    accepted socket lacks TCP_NODELAY\n");
    if (s->accepted < 4)
      dx_addr_format(&ss, s->peer[s->accepted], DX_ADDRSTRLEN);
    s->accepted += nodelay ? 1 : 1000;
    sconn *c = calloc(1, sizeof *c);
    c->hash = 0xcbf29ce484222325ull;
    dx_io_start(io->loop, &c->io, fd, DX_IO_READ, on_sconn);
  }
}

static void *server_main(void *arg) {
  server *s = arg;
  dx_loop_run(s->loop);
  return NULL;
}

static int server_start(server *s, int lfd) {
  memset(s, 0, sizeof *s);
  s->loop = dx_loop_new(NULL);
  if (!s->loop) return -1;
  if (dx_io_start(s->loop, &s->listen_io, lfd, DX_IO_READ, on_accept) < 0)
    return -1;
  return pthread_create(&s->thread, NULL, server_main, s);
}

static void server_stop(server *s) {
  dx_loop_stop(s->loop); /* from this thread: THREAD-SAFE */
  pthread_join(s->thread, NULL);
  int fd = s->listen_io.fd;
  dx_io_stop(&s->listen_io);
  close(fd);
  dx_loop_free(s->loop);
}

/* ---- the client: sends 1 MiB, half-closes, reads the digest ------------- */

enum { PAYLOAD = 1 << 20 };

typedef struct client {
  dx_io io;
  uint8_t *data;
  size_t sent;
  uint8_t reply[17];
  size_t got;
  int done, connected, err;
} client;

static void on_client(dx_io *io, unsigned ev) {
  client *c = (client *)io;
  if (!c->connected && (ev & (DX_IO_WRITE | DX_IO_ERROR))) {
    c->err = dx_tcp_connect_result(io->fd);
    if (c->err) {
      c->done = 1;
      return;
    }
    c->connected = 1;
  }
  if (ev & DX_IO_WRITE && c->sent < PAYLOAD) {
    while (c->sent < PAYLOAD) {
      /* Small writes: many partial ones and EAGAINs. */
      size_t n = PAYLOAD - c->sent < 70000 ? PAYLOAD - c->sent : 70000;
      ssize_t w = send(io->fd, c->data + c->sent, n, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno != EAGAIN) c->err = -errno, c->done = 1;
        return; /* EAGAIN: WRITE fires again when there is room */
      }
      c->sent += (size_t)w;
    }
    shutdown(io->fd, SHUT_WR);
    dx_io_modify(io, DX_IO_READ);
  }
  if (ev & DX_IO_READ) {
    for (;;) {
      ssize_t n = read(io->fd, c->reply + c->got, sizeof c->reply - c->got);
      if (n > 0) {
        c->got += (size_t)n;
        continue;
      }
      if (n == 0 || errno != EAGAIN) c->done = 1;
      return;
    }
  }
}

static int run_exchange(const struct sockaddr *sa, socklen_t len) {
  dx_loop *loop = dx_loop_new(NULL);
  client c = {0};
  c.data = malloc(PAYLOAD);
  for (size_t i = 0; i < PAYLOAD; i++)
    c.data[i] = (uint8_t)(i * 31 + 7);
  int fd = dx_tcp_connect(sa, len);
  if (fd < 0) return fd;
  dx_io_start(loop, &c.io, fd, DX_IO_READ | DX_IO_WRITE, on_client);
  for (int i = 0; i < 100000 && !c.done; i++)
    dx_loop_run_once(loop, 100);
  dx_io_stop(&c.io);
  close(fd);
  dx_loop_free(loop);
  int ok = c.err == 0 && c.got == 16;
  if (ok) {
    uint64_t r[2];
    memcpy(r, c.reply, 16);
    ok = r[0] == PAYLOAD && r[1] == fnv(0xcbf29ce484222325ull, c.data, PAYLOAD);
  }
  free(c.data);
  return ok ? 0 : c.err ? c.err : -1;
}

static socklen_t make_addr(struct sockaddr_storage *ss, const char *ip,
                           int port) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    return sizeof *a4;
  }
  inet_pton(AF_INET6, ip, &a6->sin6_addr);
  a6->sin6_family = AF_INET6;
  a6->sin6_port = htons((uint16_t)port);
  return sizeof *a6;
}

/* ---- tests ----------------------------------------------------------------
 */

static int ipv6_loopback(void) {
  int fd = dx_tcp_listen("::1", 0, false, 0);
  if (fd < 0) return 0;
  close(fd);
  return 1;
}

static void exchange_on(const char *host) {
  int lfd = dx_tcp_listen(host, 0, false, 16);
  CHECK(lfd >= 0);
  int port = dx_tcp_local_port(lfd);
  CHECK(port > 0 && port < 65536);
  server s;
  CHECK_INT(server_start(&s, lfd), 0);
  struct sockaddr_storage ss;
  socklen_t len = make_addr(&ss, host, port);
  int r = run_exchange((struct sockaddr *)&ss, len);
  server_stop(&s);
  CHECK_INT(r, 0);
  CHECK_INT(s.accepted, 1);
  CHECK_STR(s.peer[0], host);
}

static void test_exchange_ipv4(void) {
  exchange_on("127.0.0.1");
}

static void test_exchange_ipv6(void) {
  if (!ipv6_loopback()) {
    fprintf(stderr, "    skipped: no IPv6 loopback\n");
    return;
  }
  exchange_on("::1");
  /* An explicit IPv6 literal listens on IPv6 only. */
  int fd = dx_tcp_listen("::1", 0, false, 0);
  int v6only = 0;
  socklen_t l = sizeof v6only;
  getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &l);
  close(fd);
  CHECK_INT(v6only, 1);
}

static void test_listener_flags(void) {
  int fd = dx_tcp_listen("127.0.0.1", 0, false, 0);
  CHECK(fd >= 0);
  CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
  CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  int v = 0;
  socklen_t l = sizeof v;
  getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &l);
  CHECK_INT(v, 1);
  v = 1;
  getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &v, &l);
  CHECK_INT(v, 0);
  close(fd);
}

static void test_reuseport(void) {
  int a = dx_tcp_listen("127.0.0.1", 0, true, 0);
  CHECK(a >= 0);
  int port = dx_tcp_local_port(a);
  int b = dx_tcp_listen("127.0.0.1", port, true, 0);
  CHECK(b >= 0);
  CHECK_INT(dx_tcp_local_port(b), port);
  /* Without SO_REUSEPORT on the newcomer, the port is taken. */
  CHECK_INT(dx_tcp_listen("127.0.0.1", port, false, 0), -EADDRINUSE);
  close(a);
  close(b);
}

static void test_bad_arguments(void) {
  CHECK_INT(dx_tcp_listen("127.0.0.1", -1, false, 0), DX_EINVAL);
  CHECK_INT(dx_tcp_listen("127.0.0.1", 65536, false, 0), DX_EINVAL);
  CHECK_INT(dx_tcp_listen("localhost", 0, false, 0), DX_EINVAL); /* no DNS */
  CHECK_INT(dx_tcp_listen("1.2.3", 0, false, 0), DX_EINVAL);
  CHECK_INT(dx_tcp_listen("192.0.2.1", 0, false, 0), -EADDRNOTAVAIL);
  struct sockaddr_un_like {
    sa_family_t f;
    char path[20];
  } un = {AF_UNIX, "x"};
  CHECK_INT(dx_tcp_connect((struct sockaddr *)&un, sizeof un), DX_EINVAL);
  CHECK_INT(dx_tcp_connect(NULL, 0), DX_EINVAL);
  CHECK_INT(dx_tcp_local_port(-1), -EBADF);
}

/* A port nobody listens on: refused, now or through connect_result. */
static void test_connect_refused(void) {
  int lfd = dx_tcp_listen("127.0.0.1", 0, false, 0);
  int port = dx_tcp_local_port(lfd);
  close(lfd);
  struct sockaddr_storage ss;
  socklen_t len = make_addr(&ss, "127.0.0.1", port);
  int fd = dx_tcp_connect((struct sockaddr *)&ss, len);
  if (fd < 0) {
    CHECK_INT(fd, -ECONNREFUSED);
    return;
  }
  int nodelay = 0;
  socklen_t l = sizeof nodelay;
  getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &l);
  CHECK_INT(nodelay, 1);
  dx_loop *loop = dx_loop_new(NULL);
  client c = {0};
  dx_io_start(loop, &c.io, fd, DX_IO_WRITE, on_client);
  for (int i = 0; i < 100 && !c.done; i++)
    dx_loop_run_once(loop, 100);
  CHECK_INT(c.err, -ECONNREFUSED);
  dx_io_stop(&c.io);
  close(fd);
  dx_loop_free(loop);
}

/* Child of test_dual_stack: own network namespace, only loopback. */
static int bring_up_lo(void) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct ifreq ifr = {0};
  strcpy(ifr.ifr_name, "lo");
  int r = ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP;
  if (r == 0) r = ioctl(s, SIOCSIFFLAGS, &ifr);
  close(s);
  return r;
}

static int dual_stack_child(void) {
  if (unshare(CLONE_NEWNET) != 0 || bring_up_lo() != 0) return 77;
  int lfd = dx_tcp_listen(NULL, 0, false, 0);
  if (lfd < 0) return 2;
  int port = dx_tcp_local_port(lfd);
  server s;
  if (server_start(&s, lfd) != 0) return 3;
  struct sockaddr_storage ss;
  int fail = 0;
  socklen_t len = make_addr(&ss, "127.0.0.1", port);
  if (run_exchange((struct sockaddr *)&ss, len) != 0) fail = 4;
  if (ipv6_loopback()) {
    len = make_addr(&ss, "::1", port);
    if (run_exchange((struct sockaddr *)&ss, len) != 0) fail = 5;
  }
  server_stop(&s);
  if (fail) return fail;
  /* v4 peers arrive as ::ffff:127.0.0.1 and are printed as IPv4. */
  if (strcmp(s.peer[0], "127.0.0.1") != 0) return 6;
  if (s.accepted == 2 && strcmp(s.peer[1], "::1") != 0) return 7;
  return 0;
}

static void test_dual_stack(void) {
  pid_t pid = fork();
  if (pid == 0) _exit(dual_stack_child());
  int st = 0;
  waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st));
  if (WEXITSTATUS(st) == 77) {
    fprintf(stderr, "    skipped: cannot create a network namespace\n");
    return;
  }
  CHECK_INT(WEXITSTATUS(st), 0);
}

static void test_addr_format(void) {
  struct sockaddr_storage ss;
  char out[DX_ADDRSTRLEN];
  make_addr(&ss, "10.1.2.3", 80);
  dx_addr_format(&ss, out, sizeof out);
  CHECK_STR(out, "10.1.2.3");
  make_addr(&ss, "2001:db8::1", 80);
  dx_addr_format(&ss, out, sizeof out);
  CHECK_STR(out, "2001:db8::1");
  make_addr(&ss, "::ffff:1.2.3.4", 80);
  dx_addr_format(&ss, out, sizeof out);
  CHECK_STR(out, "1.2.3.4");
  make_addr(&ss, "::1", 80);
  dx_addr_format(&ss, out, sizeof out);
  CHECK_STR(out, "::1");
  make_addr(&ss, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0);
  dx_addr_format(&ss, out, sizeof out);
  CHECK_STR(out, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  /* Too small: empty, never a truncated address. */
  make_addr(&ss, "10.1.2.3", 80);
  dx_addr_format(&ss, out, 8);
  CHECK_STR(out, "");
  dx_addr_format(&ss, out, 9);
  CHECK_STR(out, "10.1.2.3");
  ss.ss_family = AF_UNIX;
  dx_addr_format(&ss, out, sizeof out);
  CHECK_STR(out, "");
  dx_addr_format(NULL, out, sizeof out);
  CHECK_STR(out, "");
  dx_addr_format(&ss, out, 0); /* writes nothing */
}

int main(void) {
  RUN(test_exchange_ipv4);
  RUN(test_exchange_ipv6);
  RUN(test_listener_flags);
  RUN(test_reuseport);
  RUN(test_bad_arguments);
  RUN(test_connect_refused);
  RUN(test_dual_stack);
  RUN(test_addr_format);
  return CHECK_DONE();
}
