// compressed-tensors pack-quantized checkpoints (formats/ct_checkpoint.hpp):
// format names, the packing on words worked out by hand, the rule on groups
// worked out by hand in each dtype, convert_checkpoint and read_layer, and
// readers refusing what contradicts itself or what lowbit does not read.
// That compressed-tensors writes the same bytes and transformers' loading
// path reads them is tests/interop/test_ct.py.
#include "catch.hpp"
#include "checkpoint_util.hpp"
#include "scratch_dir.hpp"

#include <lowbit/formats/ct_checkpoint.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
namespace st = lowbit::safetensors;

namespace {

using lowbit_test::bytes;
using lowbit_test::normal;

std::vector<float> in_dtype(std::vector<float> v, st::dtype t) {
    for (auto& x : v) x = st::stored_value(x, t);
    return v;
}

// One layer [rows, cols] of values `w`, written as `fmt`, read back.
ct::layer round_trip(const lowbit_test::scratch_dir& dir, const ct::layer& l, const ct::checkpoint_format& f) {
    {
        st::writer w(dir.path / "layer.safetensors");
        ct::add_layer(w, "l", l, f);
        w.finish();
    }
    return ct::read_layer(st::file::open(dir.path / "layer.safetensors"), "l", f);
}

}  // namespace

TEST_CASE("compressed-tensors formats parse and print") {
    auto f = ct::parse_checkpoint_format("ct-w4a16");
    CHECK((f.bits == 4 && f.group == 128 && f.sym && f.numerics == ct::rules::cuda));
    CHECK(f.name() == "ct-4b-g128");
    f = ct::parse_checkpoint_format("ct-w4a16-asym");
    CHECK((f.bits == 4 && f.group == 128 && !f.sym && f.name() == "ct-4b-g128-asym"));
    f = ct::parse_checkpoint_format("ct-w8a16");
    CHECK((f.bits == 8 && f.group == 128 && f.sym));
    f = ct::parse_checkpoint_format("ct-3b-ch-asym");
    CHECK((f.bits == 3 && f.group == 0 && !f.sym && f.name() == "ct-3b-ch-asym"));
    CHECK(ct::parse_checkpoint_format("ct-2b-g32").name() == "ct-2b-g32");
    for (const char* bad : {"ct-1b-g64", "ct-9b-g64", "ct-4b-g0", "ct-4b", "ct-w4a8", "ct-4b-g128-sym", "gptq-4b-g128",
                            "ct-4b-g128-asym-asym", "ct-w4a16x"})
        CHECK_THROWS_AS(ct::parse_checkpoint_format(bad), lowbit::error);
    CHECK(ct::parse_rules("cpu") == ct::rules::cpu);
    CHECK_THROWS_AS(ct::parse_rules("gpu"), lowbit::error);
}

