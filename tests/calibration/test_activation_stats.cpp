// Activation statistics (algorithms/activation_stats.hpp) against sums taken
// directly, whatever the chunking; saved and loaded (formats/
// calibration_file.hpp); a saved Hessian drives a GPTQ checkpoint exactly as
// the activations it came from do.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <lowbit/formats/calibration_file.hpp>
#include <lowbit/formats/gptq_quantize.hpp>
#include <random>
#include <string>
#include <vector>

#include "scratch_dir.hpp"

using namespace lowbit;

namespace {

std::vector<float> normal(std::size_t n, std::uint32_t seed, float sd = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> v(n);
    for (float& x : v) x = nd(rng);
    return v;
}

std::vector<std::byte> bytes_of(const std::vector<float>& v) {
    std::vector<std::byte> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
}

}  // namespace

TEST_CASE("activation_stats: means, maxima and the Hessian, whatever the chunks", "[calibration][stats]") {
    const std::size_t tokens = 700, in = 48;
    auto x = normal(tokens * in, 3);
    for (std::size_t t = 0; t < tokens; ++t) x[t * in + 7] *= 20.0f;  // one loud channel
    const std::size_t chunk = GENERATE(std::size_t{1}, std::size_t{64}, std::size_t{700});
    CAPTURE(chunk);
    calibration::activation_stats s(in);
    for (std::size_t t0 = 0; t0 < tokens; t0 += chunk)
        s.add(matrix_view<const float>(x.data() + t0 * in, std::min(chunk, tokens - t0), in));
    REQUIRE(s.tokens() == tokens);
    const auto ma = s.mean_abs(), ms = s.mean_sq();
    const auto h = s.hessian().matrix();
    for (std::size_t c = 0; c < in; ++c) {
        double sa = 0.0, sq = 0.0;
        float mx = 0.0f;
        for (std::size_t t = 0; t < tokens; ++t) {
            const double v = x[t * in + c];
            sa += std::fabs(v);
            sq += v * v;
            mx = std::max(mx, std::fabs(x[t * in + c]));
        }
        CHECK(ma[c] == Approx(sa / tokens).epsilon(1e-6));
        CHECK(ms[c] == Approx(sq / tokens).epsilon(1e-6));
        CHECK(s.max_abs()[c] == mx);
        // mean x^2 is the Hessian's diagonal over 2.
        CHECK(h[c * in + c] == Approx(2.0 * sq / tokens).epsilon(1e-4));
    }
    CHECK(ma[7] > 10.0f * ma[8]);
    // Without the Hessian: the same vectors, and asking for it is an error.
    calibration::activation_stats lite(in, false);
    lite.add(matrix_view<const float>(x.data(), tokens, in));
    CHECK(lite.max_abs() == s.max_abs());
    CHECK_THROWS_WITH(lite.hessian(), Catch::Contains("made without the Hessian"));
    // Bad chunks change nothing.
    auto bad = x;
    bad[5 * in + 2] = std::nanf("");
    CHECK_THROWS_WITH(lite.add(matrix_view<const float>(bad.data(), 10, in)),
                      Catch::Contains("activation of token 705, feature 2 is not finite"));
    CHECK_THROWS_WITH(lite.add(matrix_view<const float>(x.data(), 10, in - 1)),
                      Catch::Contains("activations have 47 features, the layer 48"));
    CHECK(lite.tokens() == tokens);
    CHECK(lite.max_abs() == s.max_abs());
}

TEST_CASE("calibration files: saved, loaded, checked", "[calibration][stats]") {
    lowbit_test::scratch_dir dir("calib_file");
    const std::size_t tokens = 300;
    std::map<std::string, calibration::activation_stats> layers;
    layers.emplace("blk.q", calibration::activation_stats(32));
    layers.emplace("blk.o", calibration::activation_stats(16, false));
    const auto xq = normal(tokens * 32, 1), xo = normal(tokens * 16, 2);
    layers.at("blk.q").add(matrix_view<const float>(xq.data(), tokens, 32));
    layers.at("blk.o").add(matrix_view<const float>(xo.data(), tokens, 16));
    const auto path = dir.path / "stats.safetensors";
    calibration::save_stats(path, layers);
    const auto f = safetensors::file::open(path);
    const auto back = calibration::load_stats(f, path.string());
    REQUIRE(back.size() == 2);
    for (const auto& [name, s] : layers) {
        CAPTURE(name);
        const auto& b = back.at(name);
        CHECK(b.features == s.size());
        CHECK(b.tokens == tokens);
        CHECK(b.mean_abs == s.mean_abs());
        CHECK(b.max_abs == s.max_abs());
        CHECK(b.mean_sq == s.mean_sq());
        CHECK((b.hessian != nullptr) == s.has_hessian());
        if (s.has_hessian()) CHECK(b.hessian_matrix() == s.hessian().matrix());
    }
    // A file that contradicts itself names the layer and the statistic.
    const auto rewrite = [&](const std::string& name, safetensors::dtype type, std::vector<std::uint64_t> shape,
                             std::vector<std::byte> data) {
        safetensors::writer w;
        for (const auto& t : f.tensors())
            if (t.name != name) w.add(t.name, t.dtype, t.shape, t.data());
        w.add(name, type, std::move(shape), std::move(data));
        return w.to_bytes();
    };
    using safetensors::dtype;
    const auto expect = [&](const std::vector<std::byte>& img, const std::string& what) {
        CAPTURE(what);
        CHECK_THROWS_WITH(calibration::load_stats(safetensors::file::from_memory(img), "stats"), Catch::Contains(what));
    };
    expect(rewrite("blk.o.mean_abs", dtype::f32, {15}, bytes_of(std::vector<float>(15, 1.0f))),
           "stats: layer 'blk.o': mean_abs has 15 features, its other statistics 16");
    expect(rewrite("blk.o.tokens", dtype::i32, {1}, std::vector<std::byte>(4)),
           "layer 'blk.o': tokens is I32 [1], expected I64 [1]");
    auto h = layers.at("blk.q").hessian().matrix();
    h[3 * 32 + 4] = INFINITY;
    expect(rewrite("blk.q.hessian", dtype::f32, {32, 32}, bytes_of(h)), "layer 'blk.q': hessian (3, 4) is not finite");
    expect(rewrite("blk.q.hessian", dtype::f32, {32, 16}, bytes_of(std::vector<float>(512, 0.0f))),
           "layer 'blk.q': hessian is F32 [32, 16], expected F32 [in, in]");
    auto m = layers.at("blk.o").max_abs();
    m[2] = std::nanf("");
    expect(rewrite("blk.o.max_abs", dtype::f32, {16}, bytes_of(m)), "layer 'blk.o': max_abs");
}

