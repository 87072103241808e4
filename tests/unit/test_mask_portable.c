/*
 * test_mask again, against the portable code (no SSE2): x86-64 builds
 * never run it otherwise. dx_mask and dx_frame_header are compiled into
 * this program, so the library's copy is not linked in.
 */
#define DX_NO_SIMD 1
#include "proto/mask.c"

#include "test_mask.c"
