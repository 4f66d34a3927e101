// ggml quantize throughput, single-threaded, on an LLM-sized weight matrix
// (11008 rows x 4096 cols of N(0,1) values: 180 MB of f32 input, bigger than
// L3), beside the machine's own bandwidth for reading that input and copying
// it, in this binary. <type>_scalar runs ggml::quantize_rows (the scalar
// quantizers, bit-exact with ggml's reference), <type>_simd runs
// kernels::quantize_ggml_rows on the active instruction set (the same bytes);
// <type>_simd_unchecked the kernel alone, without quantize_ggml_rows' range
// scan of the input and check of the blocks (their cost is the difference);
// _imatrix cases pass an importance matrix; _all_threads cases run row ranges
// on every core (read_input_all_threads is their ceiling); _from_f16_all_threads
// cases quantize the same matrix stored as f16, as `lowbit quantize` does with
// an F16 tensor. Counters: Mw/s (million weights per second) and
// bytes_per_second (input bytes read per second, to set against read_input).
// --small runs a 1024 x 4096 slice instead (16 MB, fits in L3), for quick runs.
// LOWBIT_ARCH=scalar|sse4_1|avx2|avx512bw picks the instruction set.

#include <benchmark/benchmark.h>

#include "bandwidth.hpp"

#include <lowbit/core/numeric.hpp>
#include <lowbit/parallel.hpp>

#include <lowbit/formats/ggml.hpp>
#include <lowbit/kernels/ggml_quantize.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace lowbit;
using namespace lowbit::kernels;
using lowbit_bench::buffer;
using lowbit_bench::make_buffer;

std::size_t rows = 11008;
constexpr std::size_t cols = 4096;

const float* matrix() {
    static const buffer x = [] {
        buffer b = make_buffer(rows * cols * sizeof(float), 0);
        auto* f = reinterpret_cast<float*>(b.get());
        std::mt19937 rng(42);
        std::normal_distribution<float> nd(0.f, 1.f);
        for (std::size_t i = 0; i < rows * cols; ++i) f[i] = nd(rng);
        return b;
    }();
    return reinterpret_cast<const float*>(x.get());
}

const std::vector<float>& importance() {
    static const std::vector<float> w = [] {
        std::vector<float> v(cols);
        std::mt19937 rng(43);
        std::uniform_real_distribution<float> ud(0.01f, 10.f);
        for (auto& f : v) f = ud(rng);
        return v;
    }();
    return w;
}

void counters(benchmark::State& state) {
    state.counters["Mw/s"] = benchmark::Counter(static_cast<double>(rows * cols) * 1e-6,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

enum class path { scalar, simd, unchecked };

void run(benchmark::State& state, ggml::type t, path p, bool with_imatrix) {
    const bool simd = p != path::scalar;
    const float* x = matrix();
    const float* im = with_imatrix ? importance().data() : nullptr;
    buffer out = make_buffer(rows * ggml::row_bytes(t, cols), 0);
    for (auto _ : state) {
        if (p == path::simd)
            quantize_ggml_rows(t, x, out.get(), rows, cols, im);
        else if (p == path::unchecked)  // the kernel alone: no range scan of the input, no block check
            dispatch(quantize_ggml_fn{}, ggml_quantize_job{t, x, out.get(), rows, cols, im});
        else
            ggml::quantize_rows(t, x, out.get(), rows, cols, im);
        benchmark::DoNotOptimize(out.get());
        benchmark::ClobberMemory();
    }
    counters(state);
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                            static_cast<std::int64_t>(rows * cols * sizeof(float)));
    state.SetLabel(simd ? std::string(isa_name(active_isa())) : "scalar");
}

const unsigned char* matrix_f16() {
    static const buffer h = [] {
        buffer b = make_buffer(rows * cols * 2, 0);
        const float* x = matrix();
        for (std::size_t i = 0; i < rows * cols; ++i) {
            const std::uint16_t v = float_to_fp16(x[i]);
            std::memcpy(b.get() + 2 * i, &v, 2);
        }
        return b;
    }();
    return h.get();
}

// All cores (the tool's --threads 0): row ranges on lowbit's parallel_for,
// from the f32 matrix or (as `lowbit quantize` does with an F16 tensor) from
// the same matrix in f16, widened a few rows at a time and quantized (the
// input is read at 2 bytes a weight).
void run_threads(benchmark::State& state, ggml::type t, ggml::type from) {
    const bool f16 = from == ggml::type::f16;
    const auto* x = f16 ? matrix_f16() : reinterpret_cast<const unsigned char*>(matrix());
    const std::size_t in_row = cols * (f16 ? 2 : sizeof(float)), rb = ggml::row_bytes(t, cols);
    buffer out = make_buffer(rows * rb, 0);
    for (auto _ : state) {
        lowbit::parallel_for(rows, 0, 16, [&](std::size_t r0, std::size_t r1) {
            quantize_ggml_rows(t, from, x + r0 * in_row, out.get() + r0 * rb, r1 - r0, cols, nullptr);
        });
        benchmark::DoNotOptimize(out.get());
        benchmark::ClobberMemory();
    }
    counters(state);
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(rows * in_row));
    state.SetLabel(std::string(isa_name(active_isa())) + ", " + std::to_string(lowbit::default_threads()) +
                   (f16 ? " threads, from f16" : " threads"));
}

