#ifndef CMEMORY_H
#define CMEMORY_H

/// Returns the free pages of every glibc malloc arena to the system (malloc_trim(0)); 1 when
/// memory was released. A no-op returning 0 where glibc's malloc is not in use.
int tdn_release_free_memory(void);

/// Fixes glibc's mmap threshold at `bytes`, so that every allocation at least that large gets
/// pages of its own, returned to the system when freed. (glibc raises the threshold each time
/// such a block is freed, up to 32 MB, after which large blocks go to the heaps and freed ones
/// stay there, fragmenting them.) Returns 1 on success, 0 elsewhere.
int tdn_fix_mmap_threshold(int bytes);

#endif
