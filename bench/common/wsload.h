/*
 * wsload — the WebSocket client plumbing shared by the two load tools,
 * bench/echo/loadgen.c (echo_loadgen) and bench/fanout/fanout.c (fanout):
 *
 *  - wsl_fail: print "<tool>: message" on stderr and exit(1);
 *  - the clock, a xorshift generator, the log-linear latency histogram;
 *  - client framing (RFC 6455 5.2, 5.3): masking and whole masked frames;
 *  - the opening handshake: the request (with the fixed key of RFC 6455
 *    1.3) and the check of the response (101 and the accept value);
 *  - connecting a non-blocking socket into an epoll set, the server
 *    address, SIGINT/SIGTERM into a flag, --free-port;
 *  - CPU readers: this process (getrusage) and another one (/proc).
 *
 * Why not libduplex's dx_client: these tools measure servers, duplex among
 * others (libwebsockets, Node ws, Socket.IO), so they must cost less CPU
 * per message than the servers they measure and do the least a correct
 * client can do: one read() and one write() per connection per loop turn,
 * payloads checked or parsed in place in one shared read buffer, frames
 * masked straight into the output buffer. They also stay independent of
 * the library under test (libc and pthreads only). What stays in each
 * tool is what differs: the connection state, the frame parser's checks
 * and what it does with a message, the output queue, the modes and the
 * result lines.
 *
 * Nothing here is thread-safe except wsl_clock_ns, wsl_rnd32 (one state
 * per thread), the histogram and framing functions.
 */
#ifndef BENCH_WSLOAD_H
#define BENCH_WSLOAD_H

#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* The fixed key from RFC 6455 1.3 and the accept value it must produce:
 * checking the value proves the server ran the handshake. */
#define WSL_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WSL_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define WSL_HS_MAX 4096        /* bytes of handshake response we accept */
#define WSL_HIST_LEN (59 * 64) /* histogram buckets: any uint64_t fits */
#define WSL_FRAME_MAX_HDR 14   /* client frame header, mask key included */

/* The tool's name, the prefix of every wsl_fail message. */
extern const char *wsl_prog;
/* Set to 1 by SIGINT or SIGTERM once wsl_catch_signals ran. */
extern volatile sig_atomic_t wsl_stop;

/* Prints "wsl_prog: " and the message on stderr, then exit(1). */
void wsl_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t wsl_clock_ns(void);

/* xorshift: the next 32 bits from *state (one state per thread). */
uint32_t wsl_rnd32(uint64_t *state);

/* Log-linear histogram of WSL_HIST_LEN buckets: values below 128 exact,
 * then 64 steps per power of two (under 1.6 % error). */
unsigned wsl_hist_index(uint64_t v);
/* The middle of bucket i. */
double wsl_hist_value(unsigned i);
/* The p-quantile (0 < p <= 1) of hist[0, len); 0 when it is empty. */
double wsl_hist_pct(const uint64_t *hist, size_t len, double p);

/* Copies n bytes from src to dst masked with key (RFC 6455 5.3), the key's
 * bytes in memory order. */
void wsl_mask_copy(unsigned char *dst, const unsigned char *src, size_t n,
                   uint32_t key);
/* Writes one final, masked frame of `opcode` carrying data[0, n) into dst,
 * which has room for n + WSL_FRAME_MAX_HDR bytes; the key is the next
 * wsl_rnd32(rng). Returns the frame's length. */
size_t wsl_frame(unsigned char *dst, unsigned opcode, const void *data,
                 size_t n, uint64_t *rng);

/* Writes the handshake request for `path` on host:port into buf (NUL-
 * terminated, truncated to cap); returns the length snprintf gives. */
size_t wsl_request(char *buf, size_t cap, const char *path, const char *host,
                   int port);
/* Looks for the end of the response headers in hs[0, len). Returns NULL
 * while it is not there (failing once len reaches WSL_HS_MAX - 1), else
 * the first byte after the blank line; fails on a status other than 101
 * or a wrong Sec-WebSocket-Accept. `id` names the connection in the
 * messages. */
const char *wsl_handshake_end(const char *hs, size_t len, unsigned id);
/* Appends p[0, n) (as much as fits in WSL_HS_MAX - 1) to the response
 * read so far, hs[0, *len), and checks it with wsl_handshake_end. Returns
 * 0 while the headers are not over, else how many bytes of p they took
 * (the rest are the first frames). */
size_t wsl_handshake_feed(char *hs, size_t *len, const unsigned char *p,
                          size_t n, unsigned id);

/* Fills *a with host (IPv4, dotted) and port; fails on a bad address. */
void wsl_addr(struct sockaddr_in *a, const char *host, int port);
/* Opens a non-blocking TCP_NODELAY socket, starts connecting it to *a and
 * adds it to epfd (edge-triggered, in and out) with `ptr` as its data.
 * Returns the socket; fails on any error but EINPROGRESS. */
int wsl_dial(const struct sockaddr_in *a, const char *host, int epfd,
             void *ptr);
/* SIGINT and SIGTERM set wsl_stop; SIGPIPE is ignored. */
void wsl_catch_signals(void);
/* Prints a TCP port free on 127.0.0.1 on stdout; returns 0. */
int wsl_free_port(void);

/* User + system CPU time of this process, seconds. */
double wsl_self_cpu(void);
/* utime + stime of process pid (all its threads), seconds; -1 if unknown.
 * *sys, unless NULL, gets the stime part (0 if unknown). */
double wsl_proc_cpu(int pid, double *sys);

#endif
