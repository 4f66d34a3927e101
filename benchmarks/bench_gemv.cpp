// Fused dequantize-GEMV / small-batch GEMM on ggml weights and on lowbit's
// planar formats, y = x W^T, read against the machine's memory bandwidth
// measured in this binary.
//
// Weights: N x K = 11008 x 4096 (an FFN up projection), 4096 x 11008 (down)
// and 4096 x 4096 (attention); each iteration takes the next of enough copies
// to fill 256 MiB, so the weights stream from memory as in an engine. Cases:
//   gemv/<type>/<N>x<K>/m:<M>/threads:<T>  f32 activations: M rows, T threads
//   gemv_q8/<type>/...                     the int8 path, x quantized in the loop
//   gemv_planar/<format>/...               a registry format in lowbit's planar layout
//                                          (int4-g128-asym, nf4-b64, mxfp4, ...): its
//                                          codes and fp32 params as kernels::gemv reads them
//   gemv_planar_q8/<format>/...            the int8 path of those that have one (affine, mxfp4, nvfp4),
//                                          x quantized in the loop
//   read/<N>x<K>/threads:<T>               reading the Q4_0 weight bytes of that shape
//   f32/<N>x<K>/m:1/threads:1              the same product on f32 weights (lowbit's
//                                          f32 GEMV: the fp32 dot baseline)
//   sgemv_openblas/<N>x<K>/m:1/threads:1   that product by OpenBLAS's cblas_sgemv on one
//                                          thread (where bench_gemv was built with OpenBLAS)
// Counters: bytes_per_second (weight bytes streamed), of_read (that over the
// read bandwidth of this binary's own read loop, one or two threads as the
// case), us_per_token (time / M). LOWBIT_ARCH picks the instruction set.

#include <benchmark/benchmark.h>
#if defined(LOWBIT_BENCH_OPENBLAS)
#include <cblas.h>
#endif

#include "bandwidth.hpp"

#include <lowbit/formats/ggml.hpp>
#include <lowbit/formats/ggml_view.hpp>
#include <lowbit/kernels/ggml_gemv.hpp>
#include <lowbit/kernels/ggml_quantize.hpp>
#include <lowbit/kernels/gemv.hpp>
#include <lowbit/registry.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace lowbit;
using namespace lowbit::kernels;
using lowbit_bench::buffer;
using lowbit_bench::make_buffer;

struct shape {
    std::size_t n, k;
};
constexpr shape shapes[] = {{11008, 4096}, {4096, 11008}, {4096, 4096}};

// Copies of one weight matrix, together at least 256 MiB (eight times this
// machine's L3): each iteration takes the next copy, so the bytes come from
// memory, as a layer's weights do in an engine (the other layers' weights
// evict them). Each copy: the same N distinct rows of N(0,1) data, quantized
// once. (Distinct rows: with a few rows tiled, a branch on the data was
// predicted well here and mispredicted on real weights.)
struct weight_set {
    buffer b;
    std::size_t bytes = 0, copies = 0;  // bytes of one copy
    const unsigned char* copy(std::size_t i) const { return b.get() + (i % copies) * bytes; }
};

weight_set make_weights(ggml::type t, shape s) {
    const std::size_t rb = ggml::row_bytes(t, s.k);
    const std::size_t distinct = s.n;
    std::vector<float> x(distinct * s.k);
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : x) v = nd(rng);
    std::vector<unsigned char> q(distinct * rb);
    quantize_ggml_rows(t, x.data(), q.data(), distinct, s.k);
    weight_set w;
    w.bytes = (s.n * rb + 63) / 64 * 64;
    w.copies = ((std::size_t{256} << 20) + w.bytes - 1) / w.bytes;
    w.b = make_buffer(w.copies * w.bytes, 0);
    for (std::size_t c = 0; c < w.copies; ++c)
        for (std::size_t r = 0; r < s.n; ++r)
            std::memcpy(w.b.get() + c * w.bytes + r * rb, q.data() + (r % distinct) * rb, rb);
    return w;
}

// One weight set alive at a time: a case for another type or shape replaces it.
const weight_set& weights(ggml::type t, shape s) {
    static std::pair<std::pair<ggml::type, std::size_t>, weight_set> held;
    const auto key = std::make_pair(t, s.n * 100000 + s.k);
    if (!held.second.b || held.first != key) {
        held.second.b.reset();
        held = {key, make_weights(t, s)};
    }
    return held.second;
}

std::vector<float> activations(std::size_t m, std::size_t k) {
    std::vector<float> x(m * k);
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : x) v = nd(rng);
    return x;
}

