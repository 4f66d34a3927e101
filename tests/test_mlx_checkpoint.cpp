// MLX checkpoints (formats/mlx_checkpoint.hpp): mlx-lm's layout written by
// convert_checkpoint and read back by read_layer. That mx.load reads these
// files and that their bytes are mx.quantize's is tests/interop/test_mlx.py.
#include "catch.hpp"
#include "scratch_dir.hpp"

#include <lowbit/formats/mlx_checkpoint.hpp>
#include <lowbit/registry.hpp>

#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

using namespace lowbit;
namespace st = lowbit::safetensors;

namespace {

std::vector<std::uint16_t> random_half(std::size_t n, unsigned seed, bool bf16) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 0.05f);
    std::vector<std::uint16_t> v(n);
    for (auto& h : v) h = bf16 ? float_to_bf16(d(rng)) : float_to_fp16(d(rng));
    return v;
}

template <class T>
std::span<const std::byte> bytes(const std::vector<T>& v) {
    return std::as_bytes(std::span<const T>(v));
}

template <int Bits>
const quantized<affine<Bits, affine_mode::mlx>>& as_mlx(const quantized_base& q) {
    const auto* m = dynamic_cast<const quantized<affine<Bits, affine_mode::mlx>>*>(&q);
    REQUIRE(m != nullptr);
    return *m;
}

}  // namespace

TEST_CASE("MLX checkpoint formats parse and print") {
    const auto f = mlx::parse_checkpoint_format("mlx-3b-g128");
    CHECK((f.bits == 3 && f.group == 128));
    CHECK(f.name() == "mlx-3b-g128");
    CHECK(f.config_json() == "{\"group_size\": 128, \"bits\": 3}");
    for (const char* bad : {"mlx-4b-g64-bf16", "mlx-7b-g64", "mlx-4b-g48", "mlx-4b-g", "mlx-b-g64", "mlx-4-g64",
                            "nf4-b64", "mlx-4b-g64x", "mlx-16b-g64"})
        CHECK_THROWS_AS(mlx::parse_checkpoint_format(bad), lowbit::error);
}

TEST_CASE("MLX convert_checkpoint writes mlx-lm's layout with the mlx-* codes, and read_layer reads it back") {
    lowbit_test::scratch_dir dir("mlx_ckpt");
    const auto q = random_half(96 * 256, 1, true), emb = random_half(40 * 256, 2, true), norm = random_half(256, 3, true),
               odd = random_half(6 * 48, 4, true);
    std::vector<float> f32(16 * 128);
    std::mt19937 rng(5);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (auto& v : f32) v = d(rng);
    {
        st::writer w(dir.path / "in.safetensors");
        w.set_metadata("format", "mlx");
        w.add("model.layers.0.q_proj.weight", st::dtype::bf16, {96, 256}, bytes(q));
        w.add("model.embed_tokens.weight", st::dtype::bf16, {40, 256}, bytes(emb));
        w.add("model.norm.weight", st::dtype::bf16, {256}, bytes(norm));
        w.add("model.layers.0.odd.weight", st::dtype::bf16, {6, 48}, bytes(odd));  // 48: no whole groups of 64
        w.add("lm_head.weight", st::dtype::f32, {16, 128}, bytes(f32));
        w.finish();
    }
    for (const char* fmt : {"mlx-4b-g64", "mlx-3b-g32", "mlx-8b-g128"}) {
        INFO(fmt);
        mlx::convert_options o;
        o.format = mlx::parse_checkpoint_format(fmt);
        const auto rep = mlx::convert_checkpoint(dir.path / "in.safetensors", dir.path / "out.safetensors", o);
        const bool odd_kept = 48 % o.format.group != 0;
        CHECK(rep.tensors == 5);
        CHECK(rep.quantized == (odd_kept ? 3u : 4u));
        CHECK(rep.not_divisible == (odd_kept ? std::vector<std::string>{"model.layers.0.odd.weight"}
                                             : std::vector<std::string>{}));
        const auto f = st::file::open(dir.path / "out.safetensors");
        REQUIRE(f.find_metadata("format"));
        CHECK(*f.find_metadata("format") == "mlx");
        CHECK(std::memcmp(f.at("model.norm.weight").data().data(), norm.data(), norm.size() * 2) == 0);
        CHECK(f.find("model.norm.scales") == nullptr);
        if (odd_kept) CHECK(f.at("model.layers.0.odd.weight").dtype == st::dtype::bf16);
        using layer = std::tuple<std::string, std::size_t, std::size_t, st::dtype, param_dtype>;
        for (const auto& [name, rows, cols, dt, pt] :
             {layer{"model.layers.0.q_proj", 96, 256, st::dtype::bf16, param_dtype::bf16},
              layer{"model.embed_tokens", 40, 256, st::dtype::bf16, param_dtype::bf16},
              layer{"lm_head", 16, 128, st::dtype::f32, param_dtype::f32}}) {
            INFO(name);
            const auto& w = f.at(name + ".weight");
            CHECK(w.dtype == st::dtype::u32);
            CHECK(w.shape == std::vector<std::uint64_t>{rows, cols * static_cast<std::size_t>(o.format.bits) / 32});
            CHECK(f.at(name + ".scales").dtype == dt);
            CHECK(f.at(name + ".biases").shape == std::vector<std::uint64_t>{rows, cols / o.format.group});
            // The source's values through the registry's mlx-* format of the
            // same params dtype: the same codes, scales and biases.
            const auto in = st::file::open(dir.path / "in.safetensors");
            const std::vector<float> x = st::finite_floats(in.at(name + ".weight"));
            const std::string reg = std::string(fmt) + (pt == param_dtype::bf16 ? "-bf16" : "-f32");
            const auto want = quantize(find_format(reg), matrix_view<const float>(x.data(), rows, cols));
            const auto got = mlx::read_layer(f, name, o.format);
            REQUIRE(got->rows() == rows);
            REQUIRE(got->cols() == cols);
            CHECK(got->bits_per_weight() == want->bits_per_weight());
            std::vector<float> a(rows * cols), b(rows * cols);
            got->dequantize(matrix_view<float>(a.data(), rows, cols));
            want->dequantize(matrix_view<float>(b.data(), rows, cols));
            CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
            if (o.format.bits == 4) {
                const auto& g = as_mlx<4>(*got);
                const auto& e = as_mlx<4>(*want);
                CHECK(g.codes == e.codes);
                CHECK(g.scale == e.scale);
                CHECK(g.bias == e.bias);
                CHECK(std::memcmp(w.data().data(), e.codes.data(), e.codes.size()) == 0);
            }
        }
    }
}

