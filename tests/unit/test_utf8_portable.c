/*
 * test_utf8 again, against the portable code (no SSE2): x86-64 builds
 * never run it otherwise. The validator is compiled into this program, so
 * the library's copy is not linked in.
 */
#define DX_NO_SIMD 1
#include "proto/utf8.c"

#include "test_utf8.c"
