// ggml block dequantize throughput on an LLM-sized weight matrix (11008 rows x
// 4096 cols; 180 MB of f32 output, bigger than L3), beside the machine's own
// read and copy bandwidth and the scalar row functions, all in this binary.
// Cases: <type>_dram (whole matrix to f32), <type>_row (one row at a time into
// a reused 16 KiB buffer: output stays in L1), <type>_scalar (the scalar row
// functions on the whole matrix), read_<type> (reading the quantized bytes).
// LOWBIT_ARCH=scalar|sse4_1|avx2|avx512bw picks the instruction set.

#include <benchmark/benchmark.h>

#include "bandwidth.hpp"

#include <lowbit/formats/ggml.hpp>
#include <lowbit/kernels/ggml_dequantize.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace lowbit;
using namespace lowbit::kernels;

constexpr std::size_t rows = 11008, cols = 4096;

using lowbit_bench::buffer;
using lowbit_bench::make_buffer;

// The matrix of one type: 64 distinct rows of N(0,1) data, quantized once and
// tiled (quantizing 45 M weights to a K-quant takes seconds).
const buffer& weights(ggml::type t) {
    static std::map<ggml::type, buffer> cache;
    auto it = cache.find(t);
    if (it != cache.end()) return it->second;
    const std::size_t rb = ggml::row_bytes(t, cols);
    constexpr std::size_t distinct = 64;
    std::vector<float> x(distinct * cols);
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : x) v = nd(rng);
    std::vector<unsigned char> q(distinct * rb);
    ggml::quantize_rows(t, x.data(), q.data(), distinct, cols);
    buffer b = make_buffer(rows * rb, 0);
    for (std::size_t r = 0; r < rows; ++r) std::memcpy(b.get() + r * rb, q.data() + (r % distinct) * rb, rb);
    return cache.emplace(t, std::move(b)).first->second;
}

float* shared_output() {
    static buffer out = make_buffer(rows * cols * 4, 0);
    return reinterpret_cast<float*>(out.get());
}

void report(benchmark::State& state, std::size_t in, const char* label) {
    const auto it = static_cast<std::int64_t>(state.iterations());
    state.SetBytesProcessed(it * static_cast<std::int64_t>(in + rows * cols * 4));
    state.counters["Mw/s"] =
        benchmark::Counter(static_cast<double>(it) * static_cast<double>(rows * cols) / 1e6, benchmark::Counter::kIsRate);
    state.SetLabel(label);
}

void dram_case(benchmark::State& state, ggml::type t) {
    const std::size_t rb = ggml::row_bytes(t, cols);
    const ggml_job j{t, weights(t).get(), rb, rows, cols, shared_output(), cols};
    for (auto _ : state) {
        dequantize_ggml(j);
        benchmark::ClobberMemory();
    }
    report(state, rows * rb, isa_name(active_isa()).data());
}

void scalar_case(benchmark::State& state, ggml::type t) {
    const std::size_t rb = ggml::row_bytes(t, cols);
    const ggml_job j{t, weights(t).get(), rb, rows, cols, shared_output(), cols};
    for (auto _ : state) {
        dispatch_to(isa::scalar, dequantize_ggml_fn{}, j);
        benchmark::ClobberMemory();
    }
    report(state, rows * rb, "scalar");
}

void row_case(benchmark::State& state, ggml::type t) {
    const std::size_t rb = ggml::row_bytes(t, cols);
    const unsigned char* w = weights(t).get();
    static buffer row = make_buffer(cols * 4, 0);
    float* y = reinterpret_cast<float*>(row.get());
    for (auto _ : state) {
        for (std::size_t r = 0; r < rows; ++r) dequantize_ggml({t, w + r * rb, rb, 1, cols, y, cols});
        benchmark::ClobberMemory();
    }
    report(state, rows * rb, isa_name(active_isa()).data());
}

// Baseline: read the quantized bytes of type t (eight 64-bit accumulators).
void read_case(benchmark::State& state, ggml::type t) {
    const std::size_t bytes = rows * ggml::row_bytes(t, cols) / 64 * 64;
    lowbit_bench::read_baseline(state, weights(t).get(), bytes);
}

// Baseline: memcpy of the f32 output size (bytes/s counts the bytes copied once).
void baseline_memcpy(benchmark::State& state) {
    const std::size_t bytes = rows * cols * 4;
    static buffer src = make_buffer(bytes, 1);
    float* dst = shared_output();
    lowbit_bench::copy_baseline(state, dst, src.get(), bytes);
}

struct named {
    const char* name;
    ggml::type t;
};
const named types[] = {
    {"q4_0", ggml::type::q4_0},     {"q8_0", ggml::type::q8_0},     {"q4_k", ggml::type::q4_k},
    {"q6_k", ggml::type::q6_k},     {"q5_k", ggml::type::q5_k},     {"iq4_nl", ggml::type::iq4_nl},
    {"mxfp4", ggml::type::mxfp4},   {"q4_1", ggml::type::q4_1},     {"q5_0", ggml::type::q5_0},
    {"q5_1", ggml::type::q5_1},     {"q2_k", ggml::type::q2_k},     {"q3_k", ggml::type::q3_k},
    {"iq4_xs", ggml::type::iq4_xs}, {"tq2_0", ggml::type::tq2_0},   {"tq1_0", ggml::type::tq1_0},
};

const bool registered = [] {
    benchmark::RegisterBenchmark("baseline_memcpy_f32_out", baseline_memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();
    for (const named& n : types) {
        const std::string s(n.name);
        const ggml::type t = n.t;
        benchmark::RegisterBenchmark(("read_" + s).c_str(), [t](benchmark::State& st) { read_case(st, t); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark((s + "_dram").c_str(), [t](benchmark::State& st) { dram_case(st, t); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark((s + "_row").c_str(), [t](benchmark::State& st) { row_case(st, t); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark((s + "_scalar").c_str(), [t](benchmark::State& st) { scalar_case(st, t); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
    return true;
}();

}  // namespace

BENCHMARK_MAIN();
