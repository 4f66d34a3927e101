#include "catch.hpp"

#include <lowbit/algorithms/rtn.hpp>
#include <lowbit/double_quant.hpp>
#include <lowbit/quantizer.hpp>
#include <lowbit/scheme/affine.hpp>

#include <cmath>
#include <random>
#include <vector>

using namespace lowbit;

namespace {

std::vector<float> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed, float sd = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, sd);
    std::vector<float> w(rows * cols);
    for (float& x : w) x = n(rng);
    return w;
}

// The RTN bound: |x - dequant(x)| <= scale / 2 for an unclipped affine group,
// plus the rounding of the decode arithmetic itself (a few ulps of |x|).
template <class S>
void check_rtn_bound(const quantized<S>& q, const std::vector<float>& w, const std::vector<float>& back,
                     float steps = 0.5f) {
    for (std::size_t r = 0; r < q.rows(); ++r)
        for (std::size_t c = 0; c < q.cols(); ++c) {
            const float x = w[r * q.cols() + c], y = back[r * q.cols() + c];
            const float s = std::fabs(q.params_at(r, c).scale);
            const float slack = 4.0f * std::numeric_limits<float>::epsilon() * (std::fabs(x) + s);
            INFO("element (" << r << ", " << c << ") x=" << x << " y=" << y << " scale=" << s);
            REQUIRE(std::fabs(x - y) <= steps * s + slack);
        }
}

template <class S>
std::vector<float> dequant(const quantized<S>& q) {
    std::vector<float> back(q.rows() * q.cols());
    q.dequantize(matrix_view<float>(back.data(), q.rows(), q.cols()));
    return back;
}

template <class S>
std::vector<float> dequant_ref(const quantized<S>& q) {
    std::vector<float> back(q.rows() * q.cols());
    q.dequantize_ref(matrix_view<float>(back.data(), q.rows(), q.cols()));
    return back;
}

}  // namespace

TEST_CASE("every granularity keeps asymmetric RTN error within scale/2") {
    const std::size_t rows = 24, cols = 256;
    const auto w = random_matrix(rows, cols, 1);
    matrix_view<const float> v(w.data(), rows, cols);
    const granularity gs[] = {per_tensor(), per_channel(), per_input_channel(), per_group(32), per_group(256),
                              super_block(256, 32)};
    const std::size_t expect_params[] = {1, rows, cols, rows * cols / 32, rows, rows * cols / 32};
    for (std::size_t i = 0; i < std::size(gs); ++i) {
        INFO(to_string(gs[i]));
        quantizer<affine<4>> qz(affine<4>{}, gs[i]);
        const auto q = qz.quantize(v);
        REQUIRE(q.layout.count == expect_params[i]);
        REQUIRE(q.scale.size() == expect_params[i]);
        const auto back = dequant(q);
        check_rtn_bound(q, w, back);
        REQUIRE(back == dequant_ref(q));  // kernels == the scheme's own decode
    }
}

TEST_CASE("symmetric and float-offset modes, 2..8 bits, keep the RTN bound") {
    const std::size_t rows = 8, cols = 128;
    const auto w = random_matrix(rows, cols, 2, 0.05f);
    matrix_view<const float> v(w.data(), rows, cols);
    auto run = [&](auto scheme) {
        INFO(scheme.name());
        quantizer<decltype(scheme)> qz(scheme, per_group(64));
        const auto q = qz.quantize(v);
        const auto back = dequant(q);
        // MLX maps the larger-magnitude edge and zero exactly; rounding the
        // zero code can shorten the far end of the range by under one step.
        check_rtn_bound(q, w, back, decltype(scheme)::mode == affine_mode::mlx ? 1.5f : 0.5f);
        REQUIRE(back == dequant_ref(q));
    };
    run(affine<2>{});
    run(affine<3>{});
    run(affine<8>{});
    run(affine<4, affine_mode::symmetric>{});
    run(affine<8, affine_mode::symmetric>{});
    run(affine<3, affine_mode::asymmetric_float>{});
    run(affine<4, affine_mode::mlx>{});
}

