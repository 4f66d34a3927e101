// A Llama-style block quantized with AWQ from a calibration file
// (formats/awq_quantize.hpp): AutoAWQ's four groups found by name, the
// layers that share a named layer's input quantized with it, 1/s folded
// into the norms and into the rows of v_proj and up_proj so that each
// quantized layer, read back, stands for the original weight; errors below
// round-to-nearest's; other tensors copied byte for byte; bad input is an
// error naming the layer and leaves no file.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <lowbit/formats/awq_quantize.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "calibration_data.hpp"
#include "scratch_dir.hpp"

using namespace lowbit;

namespace {

using lowbit_test::normal;

std::vector<std::byte> bytes_of(const std::vector<float>& v) {
    std::vector<std::byte> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
}

constexpr std::size_t H = 128, I = 256, T = 600;
const std::string P = "model.layers.0.";

struct fixture {
    lowbit_test::scratch_dir dir{"awq_quantize"};
    std::mt19937 rng{21};
    std::map<std::string, std::vector<float>> w;
    std::map<std::string, std::vector<std::uint64_t>> shape;
    std::map<std::string, std::vector<float>> x;  // activations by layer
    std::filesystem::path model = dir.path / "model.safetensors", out = dir.path / "out.safetensors";

    void add(const std::string& n, std::vector<std::uint64_t> s, float sd) {
        std::size_t count = 1;
        for (auto d : s) count *= static_cast<std::size_t>(d);
        w[n] = normal(count, rng, sd);
        shape[n] = std::move(s);
    }
    fixture() {
        add("model.embed_tokens.weight", {32, H}, 1.0f);
        add(P + "input_layernorm.weight", {H}, 1.0f);
        for (const char* l : {"q_proj", "k_proj", "v_proj", "o_proj"}) add(P + "self_attn." + l + ".weight", {H, H}, 0.05f);
        add(P + "self_attn.v_proj.bias", {H}, 0.1f);  // takes o_proj's 1/s with v_proj's rows
        add(P + "post_attention_layernorm.weight", {H}, 1.0f);
        add(P + "mlp.gate_proj.weight", {I, H}, 0.05f);
        add(P + "mlp.up_proj.weight", {I, H}, 0.05f);
        add(P + "mlp.down_proj.weight", {H, I}, 0.05f);
        add("model.norm.weight", {H}, 1.0f);
        safetensors::writer wr(model);
        wr.set_metadata("format", "pt");
        for (const auto& [n, v] : w) wr.add(n, safetensors::dtype::f32, shape[n], bytes_of(v));
        wr.finish();
        x[P + "self_attn.q_proj"] = lowbit_test::correlated(T, H, rng, 8, 29, 4);
        x[P + "self_attn.o_proj"] = lowbit_test::correlated(T, H, rng, 8, 31, 6);
        x[P + "mlp.gate_proj"] = lowbit_test::correlated(T, H, rng, 8, 37, 1);
        x[P + "mlp.down_proj"] = lowbit_test::correlated(T, I, rng, 8, 41, 2);
    }
    std::filesystem::path calib(const std::vector<std::string>& layers, std::size_t tokens = T) {
        const auto p = dir.path / "acts.safetensors";
        safetensors::writer wr(p);
        for (const auto& l : layers) {
            const std::size_t in = x[l].size() / T;
            wr.add(l, safetensors::dtype::f32, {tokens, in},
                   bytes_of(std::vector<float>(x[l].begin(), x[l].begin() + static_cast<std::ptrdiff_t>(tokens * in))));
        }
        wr.finish();
        return p;
    }
};

// ||X (W - W')^T||^2 / ||X W^T||^2
double rel_error(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& wq,
                 std::size_t rows, std::size_t cols) {
    double num = 0.0, den = 0.0;
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t r = 0; r < rows; ++r) {
            double a = 0.0, b = 0.0;
            for (std::size_t c = 0; c < cols; ++c) {
                a += static_cast<double>(x[t * cols + c]) * w[r * cols + c];
                b += static_cast<double>(x[t * cols + c]) * wq[r * cols + c];
            }
            num += (a - b) * (a - b);
            den += a * a;
        }
    return num / den;
}

}  // namespace

