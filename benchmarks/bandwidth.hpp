#pragma once
// What the benchmarks share: pre-faulted aligned buffers and the memory-
// bandwidth baselines (a read of N bytes, a copy of N bytes) that kernel
// results are read against.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace lowbit_bench {

struct free_deleter {
    void operator()(void* p) const noexcept { std::free(p); }
};
using buffer = std::unique_ptr<unsigned char[], free_deleter>;

inline buffer make_buffer(std::size_t bytes, unsigned char fill) {
    const std::size_t rounded = (bytes + 63) / 64 * 64;
    buffer b(static_cast<unsigned char*>(std::aligned_alloc(64, rounded)));
    std::memset(b.get(), fill, rounded);  // fault the pages in before timing
    return b;
}

/// Sums `bytes` (a multiple of 64) with eight 64-bit accumulators per iteration.
inline void read_baseline(benchmark::State& state, const void* data, std::size_t bytes) {
    const auto* p = static_cast<const std::uint64_t*>(data);
    const std::size_t n = bytes / 8;
    for (auto _ : state) {
        std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        for (std::size_t i = 0; i < n; i += 8) {
            a0 += p[i];
            a1 += p[i + 1];
            a2 += p[i + 2];
            a3 += p[i + 3];
            a4 += p[i + 4];
            a5 += p[i + 5];
            a6 += p[i + 6];
            a7 += p[i + 7];
        }
        std::uint64_t s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
        benchmark::DoNotOptimize(s);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes));
}

/// memcpy of `bytes` per iteration (bytes/s counts the bytes copied once).
inline void copy_baseline(benchmark::State& state, void* dst, const void* src, std::size_t bytes) {
    for (auto _ : state) {
        std::memcpy(dst, src, bytes);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes));
}

}  // namespace lowbit_bench
