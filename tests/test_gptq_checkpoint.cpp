// GPTQ checkpoints (formats/gptq_checkpoint.hpp): format names and
// quantize_config.json, layers written and read back for every bit width,
// both zero formats and act-order's group map, the bytes of a known layer,
// and readers refusing layers that contradict themselves.

#include <catch2/catch.hpp>
#include <cstring>
#include <lowbit/formats/gptq_checkpoint.hpp>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

// A random layer whose scales are fp16 values; g_idx either i / group or a
// shuffled act-order map.
gptq::layer random_layer(std::size_t rows, std::size_t cols, int bits, std::size_t group, bool shuffled,
                         std::uint32_t seed) {
    std::mt19937 rng(seed);
    gptq::layer l;
    l.rows = rows;
    l.cols = cols;
    l.bits = bits;
    l.groups = group ? (cols + group - 1) / group : 1;
    std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
    std::uniform_real_distribution<float> sc(0.001f, 0.1f);
    for (std::size_t i = 0; i < rows * cols; ++i) l.codes.push_back(static_cast<std::uint8_t>(code(rng)));
    for (std::size_t i = 0; i < l.groups * rows; ++i) {
        l.scale.push_back(fp16_to_float(float_to_fp16(sc(rng))));
        l.zero.push_back(static_cast<std::uint8_t>(code(rng)));
    }
    for (std::size_t c = 0; c < cols; ++c) l.g_idx.push_back(group ? static_cast<std::int32_t>(c / group) : 0);
    if (shuffled) std::shuffle(l.g_idx.begin(), l.g_idx.end(), rng);
    return l;
}

safetensors::file write_and_open(const gptq::layer& l, const gptq::checkpoint_format& f,
                                 std::vector<std::byte>& image) {
    safetensors::writer w;
    gptq::add_layer(w, "model.proj", l, f);
    image = w.to_bytes();
    return safetensors::file::from_memory(image);
}

}  // namespace

TEST_CASE("gptq checkpoint: format names and quantize_config.json", "[gptq][checkpoint]") {
    const auto f = gptq::parse_checkpoint_format("gptq-4b-g128");
    CHECK(f.bits == 4);
    CHECK(f.group == 128);
    CHECK(f.name() == "gptq-4b-g128");
    const auto c = gptq::parse_checkpoint_format("gptq-3b-ch");
    CHECK(c.group == 0);
    CHECK(c.group_size() == -1);
    CHECK(c.name() == "gptq-3b-ch");
    for (const char* bad : {"gptq-5b-g128", "gptq-4b-g0", "gptq-4b", "gptq-4b-g128x", "mlx-4b-g64", "gptq-4b-c", ""})
        CHECK_THROWS_WITH(gptq::parse_checkpoint_format(bad), Catch::Contains("gptq-{2,3,4,8}b-g<group>"));

    gptq::checkpoint_format g;
    g.bits = 3;
    g.group = 64;
    g.sym = true;
    g.desc_act = true;
    g.zeros = gptq_zero_format::v2;
    g.damp_percent = 0.05f;
    const std::string text = g.config_json();
    CHECK(text ==
          "{\"bits\": 3, \"group_size\": 64, \"damp_percent\": 0.05, \"desc_act\": true, \"static_groups\": false, "
          "\"sym\": true, \"true_sequential\": true, \"quant_method\": \"gptq\", \"checkpoint_format\": \"gptq_v2\"}");
    const auto back = gptq::format_from_config(json::parse(text), "quantize_config.json");
    CHECK(back.bits == 3);
    CHECK(back.group == 64);
    CHECK(back.sym);
    CHECK(back.desc_act);
    CHECK(back.zeros == gptq_zero_format::v2);
    CHECK(gptq::format_from_config(json::parse(c.config_json()), "x").group == 0);
    // What transformers' configs hold without the optional keys: v1, asymmetric.
    const auto minimal = gptq::format_from_config(json::parse(R"({"bits": 8, "group_size": -1})"), "x");
    CHECK(minimal.bits == 8);
    CHECK(minimal.group == 0);
    CHECK(minimal.zeros == gptq_zero_format::v1);
    CHECK_THROWS_WITH(gptq::format_from_config(json::parse(R"({"bits": 5, "group_size": 128})"), "cfg"),
                      Catch::Contains("cfg: bits 5 is not 2, 3, 4 or 8"));
    CHECK_THROWS_WITH(gptq::format_from_config(json::parse(R"({"bits": 4, "group_size": 0})"), "cfg"),
                      Catch::Contains("group_size 0 is not -1"));
    CHECK_THROWS_WITH(
        gptq::format_from_config(json::parse(R"({"bits": 4, "group_size": 128, "quant_method": "awq"})"), "cfg"),
        Catch::Contains("quant_method is not \"gptq\""));
    CHECK_THROWS_WITH(gptq::format_from_config(
                          json::parse(R"({"bits": 4, "group_size": 128, "checkpoint_format": "marlin"})"), "cfg"),
                      Catch::Contains("\"gptq\" or \"gptq_v2\""));
}

