// The Hadamard rotation (algorithms/hadamard.hpp) on LLM-sized rows:
// 4096 (2^12: butterflies only), 14336 (28 x 512: Llama-3 8B's intermediate
// width, butterflies then the 28 x 28 mix) and 5120 (40 x 128), 256 rows
// (4 to 14 MB), in place, one thread: the dispatched kernel and the scalar
// reference in the same run, with a copy of the same bytes as the memory
// baseline (the rotation reads and writes each value once per pass).

#include <benchmark/benchmark.h>

#include "bandwidth.hpp"

#include <lowbit/algorithms/hadamard.hpp>

#include <cstdint>
#include <random>
#include <vector>

namespace {

using namespace lowbit;
constexpr std::size_t rows = 256;

std::vector<float> data(std::size_t n) {
    std::vector<float> v(rows * n);
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (float& x : v) x = d(rng);
    return v;
}

void rotate(benchmark::State& st, kernels::isa isa) {
    const std::size_t n = static_cast<std::size_t>(st.range(0));
    auto x = data(n);
    const kernels::isa before = kernels::active_isa();
    kernels::set_active_isa(isa);
    for (auto _ : st) {
        rotate_rows(matrix_view<float>(x.data(), rows, n));
        benchmark::DoNotOptimize(x.data());
        benchmark::ClobberMemory();
    }
    kernels::set_active_isa(before);
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations()) * static_cast<std::int64_t>(2 * rows * n * 4));
    st.counters["Mvalues/s"] =
        benchmark::Counter(static_cast<double>(rows * n) * 1e-6, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_rotate_dispatched(benchmark::State& st) { rotate(st, kernels::available_isas().front()); }
void BM_rotate_scalar(benchmark::State& st) { rotate(st, kernels::isa::scalar); }

void BM_copy(benchmark::State& st) {
    const std::size_t bytes = rows * static_cast<std::size_t>(st.range(0)) * 4;
    static auto src = lowbit_bench::make_buffer(14336 * rows * 4, 1);
    static auto dst = lowbit_bench::make_buffer(14336 * rows * 4, 2);
    lowbit_bench::copy_baseline(st, dst.get(), src.get(), bytes);
}

}  // namespace

BENCHMARK(BM_copy)->Arg(4096)->Arg(14336)->Arg(5120);
BENCHMARK(BM_rotate_dispatched)->Arg(4096)->Arg(14336)->Arg(5120);
BENCHMARK(BM_rotate_scalar)->Arg(4096)->Arg(14336)->Arg(5120);
BENCHMARK_MAIN();
