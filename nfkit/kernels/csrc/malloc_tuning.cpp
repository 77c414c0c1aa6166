// glibc keeps allocations above M_MMAP_THRESHOLD (at most 32 MB by default) in fresh mmap'd pages and returns
// them to the OS on free, so every large torch CPU tensor pays page faults on first touch (a 64 MB hash-table
// gradient costs ~12 ms of faults per step). Raising the thresholds keeps freed blocks for reuse.
#include "common.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

bool tune_malloc(int64_t mmap_threshold, int64_t trim_threshold) {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) == 1;
#else
  return false;
#endif
}
