// Writes the small models tests/cli/cli_cases.sh runs the lowbit program on:
// a tiny llama-shaped GGUF model and variants with one bad value, a model
// whose weights are already Q8_0, a GGUF imatrix, safetensors checkpoints, and
// a larger model for the interruption cases.
//
//   make_fixtures DIR [--no-large]

#include <lowbit/formats/ggml.hpp>
#include <lowbit/formats/gguf.hpp>
#include <lowbit/formats/safetensors.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
constexpr std::size_t n_embd = 256, n_ff = 512;

std::vector<float> gaussian(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, 0.05f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

std::span<const std::byte> bytes(const std::vector<float>& v) { return std::as_bytes(std::span<const float>(v)); }

// A llama model with n_layer layers of n_embd; `poke` edits blk.0.attn_q.weight
// (rows of n_embd) before it is written. q8: the 2-D weights stored as Q8_0.
template <class Poke>
void write_model(const fs::path& path, std::size_t n_layer, Poke poke, bool q8 = false, std::size_t ff = n_ff) {
    lowbit::gguf_writer w;
    auto& m = w.metadata();
    m.set("general.architecture", std::string("llama"));
    m.set("general.name", std::string("lowbit cli fixture"));
    m.set("llama.block_count", static_cast<std::uint32_t>(n_layer));
    m.set("llama.embedding_length", static_cast<std::uint32_t>(n_embd));
    m.set("llama.feed_forward_length", static_cast<std::uint32_t>(ff));
    m.set("llama.attention.head_count", std::uint32_t{4});
    m.set("llama.attention.head_count_kv", std::uint32_t{4});
    std::vector<std::vector<float>> keep;
    std::vector<std::vector<unsigned char>> keep_q;
    std::uint64_t seed = 1;
    auto add = [&](const std::string& name, std::size_t rows, std::size_t cols) {
        keep.push_back(gaussian(rows * cols, seed++));
        if (name == "blk.0.attn_q.weight") poke(keep.back());
        if (q8 && rows > 1) {
            keep_q.emplace_back(rows * lowbit::ggml::row_bytes(lowbit::ggml::type::q8_0, cols));
            lowbit::ggml::quantize_rows(lowbit::ggml::type::q8_0, keep.back().data(), keep_q.back().data(), rows, cols);
            w.add_tensor(name, {cols, rows}, lowbit::ggml::type::q8_0, std::as_bytes(std::span(keep_q.back())));
        } else {
            w.add_tensor(name, rows > 1 ? std::vector<std::uint64_t>{cols, rows} : std::vector<std::uint64_t>{cols},
                         lowbit::ggml::type::f32, bytes(keep.back()));
        }
    };
    add("token_embd.weight", 64, n_embd);
    for (std::size_t l = 0; l < n_layer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        add(b + "attn_norm.weight", 1, n_embd);
        add(b + "attn_q.weight", n_embd, n_embd);
        add(b + "attn_k.weight", n_embd, n_embd);
        add(b + "attn_v.weight", n_embd, n_embd);
        add(b + "attn_output.weight", n_embd, n_embd);
        add(b + "ffn_norm.weight", 1, n_embd);
        add(b + "ffn_gate.weight", ff, n_embd);
        add(b + "ffn_up.weight", ff, n_embd);
        add(b + "ffn_down.weight", n_embd, ff);
    }
    add("output_norm.weight", 1, n_embd);
    add("output.weight", 64, n_embd);
    w.write(path);
}

void write_imatrix(const fs::path& path) {
    lowbit::gguf_writer w;
    w.metadata().set("general.type", std::string("imatrix"));
    w.metadata().set("imatrix.datasets", lowbit::gguf_array(std::vector<std::string>{"fixture"}));
    w.metadata().set("imatrix.chunk_count", std::uint32_t{1});
    w.metadata().set("imatrix.chunk_size", std::uint32_t{512});
    static std::vector<float> sums(n_embd, 1.0f), counts(1, 1.0f);
    w.add_tensor("blk.0.attn_q.weight.in_sum2", {n_embd, 1}, lowbit::ggml::type::f32, bytes(sums));
    w.add_tensor("blk.0.attn_q.weight.counts", {1, 1}, lowbit::ggml::type::f32, bytes(counts));
    w.write(path);
}

template <class Poke>
void write_checkpoint(const fs::path& path, Poke poke) {
    namespace st = lowbit::safetensors;
    st::writer w(path);
    w.set_metadata("format", "pt");
    auto a = gaussian(64 * 128, 7), b = gaussian(128, 8);
    poke(a);
    w.add("model.layers.0.mlp.down_proj.weight", st::dtype::f32, {64, 128}, std::vector<std::byte>(bytes(a).begin(), bytes(a).end()));
    w.add("model.layers.0.input_layernorm.weight", st::dtype::f32, {128}, std::vector<std::byte>(bytes(b).begin(), bytes(b).end()));
    w.finish();
}

// Calibration activations for a GPTQ run: `layer` [tokens, width], one
// value replaced by `bad` at (7, 3) unless it is 0.
void write_calibration(const fs::path& path, const std::string& layer, std::size_t tokens, std::size_t width,
                       float bad = 0.0f) {
    namespace st = lowbit::safetensors;
    st::writer w(path);
    auto x = gaussian(tokens * width, 9);
    if (bad != 0.0f) x[7 * width + 3] = bad;
    w.add(layer, st::dtype::f32, {tokens, width}, std::vector<std::byte>(bytes(x).begin(), bytes(x).end()));
    w.finish();
}

}  // namespace