TEST_CASE("a row that does not divide into groups is a clear error") {
    std::vector<float> w(3 * 100, 1.0f);
    quantizer<affine<4>> qz(affine<4>{}, per_group(64));
    try {
        (void)qz.quantize(matrix_view<const float>(w.data(), 3, 100));
        FAIL("no error");
    } catch (const lowbit::error& e) {
        REQUIRE(e.code() == errc::not_divisible);
        REQUIRE_THAT(e.what(), Catch::Matchers::Contains("100") && Catch::Matchers::Contains("64"));
    }
    quantizer<affine<4>> sb(affine<4>{}, super_block(256, 48));
    REQUIRE_THROWS_AS(sb.quantize(matrix_view<const float>(w.data(), 1, 256)), lowbit::error);
}

TEST_CASE("NaN and Inf weights are rejected with their position") {
    auto w = random_matrix(4, 64, 3);
    w[2 * 64 + 5] = std::numeric_limits<float>::quiet_NaN();
    quantizer<affine<4>> qz(affine<4>{}, per_group(32));
    try {
        (void)qz.quantize(matrix_view<const float>(w.data(), 4, 64));
        FAIL("no error");
    } catch (const lowbit::error& e) {
        REQUIRE(e.code() == errc::non_finite);
        REQUIRE_THAT(e.what(), Catch::Matchers::Contains("row 2, column 5 is NaN"));
    }
    w[2 * 64 + 5] = std::numeric_limits<float>::infinity();
    REQUIRE_THROWS_AS(qz.quantize(matrix_view<const float>(w.data(), 4, 64)), lowbit::error);
    std::vector<float> imp(7, 1.0f);
    w[2 * 64 + 5] = 0.0f;
    REQUIRE_THROWS_AS(qz.quantize(matrix_view<const float>(w.data(), 4, 64), imp), lowbit::error);
}

TEST_CASE("all-zero groups and an empty matrix") {
    std::vector<float> w(2 * 64, 0.0f);
    quantizer<affine<4, affine_mode::symmetric>> qz({}, per_group(32));
    const auto q = qz.quantize(matrix_view<const float>(w.data(), 2, 64));
    for (float x : dequant(q)) REQUIRE(x == 0.0f);
    const auto e = qz.quantize(matrix_view<const float>(w.data(), 0, 64));
    REQUIRE(e.rows() == 0);
    REQUIRE(e.bits_per_weight() == 0.0);
}

TEST_CASE("row ranges and strided views") {
    const std::size_t rows = 10, cols = 64, stride = 80;
    auto big = random_matrix(rows, stride, 4);
    matrix_view<const float> v(big.data(), rows, cols, stride);
    quantizer<affine<3>> qz(affine<3>{}, per_group(32));
    const auto q = qz.quantize(v);
    std::vector<float> full(rows * cols), part(rows * stride, -7.0f);
    q.dequantize(matrix_view<float>(full.data(), rows, cols));
    q.dequantize_to(part.data(), stride, kernels::out_type::f32, row_range{3, 6});
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < stride; ++c) {
            if (r >= 3 && r < 6 && c < cols)
                REQUIRE(part[r * stride + c] == full[r * cols + c]);
            else
                REQUIRE(part[r * stride + c] == -7.0f);  // untouched
        }
    std::vector<float> wrong(5 * cols);
    REQUIRE_THROWS_AS(q.dequantize(matrix_view<float>(wrong.data(), 5, cols)), lowbit::error);
}

TEST_CASE("bits per weight counts codes, scales and zero-points") {
    const auto w = random_matrix(16, 256, 5);
    matrix_view<const float> v(w.data(), 16, 256);
    affine<4, affine_mode::symmetric> sym;
    sym.scale_type = param_dtype::f16;
    REQUIRE(quantizer(sym, per_group(128)).quantize(v).bits_per_weight() == Approx(4.0 + 16.0 / 128));
    affine<4> asym;
    asym.scale_type = param_dtype::f16;
    REQUIRE(quantizer(asym, per_group(128)).quantize(v).bits_per_weight() == Approx(4.0 + 20.0 / 128));
    REQUIRE(quantizer(affine<8, affine_mode::symmetric>{}, per_channel()).quantize(v).bits_per_weight() ==
            Approx(8.0 + 32.0 / 256));
    REQUIRE(quantizer(affine<3>{}, per_group(64)).quantize(v).bits_per_weight() == Approx(3.0 + 35.0 / 64));
}