void register_all() {
    const auto fast = [](benchmark::internal::Benchmark* b) {
        b->Unit(benchmark::kMillisecond)->MinTime(0.5)->UseRealTime();
    };
    fast(benchmark::RegisterBenchmark("read_input", [](benchmark::State& s) {
        lowbit_bench::read_baseline(s, matrix(), rows * cols * sizeof(float));
        counters(s);
    }));
    // The ceiling of the _all_threads cases: the same read on row ranges from every core.
    fast(benchmark::RegisterBenchmark("read_input_all_threads", [](benchmark::State& s) {
        const float* x = matrix();
        for (auto _ : s) {
            lowbit::parallel_for(rows, 0, 16, [&](std::size_t r0, std::size_t r1) {
                std::uint64_t sum = 0;
                const auto* p = reinterpret_cast<const std::uint64_t*>(x + r0 * cols);
                const std::size_t n = (r1 - r0) * cols / 2;
                for (std::size_t i = 0; i < n; i += 8)
                    sum += p[i] + p[i + 1] + p[i + 2] + p[i + 3] + p[i + 4] + p[i + 5] + p[i + 6] + p[i + 7];
                benchmark::DoNotOptimize(sum);
            });
        }
        s.SetBytesProcessed(static_cast<std::int64_t>(s.iterations()) *
                            static_cast<std::int64_t>(rows * cols * sizeof(float)));
        counters(s);
        s.SetLabel(std::to_string(lowbit::default_threads()) + " threads");
    }));
    fast(benchmark::RegisterBenchmark("copy_input", [](benchmark::State& s) {
        static buffer dst = make_buffer(rows * cols * sizeof(float), 0);
        lowbit_bench::copy_baseline(s, dst.get(), matrix(), rows * cols * sizeof(float));
        counters(s);
    }));
    using ggml::type;
    const std::pair<type, const char*> types[] = {
        {type::q4_k, "q4_K"},   {type::q5_k, "q5_K"},     {type::q2_k, "q2_K"},   {type::q3_k, "q3_K"},
        {type::q6_k, "q6_K"},   {type::iq4_nl, "iq4_NL"}, {type::iq4_xs, "iq4_XS"}, {type::q4_0, "q4_0"},
        {type::q4_1, "q4_1"},   {type::q5_0, "q5_0"},     {type::q5_1, "q5_1"},   {type::q8_0, "q8_0"},
        {type::mxfp4, "mxfp4"}, {type::tq1_0, "tq1_0"},   {type::tq2_0, "tq2_0"}};
    // The imatrix is ignored by these, so their _imatrix cases would repeat the plain ones.
    const auto ignores_imatrix = [](type t) {
        return t == type::q8_0 || t == type::mxfp4 || t == type::tq1_0 || t == type::tq2_0;
    };
    for (const auto& [t, name] : types)
        for (bool im : {false, true}) {
            if (!quantize_ggml_simd_supports(t, im) || (im && ignores_imatrix(t))) continue;
            const std::string base = std::string(name) + (im ? "_imatrix" : "");
            for (path p : {path::scalar, path::simd, path::unchecked}) {
                if (p == path::unchecked && im) continue;
                const ggml::type tt = t;
                const char* suffix = p == path::scalar ? "_scalar" : p == path::simd ? "_simd" : "_simd_unchecked";
                fast(benchmark::RegisterBenchmark((base + suffix).c_str(),
                                                  [tt, p, im](benchmark::State& s) { run(s, tt, p, im); }));
            }
            if (!im) {
                fast(benchmark::RegisterBenchmark((base + "_simd_all_threads").c_str(),
                                                  [t = t](benchmark::State& s) { run_threads(s, t, ggml::type::f32); }));
                fast(benchmark::RegisterBenchmark((base + "_from_f16_all_threads").c_str(),
                                                  [t = t](benchmark::State& s) { run_threads(s, t, ggml::type::f16); }));
            }
        }
}

}  // namespace

int main(int argc, char** argv) {
    // Our own flag first: Google Benchmark rejects the ones it does not know.
    int kept = 1;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--small") == 0)
            rows = 1024;
        else
            argv[kept++] = argv[i];
    }
    argc = kept;
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