TEST_CASE("compressed-tensors packing: the codes offset and LSB-first along the row, zero points along out") {
    lowbit_test::scratch_dir dir("ct_pack");
    // 4 bits: q = -8, -7, 0, 7, 1, 2, 3, 4 -> codes 0, 1, 8, 15, 9, 10, 11, 12 -> 0xcba9f810.
    ct::layer l;
    l.rows = 16;
    l.cols = 8;
    l.groups = 1;
    l.bits = 4;
    l.dtype = st::dtype::f32;
    l.codes.assign(16 * 8, 0);
    const std::int8_t row0[8] = {-8, -7, 0, 7, 1, 2, 3, 4};
    std::copy(row0, row0 + 8, l.codes.begin());
    l.scale.assign(16, 0.5f);
    for (int r = 0; r < 16; ++r) l.zero.push_back(static_cast<std::int8_t>(r - 8));  // -8 .. 7 down the column
    const auto f = ct::parse_checkpoint_format("ct-4b-ch-asym");
    {
        st::writer w(dir.path / "p.safetensors");
        ct::add_layer(w, "l", l, f);
        w.finish();
    }
    const auto file = st::file::open(dir.path / "p.safetensors");
    const auto packed = st::words_of(file.at("l.weight_packed"));
    REQUIRE(packed.size() == 16);
    CHECK(packed[0] == 0xcba9f810u);
    CHECK(packed[1] == 0x88888888u);  // a row of q = 0
    const auto zp = st::words_of(file.at("l.weight_zero_point"));
    CHECK(file.at("l.weight_zero_point").shape == std::vector<std::uint64_t>{2, 1});
    CHECK((zp[0] == 0x76543210u && zp[1] == 0xfedcba98u));
    CHECK(file.at("l.weight_shape").dtype == st::dtype::i64);
    CHECK(ct::read_layer(file, "l", f).codes == l.codes);

    // 8 bits: q = -128, -1, 0, 127 -> 0xff807f00; 100 4-bit columns take 13 words, the last padded with 0 bits.
    ct::layer e = l;
    e.rows = 1;
    e.cols = 4;
    e.bits = 8;
    e.codes = {-128, -1, 0, 127};
    e.scale = {1.0f};
    e.zero = {0};
    {
        st::writer w(dir.path / "e.safetensors");
        ct::add_layer(w, "l", e, ct::parse_checkpoint_format("ct-8b-ch"));
        w.finish();
    }
    CHECK(st::words_of(st::file::open(dir.path / "e.safetensors").at("l.weight_packed"))[0] == 0xff807f00u);
    ct::layer h = e;
    h.cols = 100;
    h.bits = 4;
    h.codes.assign(100, 3);  // code 11 = 0xb
    const auto fh = ct::parse_checkpoint_format("ct-4b-ch");
    {
        st::writer w(dir.path / "h.safetensors");
        ct::add_layer(w, "l", h, fh);
        w.finish();
    }
    const auto hw = st::words_of(st::file::open(dir.path / "h.safetensors").at("l.weight_packed"));
    REQUIRE(hw.size() == 13);
    CHECK((hw[0] == 0xbbbbbbbbu && hw[12] == 0x0000bbbbu));
    // 3 bits cross words: 96 columns in 9 words.
    ct::layer t = h;
    t.cols = 96;
    t.bits = 3;
    t.codes.resize(96);
    for (std::size_t i = 0; i < 96; ++i) t.codes[i] = static_cast<std::int8_t>(static_cast<int>(i % 8) - 4);
    const auto back = round_trip(dir, t, ct::parse_checkpoint_format("ct-3b-ch"));
    CHECK(back.codes == t.codes);
    CHECK(st::file::open(dir.path / "layer.safetensors").at("l.weight_packed").shape[1] == 9);
}

