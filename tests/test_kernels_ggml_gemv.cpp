#include "catch.hpp"
#include "gemv_test_util.hpp"

#include <lowbit/formats/ggml.hpp>
#include <lowbit/formats/ggml_view.hpp>
#include <lowbit/formats/gguf.hpp>
#include <lowbit/kernels/ggml_gemv.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

using namespace lowbit;
using namespace lowbit::kernels;
using lowbit_test::activations;
using lowbit_test::gemv_bound;
using lowbit_test::isa_reset;
using lowbit_test::make_x;

namespace {

const std::vector<ggml::type>& gemv_types() {
    using ggml::type;
    static const std::vector<type> v = {type::q4_0, type::q4_1, type::q5_0, type::q5_1,   type::q8_0,  type::q8_1,
                                        type::q2_k, type::q3_k, type::q4_k, type::q5_k,   type::q6_k,  type::q8_k,
                                        type::iq4_nl, type::iq4_xs, type::tq1_0, type::tq2_0, type::mxfp4};
    return v;
}

// A weight matrix of ggml rows at a stride with padding (random bytes between rows).
struct weights {
    ggml::type t;
    std::size_t rows, cols, stride;
    std::vector<unsigned char> bytes;
    ggml::rows_view view() const { return ggml::rows_view(t, bytes.data(), rows, cols, stride); }
};

enum class fill { quantized, zero, max_codes };

weights make_weights(ggml::type t, std::size_t rows, std::size_t cols, fill how, std::mt19937& rng) {
    const auto tr = ggml::traits(t);
    weights w{t, rows, cols, ggml::row_bytes(t, cols) + 5, {}};
    w.bytes.resize(rows * w.stride);
    for (auto& c : w.bytes) c = static_cast<unsigned char>(rng());
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(cols);
    std::vector<unsigned char> tmp(ggml::row_bytes(t, cols));
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t c = 0; c < cols; ++c) x[c] = nd(rng) * std::ldexp(1.0f, static_cast<int>(r % 5) - 2);
        if (r % 3 == 1) std::fill(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(tr.block_size), 0.0f);
        if (how == fill::zero) std::fill(x.begin(), x.end(), 0.0f);
        tr.quantize(x.data(), tmp.data(), cols, nullptr);
        if (how == fill::max_codes) {
            // Every byte set to all ones where the row's values stay finite
            // and modest (a scale byte so set would make them NaN or huge):
            // the largest codes each decoder reads, on the quantized scales.
            std::vector<float> probe(cols);
            for (std::size_t i = 0; i < tmp.size(); ++i) {
                const unsigned char was = tmp[i];
                tmp[i] = 0xFF;
                tr.dequantize(tmp.data(), probe.data(), cols);
                bool finite = true;
                for (float v : probe) finite = finite && std::isfinite(v) && std::fabs(v) < 1e6f;
                if (!finite) tmp[i] = was;
            }
        }
        std::memcpy(w.bytes.data() + r * w.stride, tmp.data(), tmp.size());
    }
    return w;
}

// Each W row dequantized by ggml's own row function (aligned copy).
std::vector<float> dequantized(const weights& w) {
    const auto tr = ggml::traits(w.t);
    std::vector<float> out(w.rows * w.cols);
    std::vector<std::uint64_t> row((w.stride + 7) / 8);
    for (std::size_t r = 0; r < w.rows; ++r) {
        std::memcpy(row.data(), w.bytes.data() + r * w.stride, w.stride);
        tr.dequantize(row.data(), out.data() + r * w.cols, w.cols);
    }
    return out;
}

double half_at(const unsigned char* p) {
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    return fp16_to_float(h);
}

