// HQQ checkpoints (formats/hqq_checkpoint.hpp): format names, hqq's BitPack
// layouts on bytes worked out by hand, convert_checkpoint writing
// HQQLinear.state_dict()'s tensors and read_layer reading them back, and
// readers refusing layers that contradict themselves. That hqq's own
// HQQLinear reads these files to the same matrix is tests/interop/test_hqq.py.
#include "catch.hpp"
#include "checkpoint_util.hpp"
#include "scratch_dir.hpp"

#include <lowbit/formats/hqq_checkpoint.hpp>

#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
namespace st = lowbit::safetensors;
namespace hc = lowbit::hqq_checkpoint;

using lowbit_test::bytes;
using lowbit_test::normal;

TEST_CASE("HQQ checkpoint formats parse and print") {
    const auto f = hc::parse_checkpoint_format("hqq-3b-g128");
    CHECK((f.bits == 3 && f.group == 128 && !f.round_zero()));
    CHECK(f.name() == "hqq-3b-g128");
    CHECK(hc::parse_checkpoint_format("hqq-4b-g64").round_zero());
    CHECK(hc::parse_checkpoint_format("hqq-4b-g64").config_json() ==
          "{\"quant_method\": \"hqq\", \"skip_modules\": [\"lm_head\"], \"quant_config\": {\"offload_meta\": false, "
          "\"scale_quant_params\": null, \"weight_quant_params\": {\"axis\": 1, \"channel_wise\": true, "
          "\"group_size\": 64, \"nbits\": 4, \"optimize\": true, \"round_zero\": true, \"view_as_float\": false}, "
          "\"zero_quant_params\": null}}");
    for (const char* bad : {"hqq-5b-g64", "hqq-4b-g60", "hqq-4b-g0", "hqq-4b-g", "hqq-4-g64", "mlx-4b-g64",
                            "hqq-4b-g64x", "hqq-16b-g64"})
        CHECK_THROWS_AS(hc::parse_checkpoint_format(bad), lowbit::error);
}

TEST_CASE("HQQ packing: hqq's BitPack over groups") {
    // 4 bits, 4 groups of 2: group g < 2 in the high nibble of row g, the
    // others in the low nibble of row g - 2.
    const std::vector<std::uint8_t> c4 = {1, 2, 3, 4, 5, 6, 7, 8};  // group g: codes 2g+1, 2g+2
    const auto p4 = hc::pack(c4, 4, 2, 4);
    REQUIRE(p4.size() == 4);
    CHECK(std::to_integer<int>(p4[0]) == 0x15);
    CHECK(std::to_integer<int>(p4[1]) == 0x26);
    CHECK(std::to_integer<int>(p4[2]) == 0x37);
    CHECK(std::to_integer<int>(p4[3]) == 0x48);
    // 2 bits, 4 groups of 1: one byte, group 0 in the top two bits.
    const auto p2 = hc::pack({3, 0, 2, 1}, 4, 1, 2);
    REQUIRE(p2.size() == 1);
    CHECK(std::to_integer<int>(p2[0]) == 0b11001001);
    // 3 bits, 11 groups of 1: 2 int32 rows (padded to 20 groups), group g in
    // row g % 2 at bit 27 - 3 (g / 2).
    std::vector<std::uint8_t> c3(11);
    for (std::size_t g = 0; g < 11; ++g) c3[g] = static_cast<std::uint8_t>(g % 8);
    const auto p3 = hc::pack(c3, 11, 1, 3);
    REQUIRE(p3.size() == 8);
    std::uint32_t row0 = 0, row1 = 0;
    std::memcpy(&row0, p3.data(), 4);
    std::memcpy(&row1, p3.data() + 4, 4);
    std::uint32_t want0 = 0, want1 = 0;
    for (std::size_t g = 0; g < 11; ++g) (g % 2 ? want1 : want0) |= std::uint32_t{c3[g]} << (27 - 3 * (g / 2));
    CHECK(row0 == want0);
    CHECK(row1 == want1);
    CHECK((row0 >> 30) == 0);
    // Every width round-trips, 3 bits with groups that leave padding.
    std::mt19937 rng(1);
    for (const int bits : {1, 2, 3, 4, 8})
        for (const std::size_t groups : {8u, 16u, 40u, 2048u}) {
            const std::size_t gs = 16;
            std::vector<std::uint8_t> c(groups * gs);
            for (auto& v : c) v = static_cast<std::uint8_t>(rng() & ((1u << bits) - 1));
            CAPTURE(bits, groups);
            CHECK(hc::unpack(hc::pack(c, groups, gs, bits), groups, gs, bits) == c);
        }
}

