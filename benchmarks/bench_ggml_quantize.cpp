// ggml quantize throughput, single-threaded, on a 1024 x 4096 slice of an LLM
// weight matrix (N(0,1) values): <type>_scalar runs ggml::quantize_rows (the
// scalar quantizers, bit-exact with ggml's reference), <type>_simd runs
// kernels::quantize_ggml_rows on the active instruction set (the same bytes).
// _imatrix cases pass an importance matrix. Counter "Mw/s": million weights/s.
// LOWBIT_ARCH=scalar|sse4_1|avx2|avx512bw picks the instruction set.

#include <benchmark/benchmark.h>

#include <lowbit/formats/ggml.hpp>
#include <lowbit/kernels/ggml_quantize.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace lowbit;
using namespace lowbit::kernels;

constexpr std::size_t rows = 1024, cols = 4096;

const std::vector<float>& matrix() {
    static const std::vector<float> x = [] {
        std::vector<float> v(rows * cols);
        std::mt19937 rng(42);
        std::normal_distribution<float> nd(0.f, 1.f);
        for (auto& f : v) f = nd(rng);
        return v;
    }();
    return x;
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

void run(benchmark::State& state, ggml::type t, bool simd, bool with_imatrix) {
    const auto& x = matrix();
    const float* im = with_imatrix ? importance().data() : nullptr;
    std::vector<unsigned char> out(rows * ggml::row_bytes(t, cols));
    for (auto _ : state) {
        if (simd)
            quantize_ggml_rows(t, x.data(), out.data(), rows, cols, im);
        else
            ggml::quantize_rows(t, x.data(), out.data(), rows, cols, im);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.counters["Mw/s"] = benchmark::Counter(static_cast<double>(rows * cols) * 1e-6,
                                                benchmark::Counter::kIsIterationInvariantRate);
    state.SetLabel(simd ? std::string(isa_name(active_isa())) : "scalar");
}

const int registered = [] {
    using ggml::type;
    const std::pair<type, const char*> types[] = {
        {type::q4_k, "q4_K"},   {type::q5_k, "q5_K"},     {type::q2_k, "q2_K"}, {type::q3_k, "q3_K"},
        {type::q6_k, "q6_K"},   {type::iq4_nl, "iq4_NL"}, {type::iq4_xs, "iq4_XS"}, {type::q4_0, "q4_0"},
        {type::q4_1, "q4_1"},   {type::q5_0, "q5_0"},     {type::q5_1, "q5_1"}, {type::q8_0, "q8_0"},
        {type::mxfp4, "mxfp4"}, {type::tq1_0, "tq1_0"}, {type::tq2_0, "tq2_0"}};
    // The imatrix is ignored by these, so their _imatrix cases would repeat the plain ones.
    const auto ignores_imatrix = [](type t) { return t == type::q8_0 || t == type::mxfp4 || t == type::tq1_0 || t == type::tq2_0; };
    for (const auto& [t, name] : types)
        for (bool im : {false, true}) {
            if (!quantize_ggml_simd_supports(t, im) || (im && ignores_imatrix(t))) continue;
            const std::string base = std::string(name) + (im ? "_imatrix" : "");
            for (bool simd : {false, true}) {
                const ggml::type tt = t;
                benchmark::RegisterBenchmark((base + (simd ? "_simd" : "_scalar")).c_str(),
                                             [tt, simd, im](benchmark::State& s) { run(s, tt, simd, im); })
                    ->Unit(benchmark::kMillisecond)
                    ->MinTime(0.5)
                    ->UseRealTime();
            }
        }
    return 0;
}();

}  // namespace

BENCHMARK_MAIN();
