#ifndef TDN_ALLOCATION_COUNTER_H
#define TDN_ALLOCATION_COUNTER_H

/// Counts the heap allocations (malloc, calloc, realloc, posix_memalign, aligned_alloc,
/// memalign) made by the calling thread between `begin` and `end`. Linked only into the tests:
/// it replaces glibc's allocation entry points in the test process by thin forwarders to
/// glibc's own (`__libc_malloc`, …), which count while the calling thread is counting.
void tdn_allocations_begin(void);
long tdn_allocations_end(void);

#endif
