/*
 * TCP helpers: listening and connecting sockets set up the way the loop
 * wants them (non-blocking, close-on-exec from the start, no Nagle), and
 * address formatting. Numeric addresses only: resolving names blocks, and
 * belongs to whoever can afford it (the CLI, or a resolver thread).
 */
#include "internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int set_int(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value);
}

/* v6only: -1 leaves IPV6_V6ONLY alone (IPv4 sockets), else its value. */
static int open_listener(const struct sockaddr *sa, socklen_t len, int v6only,
                         bool reuseport, int backlog) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  IPPROTO_TCP);
  if (fd < 0) return -errno;
  /* SO_REUSEADDR: restart while old connections sit in TIME_WAIT.
   * TCP_NODELAY on the listener: Linux copies it to accepted sockets,
   * which saves a setsockopt per accept. WebSocket frames are written
   * whole and batched per iteration: Nagle would only add latency. */
  if (set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
      (reuseport && set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0) ||
      (v6only >= 0 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only) < 0) ||
      set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1) < 0 || bind(fd, sa, len) < 0 ||
      listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

static int listen_any(int port, bool reuseport, int backlog) {
  struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                            .sin6_port = htons((uint16_t)port),
                            .sin6_addr = IN6ADDR_ANY_INIT};
  int fd =
      open_listener((struct sockaddr *)&a6, sizeof a6, 0, reuseport, backlog);
  if (fd != -EAFNOSUPPORT) return fd;
  /* A kernel or container without IPv6: all IPv4 addresses, then. */
  struct sockaddr_in a4 = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_ANY)};
  return open_listener((struct sockaddr *)&a4, sizeof a4, -1, reuseport,
                       backlog);
}

int dx_tcp_listen(const char *host, int port, bool reuseport, int backlog) {
  if (port < 0 || port > 65535) return DX_EINVAL;
  if (!host || !*host) return listen_any(port, reuseport, backlog);
  /* getaddrinfo also takes inet_aton's legacy forms ("127.1", "0x7f.1"):
   * an IPv4 address must be a plain dotted quad, as inet_pton wants. */
  struct in_addr a4;
  if (!strchr(host, ':') && inet_pton(AF_INET, host, &a4) != 1)
    return DX_EINVAL;
  char service[8];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints = {.ai_flags =
                               AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                           .ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM};
  struct addrinfo *res;
  int r = getaddrinfo(host, service, &hints, &res);
  if (r != 0) {
    if (r == EAI_MEMORY) return DX_ENOMEM;
    if (r == EAI_SYSTEM) return -errno;
    return DX_EINVAL; /* not a numeric address */
  }
  /* An explicit IPv6 literal means IPv6 only, whatever the
   * net.ipv6.bindv6only sysctl says: "::" and "0.0.0.0" can then be two
   * listeners, and NULL is the way to ask for both on one socket. */
  int v6only = res->ai_family == AF_INET6 ? 1 : -1;
  int fd =
      open_listener(res->ai_addr, res->ai_addrlen, v6only, reuseport, backlog);
  freeaddrinfo(res);
  return fd;
}

int dx_tcp_local_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return DX_EINVAL;
}

int dx_tcp_connect(const struct sockaddr *addr, socklen_t len) {
  if (!addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return DX_EINVAL;
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  IPPROTO_TCP);
  if (fd < 0) return -errno;
  if (set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1) < 0) goto fail;
  /* EINTR on a non-blocking connect: the handshake goes on in the kernel,
   * exactly as with EINPROGRESS (POSIX connect(), "EINTR"). */
  if (connect(fd, addr, len) < 0 && errno != EINPROGRESS && errno != EINTR)
    goto fail;
  return fd;
fail:;
  int err = -errno;
  close(fd);
  return err;
}

int dx_tcp_connect_result(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
  return -err;
}

void dx_addr_format(const struct sockaddr_storage *ss, char *out, size_t cap) {
  if (!out || !cap) return;
  const char *r = NULL;
  socklen_t n = cap > INET6_ADDRSTRLEN ? INET6_ADDRSTRLEN : (socklen_t)cap;
  if (ss && ss->ss_family == AF_INET) {
    r = inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, n);
  } else if (ss && ss->ss_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    /* A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; logs,
     * rate limits and allow-lists want the address the peer has. */
    if (IN6_IS_ADDR_V4MAPPED(a))
      r = inet_ntop(AF_INET, &a->s6_addr[12], out, n);
    else
      r = inet_ntop(AF_INET6, a, out, n);
  }
  if (!r) out[0] = '\0';
}