// Read bandwidth of `threads` threads each summing its part of a 512 MiB
// buffer: the best of five passes, bytes per second.
double read_bandwidth(unsigned threads) {
    static std::map<unsigned, double> cache;
    if (auto it = cache.find(threads); it != cache.end()) return it->second;
    constexpr std::size_t bytes = std::size_t{512} << 20;
    static buffer b = make_buffer(bytes, 1);
    double best = 0;
    for (int pass = 0; pass < 5; ++pass) {
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<std::thread> pool;
        std::vector<std::uint64_t> sums(threads);
        for (unsigned i = 0; i < threads; ++i)
            pool.emplace_back([&, i] {
                sums[i] = lowbit_bench::read_sum(b.get() + bytes / threads * i, bytes / threads);
            });
        for (auto& th : pool) th.join();
        benchmark::DoNotOptimize(sums.data());
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, static_cast<double>(bytes) / s);
    }
    return cache[threads] = best;
}

void report(benchmark::State& state, std::size_t bytes, std::size_t m, unsigned threads) {
    const auto it = static_cast<double>(state.iterations());
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes));
    state.counters["of_read"] =
        benchmark::Counter(it * static_cast<double>(bytes) / read_bandwidth(threads), benchmark::Counter::kIsRate);
    state.counters["us_per_token"] =
        benchmark::Counter(it * static_cast<double>(m) * 1e-6, benchmark::Counter::kIsRate |
                                                                    benchmark::Counter::kInvert);
}

// One product per iteration: f32 activations, or (int8) the int8 path with x
// quantized inside the timed loop (once per call, as an engine does per token
// and activation type).
void bm_gemv(benchmark::State& state, ggml::type t, shape s, std::size_t m, unsigned threads, bool int8) {
    const weight_set& w = weights(t, s);
    const std::vector<float> x = activations(m, s.k);
    std::vector<float> y(m * s.n);
    const matrix_view<const float> xv(x.data(), m, s.k);
    const matrix_view<float> yv(y.data(), m, s.n);
    ggml_activations xq;
    const auto run = [&](const ggml::rows_view& v, const auto& in) {
        if (threads == 1)
            gemv_ggml(v, in, yv);
        else
            gemv_ggml_parallel(v, in, yv, threads);
    };
    std::size_t i = 0;
    for (auto _ : state) {
        const ggml::rows_view v(t, w.copy(i++), s.n, s.k);
        if (int8) {
            xq.quantize(t, xv);
            run(v, xq);
        } else {
            run(v, xv);
        }
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    report(state, ggml::row_bytes(t, s.k) * s.n, m, threads);
}

// A registry format's planar weights of shape s: N distinct rows quantized
// once, their codes and params copied past 256 MiB as weight_set's. Each copy: codes (N rows), then scale, zero and bias (those
// the format has), P floats each.
struct planar_set {
    std::unique_ptr<quantized_base> q;  // the quantized rows (and the table and minifloat rule)
    planar_view base;
    buffer b;
    std::size_t bytes = 0, copies = 0, codes = 0, params = 0;
    std::size_t streamed = 0;  // bytes one product reads

    planar_view copy(std::size_t i, shape s) const {
        const unsigned char* p = b.get() + (i % copies) * bytes;
        const auto* f = reinterpret_cast<const float*>(p + codes);
        std::size_t at = 0;
        const auto next = [&](bool has) {
            if (!has) return std::span<const float>();
            const std::span<const float> a(f + at, params);
            at += params;
            return a;
        };
        planar_params pp;
        pp.scale = next(true);
        pp.zero = next(base.zero() != nullptr);
        pp.bias = next(base.bias() != nullptr);
        pp.group = base.group();
        pp.param_stride = base.param_stride();
        const std::span<const std::uint8_t> cs(p, codes);
        if (base.family() == kernel_family::affine)
            return planar_view::affine(base.bits(), cs, s.n, s.k, base.code_stride(), pp);
        return planar_view::table(base.bits(), cs, s.n, s.k, base.code_stride(),
                                  std::span<const float>(base.table(), std::size_t{1} << base.bits()), pp,
                                  base.minifloat());
    }
};

planar_set make_planar(const std::string& name, shape s) {
    const std::size_t distinct = s.n;
    std::vector<float> x(distinct * s.k);
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : x) v = nd(rng);
    planar_set w;
    w.q = quantize(find_format(name), matrix_view<const float>(x.data(), distinct, s.k));
    w.base = *w.q->planar();
    const planar_view& v = w.base;
    const std::size_t ps = v.param_stride(), per_row = s.k / v.group();
    w.codes = (s.n * v.code_stride() + 63) / 64 * 64;
    w.params = ps == 0 ? per_row : s.n * ps;
    const std::size_t arrays = 1 + (v.zero() ? 1 : 0) + (v.bias() ? 1 : 0);
    w.bytes = (w.codes + arrays * w.params * 4 + 63) / 64 * 64;
    w.streamed = s.n * v.code_stride() + arrays * w.params * 4;
    w.copies = ((std::size_t{256} << 20) + w.bytes - 1) / w.bytes;
    w.b = make_buffer(w.copies * w.bytes, 0);
    for (std::size_t c = 0; c < w.copies; ++c) {
        unsigned char* p = w.b.get() + c * w.bytes;
        for (std::size_t r = 0; r < s.n; ++r)
            std::memcpy(p + r * v.code_stride(), v.codes() + (r % distinct) * v.code_stride(), v.code_stride());
        auto* f = reinterpret_cast<float*>(p + w.codes);
        for (const float* a : {v.scale(), v.zero(), v.bias()}) {
            if (!a) continue;
            if (ps == 0) std::memcpy(f, a, per_row * 4);
            else
                for (std::size_t r = 0; r < s.n; ++r) std::memcpy(f + r * ps, a + (r % distinct) * ps, ps * 4);
            f += w.params;
        }
    }
    return w;
}