// What one call gave (y, m rows ys apart, the rows outside [r0, r1) to be
// left at `sentinel`) against the exact sum over c of xd[mi][c] * wf[r][c]
// plus extra(mi, r) = {value, magnitude} plus the bias, within `bound`.
template <class Extra>
void compare(isa i, const weights& w, const std::vector<float>& xd, std::size_t m, const std::vector<float>& y,
             std::size_t ys, float sentinel, const std::vector<float>& bias, std::size_t r0, std::size_t r1,
             const char* path, Extra&& extra) {
    const std::vector<float> wf = dequantized(w);
    for (std::size_t mi = 0; mi < m; ++mi)
        for (std::size_t r = 0; r < w.rows; ++r) {
            const float got = y[mi * ys + r];
            if (r < r0 || r >= r1) {
                REQUIRE(got == sentinel);
                continue;
            }
            auto [exact, abs_sum] = extra(mi, r);
            for (std::size_t c = 0; c < w.cols; ++c) {
                const double p = static_cast<double>(xd[mi * w.cols + c]) * wf[r * w.cols + c];
                exact += p;
                abs_sum += std::fabs(p);
            }
            if (!bias.empty()) {
                exact += bias[r];
                abs_sum += std::fabs(bias[r]);
            }
            INFO(ggml::traits(w.t).name << " (" << path << ") on " << isa_name(i) << ": m " << mi << " of " << m
                                         << ", row " << r << " of " << w.rows << ", k " << w.cols);
            REQUIRE(std::isfinite(got));
            REQUIRE(std::fabs(got - exact) <= gemv_bound(i, w.cols, abs_sum));
        }
}

// The f32 path against the products of x and ggml's dequantized weights.
void check_product(isa i, const weights& w, const activations& x, const std::vector<float>& bias,
                   std::size_t r0 = 0, std::size_t r1 = static_cast<std::size_t>(-1)) {
    r1 = std::min(r1, w.rows);
    const float sentinel = -7777.0f;
    const std::size_t ys = w.rows + 2;
    std::vector<float> y(x.m * ys, sentinel);
    set_active_isa(i);
    gemv_ggml(w.view(), x.view(), matrix_view<float>(y.data(), x.m, w.rows, ys), {r0, r1}, bias);
    std::vector<float> xd(x.m * w.cols);
    for (std::size_t mi = 0; mi < x.m; ++mi)
        std::copy_n(x.data() + mi * x.stride, w.cols, xd.begin() + static_cast<std::ptrdiff_t>(mi * w.cols));
    compare(i, w, xd, x.m, y, ys, sentinel, bias, r0, r1, "f32 path",
            [](std::size_t, std::size_t) { return std::pair<double, double>{0.0, 0.0}; });
}

// The int8 path: x quantized for w's type, the result held to the exact sum
// of the products of w's and x's dequantized values (what the integer sums
// and their scales compute) within the same bound.
void check_product_q8(isa i, const weights& w, const activations& x, const std::vector<float>& bias,
                      std::size_t r0 = 0, std::size_t r1 = static_cast<std::size_t>(-1)) {
    r1 = std::min(r1, w.rows);
    const ggml_activations xq = quantize_activations(w.t, x.view());
    REQUIRE(xq.type_id() == *activation_type(w.t));
    std::vector<float> xd(x.m * w.cols);
    std::vector<std::uint64_t> tmp((xq.stride() + 7) / 8);
    for (std::size_t mi = 0; mi < x.m; ++mi) {
        std::memcpy(tmp.data(), xq.row(mi), xq.stride());
        ggml::traits(xq.type_id()).dequantize(tmp.data(), xd.data() + mi * w.cols, w.cols);
    }
    const float sentinel = -7777.0f;
    const std::size_t ys = w.rows + 1;
    std::vector<float> y(x.m * ys, sentinel);
    set_active_isa(i);
    gemv_ggml(w.view(), xq, matrix_view<float>(y.data(), x.m, w.rows, ys), {r0, r1}, bias);
    compare(i, w, xd, x.m, y, ys, sentinel, bias, r0, r1, "int8 path", [&](std::size_t mi, std::size_t r) {
        std::pair<double, double> e{0.0, 0.0};
        if (xq.type_id() != ggml::type::q8_1) return e;
        // Q4_1/Q5_1 times Q8_1: ggml takes m_w * s_x for the offset's part,
        // s_x = fp16(d_x * sum(q_x)) as the block stores it, in place of
        // m_w * sum(fp16(d_x) * q_x).
        const std::size_t wts = ggml::traits(w.t).type_size;
        for (std::size_t b = 0; b < w.cols / 32; ++b) {
            const unsigned char* wb = w.bytes.data() + r * w.stride + b * wts;
            const unsigned char* xb = xq.row(mi) + b * 36;
            const double m_w = half_at(wb + 2), d_x = half_at(xb), s_x = half_at(xb + 2);
            double sum_q = 0;
            for (int k = 0; k < 32; ++k) sum_q += static_cast<std::int8_t>(xb[4 + k]);
            e.first += m_w * (s_x - d_x * sum_q);
            e.second += std::fabs(m_w * s_x);
        }
        return e;
    });
}

