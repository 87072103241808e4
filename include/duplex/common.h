/*
 * duplex — common definitions shared by every layer: the export macro, error
 * codes and the pluggable allocator.
 *
 * Errors: every function that can fail returns an int; 0 (or a documented
 * non-negative count) is success, a negative value is an error. System errors
 * are negative errno values (DX_ENOMEM == -ENOMEM); duplex's own errors live
 * below -4000 so they never collide with errno. dx_strerror() names them all.
 */
#ifndef DUPLEX_COMMON_H
#define DUPLEX_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DX_BUILDING) && defined(__GNUC__)
#define DX_API __attribute__((visibility("default")))
#else
#define DX_API
#endif

#define DX_VERSION_MAJOR 0
#define DX_VERSION_MINOR 1
#define DX_VERSION_PATCH 0
#define DX_VERSION_STRING "0.1.0"

/*
 * X(name, value, message). System errors first (value is -errno), then
 * duplex's own. The table generates the enum and dx_strerror().
 */
#define DX_ERRNO_MAP(X)                                                        \
  X(ENOMEM, -ENOMEM, "out of memory")                                          \
  X(EINVAL, -EINVAL, "invalid argument")                                       \
  X(EAGAIN, -EAGAIN, "need more data")                                         \
  X(ENOSPC, -ENOSPC, "buffer too small")                                       \
  X(EPROTO, -4001, "WebSocket protocol error")                                 \
  X(EUTF8, -4002, "invalid UTF-8 in a text message or close reason")           \
  X(ETOOBIG, -4003, "message or frame exceeds the configured limit")           \
  X(ECLOSED, -4004, "the connection is closing or closed")                     \
  X(EHTTP, -4005, "malformed HTTP message")                                    \
  X(EHDRSIZE, -4006, "HTTP header line or block too large")                    \
  X(EHDRCOUNT, -4007, "too many HTTP headers")                                 \
  X(EHANDSHAKE, -4008, "WebSocket handshake rejected")                         \
  X(EEXTENSION, -4009, "extension negotiation failed")                         \
  X(EDEFLATE, -4010, "corrupt compressed data")                                \
  X(ESTATE, -4011, "call not allowed in the current state")                    \
  X(ECLOSECODE, -4012, "invalid close code")                                  \
  X(ETLS, -4013, "TLS handshake or record failure")                            \
  X(ERESOLVE, -4014, "host name could not be resolved")                        \
  X(EPROXY, -4015, "malformed PROXY protocol header")                          \
  X(ETIMEDOUT, -ETIMEDOUT, "timed out")                                        \
  X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                         \
  X(EUNAVAIL, -4016, "the backplane (Redis) is unreachable")

typedef enum dx_err {
#define DX__ERR_ENUM(name, value, msg) DX_##name = (value),
  DX_ERRNO_MAP(DX__ERR_ENUM)
#undef DX__ERR_ENUM
} dx_err;

/* A static, human-readable message for any code; "unknown error" otherwise.
 * Negative errno values not in the table fall back to strerror(). */
DX_API const char *dx_strerror(int err);

/* The enum's name without the DX_ prefix ("EPROTO"), or "UNKNOWN". */
DX_API const char *dx_errname(int err);

/*
 * Allocator. realloc semantics in one function, as in Lua: (ptr=NULL, new>0)
 * allocates, (ptr, new=0) frees and returns NULL, otherwise resizes. old_size
 * is the size the block was allocated with (0 for NULL), so a pool can route
 * blocks by size class. The zero allocator ({0}) means the C library's.
 */
typedef struct dx_allocator {
  void *(*realloc)(void *ud, void *ptr, size_t old_size, size_t new_size);
  void *ud;
} dx_allocator;

#ifdef __cplusplus
}
#endif
#endif
