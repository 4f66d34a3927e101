// formats/bnb_convert.hpp: bitsandbytes' NF4 / FP4 (plain and nested absmax)
// composed with the generic core (codebook<4> at per_group(blocksize), the
// nested absmax as double_quant<dynamic8>) give bnb::quantize_4bit's state
// byte for byte through to_bnb, and from_bnb reads a state back to the values
// of bnb::dequantize_4bit, for every block size and instruction set.
#include "catch.hpp"

#include <lowbit/formats/bnb.hpp>
#include <lowbit/formats/bnb_convert.hpp>
#include <lowbit/kernels/dispatch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
using kernels::isa;

namespace {

constexpr std::size_t n_rows = 16, n_cols = 4096;
const std::size_t blocksizes[] = {32, 64, 128, 256, 512, 1024, 2048, 4096};

struct data_set {
    std::string name;
    std::vector<float> w;
    bool tiny_blocks = false;  ///< has blocks with 0 < absmax < 1e-38 (the PyTorch rule's floor)
};

data_set normal(std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    data_set d{"N(0,1)", std::vector<float>(n_rows * n_cols)};
    for (auto& v : d.w) v = nd(rng);
    return d;
}

data_set lognormal(std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::lognormal_distribution<float> ln(0.0f, 1.0f);
    data_set d{"log-normal", std::vector<float>(n_rows * n_cols)};
    for (auto& v : d.w) v = ln(rng);
    return d;
}

data_set uniform(std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    data_set d{"uniform", std::vector<float>(n_rows * n_cols)};
    for (auto& v : d.w) v = u(rng);
    return d;
}

// Blocks of `unit` values (the block size under test) made to hit the
// rules' corners: zeros of both signs, constants, values exactly on NF4's and
// FP4's thresholds (absmax 1, so x * (1/absmax) is x), +a and -a both
// largest, huge values, and (with `tiny`) blocks whose 1/absmax overflows.
data_set adversarial(std::uint32_t seed, std::size_t unit, bool tiny) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    data_set d{tiny ? "adversarial" : "adversarial without tiny blocks", std::vector<float>(n_rows * n_cols), tiny};
    const auto nf4_book = nf4(), fp4_book = fp4();  // thresholds() views the codebook's storage
    const auto nf4_bounds = nf4_book.thresholds();
    const auto fp4_bounds = fp4_book.thresholds();
    const auto on_bound = [&] {
        const bool nf = rng() & 1;
        const auto b = nf ? nf4_bounds : fp4_bounds;
        float t = b[static_cast<std::size_t>(pick(0, static_cast<int>(b.size()) - 1))];
        if (!nf && (rng() & 1)) t = -t;
        switch (pick(0, 2)) {
        case 0: return t;
        case 1: return std::nextafter(t, INFINITY);
        default: return std::nextafter(t, -INFINITY);
        }
    };
    constexpr int kinds = 14;
    for (std::size_t b = 0; b < d.w.size() / unit; ++b) {
        float* x = d.w.data() + unit * b;
        const float sgn = (rng() & 1) ? 1.0f : -1.0f;
        const int kind = static_cast<int>((b + static_cast<std::size_t>(pick(0, 3))) % kinds);
        switch (kind) {
        case 0: for (std::size_t j = 0; j < unit; ++j) x[j] = 0.0f; break;
        case 1: for (std::size_t j = 0; j < unit; ++j) x[j] = (rng() & 1) ? 0.0f : -0.0f; break;
        case 2: for (std::size_t j = 0; j < unit; ++j) x[j] = -0.0f; break;
        case 3: {
            const float c = sgn * std::ldexp(1.0f + static_cast<float>(pick(0, 7)) / 8.0f, pick(-20, 20));
            for (std::size_t j = 0; j < unit; ++j) x[j] = c;
            break;
        }
        case 4:
        case 5: {  // ties: absmax 1, the rest on (or an ulp off) a threshold
            for (std::size_t j = 0; j < unit; ++j) x[j] = on_bound();
            x[static_cast<std::size_t>(pick(0, static_cast<int>(unit) - 1))] = sgn;
            break;
        }
        case 6: {  // +a and -a both of largest magnitude
            const float a = std::fabs(nd(rng)) + 4.0f;
            for (std::size_t j = 0; j < unit; ++j) x[j] = nd(rng);
            x[static_cast<std::size_t>(pick(0, static_cast<int>(unit / 2) - 1))] = sgn * a;
            x[static_cast<std::size_t>(pick(static_cast<int>(unit / 2), static_cast<int>(unit) - 1))] = -sgn * a;
            break;
        }
        case 7: for (std::size_t j = 0; j < unit; ++j) x[j] = nd(rng) * 1e37f; break;  // huge
        case 8: for (std::size_t j = 0; j < unit; ++j) x[j] = sgn * (3.4e38f - static_cast<float>(pick(0, 100)) * 1e31f); break;
        case 9: {  // one large value among tiny ones
            for (std::size_t j = 0; j < unit; ++j) x[j] = nd(rng) * 1e-30f;
            x[static_cast<std::size_t>(pick(0, static_cast<int>(unit) - 1))] = sgn * 500.0f;
            break;
        }
        case 10:  // 1/absmax overflows (subnormal absmax)
            if (tiny) {
                for (std::size_t j = 0; j < unit; ++j) x[j] = static_cast<float>(pick(-3, 3)) * 1e-45f;
                break;
            }
            [[fallthrough]];
        case 11:
            if (tiny) {
                for (std::size_t j = 0; j < unit; ++j) x[j] = nd(rng) * 1e-39f;
                break;
            }
            [[fallthrough]];
        case 12: for (std::size_t j = 0; j < unit; ++j) x[j] = sgn * std::fabs(nd(rng)); break;
        default: for (std::size_t j = 0; j < unit; ++j) x[j] = nd(rng) * std::ldexp(1.0f, pick(-30, 30)); break;
        }
    }
    return d;
}