bool has_int8_path(ggml::type t) { return activation_type(t).has_value(); }

}  // namespace

TEST_CASE("ggml gemv: every type and instruction set is the product of ggml's dequantized weights",
          "[kernels][ggml][gemv]") {
    isa_reset reset;
    std::mt19937 rng(77);
    for (ggml::type t : gemv_types()) {
        const std::size_t bs = ggml::traits(t).block_size;
        for (std::size_t k : {bs, 3 * bs, 4096 / bs * bs}) {
            const weights w = make_weights(t, 7, k, fill::quantized, rng);
            for (std::size_t m : {std::size_t{1}, std::size_t{3}, std::size_t{16}}) {
                const activations x = make_x(m, k, m == 3 ? 1 : 0, rng);
                for (isa i : available_isas()) {
                    check_product(i, w, x, {});
                    if (has_int8_path(t)) check_product_q8(i, w, x, {});
                }
            }
        }
    }
}

TEST_CASE("ggml gemv: all-zero and largest-code weights, bias, M of 5, row ranges", "[kernels][ggml][gemv]") {
    isa_reset reset;
    std::mt19937 rng(5);
    for (ggml::type t : gemv_types()) {
        const std::size_t k = 2 * std::max<std::size_t>(ggml::traits(t).block_size, 128);
        const activations x = make_x(5, k, 1, rng);
        std::vector<float> bias(9);
        for (auto& b : bias) b = static_cast<float>(rng() % 100) - 50.0f;
        for (fill f : {fill::zero, fill::max_codes}) {
            const weights w = make_weights(t, 9, k, f, rng);
            for (isa i : available_isas()) {
                check_product(i, w, x, bias);
                check_product(i, w, x, {}, 2, 7);
                if (has_int8_path(t)) {
                    check_product_q8(i, w, x, bias);
                    check_product_q8(i, w, x, {}, 2, 7);
                }
            }
        }
    }
}

TEST_CASE("ggml gemv: a tensor of a GGUF file, taken as a view without a copy", "[kernels][ggml][gemv][gguf]") {
    std::mt19937 rng(9);
    const weights w = make_weights(ggml::type::q4_k, 6, 512, fill::quantized, rng);
    std::vector<unsigned char> packed;
    for (std::size_t r = 0; r < w.rows; ++r)
        packed.insert(packed.end(), w.bytes.begin() + static_cast<std::ptrdiff_t>(r * w.stride),
                      w.bytes.begin() + static_cast<std::ptrdiff_t>(r * w.stride + ggml::row_bytes(w.t, w.cols)));
    gguf_writer gw;
    gw.add_tensor("blk.0.ffn_up.weight", {512, 6}, ggml::type::q4_k, std::as_bytes(std::span(packed)));
    const auto bytes = gw.write_to_memory();
    const auto f = read_gguf_from_memory(bytes);
    const ggml::rows_view v = f.view("blk.0.ffn_up.weight");
    REQUIRE(v.type_id() == ggml::type::q4_k);
    REQUIRE(v.rows() == 6);
    REQUIRE(v.cols() == 512);
    REQUIRE(static_cast<const void*>(v.data()) == static_cast<const void*>(f.tensor("blk.0.ffn_up.weight").data()));

    const activations x = make_x(2, 512, 0, rng);
    std::vector<float> a(2 * 6), b(2 * 6);
    gemv_ggml(v, x.view(), matrix_view<float>(a.data(), 2, 6));
    gemv_ggml(w.view(), x.view(), matrix_view<float>(b.data(), 2, 6));
    REQUIRE(a == b);
    gemv_ggml_parallel(v, x.view(), matrix_view<float>(b.data(), 2, 6), 2);
    REQUIRE(a == b);
}

