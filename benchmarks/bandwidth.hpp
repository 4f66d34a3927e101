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

#if !defined(LOWBIT_NO_SIMD)
#include <xsimd/xsimd.hpp>
#endif

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

/// The sum of `bytes` (a multiple of 64) as 64-bit words, read in 16-byte or
/// wider batches into four accumulators: a loop that issues loads as fast as
/// the core can, so its rate is the memory's (or the cache's), not the adds'.
inline std::uint64_t read_sum(const void* data, std::size_t bytes) noexcept {
    const auto* p = static_cast<const std::uint64_t*>(data);
    const std::size_t n = bytes / 8;
#if !defined(LOWBIT_NO_SIMD)
    using u64 = xsimd::batch<std::uint64_t>;
    constexpr std::size_t L = u64::size;
    static_assert(64 % (8 * L) == 0 || 8 * L % 64 == 0);
    u64 a0(0), a1(0), a2(0), a3(0);
    std::size_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
        a0 += u64::load_unaligned(p + i);
        a1 += u64::load_unaligned(p + i + L);
        a2 += u64::load_unaligned(p + i + 2 * L);
        a3 += u64::load_unaligned(p + i + 3 * L);
    }
    alignas(64) std::uint64_t lanes[L];
    ((a0 + a1) + (a2 + a3)).store_aligned(lanes);
    std::uint64_t s = 0;
    for (std::size_t l = 0; l < L; ++l) s += lanes[l];
    for (; i < n; ++i) s += p[i];
    return s;
#else
    std::uint64_t a[8] = {};
    for (std::size_t i = 0; i < n; i += 8)
        for (std::size_t l = 0; l < 8; ++l) a[l] += p[i + l];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
#endif
}

/// Reads `bytes` (a multiple of 64) per iteration (read_sum).
inline void read_baseline(benchmark::State& state, const void* data, std::size_t bytes) {
    for (auto _ : state) {
        std::uint64_t s = read_sum(data, bytes);
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