// Every block of the tensor with the same absmax: the nested blocks' values
// less their mean are all 0 (the nested scale is 0).
data_set equal_absmax() {
    std::mt19937 rng(7);
    data_set d{"every absmax 1", std::vector<float>(n_rows * n_cols)};
    for (auto& v : d.w) v = (rng() & 1) ? 1.0f : -1.0f;
    return d;
}

data_set all_zero() { return {"all zero", std::vector<float>(n_rows * n_cols, 0.0f)}; }

std::vector<data_set> data_sets(std::size_t bs) {
    return {normal(1), lognormal(2), uniform(3), adversarial(static_cast<std::uint32_t>(4 + bs), bs, true),
            adversarial(static_cast<std::uint32_t>(5 + bs), bs, false), equal_absmax(), all_zero()};
}

bnb::quantize_4bit_options options(bnb::quant_type t, std::size_t bs, bool nested,
                                   bnb::kernel_rules rules = bnb::kernel_rules::cuda) {
    bnb::quantize_4bit_options o;
    o.type = t;
    o.blocksize = bs;
    o.compress_statistics = nested;
    o.rules = rules;
    return o;
}

bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

template <std::size_t N>
bool same_floats(const std::array<float, N>& a, const std::array<float, N>& b) {
    return std::memcmp(a.data(), b.data(), N * sizeof(float)) == 0;
}

