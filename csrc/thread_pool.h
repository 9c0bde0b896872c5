// A small thread pool for the render and colour kernels (thread_pool.cpp), instead of OpenMP.
//
// Why not OpenMP: after a parallel region libgomp's worker threads spin for a while before they
// sleep, which takes a core from whatever runs next in the same process (the PyTorch token pathway,
// the colour steps, a video encoder): measured 17.9 vs 15.4 ms per 640x480 pair end to end. The
// pool's workers sleep on a condition variable between calls.
#pragma once
#include <cstdint>
#include <functional>

namespace tokfuse {

// Calls fn(thread, item) for every item in [0, n) on `threads` threads (the caller is thread 0; the
// items are handed out one at a time), and returns when all are done. threads <= 0: one per core
// this process may run on. A call made while another is in flight (from another thread) runs its
// items on the calling thread alone. An exception thrown by fn is rethrown as std::bad_alloc after
// every thread has stopped (fn must not throw anything the caller needs to tell apart).
void parallel_for(int threads, int64_t n, const std::function<void(int thread, int64_t item)>& fn);

// The threads parallel_for(threads, ...) uses: threads, or the usable cores when threads <= 0.
int pool_threads(int threads);

}  // namespace tokfuse