TEST_CASE("ggml gemv: activation blocks made elsewhere give the same product", "[kernels][ggml][gemv]") {
    std::mt19937 rng(11);
    const weights w = make_weights(ggml::type::q6_k, 5, 512, fill::quantized, rng);
    const activations x = make_x(3, 512, 0, rng);
    const ggml_activations a = quantize_activations(w.t, x.view());
    // Packed blocks, as another library's from_float would hand them over.
    ggml_activations b;
    b.assign(ggml::type::q8_k, 3, 512, a.data());
    std::vector<float> ya(3 * 5), yb(3 * 5);
    gemv_ggml(w.view(), a, matrix_view<float>(ya.data(), 3, 5));
    gemv_ggml(w.view(), b, matrix_view<float>(yb.data(), 3, 5));
    REQUIRE(ya == yb);
    REQUIRE_THROWS_WITH(b.assign(ggml::type::q4_0, 3, 512, a.data()),
                        Catch::Contains("q4_0 is not an activation type (q8_0, q8_1, q8_K)"));
}

TEST_CASE("ggml gemv: fp16 and bf16 outputs are the fp32 results rounded once", "[kernels][ggml][gemv]") {
    isa_reset reset;
    std::mt19937 rng(21);
    for (ggml::type t : {ggml::type::q4_0, ggml::type::q4_1, ggml::type::q4_k, ggml::type::q6_k, ggml::type::iq4_xs}) {
        const weights w = make_weights(t, 11, 512, fill::quantized, rng);
        std::vector<float> bias(11);
        for (auto& b : bias) b = static_cast<float>(rng() % 100) - 50.0f;
        for (std::size_t m : {std::size_t{1}, std::size_t{3}, std::size_t{17}}) {
            // Values past fp16's range too: x scaled by 2^12 makes some outputs overflow it (to +-inf).
            activations x = make_x(m, 512, 1, rng);
            for (std::size_t c = 0; c < 512; c += 7) x.storage[1 + c] *= 4096.0f;
            const ggml_activations xq = quantize_activations(t, x.view());
            const std::size_t ys = 11 + 3;
            for (isa i : available_isas()) {
                set_active_isa(i);
                for (bool int8 : {false, true}) {
                    std::vector<float> y32(m * ys, -1.0f);
                    const matrix_view<float> v32(y32.data(), m, 11, ys);
                    if (int8) gemv_ggml(w.view(), xq, v32, {1, 10}, bias);
                    else gemv_ggml(w.view(), x.view(), v32, {1, 10}, bias);
                    for (out_type ot : {out_type::f16, out_type::bf16}) {
                        const std::uint16_t sentinel = 0x7E01;
                        std::vector<std::uint16_t> y16(m * ys, sentinel);
                        const matrix_view<std::uint16_t> v16(y16.data(), m, 11, ys);
                        if (int8) gemv_ggml(w.view(), xq, v16, ot, {1, 10}, bias);
                        else gemv_ggml(w.view(), x.view(), v16, ot, {1, 10}, bias);
                        for (std::size_t mi = 0; mi < m; ++mi)
                            for (std::size_t r = 0; r < 11; ++r) {
                                INFO(ggml::traits(t).name << (int8 ? " int8" : " f32") << " path, "
                                                          << (ot == out_type::f16 ? "f16" : "bf16") << " on "
                                                          << isa_name(i) << ": m " << mi << " of " << m << ", row " << r);
                                const float v = y32[mi * ys + r];
                                const std::uint16_t want = r < 1 || r >= 10 ? sentinel
                                                           : ot == out_type::f16 ? float_to_fp16(v)
                                                                                 : float_to_bf16(v);
                                REQUIRE(y16[mi * ys + r] == want);
                            }
                    }
                }
            }
        }
    }
    // Both threads' ranges, and the all-rows form.
    const weights w = make_weights(ggml::type::q8_0, 40, 256, fill::quantized, rng);
    const activations x = make_x(2, 256, 0, rng);
    std::vector<float> y32(2 * 40);
    std::vector<std::uint16_t> a(2 * 40), b(2 * 40);
    gemv_ggml(w.view(), x.view(), matrix_view<float>(y32.data(), 2, 40));
    gemv_ggml(w.view(), x.view(), matrix_view<std::uint16_t>(a.data(), 2, 40), out_type::bf16);
    gemv_ggml_parallel(w.view(), x.view(), matrix_view<std::uint16_t>(b.data(), 2, 40), out_type::bf16, 2);
    REQUIRE(a == b);
    for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == float_to_bf16(y32[i]));
    const ggml_activations xq = quantize_activations(w.t, x.view());
    gemv_ggml(w.view(), xq, matrix_view<std::uint16_t>(a.data(), 2, 40), out_type::f16);
    gemv_ggml_parallel(w.view(), xq, matrix_view<std::uint16_t>(b.data(), 2, 40), out_type::f16, 2);
    REQUIRE(a == b);
    REQUIRE_THROWS_WITH(gemv_ggml(w.view(), x.view(), matrix_view<std::uint16_t>(a.data(), 2, 40), out_type::f32),
                        Catch::Contains("a y of 16-bit elements is fp16 or bf16"));
}