// Every field of two states, floats bit for bit.
void require_same_state(const bnb::quant_state_4bit& a, const bnb::quant_state_4bit& b) {
    REQUIRE(a.type == b.type);
    REQUIRE(a.blocksize == b.blocksize);
    REQUIRE(a.dtype == b.dtype);
    REQUIRE(a.shape == b.shape);
    REQUIRE(a.packed == b.packed);
    REQUIRE(same_floats(a.absmax, b.absmax));
    REQUIRE(same_floats(a.code, b.code));
    REQUIRE(a.nested.has_value() == b.nested.has_value());
    if (a.nested) {
        REQUIRE(a.nested->blocksize == b.nested->blocksize);
        REQUIRE(std::bit_cast<std::uint32_t>(a.nested->offset) == std::bit_cast<std::uint32_t>(b.nested->offset));
        REQUIRE(a.nested->codes == b.nested->codes);
        REQUIRE(same_floats(a.nested->absmax, b.nested->absmax));
        REQUIRE(same_floats(a.nested->code, b.nested->code));
    }
}

template <class S>
std::vector<float> values_of(const quantized<S>& q) {
    std::vector<float> out(q.rows() * q.cols());
    q.dequantize(matrix_view<float>(out.data(), q.rows(), q.cols()));
    return out;
}

std::vector<std::uint16_t> half_values_of(const quantized<codebook<4>>& q, kernels::out_type t) {
    std::vector<std::uint16_t> out(q.rows() * q.cols());
    q.dequantize_to(out.data(), q.cols(), t);
    return out;
}

std::vector<std::uint16_t> bnb_half_values(const bnb::quant_state_4bit& s, kernels::out_type t) {
    std::vector<std::uint16_t> out(static_cast<std::size_t>(s.numel()));
    bnb::dequantize_4bit(s, out.data(), t);
    return out;
}

bnb::quant_state_4bit reference(const std::vector<float>& w, bnb::quant_type t, std::size_t bs, bool nested,
                                bnb::kernel_rules rules = bnb::kernel_rules::cuda) {
    return bnb::quantize_4bit(w, {n_rows, n_cols}, options(t, bs, nested, rules));
}

template <class Q>
void check_composition(const Q& base, bnb::quant_type t, std::size_t bs, bool nested) {
    auto threaded = base;
    threaded.threads = 3;
    for (const data_set& d : data_sets(bs)) {
        INFO("data " << d.name);
        const matrix_view<const float> w(d.w.data(), n_rows, n_cols);
        const std::vector<float> ones(n_cols, 1.0f);
        const auto want = reference(d.w, t, bs, nested);
        const auto want_values = bnb::dequantize_4bit(want);
        for (isa i : kernels::available_isas()) {
            kernels::set_active_isa(i);
            INFO("isa " << kernels::isa_name(i));
            // The single pass (or the double-quantization passes) ...
            const auto q = base.quantize(w);
            require_same_state(to_bnb(q), want);
            REQUIRE(same_floats(values_of(q), want_values));
            // ... the checks-first path (importance given and ignored), on threads.
            require_same_state(to_bnb(threaded.quantize(w, ones)), want);
            // bitsandbytes' state read back.
            const auto back = from_bnb(want);
            require_same_state(to_bnb(back), want);
            REQUIRE(same_floats(values_of(back), want_values));
            for (auto ot : {kernels::out_type::f16, kernels::out_type::bf16})
                REQUIRE(half_values_of(back, ot) == bnb_half_values(want, ot));
        }
        kernels::set_active_isa(kernels::available_isas().front());
        // The scheme's own decode is bitsandbytes' dequantize too.
        const auto back = from_bnb(want);
        std::vector<float> ref(d.w.size());
        back.dequantize_ref(matrix_view<float>(ref.data(), n_rows, n_cols));
        REQUIRE(same_floats(ref, want_values));
    }
}

}  // namespace

TEST_CASE("bitsandbytes NF4/FP4 through the core give quantize_4bit's state: plain absmax") {
    for (bnb::quant_type t : {bnb::quant_type::nf4, bnb::quant_type::fp4})
        for (std::size_t bs : blocksizes) {
            INFO(bnb::to_string(t) << " blocksize " << bs);
            check_composition(bnb_4bit_quantizer(t, bs), t, bs, false);
        }
}