const planar_set& planar_weights(const std::string& name, shape s) {
    static std::pair<std::pair<std::string, std::size_t>, planar_set> held;
    const auto key = std::make_pair(name, s.n * 100000 + s.k);
    if (!held.second.b || held.first != key) {
        held.second.b.reset();
        held = {key, make_planar(name, s)};
    }
    return held.second;
}

void bm_gemv_planar(benchmark::State& state, std::string name, shape s, std::size_t m, unsigned threads, bool int8) {
    const planar_set& w = planar_weights(name, s);
    const std::vector<float> x = activations(m, s.k);
    std::vector<float> y(m * s.n);
    const matrix_view<const float> xv(x.data(), m, s.k);
    const matrix_view<float> yv(y.data(), m, s.n);
    const auto run = [&](const planar_view& v, const auto& in) {
        if (threads == 1) gemv(v, in, yv);
        else gemv_parallel(v, in, yv, threads);
    };
    std::size_t i = 0;
    for (auto _ : state) {
        const planar_view v = w.copy(i++, s);
        if (int8) run(v, quantize_activations(v, xv));
        else run(v, xv);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    report(state, w.streamed, m, threads);
}

void bm_read(benchmark::State& state, shape s, unsigned threads) {
    const weight_set& w = weights(ggml::type::q4_0, s);
    const std::size_t part = w.bytes / threads / 64 * 64;
    std::size_t i = 0;
    for (auto _ : state) {
        const unsigned char* p = w.copy(i++);
        if (threads == 1) {
            benchmark::DoNotOptimize(lowbit_bench::read_sum(p, part));
        } else {
            std::vector<std::thread> pool;
            for (unsigned t = 0; t < threads; ++t)
                pool.emplace_back([&, t] { benchmark::DoNotOptimize(lowbit_bench::read_sum(p + part * t, part)); });
            for (auto& th : pool) th.join();
        }
    }
    report(state, part * threads, 1, threads);
}

// f32 weights of shape s (4 bytes a weight), copies past 256 MiB as weight_set's.
struct f32_weights {
    buffer b;
    std::size_t copies;
    const float* copy(std::size_t i, shape s) const {
        return reinterpret_cast<const float*>(b.get()) + (i % copies) * s.n * s.k;
    }
};

f32_weights make_f32_weights(shape s) {
    const std::size_t bytes = s.n * s.k * 4, copies = ((std::size_t{256} << 20) + bytes - 1) / bytes;
    f32_weights w{make_buffer(copies * bytes, 0), copies};
    auto* wf = reinterpret_cast<float*>(w.b.get());
    for (std::size_t i = 0; i < copies * s.n * s.k; ++i) wf[i] = static_cast<float>(i % 17) * 0.125f - 1.0f;
    return w;
}

// The fp32 baseline: an f32 GEMV over f32 weights of the same shape (4 bytes a
// weight), one thread, written plainly on xsimd batches with four accumulators.
void bm_f32(benchmark::State& state, shape s) {
    const std::size_t bytes = s.n * s.k * 4;
    const f32_weights w = make_f32_weights(s);
    const std::vector<float> x = activations(1, s.k);
    std::vector<float> y(s.n);
    std::size_t it = 0;
    for (auto _ : state) {
        const float* mat = w.copy(it++, s);
        for (std::size_t r = 0; r < s.n; ++r) {
            const float* row = mat + r * s.k;
#if !defined(LOWBIT_NO_SIMD)
            using f32 = xsimd::batch<float>;
            constexpr std::size_t L = f32::size;
            f32 a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
            std::size_t c = 0;
            for (; c + 4 * L <= s.k; c += 4 * L) {
                a0 = xsimd::fma(f32::load_aligned(row + c), f32::load_unaligned(x.data() + c), a0);
                a1 = xsimd::fma(f32::load_aligned(row + c + L), f32::load_unaligned(x.data() + c + L), a1);
                a2 = xsimd::fma(f32::load_aligned(row + c + 2 * L), f32::load_unaligned(x.data() + c + 2 * L), a2);
                a3 = xsimd::fma(f32::load_aligned(row + c + 3 * L), f32::load_unaligned(x.data() + c + 3 * L), a3);
            }
            float acc = ::lowbit::detail::simd::reduce_add((a0 + a1) + (a2 + a3));
#else
            float acc = 0.0f;
            std::size_t c = 0;
#endif
            for (; c < s.k; ++c) acc += row[c] * x[c];
            y[r] = acc;
        }
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    report(state, bytes, 1, 1);
}

#if defined(LOWBIT_BENCH_OPENBLAS)
// The same product by OpenBLAS's cblas_sgemv, on one thread.
void bm_openblas(benchmark::State& state, shape s) {
    openblas_set_num_threads(1);
    const f32_weights w = make_f32_weights(s);
    const std::vector<float> x = activations(1, s.k);
    std::vector<float> y(s.n);
    std::size_t it = 0;
    for (auto _ : state) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(s.n), static_cast<int>(s.k), 1.0f, w.copy(it++, s),
                    static_cast<int>(s.k), x.data(), 1, 0.0f, y.data(), 1);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    report(state, s.n * s.k * 4, 1, 1);
}
#endif

std::string shape_name(shape s) { return std::to_string(s.n) + "x" + std::to_string(s.k); }

const int registered = [] {
    using ggml::type;
    const type types[] = {type::q4_0, type::q4_1, type::q5_0, type::q5_1, type::q8_0, type::q2_k, type::q3_k,
                          type::q4_k, type::q5_k, type::q6_k, type::iq4_nl, type::iq4_xs, type::mxfp4,
                          type::tq1_0, type::tq2_0};
    for (shape s : shapes) {
        const std::string sn = shape_name(s);
        for (unsigned th : {1u, 2u})
            benchmark::RegisterBenchmark(("read/" + sn + "/threads:" + std::to_string(th)).c_str(), bm_read, s, th)
                ->UseRealTime();
        benchmark::RegisterBenchmark(("f32/" + sn + "/m:1/threads:1").c_str(), bm_f32, s)->UseRealTime();
#if defined(LOWBIT_BENCH_OPENBLAS)
        benchmark::RegisterBenchmark(("sgemv_openblas/" + sn + "/m:1/threads:1").c_str(), bm_openblas, s)
            ->UseRealTime();
#endif
        for (type t : types)
            for (std::size_t m : {std::size_t{1}, std::size_t{4}, std::size_t{16}})
                for (unsigned th : {1u, 2u}) {
                    const std::string name = "gemv/" + std::string(ggml::traits(t).name) + "/" + sn +
                                             "/m:" + std::to_string(m) + "/threads:" + std::to_string(th);
                    benchmark::RegisterBenchmark(name.c_str(), bm_gemv, t, s, m, th, false)->UseRealTime();
                    benchmark::RegisterBenchmark(("gemv_q8" + name.substr(4)).c_str(), bm_gemv, t, s, m, th, true)
                        ->UseRealTime();
                }
        const std::set<std::string> int8_path = {"int8-ch", "int4-g128-sym", "int4-g128-asym", "int3-g128",
                                                 "int2-g64", "mxfp4", "nvfp4"};
        for (const char* f : {"int8-ch", "int4-g128-sym", "int4-g128-asym", "int3-g128", "int2-g64", "nf4-b64",
                              "fp4-b64", "mxfp4", "mxfp6-e2m3", "mxfp8-e4m3", "nvfp4", "fp8-e4m3-ch"})
            for (std::size_t m : {std::size_t{1}, std::size_t{4}, std::size_t{16}})
                for (unsigned th : {1u, 2u}) {
                    const std::string name = "gemv_planar/" + std::string(f) + "/" + sn + "/m:" + std::to_string(m) +
                                             "/threads:" + std::to_string(th);
                    benchmark::RegisterBenchmark(name.c_str(), bm_gemv_planar, std::string(f), s, m, th, false)
                        ->UseRealTime();
                    if (int8_path.count(f))
                        benchmark::RegisterBenchmark(("gemv_planar_q8" + name.substr(11)).c_str(), bm_gemv_planar,
                                                     std::string(f), s, m, th, true)
                            ->UseRealTime();
                }
    }
    return 0;
}();

}  // namespace

BENCHMARK_MAIN();
