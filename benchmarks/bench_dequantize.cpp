// Dequantize throughput on an LLM-sized weight matrix (11008 rows x 4096 cols,
// bigger than L3 once dequantized), with the machine's own read and copy
// bandwidth measured in the same binary as the yardstick.
// LOWBIT_ARCH=scalar|sse4_1|avx2|avx512bw picks the instruction set.

#include <benchmark/benchmark.h>

#include "bandwidth.hpp"

#include <lowbit/kernels/dequantize.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace lowbit::kernels;

constexpr std::size_t rows = 11008, cols = 4096;

using lowbit_bench::buffer;
using lowbit_bench::make_buffer;

std::size_t out_bytes(out_type t) { return rows * cols * (t == out_type::f32 ? 4 : 2); }

// One matrix's codes and params, shared by every case with the same layout.
struct matrix {
    int bits;
    std::size_t group;
    std::vector<std::uint8_t> codes;
    std::vector<float> scale, zero;

    matrix(int b, std::size_t g) : bits(b), group(g) {
        std::mt19937 rng(42);
        codes.resize(rows * ((cols * static_cast<std::size_t>(b) + 7) / 8));
        for (auto& c : codes) c = static_cast<std::uint8_t>(rng());
        std::uniform_real_distribution<float> sd(0.001f, 0.02f);
        for (std::size_t i = 0; i < rows * (cols / g); ++i) {
            scale.push_back(sd(rng));
            zero.push_back(static_cast<float>(1 << (b - 1)));
        }
    }
    std::size_t in_bytes(bool with_zero) const {
        return codes.size() + scale.size() * sizeof(float) * (with_zero ? 2 : 1);
    }
};

const matrix& get_matrix(int bits, std::size_t group) {
    static std::vector<std::unique_ptr<matrix>> cache;
    for (auto& m : cache)
        if (m->bits == bits && m->group == group) return *m;
    cache.push_back(std::make_unique<matrix>(bits, group));
    return *cache.back();
}

unsigned char* shared_output() {
    static buffer out = make_buffer(rows * cols * 4, 0);
    return out.get();
}

void report(benchmark::State& state, std::size_t in, std::size_t out) {
    const auto it = static_cast<std::int64_t>(state.iterations());
    state.SetBytesProcessed(it * static_cast<std::int64_t>(in + out));
    state.counters["Mw/s"] =
        benchmark::Counter(static_cast<double>(it) * static_cast<double>(rows * cols) / 1e6, benchmark::Counter::kIsRate);
    state.SetLabel(std::string(isa_name(active_isa())));
}

void affine_case(benchmark::State& state, int bits, std::size_t group, bool with_zero, out_type t) {
    const matrix& m = get_matrix(bits, group);
    affine_job j{m.codes.data(), (cols * static_cast<std::size_t>(bits) + 7) / 8, bits, rows, cols, group,
                 m.scale.data(), with_zero ? m.zero.data() : nullptr, nullptr, cols / group,
                 shared_output(), cols, t};
    for (auto _ : state) {
        dequantize_affine(j);
        benchmark::ClobberMemory();
    }
    report(state, m.in_bytes(with_zero), out_bytes(t));
}

void table_case(benchmark::State& state, int bits, std::size_t group, out_type t) {
    const matrix& m = get_matrix(bits, group);
    // NF4's code values (QLoRA), the usual 16-entry table.
    static const float nf4[16] = {-1.0f, -0.6961928f, -0.5250731f, -0.3949175f, -0.2844414f, -0.1847734f,
                                  -0.0910500f, 0.0f, 0.0795803f, 0.1609302f, 0.2461123f, 0.3379152f,
                                  0.4407098f, 0.5626170f, 0.7229568f, 1.0f};
    std::vector<float> table(std::size_t{1} << bits);
    for (std::size_t i = 0; i < table.size(); ++i) table[i] = bits == 4 ? nf4[i] : static_cast<float>(i) / 128.0f - 1.0f;
    table_job j{m.codes.data(), (cols * static_cast<std::size_t>(bits) + 7) / 8, bits, rows, cols, group,
                table.data(), m.scale.data(), cols / group, shared_output(), cols, t};
    for (auto _ : state) {
        dequantize_table(j);
        benchmark::ClobberMemory();
    }
    report(state, m.in_bytes(false), out_bytes(t));
}

