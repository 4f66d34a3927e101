#include "catch.hpp"
#include "scratch_dir.hpp"

#include <lowbit/formats/bnb_checkpoint.hpp>

#include <cstring>
#include <random>
#include <vector>

using namespace lowbit;
namespace st = lowbit::safetensors;

namespace {

std::vector<std::uint16_t> random_bf16(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 0.05f);
    std::vector<std::uint16_t> v(n);
    for (auto& h : v) h = float_to_bf16(d(rng));
    return v;
}

template <class T>
std::span<const std::byte> bytes(const std::vector<T>& v) {
    return std::as_bytes(std::span<const T>(v));
}

}  // namespace

TEST_CASE("bnb checkpoint formats parse and print") {
    const auto f = bnb::parse_checkpoint_format("fp4-b128-dq");
    CHECK((f.type == bnb::quant_type::fp4 && f.blocksize == 128 && f.nested && !f.int8));
    CHECK(f.name() == "fp4-b128-dq");
    CHECK(bnb::parse_checkpoint_format("nf4-b4096").name() == "nf4-b4096");
    CHECK(bnb::parse_checkpoint_format("llm-int8").int8);
    for (const char* bad : {"nf4", "nf4-b48", "nf4-b64-dqx", "nf5-b64", "nf4-b8192", "int8", "nf4-b"})
        CHECK_THROWS_AS(bnb::parse_checkpoint_format(bad), lowbit::error);
}

TEST_CASE("convert_checkpoint writes transformers' bnb layout and read_4bit_state reads it back") {
    lowbit_test::scratch_dir dir("bnb_ckpt");
    const auto q = random_bf16(96 * 320, 1), emb = random_bf16(50 * 320, 2), norm = random_bf16(320, 3),
               odd = random_bf16(5 * 7, 4);
    {
        st::writer w(dir.path / "in.safetensors");
        w.set_metadata("format", "pt");
        w.add("model.layers.0.q_proj.weight", st::dtype::bf16, {96, 320}, bytes(q));
        w.add("model.embed_tokens.weight", st::dtype::bf16, {50, 320}, bytes(emb));
        w.add("model.norm.weight", st::dtype::bf16, {320}, bytes(norm));
        w.add("model.layers.0.odd.weight", st::dtype::bf16, {5, 7}, bytes(odd));
        w.finish();
    }
    for (const char* fmt : {"nf4-b64-dq", "fp4-b32"}) {
        bnb::convert_options o;
        o.format = bnb::parse_checkpoint_format(fmt);
        const auto rep = bnb::convert_checkpoint(dir.path / "in.safetensors", dir.path / "out.safetensors", o);
        CHECK(rep.tensors == 4);
        CHECK(rep.quantized == 2);
        const auto f = st::file::open(dir.path / "out.safetensors");
        REQUIRE(f.find_metadata("format"));
        CHECK(*f.find_metadata("format") == "pt");
        // Kept tensors are byte-identical.
        CHECK(std::memcmp(f.at("model.embed_tokens.weight").data().data(), emb.data(), emb.size() * 2) == 0);
        CHECK(f.at("model.norm.weight").dtype == st::dtype::bf16);
        for (const auto& [name, src, rows, cols] :
             {std::tuple{std::string("model.layers.0.q_proj.weight"), &q, 96u, 320u},
              std::tuple{std::string("model.layers.0.odd.weight"), &odd, 5u, 7u}}) {
            const auto s = bnb::read_4bit_state(f, name);
            CHECK(s.shape == std::vector<std::uint64_t>{rows, cols});
            CHECK(s.dtype == bnb::source_dtype::bfloat16);
            CHECK(s.blocksize == o.format.blocksize);
            CHECK(s.nested.has_value() == o.format.nested);
            std::vector<float> x(src->size());
            for (std::size_t i = 0; i < x.size(); ++i) x[i] = bf16_to_float((*src)[i]);
            bnb::quantize_4bit_options qo;
            qo.type = o.format.type;
            qo.blocksize = o.format.blocksize;
            qo.compress_statistics = o.format.nested;
            const auto ref = bnb::quantize_4bit(x, {rows, cols}, qo);
            CHECK(s.packed == ref.packed);
            CHECK(bnb::dequantize_4bit(s) == bnb::dequantize_4bit(ref));
            CHECK(f.at(name).shape == std::vector<std::uint64_t>{ref.packed.size(), 1});
        }
    }
    // LLM.int8(): weight int8, SCB, weight_format.
    bnb::convert_options o8;
    o8.format = bnb::parse_checkpoint_format("llm-int8");
    bnb::convert_checkpoint(dir.path / "in.safetensors", dir.path / "out8.safetensors", o8);
    const auto f8 = st::file::open(dir.path / "out8.safetensors");
    CHECK(f8.at("model.layers.0.q_proj.weight").dtype == st::dtype::i8);
    CHECK(f8.at("model.layers.0.q_proj.SCB").shape == std::vector<std::uint64_t>{96});
    CHECK(f8.at("model.layers.0.q_proj.weight_format").shape.empty());
    // A weight that is not a 4-bit state is a clean error.
    CHECK_THROWS_AS(bnb::read_4bit_state(f8, "model.layers.0.q_proj.weight"), lowbit::error);
    // A corrupt input leaves no output behind.
    {
        std::vector<char> raw(64, 'x');
        std::FILE* fp = std::fopen((dir.path / "bad.safetensors").c_str(), "wb");
        std::fwrite(raw.data(), 1, raw.size(), fp);
        std::fclose(fp);
    }
    CHECK_THROWS_AS(bnb::convert_checkpoint(dir.path / "bad.safetensors", dir.path / "never.safetensors"), lowbit::error);
    CHECK(!std::filesystem::exists(dir.path / "never.safetensors"));
}
