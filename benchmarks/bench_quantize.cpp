// Quantize and dequantize speed per registered format on a 4096 x 11008
// matrix (11008 output rows x 4096 input columns, as a 7B model's up
// projection), with memory-bandwidth baselines measured in the same run:
// a read of the fp32 matrix and a copy of it.
#include <lowbit/lowbit.hpp>

#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr std::size_t rows = 11008, cols = 4096;

const std::vector<float>& weights() {
    static const std::vector<float> w = [] {
        std::vector<float> v(rows * cols);
        std::mt19937_64 rng(42);
        std::normal_distribution<float> n(0.0f, 0.02f);
        for (float& x : v) x = n(rng);
        return v;
    }();
    return w;
}

void bm_read_baseline(benchmark::State& st) {
    const auto& w = weights();
    for (auto _ : st) {
        float acc[16] = {};
        for (std::size_t i = 0; i < w.size(); i += 16)
            for (int k = 0; k < 16; ++k) acc[k] += w[i + static_cast<std::size_t>(k)];
        benchmark::DoNotOptimize(acc);
    }
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * w.size() * sizeof(float)));
    st.counters["Mw/s"] = benchmark::Counter(static_cast<double>(w.size()) * static_cast<double>(st.iterations()) / 1e6,
                                             benchmark::Counter::kIsRate);
}

// The same read through a dispatched xsimd kernel (the finiteness scan, which
// reads every value): what a kernel on this instruction set can stream. The
// scalar loop above is compiled for the baseline instruction set and can fall
// short of the memory's bandwidth.
void bm_read_simd_baseline(benchmark::State& st) {
    const auto& w = weights();
    for (auto _ : st) {
        std::size_t first = w.size();
        lowbit::kernels::dispatch(lowbit::kernels::range_scan_fn{},
                                  lowbit::kernels::range_scan_job{lowbit::float_storage::f32, w.data(), w.size(),
                                                                  0x7F800000u, &first});
        benchmark::DoNotOptimize(first);
    }
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * w.size() * sizeof(float)));
    st.counters["Mw/s"] = benchmark::Counter(static_cast<double>(w.size()) * static_cast<double>(st.iterations()) / 1e6,
                                             benchmark::Counter::kIsRate);
}

void bm_copy_baseline(benchmark::State& st) {
    const auto& w = weights();
    std::vector<float> out(w.size());
    for (auto _ : st) {
        std::memcpy(out.data(), w.data(), w.size() * sizeof(float));
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * w.size() * sizeof(float) * 2));
    st.counters["Mw/s"] = benchmark::Counter(static_cast<double>(w.size()) * static_cast<double>(st.iterations()) / 1e6,
                                             benchmark::Counter::kIsRate);
}

void bm_quantize(benchmark::State& st, const lowbit::format* f) {
    const auto& w = weights();
    lowbit::matrix_view<const float> v(w.data(), rows, cols);
    for (auto _ : st) {
        auto q = lowbit::quantize(*f, v);
        benchmark::DoNotOptimize(q.get());
    }
    // Bytes: fp32 read.
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * w.size() * sizeof(float)));
    st.counters["Mw/s"] = benchmark::Counter(static_cast<double>(w.size()) * static_cast<double>(st.iterations()) / 1e6,
                                             benchmark::Counter::kIsRate);
}

void bm_dequantize(benchmark::State& st, const lowbit::format* f) {
    const auto& w = weights();
    lowbit::matrix_view<const float> v(w.data(), rows, cols);
    const auto q = lowbit::quantize(*f, v);
    std::vector<float> out(w.size());
    lowbit::matrix_view<float> o(out.data(), rows, cols);
    for (auto _ : st) {
        q->dequantize(o);
        benchmark::ClobberMemory();
    }
    // Bytes: packed input (codes + params) read, fp32 output written.
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * (q->storage_bytes() + w.size() * sizeof(float))));
    st.counters["Mw/s"] = benchmark::Counter(static_cast<double>(w.size()) * static_cast<double>(st.iterations()) / 1e6,
                                             benchmark::Counter::kIsRate);
    st.counters["bits/w"] = q->bits_per_weight();
}

const int registered = [] {
    benchmark::RegisterBenchmark("baseline/read_fp32", bm_read_baseline)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("baseline/read_fp32_simd", bm_read_simd_baseline)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("baseline/memcpy_fp32", bm_copy_baseline)->Unit(benchmark::kMillisecond);
    for (const auto& f : lowbit::formats()) {
        benchmark::RegisterBenchmark(("quantize/" + std::string(f.name)).c_str(), bm_quantize, &f)
            ->Unit(benchmark::kMillisecond)
            ->Iterations(1);
        benchmark::RegisterBenchmark(("dequantize/" + std::string(f.name)).c_str(), bm_dequantize, &f)
            ->Unit(benchmark::kMillisecond);
    }
    return 0;
}();

}  // namespace

BENCHMARK_MAIN();
