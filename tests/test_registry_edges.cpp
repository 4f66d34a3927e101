// Every registry format against the same bad inputs: the same error code for
// the same mistake, a message that says where, and no non-finite output from
// finite input. Plus ggml::find_invalid_block on hand-made blocks.
#include "catch.hpp"

#include <lowbit/core/numeric.hpp>
#include <lowbit/formats/ggml_blocks.hpp>
#include <lowbit/formats/ggml_kquants.hpp>
#include <lowbit/formats/ggml_validate.hpp>
#include <lowbit/metrics.hpp>
#include <lowbit/registry.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

// 256 columns divide into every format's groups and blocks.
constexpr std::size_t rows = 4, cols = 256;
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float flt_max = std::numeric_limits<float>::max();

std::vector<float> gaussian(std::uint64_t seed = 3) {
    std::vector<float> v(rows * cols);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 0.02f);
    for (float& x : v) x = n(rng);
    return v;
}

struct outcome {
    std::optional<errc> code;  ///< nullopt: no error
    std::string what;
};

template <class F>
outcome run(F&& f) {
    try {
        f();
        return {};
    } catch (const lowbit::error& e) {
        return {e.code(), e.what()};
    }
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("every format: a null data pointer with a non-zero shape is errc::invalid_argument") {
    for (const format& f : formats()) {
        INFO(f.name);
        const auto o = run([&] { (void)quantize(f, matrix_view<const float>(nullptr, rows, cols)); });
        REQUIRE(o.code == errc::invalid_argument);
        REQUIRE(contains(o.what, "null data pointer"));
        REQUIRE(contains(o.what, "4 x 256"));
    }
}

TEST_CASE("every format: zero rows (or columns) give an empty result, null pointer or not") {
    std::vector<float> w = gaussian();
    for (const format& f : formats()) {
        INFO(f.name);
        for (const float* p : {static_cast<const float*>(nullptr), static_cast<const float*>(w.data())}) {
            const auto q = quantize(f, matrix_view<const float>(p, 0, cols));
            REQUIRE(q->rows() == 0);
            REQUIRE(q->cols() == cols);
            q->dequantize(matrix_view<float>(nullptr, 0, cols));
            q->dequantize_to(nullptr, cols, kernels::out_type::f32);
            const auto e = quantize(f, matrix_view<const float>(p, rows, 0));
            REQUIRE(e->rows() == rows);
            REQUIRE(e->cols() == 0);
        }
    }
}

TEST_CASE("every format: a stride below the row or an extent past the address space is errc::invalid_argument") {
    std::vector<float> w = gaussian();
    // A view cannot be made with a short stride or an overflowing extent.
    const auto short_stride = run([&] { (void)matrix_view<const float>(w.data(), rows, cols, cols - 1); });
    REQUIRE(short_stride.code == errc::invalid_argument);
    REQUIRE(contains(short_stride.what, "stride 255"));
    const auto overflow =
        run([&] { (void)matrix_view<const float>(w.data(), std::size_t{1} << 60, cols, cols); });
    REQUIRE(overflow.code == errc::invalid_argument);
    // The plain (rows, cols) view does not check; every entry point does, before reading.
    const matrix_view<const float> huge(w.data(), std::numeric_limits<std::size_t>::max() / 64, cols);
    for (const format& f : formats()) {
        INFO(f.name);
        const auto o = run([&] { (void)quantize(f, huge); });
        REQUIRE(o.code == errc::invalid_argument);
        REQUIRE(contains(o.what, "overflows the address space"));
    }
}

TEST_CASE("every format: NaN, +Inf and -Inf are errc::non_finite naming the row and column") {
    const std::pair<float, const char*> bad[] = {
        {std::numeric_limits<float>::quiet_NaN(), "NaN"}, {inf, "+Inf"}, {-inf, "-Inf"}};
    for (const format& f : formats()) {
        INFO(f.name);
        for (const auto& [v, name] : bad) {
            INFO(name);
            std::vector<float> w = gaussian();
            w[2 * cols + 37] = v;
            for (unsigned threads : {1u, 0u}) {
                const auto o = run([&] { (void)quantize(f, matrix_view<const float>(w.data(), rows, cols), {}, {threads}); });
                REQUIRE(o.code == errc::non_finite);
                REQUIRE(contains(o.what, "row 2, column 37"));
                REQUIRE(contains(o.what, name));
            }
            // The same inside a strided view.
            std::vector<float> wide(rows * (cols + 16), 0.0f);
            for (std::size_t r = 0; r < rows; ++r) std::memcpy(&wide[r * (cols + 16)], &w[r * cols], cols * 4);
            const auto s = run([&] { (void)quantize(f, matrix_view<const float>(wide.data(), rows, cols, cols + 16)); });
            REQUIRE(s.code == errc::non_finite);
            REQUIRE(contains(s.what, "row 2, column 37"));
        }
    }
}

TEST_CASE("every format: huge finite values either throw naming the row or dequantize to finite values") {
    // Row 2 of an otherwise ordinary matrix holds each pattern.
    const std::vector<std::pair<const char*, std::function<float(std::size_t)>>> patterns = {
        {"+-3.4e38", [](std::size_t c) { return c % 2 ? 3.4e38f : -3.4e38f; }},
        {"+-FLT_MAX", [](std::size_t c) { return c % 3 ? flt_max : -flt_max; }},
        {"FLT_MAX constant", [](std::size_t) { return flt_max; }},
        {"-FLT_MAX constant", [](std::size_t) { return -flt_max; }},
        {"one 3.4e38 among small", [](std::size_t c) { return c == 70 ? 3.4e38f : 0.01f * static_cast<float>(c % 7); }},
        {"+-1e38", [](std::size_t c) { return c % 2 ? 1e38f : -1e38f; }},
        {"1e38 ramp", [](std::size_t c) { return 1e38f * (static_cast<float>(c % 9) / 8.0f) - 2e37f; }},
        {"1e30", [](std::size_t c) { return 1e30f * static_cast<float>(1 + c % 5); }},
        {"-1e30 constant", [](std::size_t) { return -1e30f; }},
        {"65504*8", [](std::size_t c) { return c % 4 == 0 ? 65504.0f * 8 : -65504.0f * static_cast<float>(c % 3); }},
        {"65520", [](std::size_t c) { return c % 2 ? 65520.0f : 1.0f; }},
        {"-1e6 spike", [](std::size_t c) { return c == 100 ? -1e6f : 0.01f * static_cast<float>(c % 5) - 0.02f; }},
        {"1e5", [](std::size_t c) { return 1e5f + static_cast<float>(c); }},
        {"1e5 and -1e5", [](std::size_t c) { return c % 2 ? 1e5f : -1e5f; }},
        {"2e9", [](std::size_t c) { return c % 3 ? 2e9f : 0.5f; }},
        {"tiny", [](std::size_t c) { return 1e-40f * static_cast<float>(c % 4); }},
    };
    for (const format& f : formats()) {
        INFO(f.name);
        for (const auto& [name, fn] : patterns) {
            INFO(name);
            std::vector<float> w = gaussian();
            for (std::size_t c = 0; c < cols; ++c) w[2 * cols + c] = fn(c);
            const matrix_view<const float> view(w.data(), rows, cols);
            std::unique_ptr<quantized_base> q;
            const auto o = run([&] { q = quantize(f, view); });
            if (o.code) {
                REQUIRE(*o.code == errc::invalid_argument);
                REQUIRE(contains(o.what, "row 2"));
                REQUIRE(contains(o.what, "column"));
                // Any thread count reports the same first position.
                const auto t = run([&] { (void)quantize(f, view, {}, {0}); });
                REQUIRE(t.what == o.what);
                continue;
            }
            std::vector<float> out(rows * cols, 0.0f);
            q->dequantize(matrix_view<float>(out.data(), rows, cols));
            for (std::size_t i = 0; i < out.size(); ++i) {
                INFO("row " << i / cols << ", column " << i % cols << ": " << w[i] << " -> " << out[i]);
                REQUIRE(std::isfinite(out[i]));
            }
            // The metrics of a finite reconstruction are finite.
            const auto s = compare(view, matrix_view<const float>(out.data(), rows, cols));
            REQUIRE(std::isfinite(s.rel_rmse));
        }
    }
}

TEST_CASE("the ggml formats: values beyond the blocks' range, and blocks ggml_validate_row_data rejects, are errors") {
    std::vector<float> w = gaussian();
    for (std::size_t c = 0; c < cols; ++c) w[1 * cols + c] = c % 2 ? 3.4e38f : -1.0f;
    for (const format& f : formats()) {
        if (f.family != "ggml") continue;
        INFO(f.name);
        const auto o = run([&] { (void)quantize(f, matrix_view<const float>(w.data(), rows, cols)); });
        REQUIRE(o.code == errc::invalid_argument);
        REQUIRE(contains(o.what, "row 1, column 1: 3.39999995e+38"));
        // Just inside the bound: blocks ggml accepts, or (where the fp16 min or
        // d still overflows) the same error, never a block ggml rejects.
        std::vector<float> edge = gaussian();
        const double limit = ggml::largest_representable(*ggml::type_from_name(f.name));
        REQUIRE(limit > 0);
        for (std::size_t c = 0; c < cols; ++c) edge[cols + c] = c == 3 ? static_cast<float>(limit * 0.99) : 1.0f;
        std::unique_ptr<quantized_base> q;
        const auto e = run([&] { q = quantize(f, matrix_view<const float>(edge.data(), rows, cols)); });
        if (e.code) {
            REQUIRE(e.code == errc::invalid_argument);
            REQUIRE(contains(e.what, "row 1, column"));
            continue;
        }
        const auto& g = dynamic_cast<const ggml::quantized_rows&>(*q);
        REQUIRE_FALSE(ggml::find_invalid_block(
            g.type, std::span<const std::byte>(reinterpret_cast<const std::byte*>(g.blocks.data()), g.blocks.size())));
    }
    // Inside Q4_1's range of d but below its fp16 min: m would be -Inf.
    std::vector<float> low = gaussian();
    for (std::size_t c = 0; c < cols; ++c) low[cols + c] = c % 2 ? -1e5f : -2e5f;
    const auto o = run([&] { (void)quantize(find_format("q4_1"), matrix_view<const float>(low.data(), rows, cols)); });
    REQUIRE(o.code == errc::invalid_argument);
    REQUIRE(contains(o.what, "row 1, columns 0"));
    // Row numbers count from the matrix's first row whatever the threads'
    // chunks, contiguous or strided.
    constexpr std::size_t tall = 48, stride = cols + 32;
    std::vector<float> big(tall * stride, 0.5f);
    for (std::size_t c = 0; c < cols; ++c) big[37 * stride + c] = c % 2 ? -1e5f : -2e5f;
    for (unsigned threads : {1u, 2u, 0u}) {
        INFO(threads);
        for (const std::size_t s : {stride, cols}) {
            const auto b = run([&] {
                (void)quantize(find_format("q4_1"), matrix_view<const float>(big.data(), tall, cols, s), {}, {threads});
            });
            REQUIRE(b.code == errc::invalid_argument);
            REQUIRE(contains(b.what, s == stride ? "row 37, columns 0" : "row 41, columns 160"));
        }
    }
}

TEST_CASE("every format: dequantize's bad outputs and row ranges get the same error") {
    const std::vector<float> w = gaussian();
    for (const format& f : formats()) {
        INFO(f.name);
        const auto q = quantize(f, matrix_view<const float>(w.data(), rows, cols));
        std::vector<float> out(rows * cols);
        REQUIRE(run([&] { q->dequantize(matrix_view<float>(nullptr, rows, cols)); }).code == errc::invalid_argument);
        REQUIRE(run([&] { q->dequantize(matrix_view<float>(out.data(), rows - 1, cols)); }).code ==
                errc::shape_mismatch);
        REQUIRE(run([&] { q->dequantize_to(nullptr, cols, kernels::out_type::f32); }).code == errc::invalid_argument);
        REQUIRE(run([&] { q->dequantize_to(out.data(), cols - 1, kernels::out_type::f32); }).code ==
                errc::shape_mismatch);
        const auto rev = run([&] { q->dequantize_to(out.data(), cols, kernels::out_type::f32, row_range{3, 1}); });
        REQUIRE(rev.code == errc::invalid_argument);
        REQUIRE(contains(rev.what, "[3, 1)"));
        const auto far = run([&] {
            q->dequantize_to(out.data(), std::numeric_limits<std::size_t>::max() / 2, kernels::out_type::f32);
        });
        REQUIRE(far.code == errc::invalid_argument);
        // A range past the end is empty, not an error; an empty range leaves the output alone.
        std::vector<float> keep(rows * cols, -5.0f);
        q->dequantize_to(keep.data(), cols, kernels::out_type::f32, row_range{rows + 3, rows + 9});
        q->dequantize_to(keep.data(), cols, kernels::out_type::f32, row_range{2, 2});
        for (float v : keep) REQUIRE(v == -5.0f);
    }
}

TEST_CASE("compare checks its views and names a non-finite value") {
    std::vector<float> a = gaussian(), b = gaussian(4);
    REQUIRE(run([&] { (void)compare(matrix_view<const float>(nullptr, rows, cols),
                                    matrix_view<const float>(b.data(), rows, cols)); })
                .code == errc::invalid_argument);
    REQUIRE(run([&] { (void)compare(matrix_view<const float>(a.data(), rows, cols),
                                    matrix_view<const float>(b.data(), rows, cols - 1)); })
                .code == errc::shape_mismatch);
    b[3 * cols + 9] = -inf;
    const auto o = run([&] { (void)compare(matrix_view<const float>(a.data(), rows, cols),
                                           matrix_view<const float>(b.data(), rows, cols)); });
    REQUIRE(o.code == errc::non_finite);
    REQUIRE(contains(o.what, "approx at row 3, column 9 is -Inf"));
}

// ---- ggml::find_invalid_block ----------------------------------------------

namespace {

template <class Block>
std::span<const std::byte> bytes_of(const std::vector<Block>& v) {
    return {reinterpret_cast<const std::byte*>(v.data()), v.size() * sizeof(Block)};
}

constexpr std::uint16_t h_inf = 0x7C00, h_ninf = 0xFC00, h_nan = 0x7E00, h_one = 0x3C00;

}  // namespace

TEST_CASE("find_invalid_block: finite blocks pass") {
    std::vector<ggml::block_q4_0> q40(3);
    for (auto& b : q40) b.d = h_one;
    REQUIRE_FALSE(ggml::find_invalid_block(ggml::type::q4_0, bytes_of(q40)));
    REQUIRE_FALSE(ggml::find_invalid_block(ggml::type::q4_0, {}));
    // 65504 is fp16's largest finite value.
    q40[1].d = 0x7BFF;
    REQUIRE_FALSE(ggml::find_invalid_block(ggml::type::q4_0, bytes_of(q40)));
    REQUIRE_NOTHROW(ggml::validate_row_data(ggml::type::q4_0, q40.data(), q40.size() * sizeof(q40[0])));
    // Integer types have nothing to check.
    const std::vector<std::int32_t> ints(4, -1);
    REQUIRE_FALSE(ggml::find_invalid_block(ggml::type::i32, bytes_of(ints)));
}

TEST_CASE("find_invalid_block: an Inf or NaN fp16 d, m or dmin names its block and field") {
    std::vector<ggml::block_q4_0> q40(4);
    for (auto& b : q40) b.d = h_one;
    q40[2].d = h_inf;
    auto p = ggml::find_invalid_block(ggml::type::q4_0, bytes_of(q40));
    REQUIRE(p);
    REQUIRE(p->block == 2);
    REQUIRE(p->field == "d");
    REQUIRE(p->byte_offset == 2 * sizeof(ggml::block_q4_0));
    REQUIRE(std::isinf(p->value));
    try {
        ggml::validate_row_data(ggml::type::q4_0, q40.data(), q40.size() * sizeof(q40[0]));
        FAIL("no error");
    } catch (const lowbit::error& e) {
        REQUIRE(e.code() == errc::non_finite);
        REQUIRE(contains(e.what(), "q4_0"));
        REQUIRE(contains(e.what(), "block 2: field d is +Inf"));
    }

    std::vector<ggml::block_q4_1> q41(2);
    for (auto& b : q41) b.d = b.m = h_one;
    q41[1].m = h_nan;
    p = ggml::find_invalid_block(ggml::type::q4_1, bytes_of(q41));
    REQUIRE((p && p->block == 1 && p->field == "m" && std::isnan(p->value)));

    std::vector<ggml::block_q4_k> q4k(3);
    for (auto& b : q4k) b.d = b.dmin = h_one;
    q4k[0].dmin = h_ninf;
    p = ggml::find_invalid_block(ggml::type::q4_k, bytes_of(q4k));
    REQUIRE((p && p->block == 0 && p->field == "dmin" && p->value < 0 && std::isinf(p->value)));
    REQUIRE(p->to_string() == "block 0: field dmin is -Inf (byte 2)");

    std::vector<ggml::block_q2_k> q2k(2);
    for (auto& b : q2k) b.d = b.dmin = h_one;
    q2k[1].d = h_nan;
    p = ggml::find_invalid_block(ggml::type::q2_k, bytes_of(q2k));
    REQUIRE((p && p->block == 1 && p->field == "d" && p->byte_offset == sizeof(ggml::block_q2_k) + 80));

    std::vector<ggml::block_q6_k> q6k(2);
    for (auto& b : q6k) b.d = h_one;
    q6k[1].d = h_inf;
    p = ggml::find_invalid_block(ggml::type::q6_k, bytes_of(q6k));
    REQUIRE((p && p->block == 1 && p->field == "d"));

    std::vector<ggml::block_iq4_xs> xs(2);
    for (auto& b : xs) b.d = h_one;
    xs[0].d = h_inf;
    p = ggml::find_invalid_block(ggml::type::iq4_xs, bytes_of(xs));
    REQUIRE((p && p->block == 0 && p->field == "d"));

    // Q8_K's d is fp32.
    std::vector<ggml::block_q8_k> q8k(2);
    for (auto& b : q8k) b.d = 1.0f;
    q8k[1].d = inf;
    p = ggml::find_invalid_block(ggml::type::q8_k, bytes_of(q8k));
    REQUIRE((p && p->block == 1 && p->field == "d"));

    // MXFP4: E8M0 0xFF is NaN.
    std::vector<ggml::block_mxfp4> mx(3);
    for (auto& b : mx) b.e = 127;
    mx[2].e = 0xFF;
    p = ggml::find_invalid_block(ggml::type::mxfp4, bytes_of(mx));
    REQUIRE((p && p->block == 2 && p->field == "e"));
}

TEST_CASE("find_invalid_block: F32, F16 and BF16 elements; sizes that are not whole blocks") {
    std::vector<float> f32(10, 1.0f);
    f32[7] = std::numeric_limits<float>::quiet_NaN();
    auto p = ggml::find_invalid_block(ggml::type::f32, bytes_of(f32));
    REQUIRE((p && p->block == 7 && p->field == "value"));
    std::vector<std::uint16_t> f16(10, h_one);
    f16[4] = h_ninf;
    p = ggml::find_invalid_block(ggml::type::f16, bytes_of(f16));
    REQUIRE((p && p->block == 4));
    std::vector<std::uint16_t> bf16(10, float_to_bf16(1.0f));
    REQUIRE_FALSE(ggml::find_invalid_block(ggml::type::bf16, bytes_of(bf16)));
    bf16[9] = 0x7F80;
    p = ggml::find_invalid_block(ggml::type::bf16, bytes_of(bf16));
    REQUIRE((p && p->block == 9));

    std::vector<ggml::block_q4_0> q40(2);
    const auto part = bytes_of(q40).first(sizeof(ggml::block_q4_0) + 3);
    REQUIRE(run([&] { (void)ggml::find_invalid_block(ggml::type::q4_0, part); }).code == errc::not_divisible);
    REQUIRE(run([&] { ggml::validate_row_data(ggml::type::q4_0, nullptr, 18); }).code == errc::invalid_argument);
    REQUIRE(run([&] { (void)ggml::find_invalid_block(static_cast<ggml::type>(1000), {}); }).code ==
            errc::invalid_argument);
}

TEST_CASE("find_invalid_block agrees with the blocks lowbit's ggml quantizer writes") {
    // What quantize_rows writes for ordinary rows passes; the registry refuses
    // rows whose blocks would not.
    const std::vector<float> w = gaussian();
    for (const auto t : {ggml::type::q4_0, ggml::type::q4_1, ggml::type::q8_0, ggml::type::q4_k, ggml::type::q6_k,
                         ggml::type::iq4_nl, ggml::type::iq4_xs}) {
        std::vector<unsigned char> blocks(rows * ggml::row_bytes(t, cols));
        ggml::quantize_rows(t, w.data(), blocks.data(), rows, cols);
        REQUIRE_FALSE(ggml::find_invalid_block(
            t, std::span<const std::byte>(reinterpret_cast<const std::byte*>(blocks.data()), blocks.size())));
    }
}