TEST_CASE("gptq checkpoint: layers round-trip for 2, 3, 4 and 8 bits, v1 and v2, act-order", "[gptq][checkpoint]") {
    const auto bits = GENERATE(2, 3, 4, 8);
    const auto zeros = GENERATE(gptq_zero_format::v1, gptq_zero_format::v2);
    const bool shuffled = GENERATE(false, true);
    const std::size_t group = GENERATE(std::size_t{32}, std::size_t{0});
    CAPTURE(bits, zeros == gptq_zero_format::v1, shuffled, group);
    const std::size_t rows = 64, cols = 96;  // both whole 3-bit units (32)
    const auto l = random_layer(rows, cols, bits, group, shuffled, 7u + static_cast<std::uint32_t>(bits));
    gptq::checkpoint_format f;
    f.bits = bits;
    f.group = group;
    f.zeros = zeros;
    std::vector<std::byte> image;
    const auto file = write_and_open(l, f, image);
    const auto& qw = file.at("model.proj.qweight");
    CHECK(qw.dtype == safetensors::dtype::i32);
    CHECK(qw.shape == std::vector<std::uint64_t>{cols * static_cast<std::uint64_t>(bits) / 32, rows});
    CHECK(file.at("model.proj.qzeros").shape ==
          std::vector<std::uint64_t>{l.groups, rows * static_cast<std::uint64_t>(bits) / 32});
    CHECK(file.at("model.proj.scales").dtype == safetensors::dtype::f16);
    CHECK(file.at("model.proj.g_idx").shape == std::vector<std::uint64_t>{cols});
    const auto back = gptq::read_layer(file, "model.proj", f);
    CHECK(back.codes == l.codes);
    CHECK(back.zero == l.zero);
    CHECK(back.scale == l.scale);
    CHECK(back.g_idx == l.g_idx);
    CHECK(back.dequantize() == l.dequantize());
    // The other zero format reads other zeros (v1 stores zero - 1).
    gptq::checkpoint_format other = f;
    other.zeros = zeros == gptq_zero_format::v1 ? gptq_zero_format::v2 : gptq_zero_format::v1;
    CHECK(gptq::read_layer(file, "model.proj", other).zero != l.zero);
}