TEST_CASE("compressed-tensors rule: hand-worked groups") {
    const auto one = [](std::vector<float> w, const char* fmt, st::dtype t, ct::rules r = ct::rules::cuda) {
        auto f = ct::parse_checkpoint_format(fmt);
        f.numerics = r;
        return ct::quantize_layer(matrix_view<const float>(w.data(), 1, w.size()), f, t);
    };
    // Symmetric 4 bits: scale absmax / 7.5; +absmax -> 7 (7.5 rounds to 8, clamped), -absmax -> -7.4999995 -> -7.
    auto l = one({1.0f, -1.0f, 0.5f, 0.0f}, "ct-4b-ch", st::dtype::f32);
    CHECK(l.scale[0] == 1.0f / 7.5f);
    CHECK(l.codes == std::vector<std::int8_t>{7, -7, 4, 0});
    // 8 bits: absmax / 127.5, the quotient rounded to bf16 (up, to 2^-7 + 2^-14), so 1 codes as 127.
    l = one({1.0f, 0.25f}, "ct-8b-ch", st::dtype::bf16);
    CHECK(l.scale[0] == 0x1p-7f + 0x1p-14f);
    CHECK(l.codes == std::vector<std::int8_t>{127, 32});
    l = one({1.0f, 0.25f}, "ct-8b-ch", st::dtype::f16);
    CHECK(l.scale[0] == st::stored_value(1.0f / 127.5f, st::dtype::f16));
    // Asymmetric: min -1, max 1 -> scale 2/15, zero round(-8 + 7.4999995) = -1; -1 -> clamp(-8.5) = -8.
    l = one({-1.0f, 1.0f, 0.0f}, "ct-4b-ch-asym", st::dtype::f32);
    CHECK(l.scale[0] == 2.0f / 15.0f);
    CHECK(l.zero[0] == -1);
    CHECK(l.codes == std::vector<std::int8_t>{-8, 6, -1});
    // An all-positive group: the range is widened to 0, the zero point is the lowest code.
    l = one({0.5f, 1.0f}, "ct-4b-ch-asym", st::dtype::f32);
    CHECK((l.scale[0] == 1.0f / 15.0f && l.zero[0] == -8));
    // All zero: the scale becomes the dtype's epsilon, every code the zero point (0 for asymmetric: 0/0).
    l = one({0.0f, 0.0f}, "ct-4b-ch-asym", st::dtype::bf16);
    CHECK((l.scale[0] == 0x1p-7f && l.zero[0] == 0 && l.codes == std::vector<std::int8_t>{0, 0}));
    l = one({0.0f, 0.0f}, "ct-4b-ch", st::dtype::f16);
    CHECK(l.scale[0] == 0x1p-10f);
    // The cpu rule divides in bf16, whose quotients near .5 land on .5 exactly and round to even: the two
    // rules part on some 8-bit codes, never by more than one, and agree on the scales.
    const auto w = in_dtype(normal(4096, 11), st::dtype::bf16);
    const auto a = one(w, "ct-8b-g128", st::dtype::bf16, ct::rules::cpu);
    const auto b = one(w, "ct-8b-g128", st::dtype::bf16, ct::rules::cuda);
    CHECK(a.scale == b.scale);
    std::size_t differ = 0;
    bool within_one = true;
    for (std::size_t i = 0; i < w.size(); ++i) {
        differ += a.codes[i] != b.codes[i];
        within_one &= std::abs(a.codes[i] - b.codes[i]) <= 1;
    }
    CHECK(within_one);
    CHECK(differ > 40);  // about 10% of the codes
    CHECK(differ < 1000);
}

TEST_CASE("compressed-tensors symmetric RTN error is at most half a step") {
    const auto w = normal(64 * 256, 5, 0.05f);
    for (const char* fmt : {"ct-4b-g128", "ct-8b-g64", "ct-2b-g32", "ct-4b-ch"}) {
        INFO(fmt);
        const auto f = ct::parse_checkpoint_format(fmt);
        const auto l = ct::quantize_layer(matrix_view<const float>(w.data(), 64, 256), f, st::dtype::f32, 2);
        double worst = 0.0;
        for (std::size_t r = 0; r < 64; ++r)
            for (std::size_t c = 0; c < 256; ++c) {
                const float s = l.scale[r * l.groups + l.group_of(c)];
                worst = std::max(worst, static_cast<double>(std::fabs(w[r * 256 + c] - l.value(r, c)) / s));
            }
        CHECK(worst <= 0.5 + 2e-5);  // half a step, plus float32 rounding of w / s and (q - z) * s at |q| <= 128
        CHECK(worst > 0.4);
    }
}

