// GPTQ into a compressed-tensors checkpoint (formats/ct_quantize.hpp) and the
// gptq_options it uses (given params, compressed-tensors' rounding, the
// dequantized value in the model's dtype): with a Hessian that moves no
// error GPTQ is compressed-tensors' round-to-nearest code for code; on
// correlated inputs it beats it; the pipeline quantizes the named layers
// with GPTQ, the other linears to nearest, leaves unfit ones in the ignore
// list; bad input names the layer and leaves no file. That the codes are
// llm-compressor's GPTQ's is tests/interop/test_ct.py.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <lowbit/formats/ct_quantize.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "calibration_data.hpp"
#include "scratch_dir.hpp"

using namespace lowbit;
namespace st = lowbit::safetensors;

namespace {

std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
    std::vector<std::byte> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
}

std::vector<float> identity(std::size_t n) {
    std::vector<float> h(n * n, 0.0f);
    for (std::size_t i = 0; i < n; ++i) h[i * n + i] = 1.0f;
    return h;
}

}  // namespace

TEST_CASE("GPTQ with given params and a Hessian that moves no error is compressed-tensors' rounding") {
    std::mt19937 rng(5);
    const std::size_t R = 32, C = 256;
    const auto w = lowbit_test::normal(R * C, rng, 0.05f);
    for (const char* fmt : {"ct-4b-g128", "ct-4b-g64-asym", "ct-8b-ch", "ct-3b-g32-asym"}) {
        INFO(fmt);
        const auto f = ct::parse_checkpoint_format(fmt);
        const auto rtn = ct::quantize_layer(matrix_view<const float>(w.data(), R, C), f, st::dtype::f32);
        const int half = 1 << (f.bits - 1);
        std::vector<float> zero(rtn.zero.size());
        for (std::size_t i = 0; i < zero.size(); ++i) zero[i] = static_cast<float>(rtn.zero[i] + half);
        calibration::gptq_options o;
        o.bits = f.bits;
        o.group_size = f.group;
        o.given_scale = rtn.scale;
        o.given_zero = zero;
        o.shift_then_round = true;
        o.act_order = true;
        const auto g = calibration::gptq(matrix_view<const float>(w.data(), R, C), identity(C), o);
        bool same = true;
        for (std::size_t i = 0; i < R * C; ++i) same &= static_cast<int>(g.codes[i]) - half == rtn.codes[i];
        CHECK(same);
        CHECK(g.scale == rtn.scale);
    }
}

TEST_CASE("GPTQ refuses given params that do not fit") {
    const std::vector<float> w(4 * 8, 0.1f);
    calibration::gptq_options o;
    o.group_size = 4;
    std::vector<float> s(8, 0.01f), z(8, 8.0f);
    o.given_scale = std::span<const float>(s.data(), 7);
    o.given_zero = z;
    CHECK_THROWS_WITH(calibration::gptq(matrix_view<const float>(w.data(), 4, 8), identity(8), o),
                      Catch::Contains("7 scales and 8 zeros given for 4 rows of 2 groups"));
    o.given_scale = s;
    z[3] = 8.5f;
    CHECK_THROWS_WITH(calibration::gptq(matrix_view<const float>(w.data(), 4, 8), identity(8), o),
                      Catch::Contains("given group 1 of row 1") && Catch::Contains("integer zero"));
    z[3] = 8.0f;
    s[2] = 0.0f;
    CHECK_THROWS_WITH(calibration::gptq(matrix_view<const float>(w.data(), 4, 8), identity(8), o),
                      Catch::Contains("given group 0 of row 1"));
}

TEST_CASE("compressed-tensors' rounding adds the signed zero point before it rounds") {
    namespace g = calibration::detail::gptq;
    // x / scale = 0.5 with zero point +1 (code units 9 of 0..15): 1.5 rounds to 2 (code 10); the
    // reference rounds 0.5 to 0 first (code 9).
    CHECK(g::code_shift_first(0.5f, 1.0f, 9.0f, 15) == 10.0f);
    CHECK(g::code(0.5f, 1.0f, 9.0f, 15) == 9.0f);
    // Away from halves they agree, clamps included.
    for (float x : {-20.0f, -3.2f, 0.3f, 2.7f, 40.0f}) CHECK(g::code_shift_first(x, 1.0f, 9.0f, 15) == g::code(x, 1.0f, 9.0f, 15));
}

namespace {

constexpr std::size_t kRows = 64, kIn = 256, kTokens = 512;

struct fixture {
    lowbit_test::scratch_dir dir{"ct_quantize"};
    std::mt19937 rng{7};
    std::vector<float> wq = lowbit_test::normal(kRows * kIn, rng, 0.05f), wk = lowbit_test::normal(kRows * kIn, rng, 0.05f),
                       wodd = lowbit_test::normal(8 * 200, rng, 0.05f), lm = lowbit_test::normal(16 * kIn, rng, 0.05f);
    std::vector<float> x = lowbit_test::correlated(kTokens, kIn, rng, 8, 61, 3);
    std::filesystem::path model = dir.path / "in" / "model.safetensors", out = dir.path / "out" / "model.safetensors";