TEST_CASE("gptq quantize: a saved Hessian gives the checkpoint its activations give", "[calibration][stats][gptq]") {
    lowbit_test::scratch_dir dir("calib_stats_gptq");
    const std::size_t out = 32, in = 64, tokens = 400;
    const auto w = normal(out * in, 5, 0.05f), x = normal(tokens * in, 6);
    const auto model = dir.path / "model.safetensors";
    {
        safetensors::writer mw(model);
        mw.add("l.weight", safetensors::dtype::f32, {out, in}, bytes_of(w));
        mw.finish();
    }
    const auto acts = dir.path / "acts.safetensors";
    {
        safetensors::writer aw(acts);
        aw.add("l", safetensors::dtype::f32, {tokens, in}, bytes_of(x));
        aw.finish();
    }
    std::map<std::string, calibration::activation_stats> layers;
    layers.emplace("l", calibration::activation_stats(in));
    // The pipeline accumulates activations in chunks of 1024 tokens: one here.
    layers.at("l").add(matrix_view<const float>(x.data(), tokens, in));
    const auto stats = dir.path / "stats.safetensors";
    calibration::save_stats(stats, layers);
    gptq::quantize_options o;
    o.format.group = 32;
    std::filesystem::create_directories(dir.path / "a");
    std::filesystem::create_directories(dir.path / "b");
    gptq::quantize_checkpoint(model, dir.path / "a" / "q.safetensors", acts, o);
    const auto rep = gptq::quantize_checkpoint(model, dir.path / "b" / "q.safetensors", stats, o);
    REQUIRE(rep.layers.size() == 1);
    CHECK(rep.layers[0].tokens == tokens);
    const auto fa = safetensors::file::open(dir.path / "a" / "q.safetensors");
    const auto fb = safetensors::file::open(dir.path / "b" / "q.safetensors");
    for (const char* t : {"l.qweight", "l.qzeros", "l.scales", "l.g_idx"}) {
        const auto a = fa.at(t).data(), b = fb.at(t).data();
        CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
    // Saved with fewer tokens than asked for: refused, naming the layer.
    o.min_tokens = 401;
    CHECK_THROWS_WITH(gptq::quantize_checkpoint(model, dir.path / "b" / "r.safetensors", stats, o),
                      Catch::Contains("layer 'l': 400 calibration tokens; at least 401 are needed"));
    // Statistics without a Hessian cannot drive GPTQ.
    std::map<std::string, calibration::activation_stats> lite;
    lite.emplace("l", calibration::activation_stats(in, false));
    lite.at("l").add(matrix_view<const float>(x.data(), tokens, in));
    calibration::save_stats(dir.path / "lite.safetensors", lite);
    CHECK_THROWS_WITH(gptq::quantize_checkpoint(model, dir.path / "b" / "r.safetensors", dir.path / "lite.safetensors", o),
                      Catch::Contains("layer 'l' has statistics but neither activations nor a Hessian"));
}

TEST_CASE("activation statistics as a llama.cpp importance matrix", "[calibration][stats][imatrix]") {
    lowbit_test::scratch_dir dir("calib_imatrix");
    const std::size_t tokens = 250, in = 40;
    const auto x = normal(tokens * in, 8);
    calibration::activation_stats s(in, false);
    s.add(matrix_view<const float>(x.data(), tokens, in));
    const auto path = dir.path / "imatrix.gguf";
    ggml::write_imatrix(path, {{"blk.0.attn_q.weight", calibration::imatrix_entry(s)}}, {"calibration.txt"}, 1, tokens);
    const auto m = ggml::read_imatrix(path);
    const auto w = m.weights_for("blk.0.attn_q.weight", in);
    REQUIRE(w.size() == in);
    const auto ms = s.mean_sq();
    for (std::size_t c = 0; c < in; ++c) CHECK(w[c] == Approx(ms[c]).epsilon(1e-6));
}