TEST_CASE("bitsandbytes NF4/FP4 through the core give quantize_4bit's state: nested absmax") {
    for (bnb::quant_type t : {bnb::quant_type::nf4, bnb::quant_type::fp4})
        for (std::size_t bs : blocksizes) {
            INFO(bnb::to_string(t) << " blocksize " << bs << " nested");
            check_composition(bnb_4bit_nested_quantizer(t, bs), t, bs, true);
        }
}

TEST_CASE("bitsandbytes' CPU rules: NF4 through the core, but for blocks below the 1e-38 absmax floor") {
    for (std::size_t bs : blocksizes) {
        INFO("blocksize " << bs);
        const auto qz = bnb_4bit_quantizer(bnb::quant_type::nf4, bs, bnb::kernel_rules::cpu);
        for (const data_set& d : data_sets(bs)) {
            if (d.tiny_blocks) continue;
            INFO("data " << d.name);
            const auto want = reference(d.w, bnb::quant_type::nf4, bs, false, bnb::kernel_rules::cpu);
            for (isa i : kernels::available_isas()) {
                kernels::set_active_isa(i);
                INFO("isa " << kernels::isa_name(i));
                require_same_state(to_bnb(qz.quantize(matrix_view<const float>(d.w.data(), n_rows, n_cols))), want);
            }
        }
    }
    kernels::set_active_isa(kernels::available_isas().front());
    // Below the floor the PyTorch kernel scales by 1e38 rather than 1/absmax.
    std::vector<float> x(64, 0.0f);
    x[0] = 1e-40f;
    x[1] = 0.5e-40f;
    const auto want = bnb::quantize_4bit(x, {1, 64}, options(bnb::quant_type::nf4, 64, false, bnb::kernel_rules::cpu));
    const auto got = to_bnb(bnb_4bit_quantizer(bnb::quant_type::nf4, 64, bnb::kernel_rules::cpu)
                                .quantize(matrix_view<const float>(x.data(), 1, 64)));
    REQUIRE(got.absmax == want.absmax);
    REQUIRE(got.packed != want.packed);
    // FP4's PyTorch rule is no codebook.
    REQUIRE_THROWS_AS(bnb::scheme_4bit(bnb::quant_type::fp4, bnb::kernel_rules::cpu), lowbit::error);
}

TEST_CASE("quantizer(nf4(), per_group(b)) is bitsandbytes' rule but where a reciprocal is 0 * Inf") {
    const data_set d = normal(11);
    const matrix_view<const float> w(d.w.data(), n_rows, n_cols);
    for (bnb::quant_type t : {bnb::quant_type::nf4, bnb::quant_type::fp4}) {
        INFO(bnb::to_string(t));
        const codebook<4> s = t == bnb::quant_type::nf4 ? nf4() : fp4();
        require_same_state(to_bnb(quantizer(s, per_group(64)).quantize(w)), reference(d.w, t, 64, false));
        const auto dq = double_quant<dynamic8>{dynamic8{}, 256, true, false};
        require_same_state(to_bnb(quantizer(s, per_group(64), dq).quantize(w)), reference(d.w, t, 64, true));
    }
    // An all-zero block: nf4() codes 7 (0.0), bitsandbytes' CUDA kernel 0 (-1.0 * 0): the same values.
    const std::vector<float> z(64, 0.0f);
    const auto q = quantizer(nf4(), per_group(64)).quantize(matrix_view<const float>(z.data(), 1, 64));
    const auto want = bnb::quantize_4bit(z, {1, 64}, options(bnb::quant_type::nf4, 64, false));
    REQUIRE(to_bnb(q).packed == std::vector<std::uint8_t>(32, 0x77));
    REQUIRE(want.packed == std::vector<std::uint8_t>(32, 0x00));
    const auto a = values_of(q);
    const auto b = bnb::dequantize_4bit(want);
    for (std::size_t i = 0; i < 64; ++i) REQUIRE(a[i] == b[i]);
}