    fixture() {
        std::filesystem::create_directories(dir.path / "in");
        std::filesystem::create_directories(dir.path / "out");
        st::writer w(model);
        w.add("blk.q_proj.weight", st::dtype::f32, {kRows, kIn}, f32_bytes(wq));
        w.add("blk.k_proj.weight", st::dtype::f32, {kRows, kIn}, f32_bytes(wk));
        w.add("blk.odd.weight", st::dtype::f32, {8, 200}, f32_bytes(wodd));
        w.add("lm_head.weight", st::dtype::f32, {16, kIn}, f32_bytes(lm));
        w.finish();
        std::ofstream(dir.path / "in" / "config.json") << "{\"architectures\": [\"LlamaForCausalLM\"]}";
    }
    std::filesystem::path calib(const std::string& layer, const std::vector<float>& acts, std::size_t cols) {
        const auto p = dir.path / (layer + ".calib.safetensors");
        st::writer w(p);
        w.add(layer, st::dtype::f32, {acts.size() / cols, cols}, f32_bytes(acts));
        w.finish();
        return p;
    }
};

}  // namespace

TEST_CASE("ct quantize_checkpoint: GPTQ on the named layers, round-to-nearest on the others") {
    fixture fx;
    ct::quantize_options o;
    o.format = ct::parse_checkpoint_format("ct-w4a16");
    o.format.act_order = true;
    o.threads = 2;
    const auto rep = ct::quantize_checkpoint(fx.model, fx.out, fx.calib("blk.q_proj", fx.x, kIn), o);
    REQUIRE(rep.layers.size() == 1);
    CHECK(rep.layers[0].layer == "blk.q_proj");
    CHECK(rep.layers[0].tokens == kTokens);
    CHECK(rep.layers[0].gptq_error < 0.6 * rep.layers[0].rtn_error);
    CHECK(rep.rounded == std::vector<std::string>{"blk.k_proj"});
    CHECK(rep.ignore == std::vector<std::string>{"lm_head", "blk.odd"});
    REQUIRE(rep.config_written == fx.dir.path / "out" / "config.json");
    std::ifstream cf(rep.config_written);
    std::stringstream ss;
    ss << cf.rdbuf();
    const auto cfg = json::parse(ss.str());
    CHECK(cfg.find("architectures") != nullptr);
    const auto c = ct::format_from_config(*cfg.find("quantization_config"), "config.json");
    CHECK((c.format.name() == "ct-4b-g128" && c.format.act_order));

    const auto f = st::file::open(fx.out);
    CHECK(f.find("blk.odd.weight") != nullptr);
    CHECK(f.find("lm_head.weight") != nullptr);
    const auto k = ct::read_layer(f, "blk.k_proj", c.format);
    CHECK(k.codes == ct::quantize_layer(matrix_view<const float>(fx.wk.data(), kRows, kIn), o.format, st::dtype::f32).codes);
    const auto q = ct::read_layer(f, "blk.q_proj", c.format);
    const auto q_rtn = ct::quantize_layer(matrix_view<const float>(fx.wq.data(), kRows, kIn), o.format, st::dtype::f32);
    CHECK(q.scale == q_rtn.scale);  // the params are fixed before GPTQ
    CHECK(q.codes != q_rtn.codes);
}

TEST_CASE("ct quantize_checkpoint refuses bad calibration by layer, leaving no file") {
    fixture fx;
    ct::quantize_options o;
    o.format = ct::parse_checkpoint_format("ct-w4a16");
    const auto refused = [&](const std::filesystem::path& calib, const std::string& expect) {
        INFO(expect);
        CHECK_THROWS_WITH(ct::quantize_checkpoint(fx.model, fx.out, calib, o), Catch::Contains(expect));
        CHECK(!std::filesystem::exists(fx.out));
        CHECK(!std::filesystem::exists(fx.out.parent_path() / "config.json"));
    };
    refused(fx.calib("lm_head", std::vector<float>(kTokens * kIn, 0.1f), kIn),
            "layer 'lm_head' is not one compressed-tensors quantizes");
    refused(fx.calib("blk.odd", std::vector<float>(kTokens * 200, 0.1f), 200),
            "layer 'blk.odd': the weight [8, 200] cannot take ct-4b-g128");
    refused(fx.calib("blk.q_proj", std::vector<float>(kTokens * 128, 0.1f), 128), "layer 'blk.q_proj'");
    refused(fx.calib("blk.q_proj", std::vector<float>(16 * kIn, 0.1f), kIn), "16 calibration tokens");
    auto nan = fx.x;
    nan[77] = NAN;
    refused(fx.calib("blk.q_proj", nan, kIn), "NaN");
}
