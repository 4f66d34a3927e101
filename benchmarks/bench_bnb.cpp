// bitsandbytes NF4 (blocks of 64, nested absmax) on an LLM-sized weight
// (11008 x 4096): quantize, dequantize and the fused GEMV / small-batch GEMM,
// with the machine's read and copy bandwidth measured in the same run.
// A GEMV reads the packed weight once (4.5 bits a weight with the absmax), so
// its ceiling is the read baseline over those bytes. LLM.int8()'s int8 GEMM
// on the same shape is measured beside it.
// The same bytes through the generic core (bnb_4bit_quantizer /
// bnb_4bit_nested_quantizer, then to_bnb) are measured beside the dedicated
// kernel, plain and nested.
// LOWBIT_ARCH=scalar|sse4_1|avx2|avx512bw picks the instruction set.

#include <benchmark/benchmark.h>

#include "bandwidth.hpp"

#include <lowbit/formats/bnb.hpp>
#include <lowbit/formats/bnb_convert.hpp>

#include <cstdint>
#include <random>
#include <vector>

namespace {

using namespace lowbit;
constexpr std::size_t rows = 11008, cols = 4096, n = rows * cols;

const std::vector<float>& weights() {
    static const std::vector<float> w = [] {
        std::vector<float> v(n);
        std::mt19937 rng(1);
        std::normal_distribution<float> d(0.0f, 0.02f);
        for (float& x : v) x = d(rng);
        return v;
    }();
    return w;
}

const bnb::quant_state_4bit& state() {
    static const bnb::quant_state_4bit s = [] {
        bnb::quantize_4bit_options o;
        o.threads = 0;
        return bnb::quantize_4bit(weights(), {rows, cols}, o);
    }();
    return s;
}

std::size_t packed_bytes() { return state().packed.size() + state().blocks(); }  // codes + 8-bit absmax

void set_weights(benchmark::State& st, double weights_per_iter, double bytes_per_iter) {
    st.counters["Mw/s"] = benchmark::Counter(weights_per_iter * 1e-6, benchmark::Counter::kIsIterationInvariantRate);
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations()) * static_cast<std::int64_t>(bytes_per_iter));
}

void BM_read_packed(benchmark::State& st) {
    const std::size_t bytes = (packed_bytes() + 63) / 64 * 64;
    static const auto buf = lowbit_bench::make_buffer(bytes, 1);
    lowbit_bench::read_baseline(st, buf.get(), bytes);
}

void BM_copy_f32_output(benchmark::State& st) {
    static const auto src = lowbit_bench::make_buffer(n * 4, 1);
    static const auto dst = lowbit_bench::make_buffer(n * 4, 2);
    lowbit_bench::copy_baseline(st, dst.get(), src.get(), n * 4);
}

void BM_nf4_quantize(benchmark::State& st) {
    bnb::quantize_4bit_options o;
    o.rules = st.range(0) ? bnb::kernel_rules::cpu : bnb::kernel_rules::cuda;
    const auto& w = weights();
    for (auto _ : st) {
        auto s = bnb::quantize_4bit(w, {rows, cols}, o);
        benchmark::DoNotOptimize(s.packed.data());
    }
    set_weights(st, static_cast<double>(n), static_cast<double>(n * 4));
}

void BM_nf4_quantize_plain(benchmark::State& st) {
    bnb::quantize_4bit_options o;
    o.compress_statistics = false;
    const auto& w = weights();
    for (auto _ : st) {
        auto s = bnb::quantize_4bit(w, {rows, cols}, o);
        benchmark::DoNotOptimize(s.packed.data());
    }
    set_weights(st, static_cast<double>(n), static_cast<double>(n * 4));
}

// The core's quantizer, then the conversion to bitsandbytes' state (the same bytes).
template <class Q>
void core_quantize(benchmark::State& st, const Q& qz) {
    const matrix_view<const float> w(weights().data(), rows, cols);
    for (auto _ : st) {
        auto s = to_bnb(qz.quantize(w));
        benchmark::DoNotOptimize(s.packed.data());
    }
    set_weights(st, static_cast<double>(n), static_cast<double>(n * 4));
}

void BM_nf4_core_quantize(benchmark::State& st) {
    if (st.range(0))
        core_quantize(st, bnb_4bit_nested_quantizer(bnb::quant_type::nf4, 64));
    else
        core_quantize(st, bnb_4bit_quantizer(bnb::quant_type::nf4, 64));
}

void BM_nf4_core_to_bnb(benchmark::State& st) {
    static const auto q = bnb_4bit_nested_quantizer(bnb::quant_type::nf4, 64)
                              .quantize(matrix_view<const float>(weights().data(), rows, cols));
    for (auto _ : st) {
        auto s = to_bnb(q);
        benchmark::DoNotOptimize(s.packed.data());
    }
    set_weights(st, static_cast<double>(n), static_cast<double>(n / 2 * 2));
}

void BM_nf4_dequantize(benchmark::State& st) {
    const auto type = static_cast<kernels::out_type>(st.range(0));
    const std::size_t es = type == kernels::out_type::f32 ? 4 : 2;
    static auto out = lowbit_bench::make_buffer(n * 4, 0);
    const auto& s = state();
    for (auto _ : st) {
        bnb::dequantize_4bit(s, out.get(), type);
        benchmark::ClobberMemory();
    }
    set_weights(st, static_cast<double>(n), static_cast<double>(packed_bytes() + n * es));
}

void BM_nf4_gemv(benchmark::State& st) {
    const std::size_t batch = static_cast<std::size_t>(st.range(0));
    static const bnb::matrix_4bit m(state());
    std::vector<float> x(batch * cols), y(batch * rows);
    std::mt19937 rng(2);
    std::normal_distribution<float> d;
    for (float& v : x) v = d(rng);
    for (auto _ : st) {
        bnb::gemv_4bit(m, x, batch, y);
        benchmark::DoNotOptimize(y.data());
    }
    // Bytes: the packed weight read once per call (activations stay in cache).
    set_weights(st, static_cast<double>(n), static_cast<double>(packed_bytes()));
    st.counters["GFLOP/s"] =
        benchmark::Counter(2.0 * static_cast<double>(n * batch) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_int8_gemm(benchmark::State& st) {
    const std::size_t batch = static_cast<std::size_t>(st.range(0));
    static const bnb::int8_weight w = bnb::quantize_int8_rows(weights(), rows, cols, 0);
    std::vector<std::int8_t> a(batch * cols);
    std::mt19937 rng(3);
    for (auto& v : a) v = static_cast<std::int8_t>(static_cast<int>(rng() % 255) - 127);
    std::vector<std::int32_t> c(batch * rows);
    for (auto _ : st) {
        kernels::dispatch(kernels::int8_gemm_fn{},
                          kernels::int8_gemm_job{a.data(), batch, cols, cols, w.q.data(), cols, c.data(), rows, 0, rows});
        benchmark::DoNotOptimize(c.data());
    }
    set_weights(st, static_cast<double>(n), static_cast<double>(n));
    st.counters["GOP/s"] =
        benchmark::Counter(2.0 * static_cast<double>(n * batch) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_read_packed)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_copy_f32_output)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_nf4_quantize)->ArgName("cpu_rules")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_nf4_quantize_plain)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_nf4_core_quantize)->ArgName("nested")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_nf4_core_to_bnb)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_nf4_dequantize)->ArgName("out")->Arg(0)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_nf4_gemv)->ArgName("batch")->Arg(1)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_int8_gemm)->ArgName("batch")->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
