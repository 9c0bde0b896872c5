// The render's thread pool (see thread_pool.h). Workers are created on demand, sleep on a condition
// variable between calls and are never joined (the pool lives until the process exits). After
// fork() the child starts with a fresh, empty pool (the parent's workers do not exist there).
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace tokfuse {
namespace {

struct Pool {
    std::mutex call;  // one parallel_for at a time uses the workers
    std::mutex m;
    std::condition_variable work, done;
    int workers = 0;          // started (detached) worker threads
    uint64_t generation = 0;  // bumped for every call
    const std::function<void(int, int64_t)>* fn = nullptr;
    int64_t n = 0;
    std::atomic<int64_t> next{0};
    std::atomic<bool> failed{false};
    int active = 0;   // workers taking part in the current call
    int running = 0;  // of those, still working
};

Pool* g_pool = nullptr;
std::once_flag g_once;

void drain(Pool& p, int thread) {
    for (;;) {
        const int64_t i = p.next.fetch_add(1, std::memory_order_relaxed);
        if (i >= p.n) return;
        if (p.failed.load(std::memory_order_relaxed)) continue;
        try {
            (*p.fn)(thread, i);
        } catch (...) {
            p.failed.store(true);
        }
    }
}

void worker(Pool* p, int index) {  // index >= 1
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(p->m);
    for (;;) {
        p->work.wait(lk, [&] { return p->generation != seen && index <= p->active; });
        seen = p->generation;
        lk.unlock();
        drain(*p, index);
        lk.lock();
        if (--p->running == 0) p->done.notify_all();
    }
}

void reset_after_fork() { g_pool = new Pool(); }  // the old one (and its mutexes) is abandoned

Pool& pool() {
    std::call_once(g_once, [] {
        g_pool = new Pool();
#if defined(__linux__)
        pthread_atfork(nullptr, nullptr, reset_after_fork);
#endif
    });
    return *g_pool;
}

int usable_cores() {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
    return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

int pool_threads(int threads) { return threads > 0 ? threads : usable_cores(); }

void parallel_for(int threads, int64_t n, const std::function<void(int, int64_t)>& fn) {
    const int nt = (int)std::min<int64_t>(pool_threads(threads), std::max<int64_t>(n, 1));
    Pool& p = pool();
    std::unique_lock<std::mutex> call(p.call, std::defer_lock);
    if (nt <= 1 || !call.try_lock()) {  // one thread, or the workers are busy with another call
        bool failed = false;
        for (int64_t i = 0; i < n; ++i) {
            try {
                fn(0, i);
            } catch (...) {
                failed = true;
            }
        }
        if (failed) throw std::bad_alloc();
        return;
    }
    {
        std::lock_guard<std::mutex> lk(p.m);
        while (p.workers < nt - 1) {
            std::thread(worker, &p, ++p.workers).detach();
        }
        p.fn = &fn, p.n = n;
        p.next.store(0), p.failed.store(false);
        p.active = nt - 1, p.running = nt - 1;
        ++p.generation;
    }
    p.work.notify_all();
    drain(p, 0);
    std::unique_lock<std::mutex> lk(p.m);
    p.done.wait(lk, [&] { return p.running == 0; });
    p.active = 0;
    if (p.failed.load()) throw std::bad_alloc();
}

}  // namespace tokfuse