TEST_CASE("double quantization stores scales as second-level codes") {
    const std::size_t rows = 8, cols = 512;
    auto w = random_matrix(rows, cols, 6);
    matrix_view<const float> v(w.data(), rows, cols);
    // K-quant style: 4-bit codes in groups of 32, their scales as 6-bit codes
    // under one fp16 scale per super-block of 256.
    affine<6, affine_mode::symmetric> s2;
    s2.scale_type = param_dtype::f16;
    quantizer<affine<4, affine_mode::symmetric>, double_quant<decltype(s2)>> qz(
        {}, super_block(256, 32), double_quant<decltype(s2)>{s2, 0, false, true});
    const auto q = qz.quantize(v);
    REQUIRE(q.scales_q.has_value());
    const auto& sl = *q.scales_q;
    REQUIRE(sl.codes.size() == rows * cols / 32);
    REQUIRE(sl.scale.size() == rows * cols / 256);  // one per super-block
    for (std::size_t g = 0; g < q.scale.size(); ++g) {
        // The effective scale is exactly the second-level decode.
        affine_params p2{sl.scale[g / 8], 32.0f, 0.0f};
        REQUIRE(q.scale[g] == s2.decode(sl.codes[g], p2));
    }
    // Codes were chosen with the quantized scales: the RTN bound holds against them.
    check_rtn_bound(q, w, dequant(q));
    // 4 bits + 6-bit sub-scale per 32 + fp16 per 256.
    REQUIRE(q.bits_per_weight() == Approx(4.0 + 6.0 / 32 + 16.0 / 256));

    // bitsandbytes-style: subtract the mean, encode with the original scales.
    affine<8, affine_mode::symmetric> s3;
    quantizer<affine<4, affine_mode::symmetric>, double_quant<decltype(s3)>> qb(
        {}, per_group(64), double_quant<decltype(s3)>{s3, 256, true, false});
    const auto b = qb.quantize(v);
    quantizer<affine<4, affine_mode::symmetric>> plain({}, per_group(64));
    const auto p = plain.quantize(v);
    REQUIRE(b.codes == p.codes);  // same codes as without nesting
    REQUIRE(b.scales_q->has_offset);
    double mean = 0;
    for (float s : p.scale) mean += s;
    REQUIRE(b.scales_q->offset == Approx(mean / static_cast<double>(p.scale.size())));
}

TEST_CASE("fake_quantize equals quantize then dequantize; STE mask marks clipped values") {
    const std::size_t rows = 4, cols = 64;
    auto w = random_matrix(rows, cols, 7);
    matrix_view<const float> v(w.data(), rows, cols);
    affine<4> s;
    s.clip = 0.5f;  // clip half the range so some values saturate
    quantizer<affine<4>> qz(s, per_group(32));
    std::vector<float> fq(w.size()), mask(w.size());
    fake_quantize(qz, v, matrix_view<float>(fq.data(), rows, cols));
    const auto q = qz.quantize(v);
    REQUIRE(fq == dequant(q));
    ste_mask(q, v, matrix_view<float>(mask.data(), rows, cols));
    std::size_t clipped = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        const auto p = q.params_at(i / cols, i % cols);
        const float err = std::fabs(w[i] - fq[i]);
        if (mask[i] == 0.0f) {
            ++clipped;
            REQUIRE(err > 0.5f * p.scale);  // clipped values are the ones beyond the bound
        } else {
            REQUIRE(err <= 0.5f * p.scale * 1.0001f + 1e-6f);
        }
    }
    REQUIRE(clipped > 0);
    REQUIRE(clipped < w.size());
}