TEST_CASE("compressed-tensors convert_checkpoint and read_layer") {
    lowbit_test::scratch_dir dir("ct_ckpt");
    const auto q = normal(96 * 256, 1), lm = normal(16 * 256, 2), bias = normal(96, 3), odd = normal(6 * 200, 4);
    std::vector<std::uint16_t> q16(q.size());
    for (std::size_t i = 0; i < q.size(); ++i) q16[i] = float_to_bf16(q[i]);
    {
        st::writer w(dir.path / "in.safetensors");
        w.add("model.layers.0.q_proj.weight", st::dtype::bf16, {96, 256}, bytes(q16));
        w.add("model.layers.0.q_proj.bias", st::dtype::f32, {96}, bytes(bias));
        w.add("model.layers.0.odd.weight", st::dtype::f32, {6, 200}, bytes(odd));  // 200: no groups of 128
        w.add("lm_head.weight", st::dtype::f32, {16, 256}, bytes(lm));
        w.finish();
    }
    for (const char* fmt : {"ct-w4a16", "ct-w4a16-asym", "ct-8b-ch", "ct-3b-g64-asym"}) {
        for (const auto rules : {ct::rules::cuda, ct::rules::cpu}) {
            INFO(fmt << " " << ct::to_string(rules));
            ct::convert_options o;
            o.format = ct::parse_checkpoint_format(fmt);
            o.format.numerics = rules;
            o.threads = 2;
            const auto rep = ct::convert_checkpoint(dir.path / "in.safetensors", dir.path / "out.safetensors", o);
            const bool odd_fits = o.format.group == 0 || 200 % o.format.group == 0;
            CHECK(rep.quantized == (odd_fits ? 2u : 1u));
            CHECK(rep.kept.size() == (odd_fits ? 0u : 1u));
            CHECK(rep.ignore == (odd_fits ? std::vector<std::string>{"lm_head"}
                                          : std::vector<std::string>{"lm_head", "model.layers.0.odd"}));
            CHECK(rep.config_written.empty());  // no config.json beside the input
            const auto f = st::file::open(dir.path / "out.safetensors");
            CHECK(f.find("model.layers.0.q_proj.weight") == nullptr);
            CHECK(f.find("lm_head.weight") != nullptr);
            CHECK(f.find("model.layers.0.q_proj.bias") != nullptr);
            CHECK(f.at("model.layers.0.q_proj.weight_scale").dtype == st::dtype::bf16);
            CHECK((f.find("model.layers.0.q_proj.weight_zero_point") != nullptr) == !o.format.sym);

            // The config reads back as the same scheme and ignore list.
            const auto c = ct::format_from_config(json::parse(rep.config_json), "config");
            CHECK(c.format.name() == o.format.name());
            CHECK(c.ignore == rep.ignore);

            const auto back = ct::read_layer(f, "model.layers.0.q_proj", c.format);
            std::vector<float> w(q.size());
            for (std::size_t i = 0; i < q.size(); ++i) w[i] = bf16_to_float(q16[i]);
            const auto ref = ct::quantize_layer(matrix_view<const float>(w.data(), 96, 256), o.format, st::dtype::bf16);
            CHECK(back.codes == ref.codes);
            CHECK(back.scale == ref.scale);
            CHECK(back.zero == ref.zero);
            CHECK(back.dtype == st::dtype::bf16);
        }
    }
}

TEST_CASE("compressed-tensors read_layer refuses layers that contradict themselves") {
    lowbit_test::scratch_dir dir("ct_bad");
    const auto q = normal(16 * 96, 1);
    {
        st::writer w(dir.path / "in.safetensors");
        w.add("l.weight", st::dtype::f32, {16, 96}, bytes(q));
        w.finish();
    }
    ct::convert_options o;
    o.format = ct::parse_checkpoint_format("ct-3b-g32-asym");
    ct::convert_checkpoint(dir.path / "in.safetensors", dir.path / "ok.safetensors", o);
    const auto good = st::file::open(dir.path / "ok.safetensors");
    CHECK(ct::read_layer(good, "l", o.format).rows == 16);
    const auto with = [&](const std::string& part, st::dtype t, std::vector<std::uint64_t> shape,
                          std::vector<std::byte> data, const std::string& expect,
                          const ct::checkpoint_format& f) {
        INFO(part << ": " << expect);
        const auto path = dir.path / ("bad_" + part + ".safetensors");
        lowbit_test::rewrite_with(good, path, "l." + part, t, std::move(shape), std::move(data));
        CHECK_THROWS_WITH(ct::read_layer(st::file::open(path), "l", f),
                          Catch::Contains("compressed-tensors layer 'l'") && Catch::Contains(expect));
    };
    const auto& f = o.format;
    with("weight_packed", st::dtype::i32, {}, {}, "no tensor 'l.weight_packed'", f);
    with("weight_packed", st::dtype::i32, {16, 8}, std::vector<std::byte>(16 * 8 * 4), "expected I32 [16, 9]", f);
    // 96 3-bit codes, 10 a word: compressed-tensors 0.17's layout.
    with("weight_packed", st::dtype::i32, {16, 10}, std::vector<std::byte>(16 * 10 * 4), "0.17 and before", f);
    with("weight_shape", st::dtype::i32, {2}, std::vector<std::byte>(8), "expected I64 [2]", f);
    with("weight_scale", st::dtype::f32, {16, 2}, std::vector<std::byte>(16 * 2 * 4), "expected F16, BF16 or F32 [16, 3]",
         f);
    with("weight_zero_point", st::dtype::i32, {}, {}, "no tensor 'l.weight_zero_point'", f);
    with("weight_zero_point", st::dtype::i32, {6, 3}, std::vector<std::byte>(6 * 3 * 4), "expected I32 [2, 3]", f);
    auto sym = f;
    sym.sym = true;
    with("weight_scale", st::dtype::f32, {16, 3}, std::vector<std::byte>(16 * 3 * 4),
         "weight_zero_point is present in a symmetric scheme", sym);
    std::vector<std::byte> inf(16 * 3 * 4);
    const float pinf = INFINITY;
    std::memcpy(inf.data() + 4 * 7, &pinf, 4);
    with("weight_scale", st::dtype::f32, {16, 3}, std::move(inf), "weight_scale", f);
}