TEST_CASE("ggml gemv: bad shapes and types are errors naming what is wrong", "[kernels][ggml][gemv][errors]") {
    std::mt19937 rng(3);
    const weights w = make_weights(ggml::type::q8_0, 4, 64, fill::quantized, rng);
    const activations x = make_x(2, 64, 0, rng);
    std::vector<float> y(2 * 4);
    const auto msg = [](auto&& f) {
        try {
            f();
        } catch (const lowbit::error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK_THAT(msg([&] { gemv_ggml(w.view(), make_x(2, 32, 0, rng).view(), matrix_view<float>(y.data(), 2, 4)); }),
               Catch::Contains("x has 32 columns, the weights' rows 64 values"));
    CHECK_THAT(msg([&] { gemv_ggml(w.view(), x.view(), matrix_view<float>(y.data(), 2, 3)); }),
               Catch::Contains("y is 2 x 3, the product is 2 x 4"));
    std::vector<float> bias(3);
    CHECK_THAT(msg([&] { gemv_ggml(w.view(), x.view(), matrix_view<float>(y.data(), 2, 4), all_rows, bias); }),
               Catch::Contains("bias has 3 values for 4 weight rows"));
    std::vector<float> f32(4 * 64);
    CHECK_THAT(msg([&] {
                   gemv_ggml(ggml::rows_view(ggml::type::f32, f32.data(), 4, 64), x.view(),
                             matrix_view<float>(y.data(), 2, 4));
               }),
               Catch::Contains("no GEMV for weights of ggml type f32"));
    const ggml_activations xk = quantize_activations(ggml::type::q4_k, make_x(2, 256, 0, rng).view());
    CHECK_THAT(msg([&] { gemv_ggml(w.view(), xk, matrix_view<float>(y.data(), 2, 4)); }),
               Catch::Contains("the activations are q8_K blocks; q8_0 weights take q8_0"));
    CHECK_THAT(msg([&] { (void)quantize_activations(ggml::type::q8_1, x.view()); }),
               Catch::Contains("no int8 path for weights of ggml type q8_1"));
    std::vector<float> bad(2 * 64, 1.0f);
    bad[64 + 5] = std::nanf("");
    CHECK_THAT(msg([&] { (void)quantize_activations(ggml::type::q4_0, matrix_view<const float>(bad.data(), 2, 64)); }),
               Catch::Contains("x row 1"));
    CHECK_THAT(msg([&] { (void)ggml::rows_view(ggml::type::q4_k, w.bytes.data(), 4, 100); }),
               Catch::Contains("100 values per row are not a whole number of q4_K blocks of 256"));
    CHECK_THAT(msg([&] { (void)ggml::rows_view(ggml::type::q8_0, w.bytes.data(), 4, 64, 60); }),
               Catch::Contains("row stride 60 bytes is less than a q8_0 row of 64 values (68 bytes)"));
    CHECK_THAT(msg([&] {
                   (void)ggml::rows_view(ggml::type::q8_0, std::as_bytes(std::span(w.bytes)).first(100), 4, 64);
               }),
               Catch::Contains("needs 272 bytes, the memory given holds 100"));
    CHECK_THAT(msg([&] { (void)ggml::rows_view(ggml::type::q8_0, nullptr, 4, 64); }), Catch::Contains("null data"));
}