TEST_CASE("clipping search never does worse than plain RTN, and uses importance") {
    const std::size_t rows = 16, cols = 256;
    std::mt19937_64 rng(8);
    std::student_t_distribution<float> t(3.0f);
    std::vector<float> w(rows * cols);
    for (float& x : w) x = t(rng);
    matrix_view<const float> v(w.data(), rows, cols);
    quantizer<affine<3>> plain(affine<3>{}, per_group(64));
    quantizer<clip_search<affine<3>>> searched(clip_search<affine<3>>{}, per_group(64));
    const auto a = plain.quantize(v);
    const auto b = searched.quantize(v);
    const auto da = dequant(a), db = dequant(b);
    double ea = 0, eb = 0;
    for (std::size_t g = 0; g < rows * cols / 64; ++g) {
        double ga = 0, gb = 0;
        for (std::size_t k = 0; k < 64; ++k) {
            const std::size_t i = g * 64 + k;
            ga += (w[i] - da[i]) * (w[i] - da[i]);
            gb += (w[i] - db[i]) * (w[i] - db[i]);
        }
        REQUIRE(gb <= ga * (1 + 1e-9));
        ea += ga;
        eb += gb;
    }
    REQUIRE(eb < ea);  // heavy tails: clipping pays off overall

    // Importance: weight the first half of the columns 100x; the weighted error
    // of the importance-aware search is no worse than the unaware one's.
    std::vector<float> imp(cols, 1.0f);
    for (std::size_t c = 0; c < cols / 2; ++c) imp[c] = 100.0f;
    const auto bi = searched.quantize(v, imp);
    const auto dbi = dequant(bi);
    double wu = 0, wi = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        wu += imp[i % cols] * (w[i] - db[i]) * (w[i] - db[i]);
        wi += imp[i % cols] * (w[i] - dbi[i]) * (w[i] - dbi[i]);
    }
    REQUIRE(wi <= wu * (1 + 1e-9));
}

TEST_CASE("quantizing with several threads gives the same bytes as one") {
    const std::size_t rows = 70, cols = 256;
    const auto w = random_matrix(rows, cols, 9);
    matrix_view<const float> v(w.data(), rows, cols);
    quantizer<affine<4>> one(affine<4>{}, per_group(64));
    quantizer<affine<4>> many = one;
    many.threads = 3;
    const auto a = one.quantize(v);
    const auto b = many.quantize(v);
    REQUIRE(a.codes == b.codes);
    REQUIRE(a.scale == b.scale);
    REQUIRE(a.zero == b.zero);
}

#include <lowbit/scheme/minifloat.hpp>

TEST_CASE("STE mask of a minifloat scheme ignores the NaN/Inf codes of its table") {
    const std::size_t rows = 2, cols = 64;
    auto w = random_matrix(rows, cols, 10);
    matrix_view<const float> v(w.data(), rows, cols);
    mxfp8_e5m2 s;
    s.clip = 0.25f;  // the block scale comes from a quarter of the absmax: large values saturate
    quantizer<mxfp8_e5m2> qz(s, per_group(32));
    const auto q = qz.quantize(v);
    std::vector<float> mask(w.size());
    ste_mask(q, v, matrix_view<float>(mask.data(), rows, cols));
    std::size_t clipped = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        const float limit = 57344.0f * q.params_at(i / cols, i % cols).scale;
        REQUIRE((mask[i] == 0.0f) == (std::fabs(w[i]) > limit));
        clipped += mask[i] == 0.0f;
    }
    REQUIRE(clipped > 0);
}

#include <lowbit/core/numeric.hpp>
#include <lowbit/scheme/codebook.hpp>

