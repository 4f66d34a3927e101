#include "catch.hpp"

#include <lowbit/formats/ggml.hpp>
#include <lowbit/kernels/ggml_dequantize.hpp>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
using namespace lowbit::kernels;

namespace {

// Where each type keeps its scales: fp16 ('h') or f32 ('f') fields at byte offsets.
struct field {
    std::size_t offset;
    char kind;
};
struct type_case {
    ggml::type t;
    std::vector<field> fields;
};

const std::vector<type_case>& all_types() {
    using ggml::type;
    static const std::vector<type_case> v = {
        {type::q4_0, {{0, 'h'}}},           {type::q4_1, {{0, 'h'}, {2, 'h'}}},   {type::q5_0, {{0, 'h'}}},
        {type::q5_1, {{0, 'h'}, {2, 'h'}}}, {type::q8_0, {{0, 'h'}}},             {type::q8_1, {{0, 'h'}, {2, 'h'}}},
        {type::q2_k, {{80, 'h'}, {82, 'h'}}}, {type::q3_k, {{108, 'h'}}},       {type::q4_k, {{0, 'h'}, {2, 'h'}}},
        {type::q5_k, {{0, 'h'}, {2, 'h'}}}, {type::q6_k, {{208, 'h'}}},           {type::q8_k, {{0, 'f'}}},
        {type::iq4_nl, {{0, 'h'}}},         {type::iq4_xs, {{0, 'h'}}},           {type::tq1_0, {{52, 'h'}}},
        {type::tq2_0, {{64, 'h'}}},         {type::mxfp4, {}},
    };
    return v;
}

// Random bytes, with every scale field made finite (NaN and Inf scales are
// another test's business): subnormal halves stay in.
void randomize_blocks(const type_case& tc, unsigned char* row, std::size_t nblocks, std::mt19937& rng) {
    const auto tr = ggml::traits(tc.t);
    for (std::size_t i = 0; i < nblocks * tr.type_size; ++i) row[i] = static_cast<unsigned char>(rng());
    for (std::size_t b = 0; b < nblocks; ++b)
        for (const field& f : tc.fields) {
            unsigned char* p = row + b * tr.type_size + f.offset;
            if (f.kind == 'h') {
                std::uint16_t h;
                std::memcpy(&h, p, 2);
                if (((h >> 10) & 0x1F) == 0x1F) h = static_cast<std::uint16_t>(h & ~0x4000u);
                std::memcpy(p, &h, 2);
            } else {
                std::uint32_t x;
                std::memcpy(&x, p, 4);
                if (((x >> 23) & 0xFF) == 0xFF) x &= ~0x40000000u;
                std::memcpy(p, &x, 4);
            }
        }
}

struct matrix {
    std::size_t rows, cols, src_stride, out_stride;
    std::vector<unsigned char> src;
};

matrix make_matrix(const type_case& tc, std::size_t rows, std::size_t cols, bool quantized, std::mt19937& rng) {
    const auto tr = ggml::traits(tc.t);
    matrix m{rows, cols, ggml::row_bytes(tc.t, cols) + 7, cols + 5, {}};
    m.src.resize(rows * m.src_stride);
    for (auto& c : m.src) c = static_cast<unsigned char>(rng());  // stride padding stays random
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(cols);
    for (std::size_t r = 0; r < rows; ++r) {
        unsigned char* row = m.src.data() + r * m.src_stride;
        if (quantized) {
            // Rows of different magnitude, some with outliers and all-zero groups.
            const float scale = std::ldexp(1.0f, static_cast<int>(r % 7) - 3);
            for (std::size_t c = 0; c < cols; ++c) x[c] = nd(rng) * scale;
            if (r % 3 == 1) x[rng() % cols] *= 40.0f;
            if (r % 4 == 2) std::fill(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(tr.block_size), 0.0f);
            std::vector<unsigned char> tmp(ggml::row_bytes(tc.t, cols));
            tr.quantize(x.data(), tmp.data(), cols, nullptr);
            std::memcpy(row, tmp.data(), tmp.size());
        } else {
            randomize_blocks(tc, row, cols / tr.block_size, rng);
        }
    }
    return m;
}

std::vector<float> reference(const type_case& tc, const matrix& m) {
    const float sentinel = -12345.0f;
    std::vector<float> y(m.rows * m.out_stride, sentinel);
    const auto tr = ggml::traits(tc.t);
    // Rows start at odd addresses; the row functions want aligned blocks.
    std::vector<std::uint64_t> row((m.src_stride + 7) / 8);
    for (std::size_t r = 0; r < m.rows; ++r) {
        std::memcpy(row.data(), m.src.data() + r * m.src_stride, m.src_stride);
        tr.dequantize(row.data(), y.data() + r * m.out_stride, m.cols);
    }
    return y;
}

std::vector<float> run(isa i, const type_case& tc, const matrix& m) {
    std::vector<float> y(m.rows * m.out_stride, -12345.0f);
    const ggml_job j{tc.t, m.src.data(), m.src_stride, m.rows, m.cols, y.data(), m.out_stride};
    dispatch_to(i, dequantize_ggml_fn{}, j);
    return y;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string first_difference(const std::vector<float>& a, const std::vector<float>& b) {
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i]))
            return "at " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " + std::to_string(b[i]);
    return "none";
}

}  // namespace