// The same int4 matrix one row at a time into a reused 16 KiB buffer: output
// in L1, so this is the kernel's own speed without the DRAM write.
void affine_rows_case(benchmark::State& state, int bits, std::size_t group) {
    const matrix& m = get_matrix(bits, group);
    const std::size_t rb = (cols * static_cast<std::size_t>(bits) + 7) / 8;
    static buffer row = make_buffer(cols * 4, 0);
    for (auto _ : state) {
        for (std::size_t r = 0; r < rows; ++r) {
            affine_job j{m.codes.data() + r * rb, rb, bits, 1, cols, group, m.scale.data() + r * (cols / group),
                         m.zero.data() + r * (cols / group), nullptr, 0, row.get(), cols, out_type::f32};
            dequantize_affine(j);
        }
        benchmark::ClobberMemory();
    }
    report(state, m.in_bytes(true), out_bytes(out_type::f32));
}

void table_rows_case(benchmark::State& state) {
    const matrix& m = get_matrix(4, 64);
    static const float table[16] = {-1.0f, -0.7f, -0.5f, -0.4f, -0.3f, -0.2f, -0.1f, 0.0f,
                                    0.08f, 0.16f, 0.25f, 0.34f, 0.44f, 0.56f, 0.72f, 1.0f};
    const std::size_t rb = cols / 2;
    static buffer row = make_buffer(cols * 4, 0);
    for (auto _ : state) {
        for (std::size_t r = 0; r < rows; ++r) {
            table_job j{m.codes.data() + r * rb, rb, 4, 1, cols, 64, table, m.scale.data() + r * (cols / 64), 0,
                        row.get(), cols, out_type::f32};
            dequantize_table(j);
        }
        benchmark::ClobberMemory();
    }
    report(state, m.in_bytes(false), out_bytes(out_type::f32));
}

// Baseline: read as many bytes as the int4 g128 case's codes + scales + zeros.
void baseline_read(benchmark::State& state) {
    const std::size_t bytes = get_matrix(4, 128).in_bytes(true) / 64 * 64;
    static buffer src = make_buffer(bytes, 1);
    lowbit_bench::read_baseline(state, src.get(), bytes);
}

// Baseline: memcpy of the f32 output size (bytes/s counts the bytes copied once).
void baseline_memcpy(benchmark::State& state) {
    const std::size_t bytes = out_bytes(out_type::f32);
    static buffer src = make_buffer(bytes, 1);
    unsigned char* dst = shared_output();
    lowbit_bench::copy_baseline(state, dst, src.get(), bytes);
}

// Baseline: fill the f32 output size (write-only traffic).
void baseline_memset(benchmark::State& state) {
    const std::size_t bytes = out_bytes(out_type::f32);
    unsigned char* dst = shared_output();
    for (auto _ : state) {
        std::memset(dst, static_cast<int>(state.iterations() & 0xFF), bytes);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes));
}

}  // namespace

BENCHMARK(baseline_read)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(baseline_memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(baseline_memset)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(affine_case, int4_g128_zero_f32, 4, 128, true, out_type::f32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(affine_case, int4_g128_zero_f16, 4, 128, true, out_type::f16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(affine_case, int4_g128_zero_bf16, 4, 128, true, out_type::bf16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(affine_case, int8_per_row_f32, 8, cols, true, out_type::f32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(affine_case, int3_g128_zero_f32, 3, 128, true, out_type::f32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(affine_case, int2_g64_zero_f32, 2, 64, true, out_type::f32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(table_case, nf4_g64_f32, 4, 64, out_type::f32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(table_case, nf4_g64_bf16, 4, 64, out_type::bf16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(affine_rows_case, int4_g128_zero_f32_row_to_L1, 4, 128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(table_rows_case)->Name("table_rows_case/nf4_g64_f32_row_to_L1")->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