TEST_CASE("HQQ convert_checkpoint writes HQQLinear's state dict and read_layer reads it back") {
    lowbit_test::scratch_dir dir("hqq_ckpt");
    const auto q = normal(96 * 256, 1), lm = normal(16 * 128, 2), bias = normal(96, 3), odd = normal(6 * 40, 4);
    std::vector<std::uint16_t> q16(q.size());
    for (std::size_t i = 0; i < q.size(); ++i) q16[i] = float_to_fp16(q[i]);
    {
        st::writer w(dir.path / "in.safetensors");
        w.add("model.layers.0.q_proj.weight", st::dtype::f16, {96, 256}, bytes(q16));
        w.add("model.layers.0.q_proj.bias", st::dtype::f32, {96}, bytes(bias));
        w.add("model.layers.0.odd.weight", st::dtype::f32, {6, 40}, bytes(odd));  // 40: no groups of 64
        w.add("lm_head.weight", st::dtype::f32, {16, 128}, bytes(lm));
        w.finish();
    }
    for (const char* fmt : {"hqq-4b-g64", "hqq-3b-g64", "hqq-2b-g32", "hqq-8b-g128", "hqq-1b-g64"}) {
        INFO(fmt);
        hc::convert_options o;
        o.format = hc::parse_checkpoint_format(fmt);
        const auto rep = hc::convert_checkpoint(dir.path / "in.safetensors", dir.path / "out.safetensors", o);
        CHECK(rep.quantized == 1);
        REQUIRE(rep.kept.size() == (40 % o.format.group ? 1u : 0u));
        const auto f = st::file::open(dir.path / "out.safetensors");
        CHECK(f.find("model.layers.0.q_proj.weight") == nullptr);
        CHECK(f.find("lm_head.weight") != nullptr);  // skipped, as transformers skips it
        CHECK(f.find("model.layers.0.q_proj.bias") != nullptr);
        // 19 tensors a layer, the meta as hqq encodes it.
        std::size_t parts = 0;
        for (const auto& t : f.tensors()) parts += t.name.starts_with("model.layers.0.q_proj.") && t.name != "model.layers.0.q_proj.bias";
        CHECK(parts == 19);
        const auto* cd = f.find("model.layers.0.q_proj.compute_dtype");
        REQUIRE(cd != nullptr);
        CHECK(std::string(reinterpret_cast<const char*>(cd->data().data()), cd->data().size()) == "torch.float16");
        CHECK(f.find("model.layers.0.q_proj.scale")->dtype == st::dtype::f16);
        CHECK(f.find("model.layers.0.q_proj.nbits")->shape.empty());

        // Read back: hqq's result on the fp16 weights, params rounded to fp16.
        const hqq_result back = hc::read_layer(f, "model.layers.0.q_proj");
        std::vector<float> w(q.size());
        for (std::size_t i = 0; i < q.size(); ++i) w[i] = fp16_to_float(q16[i]);
        hqq_options ho;
        ho.bits = o.format.bits;
        ho.group_size = o.format.group;
        const hqq_result ref = hqq(matrix_view<const float>(w.data(), 96, 256), ho);
        CHECK(back.codes == ref.codes);
        REQUIRE(back.scale.size() == ref.scale.size());
        bool params_match = true;
        for (std::size_t g = 0; g < ref.scale.size(); ++g)
            params_match &= back.scale[g] == fp16_to_float(float_to_fp16(ref.scale[g])) &&
                            back.zero[g] == fp16_to_float(float_to_fp16(ref.zero[g]));
        CHECK(params_match);
    }
}

TEST_CASE("HQQ read_layer refuses layers that contradict themselves") {
    lowbit_test::scratch_dir dir("hqq_bad");
    const auto q = normal(8 * 64, 1);
    {
        st::writer w(dir.path / "in.safetensors");
        w.add("l.weight", st::dtype::f32, {8, 64}, bytes(q));
        w.finish();
    }
    hc::convert_options o;
    hc::convert_checkpoint(dir.path / "in.safetensors", dir.path / "ok.safetensors", o);
    const auto good = st::file::open(dir.path / "ok.safetensors");
    // Rewrite the layer with one part replaced or left out.
    const auto with = [&](const std::string& part, st::dtype t, std::vector<std::uint64_t> shape,
                          std::vector<std::byte> data, const std::string& expect) {
        INFO(part);
        const auto path = dir.path / ("bad_" + part + ".safetensors");
        lowbit_test::rewrite_with(good, path, "l." + part, t, std::move(shape), std::move(data));
        const auto f = st::file::open(path);
        CHECK_THROWS_WITH(hc::read_layer(f, "l"), Catch::Contains("HQQ layer 'l'") && Catch::Contains(expect));
    };
    with("W_q", st::dtype::u8, {}, {}, "no tensor 'l.W_q'");
    with("W_q", st::dtype::u8, {3, 64}, std::vector<std::byte>(192), "expected U8 [4, 64]");
    with("nbits", st::dtype::i32, {}, std::vector<std::byte>{std::byte{5}, {}, {}, {}}, "nbits 5");
    with("axis", st::dtype::i32, {}, std::vector<std::byte>{std::byte{0}, {}, {}, {}}, "axis is not 1");
    with("packing", st::dtype::u8, {7}, hc::detail::ascii("2bit_u8"), "packing '2bit_u8'");
    with("scale", st::dtype::f32, {7, 1}, std::vector<std::byte>(28), "scale is [7, 1]");
    std::vector<float> nan_scale(8, 1.0f);
    nan_scale[3] = std::nanf("");
    std::vector<std::byte> ns(32);
    std::memcpy(ns.data(), nan_scale.data(), 32);
    with("scale", st::dtype::f32, {8, 1}, ns, "row 3");
}
