// What an inference engine does with lowbit, in one file: open a GGUF file,
// take its 2-D weight tensors as views into the mapped file (no copy), and run
// y = W x on them with the engine's own two threads, each given a range of
// W's rows. Each product is checked against the f32 product of the
// dequantized weights, and the time per token and weight bytes/s printed.
//
//   engine [MODEL.gguf [TENSOR...]]
//
// Without a file it writes a small model of its own (Q4_0, Q4_K, Q6_K and
// Q8_0 tensors) to a temporary file and runs on that.

#include <lowbit/formats/ggml.hpp>
#include <lowbit/formats/gguf.hpp>
#include <lowbit/kernels/ggml_dequantize.hpp>
#include <lowbit/kernels/ggml_gemv.hpp>
#include <lowbit/kernels/ggml_quantize.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using lowbit::ggml::type;

// A model of four layers' worth of tensors, named as llama.cpp names them.
fs::path write_demo_model() {
    const fs::path path = fs::temp_directory_path() / ("lowbit_engine_demo_" + std::to_string(std::random_device{}()) + ".gguf");
    struct tensor {
        const char* name;
        type t;
        std::size_t rows, cols;
    };
    const tensor tensors[] = {{"blk.0.attn_q.weight", type::q4_0, 1024, 1024},
                              {"blk.0.ffn_up.weight", type::q4_k, 2816, 1024},
                              {"blk.0.ffn_down.weight", type::q6_k, 1024, 2816},
                              {"output.weight", type::q8_0, 4096, 1024}};
    lowbit::gguf_writer w;
    w.metadata().set("general.architecture", std::string("llama"));
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    std::vector<std::vector<unsigned char>> data;  // the writer reads it in write()
    for (const tensor& t : tensors) {
        std::vector<float> x(t.rows * t.cols);
        for (auto& v : x) v = nd(rng);
        auto& q = data.emplace_back(t.rows * lowbit::ggml::row_bytes(t.t, t.cols));
        lowbit::kernels::quantize_ggml_rows(t.t, x.data(), q.data(), t.rows, t.cols);
        w.add_tensor(t.name, {t.cols, t.rows}, t.t, std::as_bytes(std::span(q)));
    }
    w.write(path);
    return path;
}

// y = W x on `threads` threads of the engine's own, each on its range of rows.
void gemv_threads(const lowbit::ggml::rows_view& w, const std::vector<float>& x, std::vector<float>& y,
                  unsigned threads) {
    const lowbit::matrix_view<const float> xv(x.data(), 1, x.size());
    const lowbit::matrix_view<float> yv(y.data(), 1, y.size());
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < threads; ++i) {
        const std::size_t r0 = w.rows() * i / threads / 16 * 16;
        const std::size_t r1 = i + 1 == threads ? w.rows() : w.rows() * (i + 1) / threads / 16 * 16;
        pool.emplace_back([&, r0, r1] { lowbit::kernels::gemv_ggml(w, xv, yv, {r0, r1}); });
    }
    for (auto& t : pool) t.join();
}

}  // namespace

int main(int argc, char** argv) try {
    fs::path path;
    bool demo = argc < 2;
    path = demo ? write_demo_model() : fs::path(argv[1]);
    const lowbit::gguf_file f = lowbit::read_gguf(path);
    if (demo) fs::remove(path);  // the mapping stays valid while f lives

    std::vector<std::string> names;
    for (int i = 2; i < argc; ++i) names.emplace_back(argv[i]);
    if (names.empty())
        for (const auto& t : f.tensors())
            if (t.shape.size() == 2 && lowbit::kernels::gemv_ggml_supports(t.type)) names.push_back(t.name);

    std::printf("%-28s %-7s %13s %12s %10s %12s\n", "tensor", "type", "rows x cols", "us/token", "GB/s", "max rel err");
    int bad = 0;
    std::mt19937 rng(2);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (const std::string& name : names) {
        const lowbit::ggml::rows_view w = f.view(name);  // points into the mapped file
        std::vector<float> x(w.cols()), y(w.rows()), ref(w.rows());
        for (auto& v : x) v = nd(rng);

        // Two threads, best of ten tokens.
        double best = 1e30;
        for (int rep = 0; rep < 10; ++rep) {
            const auto t0 = std::chrono::steady_clock::now();
            gemv_threads(w, x, y, 2);
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }

        // The f32 product of the dequantized weights, a row at a time.
        std::vector<float> row(w.cols());
        double worst = 0;
        for (std::size_t r = 0; r < w.rows(); ++r) {
            lowbit::kernels::dequantize_ggml_rows(w.type_id(), w.row(r), row.data(), 1, w.cols());
            double exact = 0, mag = 0;
            for (std::size_t c = 0; c < w.cols(); ++c) {
                exact += static_cast<double>(row[c]) * x[c];
                mag += std::fabs(static_cast<double>(row[c]) * x[c]);
            }
            worst = std::max(worst, std::fabs(y[r] - exact) / std::max(mag, 1e-30));
        }
        // Float sums of w.cols() products: the header's bound, 2^-24 per term.
        const bool ok = worst <= (static_cast<double>(w.cols()) / 4 + 6) * std::ldexp(1.0, -24);
        bad += !ok;
        std::printf("%-28s %-7s %6zu x %-6zu %12.1f %10.2f %12.2e%s\n", name.c_str(), std::string(w.type_name()).c_str(),
                    w.rows(), w.cols(), best * 1e6, static_cast<double>(w.rows() * w.row_bytes()) / best / 1e9, worst,
                    ok ? "" : "  WRONG");
    }
    if (bad) std::fprintf(stderr, "engine: %d product(s) outside the bound\n", bad);
    return bad ? 1 : 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "engine: %s\n", e.what());
    return 1;
}