TEST_CASE("compressed-tensors configs lowbit does not read are refused by name") {
    const auto block = [](const std::string& weights, const std::string& extra = "") {
        return json::parse("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", " + extra +
                           "\"config_groups\": {\"group_0\": {\"targets\": [\"Linear\"], \"weights\": " + weights +
                           "}}}");
    };
    const std::string ok = "{\"num_bits\": 4, \"type\": \"int\", \"symmetric\": true, \"strategy\": \"group\", "
                           "\"group_size\": 128}";
    CHECK(ct::format_from_config(block(ok), "c").format.name() == "ct-4b-g128");
    // A RedHat W4A16 checkpoint's block (abridged): actorder "static" is the plain layout.
    CHECK(ct::format_from_config(block("{\"actorder\": \"static\", \"num_bits\": 4, \"type\": \"int\", \"symmetric\": "
                                       "true, \"strategy\": \"group\", \"group_size\": 128, \"observer\": "
                                       "\"memoryless_minmax\"}",
                                       "\"ignore\": [\"lm_head\", \"re:^mtp.*\"], "),
                                 "c")
              .ignore.size() == 2);
    const auto refused = [&](const json::value& q, const char* expect) {
        INFO(expect);
        CHECK_THROWS_WITH(ct::format_from_config(q, "config.json"),
                          Catch::Contains("config.json") && Catch::Contains(expect));
    };
    refused(json::parse("{\"quant_method\": \"gptq\"}"), "quant_method");
    refused(json::parse("{\"quant_method\": \"compressed-tensors\", \"format\": \"naive-quantized\", \"config_groups\": "
                        "{\"group_0\": {\"weights\": " + ok + "}}}"),
            "lowbit reads \"pack-quantized\"");
    refused(block("{\"num_bits\": 4, \"type\": \"float\", \"symmetric\": true, \"strategy\": \"group\", "
                  "\"group_size\": 16}"),
            "type \"float\"");
    refused(block("{\"num_bits\": 4, \"type\": \"int\", \"symmetric\": true, \"strategy\": \"tensor\"}"),
            "strategy \"tensor\"");
    refused(block("{\"num_bits\": 4, \"type\": \"int\", \"symmetric\": true, \"strategy\": \"group\", \"group_size\": "
                  "128, \"actorder\": \"group\"}"),
            "removed");
    refused(block("{\"num_bits\": 16, \"type\": \"int\", \"symmetric\": true, \"strategy\": \"channel\"}"),
            "num_bits");
    refused(json::parse("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", \"config_groups\": "
                        "{\"group_0\": {\"weights\": " + ok + "}, \"group_1\": {\"weights\": " + ok + "}}}"),
            "2 config groups");
    refused(json::parse("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", \"config_groups\": "
                        "{\"group_0\": {\"weights\": " + ok + ", \"input_activations\": {\"num_bits\": 8}}}}"),
            "input activations");
}