TEST_CASE("ggml dequantize: every instruction set equals the scalar row functions bit for bit", "[kernels][ggml]") {
    std::mt19937 rng(2024);
    for (const type_case& tc : all_types()) {
        const auto tr = ggml::traits(tc.t);
        for (bool quantized : {true, false}) {
            for (std::size_t nb : {std::size_t{1}, std::size_t{3}, 4096 / tr.block_size}) {
                const matrix m = make_matrix(tc, 5, nb * tr.block_size, quantized, rng);
                const std::vector<float> want = reference(tc, m);
                for (isa i : available_isas()) {
                    INFO(std::string(tr.name) << " on " << isa_name(i) << (quantized ? " quantized" : " raw bytes")
                                              << ", cols " << m.cols);
                    const std::vector<float> got = run(i, tc, m);
                    INFO("first difference " << first_difference(got, want));
                    CHECK(same_bits(got, want));
                }
            }
        }
    }
}

TEST_CASE("ggml dequantize: the public entry point on every instruction set", "[kernels][ggml]") {
    std::mt19937 rng(7);
    const isa before = active_isa();
    for (const type_case& tc : all_types()) {
        const matrix m = make_matrix(tc, 3, 512, false, rng);
        const std::vector<float> want = reference(tc, m);
        for (isa i : available_isas()) {
            set_active_isa(i);
            std::vector<float> got(m.rows * m.out_stride, -12345.0f);
            dequantize_ggml({tc.t, m.src.data(), m.src_stride, m.rows, m.cols, got.data(), m.out_stride});
            INFO(ggml::traits(tc.t).name << " on " << isa_name(i));
            CHECK(same_bits(got, want));
        }
    }
    set_active_isa(before);
}

TEST_CASE("ggml dequantize: outputs big enough for streaming stores", "[kernels][ggml]") {
    // 16 MiB of 64-byte aligned output switches the SIMD paths to non-temporal stores.
    std::mt19937 rng(11);
    const std::size_t rows = 1024, cols = 4096;
    struct free_deleter {
        void operator()(void* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<float[], free_deleter> out(static_cast<float*>(std::aligned_alloc(64, rows * cols * 4)));
    for (ggml::type t : {ggml::type::q4_0, ggml::type::q8_0, ggml::type::q4_k, ggml::type::q6_k}) {
        const type_case* tc = nullptr;
        for (const auto& c : all_types())
            if (c.t == t) tc = &c;
        const auto tr = ggml::traits(t);
        const std::size_t rb = ggml::row_bytes(t, cols);
        std::vector<unsigned char> src(rows * rb);
        randomize_blocks(*tc, src.data(), rows * cols / tr.block_size, rng);
        std::vector<float> want(rows * cols);
        ggml::dequantize_rows(t, src.data(), want.data(), rows, cols);
        for (isa i : available_isas()) {
            std::memset(out.get(), 0xFF, rows * cols * 4);
            dispatch_to(i, dequantize_ggml_fn{}, ggml_job{t, src.data(), rb, rows, cols, out.get(), cols});
            INFO(tr.name << " on " << isa_name(i));
            CHECK(std::memcmp(out.get(), want.data(), rows * cols * 4) == 0);
        }
    }
}

TEST_CASE("ggml dequantize: bad jobs throw lowbit::error", "[kernels][ggml]") {
    std::vector<unsigned char> src(18 * 8, 0);
    std::vector<float> out(256, 0.0f);
    const ggml_job ok{ggml::type::q4_0, src.data(), 18 * 4, 2, 128, out.data(), 128};
    REQUIRE_NOTHROW(dequantize_ggml(ok));

    auto with = [&](auto change) {
        ggml_job j = ok;
        change(j);
        return j;
    };
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.type = static_cast<ggml::type>(99); })), lowbit::error);
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.type = ggml::type::iq2_xxs; })), lowbit::error);
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.type = ggml::type::f32; })), lowbit::error);
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.cols = 100; })), lowbit::error);
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.type = ggml::type::q4_k; })), lowbit::error);
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.src = nullptr; })), lowbit::error);
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.out = nullptr; })), lowbit::error);
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.src_stride = 18 * 4 - 1; })), lowbit::error);
    CHECK_THROWS_AS(dequantize_ggml(with([](ggml_job& j) { j.out_stride = 127; })), lowbit::error);
    // Nothing to do is not an error, even with null pointers.
    CHECK_NOTHROW(dequantize_ggml(with([](ggml_job& j) {
        j.rows = 0;
        j.src = nullptr;
        j.out = nullptr;
    })));
    // One row needs no stride.
    CHECK_NOTHROW(dequantize_ggml(with([](ggml_job& j) {
        j.rows = 1;
        j.src_stride = 0;
        j.out_stride = 0;
    })));
}
