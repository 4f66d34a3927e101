#pragma once
// A small parallel_for over row ranges for tools and benchmarks. Engines own
// their threads and call the row-range entry points directly.

#include <algorithm>
#include <cstddef>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

#include "detail/config.hpp"

LOWBIT_NAMESPACE_BEGIN

/// The most threads a tool accepts (--threads): beyond it a count is a typo.
inline constexpr unsigned max_threads = 1024;

/// Threads to use when asked for 0: the hardware's count.
inline unsigned default_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n ? n : 1;
}

/// Calls fn(begin, end) on contiguous chunks of [0, n) from up to `threads`
/// threads (0 = default_threads()), chunk sizes a multiple of `grain`. The
/// first exception thrown by any chunk is rethrown after all have finished.
/// Threads that cannot be created are not an error: their chunks run on the
/// calling thread.
template <class F>
void parallel_for(std::size_t n, unsigned threads, std::size_t grain, F&& fn) {
    if (threads == 0) threads = default_threads();
    grain = std::max<std::size_t>(grain, 1);
    const std::size_t units = (n + grain - 1) / grain;
    const std::size_t workers = std::min<std::size_t>(threads, units);
    if (workers <= 1) {
        if (n) fn(std::size_t{0}, n);
        return;
    }
    std::vector<std::exception_ptr> errors(workers);
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    auto run = [&](std::size_t w) {
        const std::size_t u0 = units * w / workers, u1 = units * (w + 1) / workers;
        const std::size_t b = u0 * grain, e = std::min(n, u1 * grain);
        try {
            if (b < e) fn(b, e);
        } catch (...) {
            errors[w] = std::current_exception();
        }
    };
    // A thread the system will not create (a process or memory limit) leaves
    // its chunk, and those after it, to this thread: slower, never an abort.
    std::size_t started = 1;
    for (; started < workers; ++started) {
        try {
            pool.emplace_back(run, started);
        } catch (const std::system_error&) {
            break;
        }
    }
    run(0);
    for (std::size_t w = started; w < workers; ++w) run(w);
    for (auto& t : pool) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

LOWBIT_NAMESPACE_END