TEST_CASE("MLX read_layer refuses layers that do not match their format or each other") {
    lowbit_test::scratch_dir dir("mlx_bad");
    const std::vector<std::uint32_t> words(8 * 16);
    const std::vector<std::uint16_t> params(8 * 2, float_to_fp16(0.5f)), params3(8 * 3, float_to_fp16(0.5f));
    const std::vector<float> params_f32(8 * 2, 0.5f);
    {
        st::writer w(dir.path / "bad.safetensors");
        w.add("a.weight", st::dtype::u32, {8, 16}, bytes(words));  // 128 codes of 4 bits per row
        w.add("a.scales", st::dtype::f16, {8, 2}, bytes(params));
        w.add("a.biases", st::dtype::f16, {8, 2}, bytes(params));
        w.add("b.weight", st::dtype::u32, {8, 16}, bytes(words));
        w.add("b.scales", st::dtype::f16, {8, 2}, bytes(params));
        w.add("b.biases", st::dtype::f32, {8, 2}, bytes(params_f32));  // dtype differs from scales
        w.add("c.weight", st::dtype::u32, {8, 16}, bytes(words));
        w.add("c.scales", st::dtype::f16, {8, 3}, bytes(params3));  // 3 groups of 64 need 24 words
        w.add("c.biases", st::dtype::f16, {8, 3}, bytes(params3));
        w.finish();
    }
    const auto f = st::file::open(dir.path / "bad.safetensors");
    const auto fmt = mlx::parse_checkpoint_format("mlx-4b-g64");
    const auto q = mlx::read_layer(f, "a", fmt);
    CHECK(q->rows() == 8);
    CHECK(q->cols() == 128);
    // The same shapes read as 2-bit groups of 128 also fit (which is why the
    // format comes from config.json, not from the shapes).
    CHECK(mlx::read_layer(f, "a", mlx::parse_checkpoint_format("mlx-2b-g128"))->cols() == 256);
    const auto fails_with = [&](const std::string& layer, const mlx::checkpoint_format& g, const char* what) {
        try {
            (void)mlx::read_layer(f, layer, g);
            FAIL("no error for " << layer);
        } catch (const lowbit::error& e) {
            INFO(e.what());
            CHECK(e.code() == errc::corrupt_file);
            CHECK(std::string(e.what()).find(what) != std::string::npos);
        }
    };
    fails_with("a", mlx::parse_checkpoint_format("mlx-8b-g64"), "does not hold 128 codes of 8 bits");
    fails_with("b", fmt, "biases (F32 [8, 2]) differ from scales (F16 [8, 2])");
    fails_with("c", fmt, "does not hold 192 codes of 4 bits");
    CHECK_THROWS_AS(mlx::read_layer(f, "missing", fmt), lowbit::error);
}

