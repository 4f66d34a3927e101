// What an inference engine does with lowbit, in one file: open a GGUF file,
// take its 2-D weight tensors as views into the mapped file (no copy), and run
// y = W x on them with the engine's own two threads, each given a range of
// W's rows, with f32 activations and with activations quantized once for
// the int8 path. The f32 product is checked against the product of the
// dequantized weights, the int8 one compared with it (relative RMS
// difference: the activations' quantization), and the times per token and
// weight bytes/s printed.
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

// y = W x on `threads` threads of the engine's own, each on its range of
// rows: f32 activations, or (xq non-null) activations quantized once for the
// int8 path.
void gemv_threads(const lowbit::ggml::rows_view& w, const std::vector<float>& x,
                  const lowbit::kernels::ggml_activations* xq, std::vector<float>& y, unsigned threads) {
    const lowbit::matrix_view<const float> xv(x.data(), 1, x.size());
    const lowbit::matrix_view<float> yv(y.data(), 1, y.size());
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < threads; ++i) {
        const std::size_t r0 = w.rows() * i / threads / 16 * 16;
        const std::size_t r1 = i + 1 == threads ? w.rows() : w.rows() * (i + 1) / threads / 16 * 16;
        pool.emplace_back([&, r0, r1] {
            if (xq)
                lowbit::kernels::gemv_ggml(w, *xq, yv, {r0, r1});
            else
                lowbit::kernels::gemv_ggml(w, xv, yv, {r0, r1});
        });
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

    std::printf("%-24s %-7s %13s %9s %9s %8s %11s %11s\n", "tensor", "type", "rows x cols", "f32 us", "int8 us",
                "GB/s", "f32 rel err", "int8 vs f32");
    int bad = 0;
    std::mt19937 rng(2);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (const std::string& name : names) {
        const lowbit::ggml::rows_view w = f.view(name);  // points into the mapped file
        std::vector<float> x(w.cols()), y(w.rows()), y8(w.rows());
        for (auto& v : x) v = nd(rng);

        // Two threads, best of ten tokens; the int8 path's time includes
        // quantizing x (once a token, shared by every weight of its type).
        const auto best_of = [&](auto&& run) {
            double best = 1e30;
            for (int rep = 0; rep < 10; ++rep) {
                const auto t0 = std::chrono::steady_clock::now();
                run();
                best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            }
            return best;
        };
        const double t32 = best_of([&] { gemv_threads(w, x, nullptr, y, 2); });
        lowbit::kernels::ggml_activations xq;
        const bool int8 = lowbit::kernels::activation_type(w.type_id()).has_value();
        const double t8 = int8 ? best_of([&] {
            xq.quantize(w.type_id(), lowbit::matrix_view<const float>(x.data(), 1, x.size()));
            gemv_threads(w, x, &xq, y8, 2);
        })
                               : 0.0;

        // The f32 product of the dequantized weights, a row at a time.
        std::vector<float> row(w.cols());
        double worst = 0, diff = 0, norm = 0;
        for (std::size_t r = 0; r < w.rows(); ++r) {
            lowbit::kernels::dequantize_ggml_rows(w.type_id(), w.row(r), row.data(), 1, w.cols());
            double exact = 0, mag = 0;
            for (std::size_t c = 0; c < w.cols(); ++c) {
                exact += static_cast<double>(row[c]) * x[c];
                mag += std::fabs(static_cast<double>(row[c]) * x[c]);
            }
            worst = std::max(worst, std::fabs(y[r] - exact) / std::max(mag, 1e-30));
            diff += (static_cast<double>(y8[r]) - y[r]) * (static_cast<double>(y8[r]) - y[r]);
            norm += static_cast<double>(y[r]) * y[r];
        }
        // Float sums of w.cols() products: the header's bound, 2^-24 per term.
        const bool ok = worst <= (static_cast<double>(w.cols()) / 4 + 6) * std::ldexp(1.0, -24);
        bad += !ok;
        const double best = int8 ? std::min(t32, t8) : t32;
        std::printf("%-24s %-7s %6zu x %-6zu %9.1f %9.1f %8.2f %11.2e %11.2e%s\n", name.c_str(),
                    std::string(w.type_name()).c_str(), w.rows(), w.cols(), t32 * 1e6, t8 * 1e6,
                    static_cast<double>(w.rows() * w.row_bytes()) / best / 1e9, worst,
                    int8 ? std::sqrt(diff / std::max(norm, 1e-30)) : 0.0, ok ? "" : "  WRONG");
    }
    if (bad) std::fprintf(stderr, "engine: %d product(s) outside the bound\n", bad);
    return bad ? 1 : 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "engine: %s\n", e.what());
    return 1;
}
