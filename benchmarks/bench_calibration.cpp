// Calibration algorithms on one layer (lowbit::calibration).
//
//   gptq/<out>x<in>/tokens:<T>/threads:<N>   the Hessian of T tokens and GPTQ at
//                                            4 bits, groups of 128, both timed
//   hessian/<in>/tokens:<T>/threads:<N>      the Hessian alone
//   sgemm/<out>x<in>/tokens:<T>              baseline: X W^T through OpenBLAS, one
//                                            thread (the flops of one forward pass)
//   hqq/<out>x<in>/threads:<N>               HQQ at 4 bits, groups of 64 (hqq's
//                                            defaults: up to 20 solver steps)
//   hqq-initial/<out>x<in>/threads:<N>       baseline: HQQ's initial params and
//                                            codes alone (optimize = false), the
//                                            cost of one pass without the solver
//   awq/<out>x<in>/tokens:<T>/threads:<N>    AWQ on one layer at 4 bits, groups of
//                                            128: scale search, clip search,
//                                            quantization (calibration::awq)
//   awq-scales/..., awq-clip/...             its scale and clip searches alone
//
// OpenBLAS runs on one thread (openblas_set_num_threads(1); lowbit's
// calibration code sets it so itself): lowbit's threads split the work.

#include <benchmark/benchmark.h>
#include <cblas.h>

#include <lowbit/algorithms/awq.hpp>
#include <lowbit/algorithms/gptq.hpp>
#include <lowbit/algorithms/hqq.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace lowbit;

std::vector<float> normal(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = nd(rng);
    return v;
}

void bm_gptq(benchmark::State& state, std::size_t out, std::size_t in, std::size_t tokens, unsigned threads) {
    const std::vector<float> w = normal(out * in, 1), x = normal(tokens * in, 2);
    for (auto _ : state) {
        calibration::hessian h(in, threads);
        h.add(matrix_view<const float>(x.data(), tokens, in));
        calibration::gptq_options o;
        o.threads = threads;
        const auto q = calibration::gptq(matrix_view<const float>(w.data(), out, in), h.matrix(), o);
        benchmark::DoNotOptimize(q.codes.data());
    }
}

void bm_hessian(benchmark::State& state, std::size_t in, std::size_t tokens, unsigned threads) {
    const std::vector<float> x = normal(tokens * in, 2);
    for (auto _ : state) {
        calibration::hessian h(in, threads);
        h.add(matrix_view<const float>(x.data(), tokens, in));
        benchmark::DoNotOptimize(h.matrix().data());
    }
}

void bm_sgemm(benchmark::State& state, std::size_t out, std::size_t in, std::size_t tokens) {
    const std::vector<float> w = normal(out * in, 1), x = normal(tokens * in, 2);
    std::vector<float> y(tokens * out);
    for (auto _ : state) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(tokens), static_cast<int>(out),
                    static_cast<int>(in), 1.0f, x.data(), static_cast<int>(in), w.data(), static_cast<int>(in), 0.0f,
                    y.data(), static_cast<int>(out));
        benchmark::DoNotOptimize(y.data());
    }
}

void bm_hqq(benchmark::State& state, std::size_t out, std::size_t in, unsigned threads, bool optimize) {
    std::vector<float> w = normal(out * in, 1);
    for (float& v : w) v *= 0.02f;  // a trained layer's scale
    std::size_t steps = 0;
    for (auto _ : state) {
        hqq_options o;
        o.threads = threads;
        o.optimize = optimize;
        const auto q = hqq(matrix_view<const float>(w.data(), out, in), o);
        steps = q.errors.size();
        benchmark::DoNotOptimize(q.codes.data());
    }
    state.counters["steps"] = static_cast<double>(steps);
}

enum class awq_part { all, scales, clip };

void bm_awq(benchmark::State& state, std::size_t out, std::size_t in, std::size_t tokens, unsigned threads,
            awq_part part) {
    std::vector<float> w = normal(out * in, 1), x = normal(tokens * in, 2);
    for (float& v : w) v *= 0.02f;
    for (std::size_t c = 5; c < in; c += 97)  // a few loud input channels
        for (std::size_t t = 0; t < tokens; ++t) x[t * in + c] *= 20.0f;
    const matrix_view<const float> wv(w.data(), out, in), xv(x.data(), tokens, in);
    calibration::awq_options o;
    o.threads = threads;
    for (auto _ : state) {
        if (part == awq_part::scales) {
            const matrix_view<const float> layers[1] = {wv};
            benchmark::DoNotOptimize(calibration::awq_search_scales(layers, xv, o).scales.data());
        } else if (part == awq_part::clip) {
            benchmark::DoNotOptimize(calibration::awq_search_clip(wv, xv, o).data());
        } else {
            const calibration::awq_layer layers[1] = {{wv, true}};
            benchmark::DoNotOptimize(calibration::awq(layers, xv, o).layers[0].codes.data());
        }
    }
}

const bool registered = [] {
    openblas_set_num_threads(1);
    for (unsigned th : {1u, 2u})
        benchmark::RegisterBenchmark(("gptq/4096x4096/tokens:2048/threads:" + std::to_string(th)).c_str(), bm_gptq,
                                     4096, 4096, 2048, th)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->Iterations(2);
    for (unsigned th : {1u, 2u})
        benchmark::RegisterBenchmark(("hessian/4096/tokens:2048/threads:" + std::to_string(th)).c_str(), bm_hessian,
                                     4096, 2048, th)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    benchmark::RegisterBenchmark("sgemm/4096x4096/tokens:2048", bm_sgemm, 4096, 4096, 2048)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    for (const auto& [out, in] : {std::pair<std::size_t, std::size_t>{4096, 4096}, {11008, 4096}})
        for (unsigned th : {1u, 2u})
            for (const bool optimize : {false, true})
                benchmark::RegisterBenchmark(((optimize ? "hqq/" : "hqq-initial/") + std::to_string(out) + "x" +
                                              std::to_string(in) + "/threads:" + std::to_string(th))
                                                 .c_str(),
                                             bm_hqq, out, in, th, optimize)
                    ->Unit(benchmark::kMillisecond)
                    ->UseRealTime()
                    ->Iterations(2);
    // 4096 x 4096 with 2048 tokens: GPTQ's layer above (fewer tokens than
    // inputs: losses through X D^T); 2048 x 2048 with 4096 (through R D^T).
    for (const auto& [n, tokens] : {std::pair<std::size_t, std::size_t>{4096, 2048}, {2048, 4096}})
        for (unsigned th : {1u, 2u})
            for (const auto& [name, part] : {std::pair<const char*, awq_part>{"awq", awq_part::all},
                                             {"awq-scales", awq_part::scales},
                                             {"awq-clip", awq_part::clip}})
                benchmark::RegisterBenchmark((std::string(name) + "/" + std::to_string(n) + "x" + std::to_string(n) +
                                              "/tokens:" + std::to_string(tokens) + "/threads:" + std::to_string(th))
                                                 .c_str(),
                                             bm_awq, n, n, tokens, th, part)
                    ->Unit(benchmark::kMillisecond)
                    ->UseRealTime()
                    ->Iterations(1);
    return true;
}();

}  // namespace

BENCHMARK_MAIN();