int main(int argc, char** argv) {
    const bool large = !(argc == 3 && std::strcmp(argv[2], "--no-large") == 0);
    if (argc != 2 && large) {
        std::fprintf(stderr, "usage: make_fixtures DIR [--no-large]\n");
        return 2;
    }
    try {
        const fs::path d = argv[1];
        fs::create_directories(d);
        const float inf = std::numeric_limits<float>::infinity();
        const auto none = [](std::vector<float>&) {};
        // One bad value at row 2, column 5 of blk.0.attn_q.weight.
        const auto at = [](float v) { return [v](std::vector<float>& w) { w[2 * n_embd + 5] = v; }; };
        write_model(d / "model.gguf", 1, none);
        write_model(d / "nan.gguf", 1, at(std::numeric_limits<float>::quiet_NaN()));
        write_model(d / "inf.gguf", 1, at(inf));
        write_model(d / "neginf.gguf", 1, at(-inf));
        write_model(d / "huge.gguf", 1, at(1e30f));
        write_model(d / "max.gguf", 1, at(std::numeric_limits<float>::max()));
        write_model(d / "spike.gguf", 1, at(-1e6f));
        write_model(d / "f16range.gguf", 1, at(1e5f));
        write_model(d / "q8.gguf", 1, none, true);
        // About 110 MB of f32 weights: long enough to be interrupted mid-write.
        if (large) write_model(d / "large.gguf", 8, none, false, 4096);
        write_imatrix(d / "imatrix.gguf");
        write_checkpoint(d / "model.safetensors", none);
        write_checkpoint(d / "nan.safetensors", [](std::vector<float>& w) { w[3 * 128 + 9] = std::nanf(""); });
        write_checkpoint(d / "f16range.safetensors", [](std::vector<float>& w) { w[1 * 128 + 2] = 1e5f; });
        const std::string down = "model.layers.0.mlp.down_proj";
        write_calibration(d / "calib.safetensors", down, 256, 128);
        write_calibration(d / "calib_nan.safetensors", down, 256, 128, std::nanf(""));
        write_calibration(d / "calib_few.safetensors", down, 16, 128);
        write_calibration(d / "calib_width.safetensors", down, 256, 64);
        write_calibration(d / "calib_missing.safetensors", "model.layers.0.mlp.up_proj", 256, 128);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "make_fixtures: %s\n", e.what());
        return 1;
    }
    return 0;
}