TEST_CASE("awq quantize: a Llama block, groups by name, scales folded", "[calibration][awq][checkpoint]") {
    fixture fx;
    awq::quantize_options o;
    o.format.group = 64;
    {
        std::ofstream cfg(fx.dir.path / "config.json");
        cfg << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 128})";
    }
    std::filesystem::create_directories(fx.dir.path / "q");
    fx.out = fx.dir.path / "q" / "model.safetensors";
    const std::vector<std::string> named = {P + "self_attn.q_proj", P + "self_attn.o_proj", P + "mlp.gate_proj",
                                            P + "mlp.down_proj"};
    const auto rep = awq::quantize_checkpoint(fx.model, fx.out, fx.calib(named), o);
    CHECK(rep.tensors == 12);
    CHECK(rep.quantized == 7);  // k, v and up with the layers named beside them
    CHECK(rep.folded == std::vector<std::string>{P + "input_layernorm.weight", P + "post_attention_layernorm.weight",
                                                 P + "self_attn.v_proj.bias"});
    REQUIRE(rep.layers.size() == 7);
    REQUIRE(rep.scales.size() == 4);

    // config.json beside the output: the model's, with the quantization config.
    CHECK(rep.config_written == fx.dir.path / "q" / "config.json");
    const auto cfg = json::parse([&] {
        std::ifstream f(rep.config_written);
        return std::string(std::istreambuf_iterator<char>(f), {});
    }());
    CHECK(cfg["architectures"][0].as_string() == "LlamaForCausalLM");
    CHECK(awq::format_from_config(cfg["quantization_config"], "config.json").group == 64);

    const auto file = safetensors::file::open(fx.out);
    const auto src = safetensors::file::open(fx.model);
    for (const char* kept : {"model.embed_tokens.weight", "model.norm.weight"}) {
        const auto a = src.at(kept).data(), b = file.at(kept).data();
        CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
    // The norms carry 1/s.
    const auto& s_qkv = rep.scales.at(P + "input_layernorm");
    const auto& s_mlp = rep.scales.at(P + "post_attention_layernorm");
    const auto& s_o = rep.scales.at(P + "self_attn.v_proj");
    const auto& s_down = rep.scales.at(P + "mlp.up_proj");
    const auto n1 = safetensors::finite_floats(file.at(P + "input_layernorm.weight"));
    for (std::size_t c = 0; c < H; ++c) REQUIRE(n1[c] == fx.w[P + "input_layernorm.weight"][c] / s_qkv[c]);
    const auto vb = safetensors::finite_floats(file.at(P + "self_attn.v_proj.bias"));
    for (std::size_t r = 0; r < H; ++r) REQUIRE(vb[r] == fx.w[P + "self_attn.v_proj.bias"][r] / s_o[r]);

    // Each layer read back, in the original coordinates: rows x s_out, columns / s_in.
    struct want {
        std::string layer, input;
        const std::vector<float>* s_in;
        const std::vector<float>* s_out;
    };
    const std::vector<want> wants = {
        {P + "self_attn.q_proj", P + "self_attn.q_proj", &s_qkv, nullptr},
        {P + "self_attn.k_proj", P + "self_attn.q_proj", &s_qkv, nullptr},
        {P + "self_attn.v_proj", P + "self_attn.q_proj", &s_qkv, &s_o},
        {P + "self_attn.o_proj", P + "self_attn.o_proj", &s_o, nullptr},
        {P + "mlp.gate_proj", P + "mlp.gate_proj", &s_mlp, nullptr},
        {P + "mlp.up_proj", P + "mlp.gate_proj", &s_mlp, &s_down},
        {P + "mlp.down_proj", P + "mlp.down_proj", &s_down, nullptr},
    };
    for (const auto& wt : wants) {
        INFO(wt.layer);
        CHECK(file.find(wt.layer + ".weight") == nullptr);
        const awq::layer l = awq::read_layer(file, wt.layer, o.format);
        const auto& w0 = fx.w[wt.layer + ".weight"];
        REQUIRE(l.rows * l.cols == w0.size());
        std::vector<float> back = l.dequantize();
        for (std::size_t r = 0; r < l.rows; ++r)
            for (std::size_t c = 0; c < l.cols; ++c)
                back[r * l.cols + c] = back[r * l.cols + c] / (*wt.s_in)[c] * (wt.s_out ? (*wt.s_out)[r] : 1.0f);
        const auto rit = std::find_if(rep.layers.begin(), rep.layers.end(), [&](const auto& x) { return x.layer == wt.layer; });
        REQUIRE(rit != rep.layers.end());
        const double e = rel_error(fx.x[wt.input], w0, back, l.rows, l.cols);
        CHECK(e == Approx(rit->awq_error).epsilon(1e-3));
        CHECK(rit->awq_error < rit->rtn_error);
        CHECK(rit->clipped == (wt.layer.find("q_proj") == std::string::npos && wt.layer.find("k_proj") == std::string::npos));
    }
}

TEST_CASE("awq quantize: a layer outside the groups is quantized unscaled; bad input", "[calibration][awq][checkpoint][errors]") {
    fixture fx;
    awq::quantize_options o;
    o.format.group = 64;
    // The embedding read as a "layer" with activations: no op to fold into.
    fx.x["model.embed_tokens"] = lowbit_test::correlated(T, H, fx.rng, 8, 29, 4);
    const auto rep = awq::quantize_checkpoint(fx.model, fx.out, fx.calib({"model.embed_tokens"}), o);
    REQUIRE(rep.layers.size() == 1);
    CHECK(rep.layers[0].folded_into.empty());
    CHECK(rep.folded.empty());
    std::filesystem::remove(fx.out);

    const auto fails = [&](const std::filesystem::path& calib, const std::string& part) {
        try {
            awq::quantize_checkpoint(fx.model, fx.out, calib, o);
        } catch (const lowbit::error& e) {
            CHECK_THAT(e.what(), Catch::Contains(part));
            CHECK_FALSE(std::filesystem::exists(fx.out));
            return;
        }
        FAIL("no error");
    };
    fails(fx.calib({P + "mlp.gate_proj"}, 100), "100 calibration tokens");
    fx.x[P + "mlp.down_proj.hessian"] = fx.x[P + "mlp.gate_proj"];
    fails(fx.calib({P + "mlp.down_proj.hessian"}), "is a saved statistic; AWQ needs each layer's activations");
    fx.x["model.layers.0.nope"] = fx.x[P + "mlp.gate_proj"];
    fails(fx.calib({"model.layers.0.nope"}), "no tensor 'model.layers.0.nope.weight'");
    fx.x[P + "mlp.down_proj"][7 * I + 3] = NAN;
    fails(fx.calib({P + "mlp.down_proj"}), "row 7, column 3");
    o.format.group = 96;
    fails(fx.calib({P + "mlp.gate_proj"}), "groups of 96");
}
