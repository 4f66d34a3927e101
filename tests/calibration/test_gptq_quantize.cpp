// A checkpoint quantized with GPTQ from a calibration file
// (formats/gptq_quantize.hpp): the layers the file names become GPTQ layers
// holding exactly what calibration::gptq gives for that Hessian, everything
// else is copied byte for byte, quantize_config.json lands beside the output,
// the report's errors show GPTQ beating round-to-nearest on correlated
// inputs; bad calibration input is an error naming the layer and leaves no
// file behind.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <lowbit/formats/gptq_quantize.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "calibration_data.hpp"
#include "scratch_dir.hpp"

using namespace lowbit;

namespace {

using lowbit_test::normal;

// Low rank 8, every 61st channel (from 3) x15.
std::vector<float> correlated(std::size_t tokens, std::size_t in, std::mt19937& rng) {
    return lowbit_test::correlated(tokens, in, rng, 8, 61, 3);
}


std::vector<std::byte> bytes_of(const std::vector<float>& v) {
    std::vector<std::byte> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
}

std::vector<std::byte> f16_bytes(const std::vector<float>& v) {
    std::vector<std::byte> b(v.size() * 2);
    for (std::size_t i = 0; i < v.size(); ++i) {
        const std::uint16_t h = float_to_fp16(v[i]);
        std::memcpy(b.data() + 2 * i, &h, 2);
    }
    return b;
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

constexpr std::size_t out_q = 64, in_q = 256, out_o = 256, in_o = 64, tokens = 512;

struct fixture {
    lowbit_test::scratch_dir dir{"gptq_quantize"};
    std::mt19937 rng{11};
    std::vector<float> wq = normal(out_q * in_q, rng, 0.05f), wo = normal(out_o * in_o, rng, 0.05f);
    std::vector<float> bias = normal(out_q, rng), norm = normal(in_q, rng);
    std::vector<float> xq = correlated(tokens, in_q, rng), xo = correlated(tokens, in_o, rng);
    std::filesystem::path model = dir.path / "model.safetensors", out = dir.path / "q" / "out.safetensors";

    fixture() {
        std::filesystem::create_directories(dir.path / "q");
        safetensors::writer w(model);
        w.set_metadata("format", "pt");
        w.add("blk.q.weight", safetensors::dtype::f16, {out_q, in_q}, f16_bytes(wq));
        w.add("blk.q.bias", safetensors::dtype::f32, {out_q}, bytes_of(bias));
        w.add("blk.o.weight", safetensors::dtype::f32, {out_o, in_o}, bytes_of(wo));
        w.add("norm.weight", safetensors::dtype::f32, {in_q}, bytes_of(norm));
        w.finish();
        for (float& v : wq) v = fp16_to_float(float_to_fp16(v));  // as the file holds them
    }
    std::filesystem::path calib(const std::string& name,
                                const std::vector<std::tuple<std::string, std::vector<std::uint64_t>, std::vector<float>>>& t) {
        const auto p = dir.path / name;
        safetensors::writer w(p);
        for (const auto& [n, shape, v] : t) w.add(n, safetensors::dtype::f32, shape, bytes_of(v));
        w.finish();
        return p;
    }
};

std::vector<float> hessian_of(const std::vector<float>& x, std::size_t n_tokens, std::size_t in) {
    calibration::hessian h(in);
    h.add(matrix_view<const float>(x.data(), n_tokens, in));
    return h.matrix();
}

}  // namespace

TEST_CASE("gptq quantize: a checkpoint from activations and from Hessians", "[calibration][gptq][checkpoint]") {
    fixture fx;
    const bool act_order = GENERATE(false, true);
    const int bits = GENERATE(4, 3);
    CAPTURE(act_order, bits);
    gptq::quantize_options o;
    o.format.bits = bits;
    o.format.group = 64;
    o.format.desc_act = act_order;
    o.min_tokens = 256;
    // blk.q from its activations, blk.o from its Hessian (each GPTQ's exact input).
    const auto hq = hessian_of(fx.xq, tokens, in_q), ho = hessian_of(fx.xo, tokens, in_o);
    const auto calib = fx.calib("acts.safetensors",
                                {{"blk.q", {tokens, in_q}, fx.xq}, {"blk.o.hessian", {in_o, in_o}, ho}});
    const auto rep = gptq::quantize_checkpoint(fx.model, fx.out, calib, o);
    CHECK(rep.tensors == 4);
    CHECK(rep.quantized == 2);
    REQUIRE(rep.layers.size() == 2);

    const auto file = safetensors::file::open(fx.out);
    CHECK(file.find("blk.q.weight") == nullptr);
    CHECK(file.metadata().size() == 1);
    // Untouched tensors: byte for byte.
    const auto src = safetensors::file::open(fx.model);
    for (const char* kept : {"blk.q.bias", "norm.weight"}) {
        const auto a = src.at(kept).data(), b = file.at(kept).data();
        CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
    // quantize_config.json beside the output, and it reads back as the format.
    const auto cfg = slurp(fx.out.parent_path() / "quantize_config.json");
    CHECK(cfg == o.format.config_json() + "\n");
    const auto f = gptq::format_from_config(json::parse(cfg), "quantize_config.json");

    calibration::gptq_options go;
    go.bits = bits;
    go.group_size = 64;
    go.sym = false;  // the checkpoint format's default, as the reference's
    go.act_order = act_order;
    struct want {
        const char* name;
        const std::vector<float>& w;
        std::size_t rows, cols;
        const std::vector<float>& h;
        std::size_t tokens;
    };
    const want layers[] = {{"blk.o", fx.wo, out_o, in_o, ho, 0}, {"blk.q", fx.wq, out_q, in_q, hq, tokens}};
    for (std::size_t i = 0; i < 2; ++i) {
        const auto& L = layers[i];
        CAPTURE(L.name);
        const auto r = calibration::gptq(matrix_view<const float>(L.w.data(), L.rows, L.cols), L.h, go);
        const auto got = gptq::read_layer(file, L.name, f);
        CHECK(got.codes == r.codes);
        CHECK(got.g_idx == r.g_idx);
        for (std::size_t o2 = 0; o2 < L.rows; ++o2)
            for (std::size_t g = 0; g < r.groups; ++g) {
                CHECK(got.scale[g * L.rows + o2] == fp16_to_float(float_to_fp16(r.scale[o2 * r.groups + g])));
                CHECK(static_cast<float>(got.zero[g * L.rows + o2]) == r.zero[o2 * r.groups + g]);
            }
        const auto lr_at = std::find_if(rep.layers.begin(), rep.layers.end(),
                                        [&](const gptq::layer_report& x) { return x.layer == L.name; });
        REQUIRE(lr_at != rep.layers.end());
        const auto& lr = *lr_at;
        CHECK(lr.tokens == L.tokens);
        CHECK(lr.rows == L.rows);
        CHECK(lr.cols == L.cols);
        // Correlated inputs: GPTQ's output error well under round-to-nearest's.
        CHECK(lr.gptq_error > 0.0);
        CHECK(lr.gptq_error < 0.5 * lr.rtn_error);
    }
}

TEST_CASE("gptq quantize: bad calibration input names the layer and writes nothing", "[calibration][gptq][errors]") {
    fixture fx;
    gptq::quantize_options o;
    o.format.group = 64;
    o.min_tokens = 256;
    const auto check_fails = [&](const std::filesystem::path& calib, const std::string& what) {
        CAPTURE(what);
        CHECK_THROWS_WITH(gptq::quantize_checkpoint(fx.model, fx.out, calib, o), Catch::Contains(what));
        CHECK(std::filesystem::is_empty(fx.dir.path / "q"));
        for (const auto& e : fx.dir.entries()) CHECK(e.find(".tmp") == std::string::npos);
    };
    check_fails(fx.calib("missing.safetensors", {{"blk.k", {tokens, in_q}, fx.xq}}),
                "layer 'blk.k': the model has no tensor 'blk.k.weight'");
    check_fails(fx.calib("width.safetensors", {{"blk.q", {tokens, in_o}, std::vector<float>(tokens * in_o, 1.0f)}}),
                "layer 'blk.q': activations [512, 64] are not [tokens, 256]");
    auto nan = fx.xq;
    nan[300 * in_q + 17] = std::nanf("");
    check_fails(fx.calib("nan.safetensors", {{"blk.q", {tokens, in_q}, nan}}),
                "layer 'blk.q': activations: row 300, column 17 is NaN");
    check_fails(fx.calib("few.safetensors",
                         {{"blk.q", {100, in_q}, std::vector<float>(fx.xq.begin(), fx.xq.begin() + 100 * in_q)}}),
                "layer 'blk.q': 100 calibration tokens; at least 256 are needed");
    check_fails(fx.calib("both.safetensors",
                         {{"blk.q", {tokens, in_q}, fx.xq}, {"blk.q.hessian", {in_q, in_q}, hessian_of(fx.xq, tokens, in_q)}}),
                "layer 'blk.q' has both activations and a Hessian");
    check_fails(fx.calib("hshape.safetensors", {{"blk.o.hessian", {in_q, in_q}, std::vector<float>(in_q * in_q, 0.0f)}}),
                "layer 'blk.o': the Hessian is [256, 256], expected [64, 64]");
    check_fails(fx.calib("norm.safetensors", {{"norm", {tokens, in_q}, fx.xq}}),
                "layer 'norm': the model's 'norm.weight' is F32 [256], not a 2-D float weight");
    // The output may not be an input.
    const auto good = fx.calib("good.safetensors", {{"blk.q", {tokens, in_q}, fx.xq}});
    CHECK_THROWS_WITH(gptq::quantize_checkpoint(fx.model, good, good, o), Catch::Contains("is the calibration file"));
}