TEST_CASE("NVFP4: E2M1 codes under E4M3 block scales under one fp32 tensor scale") {
    const std::size_t rows = 8, cols = 128;
    const auto w = random_matrix(rows, cols, 12, 0.02f);
    matrix_view<const float> v(w.data(), rows, cols);
    // NVIDIA's tensor scale, amax / (6 * 448) rounded once (the registry's nvfp4).
    quantizer<nvfp4_elements, double_quant<fp8_e4m3_amax>> qz({}, per_group(16),
                                                               double_quant<fp8_e4m3_amax>{{}, 0, false, true, 2688.0f});
    const auto q = qz.quantize(v);
    const auto& sl = *q.scales_q;
    REQUIRE(sl.scale.size() == 1);  // one tensor scale
    float amax = 0;
    for (float x : w) amax = std::max(amax, std::fabs(x));
    REQUIRE(sl.scale[0] == amax / 2688.0f);
    // Without amax_divisor: E4M3's amax / 448 fitted to the block scales amax / 6.
    const auto fitted = quantizer<nvfp4_elements, double_quant<fp8_e4m3_amax>>(
                            {}, per_group(16), double_quant<fp8_e4m3_amax>{{}, 0, false, true})
                            .quantize(v);
    REQUIRE(fitted.scales_q->scale[0] == amax / 6.0f / 448.0f);
    // One amax where the two differ in the last bit (3.734375 / 2688 rounds up).
    std::vector<float> one(cols, 0.5f);
    one[7] = 3.734375f;
    const matrix_view<const float> ov(one.data(), 1, cols);
    CHECK(qz.quantize(ov).scales_q->scale[0] == 3.734375f / 2688.0f);
    CHECK(3.734375f / 2688.0f != 3.734375f / 6.0f / 448.0f);
    for (std::size_t g = 0; g < q.scale.size(); ++g) {
        REQUIRE(q.scale[g] == fp8_e4m3_to_float(sl.codes[g]) * sl.scale[0]);
        for (std::size_t k = 0; k < 16; ++k) {
            const std::size_t r = g / (cols / 16), c = (g % (cols / 16)) * 16 + k;
            REQUIRE(q.code_at(r, c) == float_to_fp4_e2m1(w[r * cols + c] / q.scale[g]));
        }
    }
}

TEST_CASE("NVFP4 in two passes (largest magnitude, then fit, second level and codes a block at a time) on any threads") {
    // Rows split across threads meet the largest magnitude in one of them;
    // all-zero weights take the general path (a tensor scale of 0 is the
    // second-level fit's case).
    const std::size_t rows = 37, cols = 96;
    auto w = random_matrix(rows, cols, 14, 0.02f);
    for (std::size_t c = 0; c < cols; ++c) w[5 * cols + c] = 0.0f;  // a zero row: E4M3 code 0, FP4 code 0
    w[29 * cols + 17] = -3.0f;  // the largest, in a late row
    const matrix_view<const float> v(w.data(), rows, cols);
    const double_quant<fp8_e4m3_amax> dq{{}, 0, false, true, 2688.0f};
    quantizer<nvfp4_elements, double_quant<fp8_e4m3_amax>> qz({}, per_group(16), dq);
    const auto one = qz.quantize(v);
    REQUIRE(one.scales_q->scale.size() == 1);
    REQUIRE(one.scales_q->scale[0] == 3.0f / 2688.0f);
    REQUIRE(one.scales_q->param_bits == stored_param_bits(fp8_e4m3_amax{}));
    for (std::size_t g = 0; g < cols / 16; ++g) REQUIRE(one.scales_q->codes[5 * cols / 16 + g] == 0);
    for (unsigned threads : {2u, 3u, 8u}) {
        qz.threads = threads;
        const auto q = qz.quantize(v);
        REQUIRE(q.codes == one.codes);
        REQUIRE(q.scale == one.scale);
        REQUIRE(q.scales_q->codes == one.scales_q->codes);
        REQUIRE(q.scales_q->scale == one.scales_q->scale);
    }
    const std::vector<float> zeros(rows * cols, 0.0f);
    const auto z = qz.quantize(matrix_view<const float>(zeros.data(), rows, cols));
    REQUIRE(z.scales_q->scale.size() == 1);
    for (float s : z.scale) REQUIRE(s == 0.0f);
    std::vector<float> back(rows * cols, 1.0f);
    z.dequantize(matrix_view<float>(back.data(), rows, cols));
    for (float x : back) REQUIRE(x == 0.0f);
}

TEST_CASE("NVFP4's second level, encoded by the kernel, is the E4M3 scheme's own encode of the block scales") {
    // Rows from 1 down to 1e-7 of the largest: block scales over the tensor
    // scale in E4M3's normal and subnormal range and below it (code 0).
    const std::size_t rows = 8, cols = 4096;
    auto w = random_matrix(rows, cols, 13, 1.0f);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c) w[r * cols + c] *= std::pow(10.0f, -static_cast<float>(r));
    const matrix_view<const float> v(w.data(), rows, cols);
    const auto q = quantizer<nvfp4_elements, double_quant<fp8_e4m3_amax>>(
                       {}, per_group(16), double_quant<fp8_e4m3_amax>{{}, 0, false, true, 2688.0f})
                       .quantize(v);
    const auto plain = quantizer<nvfp4_elements>({}, per_group(16)).quantize(v);
    const auto& sl = *q.scales_q;
    const fp8_e4m3_amax e4m3{};
    std::size_t subnormal = 0, zero = 0;
    for (std::size_t g = 0; g < plain.scale.size(); ++g) {
        INFO("group " << g << " scale " << plain.scale[g]);
        const std::uint8_t want = e4m3.encode(plain.scale[g], {sl.scale[0]});
        REQUIRE(sl.codes[g] == want);
        subnormal += (want & 0x78) == 0 && (want & 7) != 0;
        zero += (want & 0x7F) == 0;
    }
    REQUIRE(subnormal > 0);
    REQUIRE(zero > 0);
}