TEST_CASE("bitsandbytes' blocks run across rows: quantize the tensor as one row, give to_bnb its shape") {
    std::mt19937 rng(21);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(6 * 48);  // rows of 48 values, blocks of 32
    for (auto& v : x) v = nd(rng);
    for (bool nested : {false, true}) {
        bnb::quantize_4bit_options o;
        o.blocksize = 32;
        o.compress_statistics = nested;
        o.dtype = bnb::source_dtype::bfloat16;
        const auto want = bnb::quantize_4bit(x, {6, 48}, o);
        const matrix_view<const float> row(x.data(), 1, x.size());
        const auto q = nested ? to_bnb(bnb_4bit_nested_quantizer(bnb::quant_type::nf4, 32).quantize(row), {6, 48},
                                       bnb::source_dtype::bfloat16)
                              : to_bnb(bnb_4bit_quantizer(bnb::quant_type::nf4, 32).quantize(row), {6, 48},
                                       bnb::source_dtype::bfloat16);
        require_same_state(q, want);
        const auto back = from_bnb(want);  // [6, 48] is no matrix of whole blocks: one row
        REQUIRE(back.rows() == 1);
        REQUIRE(back.cols() == x.size());
        require_same_state(to_bnb(back, {6, 48}, bnb::source_dtype::bfloat16), want);
    }
}

TEST_CASE("to_bnb and from_bnb refuse what the other side cannot hold") {
    std::vector<float> x(2 * 128, 0.25f);
    const matrix_view<const float> w(x.data(), 2, 128);
    // A table that is not NF4's or FP4's, groups that are no bitsandbytes block size.
    REQUIRE_THROWS_AS(to_bnb(quantizer(iq4_nl(), per_group(32)).quantize(w)), lowbit::error);
    REQUIRE_THROWS_AS(to_bnb(quantizer(nf4(), per_group(16)).quantize(w)), lowbit::error);
    REQUIRE_THROWS_AS(to_bnb(quantizer(nf4(), per_input_channel()).quantize(w)), lowbit::error);
    // A shape of another size.
    REQUIRE_THROWS_AS(to_bnb(bnb_4bit_quantizer(bnb::quant_type::nf4).quantize(w), {3, 128}), lowbit::error);
    // A second level that is not the dynamic map's (an affine 8-bit one).
    const auto other = quantizer(nf4(), per_group(64), double_quant<affine<8, affine_mode::asymmetric>>{{}, 256, true, false})
                           .quantize(w);
    REQUIRE_THROWS_AS(to_bnb(other), lowbit::error);
    // A short last block, a quant_map of another type, a state of the wrong size.
    std::vector<float> y(100, 0.5f);
    const auto shortb = bnb::quantize_4bit(y, {100}, options(bnb::quant_type::nf4, 64, false));
    REQUIRE_THROWS_AS(from_bnb(shortb), lowbit::error);
    auto s = bnb::quantize_4bit(x, {2, 128}, options(bnb::quant_type::nf4, 64, true));
    REQUIRE_NOTHROW(from_bnb(s));
    REQUIRE_THROWS_AS(from_bnb(s, 4, 128), lowbit::error);
    REQUIRE_THROWS_AS(from_bnb(s, 8, 32), lowbit::error);
    s.nested->code[3] += 1e-3f;
    REQUIRE_THROWS_AS(from_bnb(s), lowbit::error);
    s.code = bnb::code_table(bnb::quant_type::fp4);
    REQUIRE_THROWS_AS(from_bnb(s), lowbit::error);
    // Empty tensors convert both ways.
    const auto empty = bnb_4bit_quantizer(bnb::quant_type::nf4).quantize(matrix_view<const float>(x.data(), 0, 128));
    const auto es = to_bnb(empty);
    REQUIRE(es.packed.empty());
    REQUIRE(from_bnb(es).rows() == 0);
}