TEST_CASE("MLX per-layer formats: the first matching rule wins, and config.json lists the layers") {
    lowbit_test::scratch_dir dir("mlx_layers");
    const auto a = random_half(64 * 256, 6, false), b = random_half(64 * 256, 7, false);
    {
        st::writer w(dir.path / "in.safetensors");
        w.add("model.layers.0.mlp.down_proj.weight", st::dtype::f16, {64, 256}, bytes(a));
        w.add("model.layers.0.mlp.up_proj.weight", st::dtype::f16, {64, 256}, bytes(b));
        w.add("model.layers.1.mlp.down_proj.weight", st::dtype::f16, {64, 256}, bytes(b));
        w.finish();
    }
    mlx::convert_options o;
    o.format = mlx::parse_checkpoint_format("mlx-4b-g64");
    o.layers = {mlx::parse_layer_rule("layers\\.0\\..*down_proj=mlx-8b-g32"), mlx::parse_layer_rule("down_proj$=mlx-6b-g128")};
    const auto rep = mlx::convert_checkpoint(dir.path / "in.safetensors", dir.path / "out.safetensors", o);
    REQUIRE(rep.per_layer.size() == 2);
    CHECK(rep.per_layer[0].first == "model.layers.0.mlp.down_proj");
    CHECK(rep.per_layer[0].second.name() == "mlx-8b-g32");
    CHECK(rep.per_layer[1].first == "model.layers.1.mlp.down_proj");
    CHECK(rep.per_layer[1].second.name() == "mlx-6b-g128");
    CHECK(rep.config_json(o.format) ==
          "{\"group_size\": 64, \"bits\": 4, \"model.layers.0.mlp.down_proj\": {\"group_size\": 32, \"bits\": 8}, "
          "\"model.layers.1.mlp.down_proj\": {\"group_size\": 128, \"bits\": 6}}");
    const auto f = st::file::open(dir.path / "out.safetensors");
    CHECK(f.at("model.layers.0.mlp.down_proj.weight").shape == std::vector<std::uint64_t>{64, 64});
    CHECK(f.at("model.layers.0.mlp.down_proj.scales").shape == std::vector<std::uint64_t>{64, 8});
    CHECK(f.at("model.layers.0.mlp.up_proj.weight").shape == std::vector<std::uint64_t>{64, 32});
    CHECK(f.at("model.layers.1.mlp.down_proj.weight").shape == std::vector<std::uint64_t>{64, 48});
    CHECK(mlx::read_layer(f, "model.layers.1.mlp.down_proj", rep.per_layer[1].second)->cols() == 256);
    for (const char* bad : {"down_proj", "=mlx-4b-g64", "down_proj=mlx-4b", "(=mlx-4b-g64"})
        CHECK_THROWS_AS(mlx::parse_layer_rule(bad), lowbit::error);
}

TEST_CASE("MLX 4- and 5-bit layers with fp16 params become ggml's Q4_1 and Q5_1 blocks exactly") {
    std::mt19937 rng(9);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> x(8 * 256);
    for (auto& v : x) v = fp16_to_float(float_to_fp16(d(rng)));
    const matrix_view<const float> w(x.data(), 8, 256);
    std::vector<float> a(x.size()), b(x.size());
    for (const char* fmt : {"mlx-4b-g32", "mlx-4b-g64", "mlx-4b-g128"}) {
        INFO(fmt);
        const auto q = quantize(find_format(fmt), w);
        const auto blocks = mlx::to_ggml_min_blocks(as_mlx<4>(*q));
        REQUIRE(blocks.size() == 8 * 256 / 32 * sizeof(ggml::block_q4_1));
        const auto g = from_ggml_blocks<ggml_q4_1_scheme>(blocks, 8, 256);
        q->dequantize(matrix_view<float>(a.data(), 8, 256));
        g.dequantize(matrix_view<float>(b.data(), 8, 256));
        CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
    }
    const auto q5 = quantize(find_format("mlx-5b-g64"), w);
    const auto g5 = from_ggml_blocks<ggml_q5_1_scheme>(
        mlx::to_ggml_min_blocks(dynamic_cast<const quantized<affine<5, affine_mode::mlx>>&>(*q5)), 8, 256);
    q5->dequantize(matrix_view<float>(a.data(), 8, 256));
    g5.dequantize(matrix_view<float>(b.data(), 8, 256));
    CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
    // An fp32 scale that fp16 cannot hold is refused, naming the group.
    const auto f32 = quantize(find_format("mlx-4b-g64-f32"), w);
    try {
        (void)mlx::to_ggml_min_blocks(as_mlx<4>(*f32));
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(std::string(e.what()).find("row 0, columns 0..31: scale") != std::string::npos);
    }
}