TEST_CASE("bitsandbytes nested absmax: mean-subtracted dynamic 8-bit codes in blocks of 256") {
    const std::size_t rows = 16, cols = 2048;  // 512 absmax values: two nested blocks
    const auto w = random_matrix(rows, cols, 13, 0.02f);
    matrix_view<const float> v(w.data(), rows, cols);
    quantizer<codebook<4>, double_quant<dynamic8>> qz(nf4(), per_group(64),
                                                      double_quant<dynamic8>{dynamic8{}, 256, true, false});
    const auto q = qz.quantize(v);
    const auto& sl = *q.scales_q;
    REQUIRE(sl.scale.size() == 2);
    REQUIRE(sl.has_offset);
    const auto map = bnb_dynamic_map();
    std::vector<float> absmax(q.scale.size());
    for (std::size_t g = 0; g < absmax.size(); ++g) {
        float m = 0;
        for (std::size_t k = 0; k < 64; ++k) m = std::max(m, std::fabs(w[g * 64 + k]));
        absmax[g] = m;
    }
    for (std::size_t b = 0; b < 2; ++b) {
        float m = 0;
        for (std::size_t g = b * 256; g < (b + 1) * 256; ++g) m = std::max(m, std::fabs(absmax[g] - sl.offset));
        REQUIRE(sl.scale[b] == m);  // second-level absmax of the centred absmax values
    }
    for (std::size_t g = 0; g < absmax.size(); ++g)
        REQUIRE(q.scale[g] == lowbit::detail::unfused(map[sl.codes[g]] * sl.scale[g / 256]) + sl.offset);  // no FMA
    // Codes come from the unquantized absmax, as bitsandbytes does.
    const auto plain = quantizer<codebook<4>>(nf4(), per_group(64)).quantize(v);
    REQUIRE(q.codes == plain.codes);
}

TEST_CASE("the one float32 mean is correctly rounded where a plain double sum is not") {
    using lowbit::detail::mean_f32;
    // 2^60 + 1 - 2^60: a double sum loses the 1; the compensated sum keeps it.
    const float cancel[] = {0x1p60f, 1.0f, -0x1p60f};
    REQUIRE(mean_f32(cancel) == static_cast<float>(1.0 / 3.0));
    REQUIRE(mean_f32({}) == 0.0f);
    // Random absmax-like vectors against an exact rational mean: the sum of
    // floats in [2^-20, 4) is an integer multiple of 2^-43, held exactly in
    // a 64-bit integer.
    std::mt19937 rng(4);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int t = 0; t < 200; ++t) {
        std::vector<float> v(1 + rng() % 5000);
        for (auto& x : v) x = std::ldexp(1.0f + u(rng), -static_cast<int>(rng() % 20));
        std::uint64_t exact = 0;  // < 5000 * 2^45: fits
        for (float x : v) exact += static_cast<std::uint64_t>(std::ldexp(static_cast<double>(x), 43));
        // The float nearest exact / n (ties to even): compare against the two
        // neighbours of the candidate.
        const float m = mean_f32(v);
        const auto dist = [&](float c) {  // |c * n * 2^43 - exact| as a double (exact enough to order)
            const long double cn = static_cast<long double>(std::ldexp(static_cast<double>(c), 43)) *
                                   static_cast<long double>(v.size());
            return std::fabs(cn - static_cast<long double>(exact));
        };
        REQUIRE(dist(m) <= dist(std::nextafter(m, 0.0f)));
        REQUIRE(dist(m) <= dist(std::nextafter(m, 10.0f)));
    }
}