TEST_CASE("gptq checkpoint: the bytes of a symmetric 4-bit layer", "[gptq][checkpoint]") {
    // 8 inputs x 8 outputs, one group, code = (in + out) % 16, zero 8: qweight
    // row 0 packs inputs 0..7 of each output LSB first; v1 qzeros store 7.
    gptq::layer l;
    l.rows = 8;
    l.cols = 8;
    l.bits = 4;
    l.groups = 1;
    for (std::size_t o = 0; o < 8; ++o)
        for (std::size_t i = 0; i < 8; ++i) l.codes.push_back(static_cast<std::uint8_t>((i + o) % 16));
    l.scale.assign(8, 0.5f);
    l.zero.assign(8, 8);
    l.g_idx.assign(8, 0);
    gptq::checkpoint_format f;
    f.group = 0;
    std::vector<std::byte> image;
    const auto file = write_and_open(l, f, image);
    const auto& qw = file.at("model.proj.qweight");
    std::vector<std::uint32_t> words(8);
    std::memcpy(words.data(), qw.data().data(), 32);
    for (std::uint32_t o = 0; o < 8; ++o) {
        std::uint32_t want = 0;
        for (std::uint32_t i = 0; i < 8; ++i) want |= ((i + o) % 16) << (4 * i);
        CHECK(words[o] == want);
    }
    std::uint32_t qz = 0;
    std::memcpy(&qz, file.at("model.proj.qzeros").data().data(), 4);
    CHECK(qz == 0x77777777u);
    std::uint16_t s = 0;
    std::memcpy(&s, file.at("model.proj.scales").data().data(), 2);
    CHECK(s == 0x3800);  // 0.5 in fp16
    CHECK(gptq::read_layer(file, "model.proj", f).value(3, 5) == 0.5f * (8.0f - 8.0f));
}

TEST_CASE("gptq checkpoint: bad layers are errors naming what is wrong", "[gptq][checkpoint][errors]") {
    const auto l = random_layer(64, 64, 4, 32, false, 3);
    gptq::checkpoint_format f;
    f.group = 32;
    {
        safetensors::writer w;
        auto bad = l;
        bad.scale[5] = 0.1f;  // not an fp16 value
        CHECK_THROWS_WITH(gptq::add_layer(w, "x", bad, f),
                          Catch::Contains("GPTQ layer 'x': scale of group 0, output 5 is not an fp16 value"));
        bad = l;
        bad.g_idx[9] = 2;
        CHECK_THROWS_WITH(gptq::add_layer(w, "x", bad, f), Catch::Contains("g_idx[9] = 2 is not a group"));
        auto odd = random_layer(64, 60, 4, 30, false, 4);
        f.group = 30;
        CHECK_THROWS_WITH(gptq::add_layer(w, "x", odd, f),
                          Catch::Contains("60 input features are not a multiple of 8"));
        f.group = 32;
    }
    std::vector<std::byte> image;
    const auto file = write_and_open(l, f, image);
    gptq::checkpoint_format wrong = f;
    wrong.group = 16;  // the file has 2 groups, 16 would need 4
    CHECK_THROWS_WITH(gptq::read_layer(file, "model.proj", wrong),
                      Catch::Contains("2 groups for 64 inputs, expected 4 (group_size 16)"));
    wrong = f;
    wrong.bits = 8;
    CHECK_THROWS_WITH(gptq::read_layer(file, "model.proj", wrong),
                      Catch::Contains("qzeros [2, 8] do not hold 2 x 64 zero points of 8 bits"));
    CHECK_THROWS_WITH(gptq::read_layer(file, "model.other", f), Catch::Contains("no tensor named"));
    // A g_idx naming a group past the end.
    safetensors::writer w;
    for (const auto& t : file.tensors()) {
        if (t.name == "model.proj.g_idx") {
            std::vector<std::byte> g(t.data().begin(), t.data().end());
            const std::int32_t v = 7;
            std::memcpy(g.data() + 4 * 10, &v, 4);
            w.add(t.name, t.dtype, t.shape, std::move(g));
        } else {
            w.add(t.name, t.dtype, t.shape, t.data());
        }
    }
    const auto img2 = w.to_bytes();
    CHECK_THROWS_WITH(gptq::read_layer(safetensors::file::from_memory(img2), "model.proj", f),
                      Catch::Contains("g_idx[10] = 7 is not one of the 2 groups"));
}
