// The lowbit program: compare quantization schemes side by side.
//
//   lowbit compare [--formats a,b,...] [--data gaussian,student-t,llm] [--rows N] [--cols N]
//                  [--seed S] [--threads N] [--csv] [--plot FILE.svg]
//   lowbit quantize IN.gguf OUT.gguf --type T [--imatrix FILE] [--threads N] [--leave-output-tensor] [--pure]
//                   [--allow-requantize]
//   lowbit quantize IN.safetensors OUT.safetensors --format F [--rules cuda|cpu] [--include-embeddings]
//                   [--layer-format REGEX=F2] [--threads N]
//     (F: a bitsandbytes format such as nf4-b64-dq or llm-int8, an MLX one such as mlx-4b-g64, an
//     HQQ one such as hqq-4b-g64, or a compressed-tensors one such as ct-w4a16 or ct-4b-g128-asym)
//   lowbit quantize IN.safetensors OUT.safetensors --format gptq-4b-g128 --calib ACTS.safetensors [--act-order]
//                   [--sym] [--static-groups] [--damp X] [--checkpoint-format gptq|gptq_v2] [--min-tokens N]
//                   [--threads N]
//   lowbit quantize IN.safetensors OUT.safetensors --format awq-4b-g128 --calib ACTS.safetensors [--no-clip]
//                   [--no-duo-scaling] [--min-tokens N] [--threads N]
//   lowbit quantize IN.safetensors OUT.safetensors --format ct-w4a16 --calib ACTS.safetensors [--no-act-order]
//                   [--damp X] [--rules cuda|cpu] [--min-tokens N] [--threads N]
//   lowbit inspect FILE.gguf|FILE.safetensors
//   lowbit formats
//   lowbit --version

#include <lowbit/formats/bnb_checkpoint.hpp>
#include <lowbit/formats/gguf_quantize.hpp>
#include <lowbit/formats/hqq_checkpoint.hpp>
#include <lowbit/lowbit.hpp>
#include <lowbit/formats/awq_checkpoint.hpp>
#if LOWBIT_CLI_CALIBRATION
#include <lowbit/formats/awq_quantize.hpp>
#include <lowbit/formats/ct_quantize.hpp>
#include <lowbit/formats/gptq_quantize.hpp>
#endif

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <sstream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace {

using clock_type = std::chrono::steady_clock;

struct dataset {
    std::string name;
    std::string description;
    std::vector<float> w;
    std::size_t rows = 0, cols = 0;
};

// Synthetic weights with the shapes that matter for quantization: Gaussian
// bulk, heavy tails, and LLM-like per-row scale spread with outlier input
// channels (the case that breaks per-tensor and large-group schemes).
dataset make_dataset(const std::string& kind, std::size_t rows, std::size_t cols, std::uint64_t seed) {
    dataset d;
    d.name = kind;
    d.rows = rows;
    d.cols = cols;
    d.w.resize(rows * cols);
    std::mt19937_64 rng(seed);
    if (kind == "gaussian") {
        d.description = "N(0, 1)";
        std::normal_distribution<float> n(0.0f, 1.0f);
        for (float& x : d.w) x = n(rng);
    } else if (kind == "student-t") {
        d.description = "Student-t, 5 degrees of freedom";
        std::student_t_distribution<float> t(5.0f);
        for (float& x : d.w) x = t(rng);
    } else if (kind == "llm") {
        d.description = "N(0, 1) x log-normal row scale, 0.5% outlier columns x 20";
        std::normal_distribution<float> n(0.0f, 1.0f);
        std::lognormal_distribution<float> ln(0.0f, 1.0f);
        std::vector<float> col_gain(cols, 1.0f);
        std::uniform_int_distribution<std::size_t> pick(0, cols - 1);
        for (std::size_t k = 0; k < std::max<std::size_t>(1, cols / 200); ++k) col_gain[pick(rng)] = 20.0f;
        for (std::size_t r = 0; r < rows; ++r) {
            const float s = ln(rng) * 0.02f;
            for (std::size_t c = 0; c < cols; ++c) d.w[r * cols + c] = n(rng) * s * col_gain[c];
        }
    } else {
        LOWBIT_THROW(lowbit::errc::invalid_argument,
                     "--data: unknown data set '" + kind + "' (gaussian, student-t, llm)");
    }
    return d;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, sep))
        if (!item.empty()) out.push_back(item);
    return out;
}

struct row_result {
    std::string data, format;
    double bpw = 0;
    lowbit::error_stats err;
    double quant_mws = 0, deq_mws = 0, deq_gbs = 0;
};

double best_seconds(int reps, const auto& fn) {
    double best = 1e300;
    for (int i = 0; i < reps; ++i) {
        const auto t0 = clock_type::now();
        fn();
        best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count());
    }
    return best;
}

row_result evaluate(const dataset& d, const lowbit::format& f, unsigned threads) {
    row_result r;
    r.data = d.name;
    r.format = std::string(f.name);
    lowbit::matrix_view<const float> w(d.w.data(), d.rows, d.cols);
    std::unique_ptr<lowbit::quantized_base> q;
    std::vector<float> back;
    try {
        back.resize(d.w.size());
    } catch (const std::bad_alloc&) {
        lowbit::throw_out_of_memory("the dequantized copy of " + d.name + " (" + std::to_string(d.rows) + " x " +
                                        std::to_string(d.cols) + " floats)",
                                    4ull * d.w.size());
    }
    // Best of 3: a single run of a few milliseconds is mostly noise.
    const double tq = best_seconds(3, [&] { q = lowbit::quantize(f, w, {}, {threads}); });
    lowbit::matrix_view<float> out(back.data(), d.rows, d.cols);
    const double td = best_seconds(5, [&] { q->dequantize(out); });
    const double n = static_cast<double>(d.w.size());
    r.bpw = q->bits_per_weight();
    r.err = lowbit::compare(w, out);
    r.quant_mws = n / tq / 1e6;
    r.deq_mws = n / td / 1e6;
    r.deq_gbs = (static_cast<double>(q->storage_bytes()) + 4.0 * n) / td / 1e9;
    return r;
}

void print_table(const std::vector<row_result>& rows, const std::vector<dataset>& data, unsigned threads) {
    for (const auto& d : data) {
        std::printf("\n%s: %zu x %zu, %s\n", d.name.c_str(), d.rows, d.cols, d.description.c_str());
        std::printf("%-18s %8s %10s %9s %10s %10s %10s %10s %9s\n", "format", "bits/w", "rel RMSE", "SQNR dB",
                    "max |err|", "cosine", "quant Mw/s", "deq Mw/s", "deq GB/s");
        for (const auto& r : rows) {
            if (r.data != d.name) continue;
            std::printf("%-18s %8.3f %10.5f %9.2f %10.4g %10.6f %10.1f %10.1f %9.2f\n", r.format.c_str(), r.bpw,
                        r.err.rel_rmse, r.err.sqnr_db, r.err.max_abs, r.err.cosine, r.quant_mws, r.deq_mws, r.deq_gbs);
        }
    }
    std::printf("\nquantize: %u thread(s), best of 3; dequantize: fp32 output, one thread, best of 5, %s kernels;\n"
                "GB/s counts packed input + fp32 output\n",
                threads, std::string(lowbit::kernels::isa_name(lowbit::kernels::active_isa())).c_str());
}

void print_csv(const std::vector<row_result>& rows) {
    std::printf("data,format,bits_per_weight,rel_rmse,sqnr_db,max_abs_error,cosine,quantize_mws,dequantize_mws,"
                "dequantize_gbs\n");
    for (const auto& r : rows)
        std::printf("%s,%s,%.6f,%.8g,%.6g,%.8g,%.10g,%.4g,%.4g,%.4g\n", r.data.c_str(), r.format.c_str(), r.bpw,
                    r.err.rel_rmse, r.err.sqnr_db, r.err.max_abs, r.err.cosine, r.quant_mws, r.deq_mws, r.deq_gbs);
}

// SQNR against bits per weight, one panel per data set: the trade-off at a glance.
void write_plot(const std::string& path, const std::vector<row_result>& rows, const std::vector<dataset>& data) {
    const double W = 420, H = 320, ml = 55, mr = 15, mt = 30, mb = 45;
    double xmin = 1e9, xmax = -1e9, ymin = 1e9, ymax = -1e9;
    for (const auto& r : rows) {
        if (!std::isfinite(r.err.sqnr_db)) continue;
        xmin = std::min(xmin, r.bpw), xmax = std::max(xmax, r.bpw);
        ymin = std::min(ymin, r.err.sqnr_db), ymax = std::max(ymax, r.err.sqnr_db);
    }
    xmin = std::floor(xmin) - 0.5, xmax = std::ceil(xmax) + 0.5;
    ymin = std::floor(ymin / 5) * 5 - 5, ymax = std::ceil(ymax / 5) * 5 + 5;
    std::ostringstream s;
    s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W * static_cast<double>(data.size()) << "' height='" << H
      << "' font-family='sans-serif' font-size='11'>\n<rect width='100%' height='100%' fill='white'/>\n";
    const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                            "#bcbd22", "#17becf"};
    for (std::size_t p = 0; p < data.size(); ++p) {
        const double ox = W * static_cast<double>(p);
        auto X = [&](double v) { return ox + ml + (v - xmin) / (xmax - xmin) * (W - ml - mr); };
        auto Y = [&](double v) { return mt + (ymax - v) / (ymax - ymin) * (H - mt - mb); };
        s << "<text x='" << ox + W / 2 << "' y='18' text-anchor='middle' font-size='13'>" << data[p].name
          << "</text>\n";
        s << "<rect x='" << ox + ml << "' y='" << mt << "' width='" << W - ml - mr << "' height='" << H - mt - mb
          << "' fill='none' stroke='#444'/>\n";
        for (double v = std::ceil(xmin); v <= xmax; v += 1)
            s << "<text x='" << X(v) << "' y='" << H - mb + 14 << "' text-anchor='middle'>" << v << "</text>\n";
        for (double v = ymin; v <= ymax; v += 5)
            s << "<text x='" << ox + ml - 4 << "' y='" << Y(v) + 4 << "' text-anchor='end'>" << v << "</text>\n"
              << "<line x1='" << ox + ml << "' x2='" << ox + W - mr << "' y1='" << Y(v) << "' y2='" << Y(v)
              << "' stroke='#eee'/>\n";
        s << "<text x='" << ox + W / 2 << "' y='" << H - 8 << "' text-anchor='middle'>bits per weight</text>\n";
        s << "<text transform='translate(" << ox + 14 << "," << H / 2 << ") rotate(-90)' text-anchor='middle'>SQNR (dB)"
          << "</text>\n";
        std::size_t k = 0;
        for (const auto& r : rows) {
            if (r.data != data[p].name || !std::isfinite(r.err.sqnr_db)) continue;
            const char* col = colors[k++ % 10];
            s << "<circle cx='" << X(r.bpw) << "' cy='" << Y(r.err.sqnr_db) << "' r='4' fill='" << col << "'/>"
              << "<text x='" << X(r.bpw) + 6 << "' y='" << Y(r.err.sqnr_db) - 4 << "' fill='" << col << "'>"
              << r.format << "</text>\n";
        }
    }
    s << "</svg>\n";
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary);
        f << s.str();
        if (!f) LOWBIT_THROW(lowbit::errc::io, "cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) LOWBIT_THROW(lowbit::errc::io, "cannot rename " + tmp + " to " + path);
}


std::string shape_string(const std::vector<std::uint64_t>& shape) {
    std::string s;
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) s += " x ";
        s += std::to_string(shape[i]);
    }
    return s;
}

std::string mib(std::uint64_t bytes) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
    return b;
}

std::string value_string(const lowbit::gguf_value& v, std::size_t max_items = 8);

std::string array_string(const lowbit::gguf_array& a, std::size_t max_items) {
    // Appended piece by piece: g++ 12 reports a false -Wrestrict for
    // "literal" + std::string once this is inlined.
    std::string s = "[";
    s += lowbit::to_string(a.element_type());
    s += " x ";
    s += std::to_string(a.size());
    s += "]";
    if (a.size() == 0) return s;
    s += " ";
    std::size_t k = 0;
    std::visit(
        [&](const auto& vec) {
            for (const auto& e : vec) {
                if (k == max_items) {
                    s += ", ...";
                    break;
                }
                if (k++) s += ", ";
                s += value_string(lowbit::gguf_value(e), 3);
            }
        },
        a.items());
    return s;
}

std::string value_string(const lowbit::gguf_value& v, std::size_t max_items) {
    return std::visit(
        [&](const auto& x) -> std::string {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, std::string>) {
                std::string q = x.size() > 60 ? x.substr(0, 57) + "..." : x;
                for (char& c : q)
                    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
                return "\"" + q + "\"";
            } else if constexpr (std::is_same_v<T, lowbit::gguf_array>) {
                return array_string(x, max_items);
            } else if constexpr (std::is_same_v<T, bool>) {
                return x ? "true" : "false";
            } else if constexpr (std::is_floating_point_v<T>) {
                std::ostringstream o;
                o << x;
                return o.str();
            } else {
                return std::to_string(x);
            }
        },
        v);
}

bool is_safetensors(std::string_view path) { return path.ends_with(".safetensors"); }

// mlx-lm's config.json beside an MLX checkpoint: its "quantization" block
// (group_size, bits, and per-layer entries), when the file is there and has one.
struct mlx_config {
    lowbit::mlx::checkpoint_format format;
    std::map<std::string, lowbit::mlx::checkpoint_format> layers;
    lowbit::mlx::checkpoint_format of(const std::string& layer) const {
        const auto it = layers.find(layer);
        return it == layers.end() ? format : it->second;
    }
};

std::optional<mlx_config> mlx_config_beside(const char* path) {
    const auto cfg = std::filesystem::path(path).parent_path() / "config.json";
    std::ifstream in(cfg, std::ios::binary);
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    const auto format_of = [](const lowbit::json::value& v) -> std::optional<lowbit::mlx::checkpoint_format> {
        if (v.type() != lowbit::json::kind::object) return std::nullopt;
        const auto g = v["group_size"].to_u64(), b = v["bits"].to_u64();
        if (!g || !b) return std::nullopt;
        return lowbit::mlx::parse_checkpoint_format("mlx-" + std::to_string(*b) + "b-g" + std::to_string(*g));
    };
    try {
        const auto j = lowbit::json::parse(ss.str());
        const auto* q = j.find("quantization");
        if (!q) return std::nullopt;
        const auto f = format_of(*q);
        if (!f) return std::nullopt;
        mlx_config c{*f, {}};
        for (const auto& m : q->members())
            if (const auto lf = format_of(m.value)) c.layers.emplace(m.key, *lf);
        return c;
    } catch (const lowbit::error& e) {
        std::printf("  (%s: %s)\n", cfg.string().c_str(), e.what());
        return std::nullopt;
    }
}

// The quantization config beside a checkpoint for quant_method `method`:
// config.json's "quantization_config" (GPTQ: quantize_config.json first),
// read by `read`; a config that does not parse is said and skipped.
template <class Read>
auto quant_config_beside(const char* path, std::string_view method, Read&& read)
    -> std::optional<decltype(read(std::declval<const lowbit::json::value&>(), std::string()))> {
    const auto dir = std::filesystem::path(path).parent_path();
    for (const char* name : {"quantize_config.json", "config.json"}) {
        const bool top = std::string_view(name) == "quantize_config.json";
        if (top && method != "gptq") continue;
        const auto cfg = dir / name;
        std::ifstream in(cfg, std::ios::binary);
        if (!in) continue;
        std::stringstream ss;
        ss << in.rdbuf();
        try {
            const auto j = lowbit::json::parse(ss.str());
            const auto* q = top ? &j : j.find("quantization_config");
            if (!q || !q->is_object()) continue;
            const auto* m = q->find("quant_method");
            if (!top && (!m || !m->is_string() || m->as_string() != method)) continue;
            return read(*q, cfg.string());
        } catch (const lowbit::error& e) {
            std::printf("  (%s: %s)\n", cfg.string().c_str(), e.what());
        }
    }
    return std::nullopt;
}

int inspect_safetensors(const char* path) {
    const auto f = lowbit::safetensors::file::open(path);
    const auto mlx_format = mlx_config_beside(path);
    const auto gptq_format = quant_config_beside(path, "gptq", lowbit::gptq::format_from_config);
    const auto awq_format = quant_config_beside(path, "awq", lowbit::awq::format_from_config);
    const auto ct_config = quant_config_beside(path, "compressed-tensors", lowbit::ct::format_from_config);
    std::printf("%s: safetensors, %zu tensors, header %llu bytes\n", path, f.size(),
                static_cast<unsigned long long>(f.header_size()));
    for (const auto& kv : f.metadata()) std::printf("  %s = %s\n", kv.first.c_str(), kv.second.c_str());
    std::printf("\n%-5s %-56s %-8s %-20s %12s\n", "#", "tensor", "dtype", "shape", "bytes");
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < f.size(); ++i) {
        const auto& t = f.tensors()[i];
        std::printf("%-5zu %-56s %-8s %-20s %12llu\n", i, t.name.c_str(),
                    std::string(lowbit::safetensors::to_string(t.dtype)).c_str(), shape_string(t.shape).c_str(),
                    static_cast<unsigned long long>(t.size()));
        total += t.size();
        const std::string_view n = t.name;
        for (const auto key : {".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"})
            if (n.ends_with(key)) {
                const auto d = t.data();
                std::printf("      %.*s\n", static_cast<int>(d.size()), reinterpret_cast<const char*>(d.data()));
            }
        // A GPTQ layer X: X.qweight, X.qzeros, X.scales (and X.g_idx).
        if (n.ends_with(".qweight")) {
            const std::string layer(n.substr(0, n.size() - 8));
            if (awq_format) {
                try {
                    const auto a = lowbit::awq::read_layer(f, layer, *awq_format);
                    const std::uint64_t bytes =
                        t.size() + f.at(layer + ".qzeros").size() + f.at(layer + ".scales").size();
                    std::printf("      AWQ layer %s: %s (gemm), %zu x %zu, %.4f bits/w\n", layer.c_str(),
                                awq_format->name().c_str(), a.rows, a.cols,
                                8.0 * static_cast<double>(bytes) / static_cast<double>(a.rows * a.cols));
                } catch (const lowbit::error& e) {
                    std::printf("      %s\n", e.what());
                }
            } else if (!gptq_format) {
                std::printf("      GPTQ or AWQ layer %s: no quantize_config.json (or config.json quantization_config) "
                            "beside the file says its format\n",
                            layer.c_str());
            } else {
                try {
                    const auto g = lowbit::gptq::read_layer(f, layer, *gptq_format);
                    std::uint64_t bytes = t.size() + f.at(layer + ".qzeros").size() + f.at(layer + ".scales").size();
                    if (const auto* gi = f.find(layer + ".g_idx")) bytes += gi->size();
                    std::printf("      GPTQ layer %s: %s (%s, %s%s), %zu x %zu, %.4f bits/w\n", layer.c_str(),
                                gptq_format->name().c_str(), std::string(gptq_format->zero_format_name()).c_str(),
                                gptq_format->sym ? "symmetric" : "asymmetric", gptq_format->desc_act ? ", act-order" : "",
                                g.rows, g.cols, 8.0 * static_cast<double>(bytes) / static_cast<double>(g.rows * g.cols));
                } catch (const lowbit::error& e) {
                    std::printf("      %s\n", e.what());
                }
            }
        }
        // A compressed-tensors layer X: X.weight_packed, X.weight_scale, X.weight_shape (X.weight_zero_point).
        if (n.ends_with(".weight_packed")) {
            const std::string layer(n.substr(0, n.size() - 14));
            if (!ct_config) {
                std::printf("      compressed-tensors layer %s: no config.json beside the file says its scheme\n",
                            layer.c_str());
            } else {
                try {
                    const auto l = lowbit::ct::read_layer(f, layer, ct_config->format);
                    std::uint64_t bytes = 0;
                    for (const char* part : {".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape"})
                        if (const auto* p = f.find(layer + part)) bytes += p->size();
                    std::printf("      compressed-tensors layer %s: %s (pack-quantized, %s scales), %zu x %zu, "
                                "%.4f bits/w\n",
                                layer.c_str(), ct_config->format.name().c_str(),
                                std::string(lowbit::safetensors::to_string(l.dtype)).c_str(), l.rows, l.cols,
                                8.0 * static_cast<double>(bytes) / static_cast<double>(l.rows * l.cols));
                } catch (const lowbit::error& e) {
                    std::printf("      %s\n", e.what());
                }
            }
        }
        // An HQQ layer X: X.W_q and its meta tensors (the file says its bits and groups).
        if (n.ends_with(".W_q")) {
            const std::string layer(n.substr(0, n.size() - 4));
            try {
                const auto q = lowbit::hqq_checkpoint::read_layer(f, layer);
                std::uint64_t bytes = 0;
                for (const auto& part : f.tensors())
                    if (part.name.starts_with(layer + ".") && part.name != layer + ".bias") bytes += part.size();
                std::printf("      HQQ layer %s: %s, %zu x %zu, %.4f bits/w\n", layer.c_str(),
                            lowbit::hqq_checkpoint::checkpoint_format{q.bits, q.group_size}.name().c_str(), q.rows,
                            q.cols, 8.0 * static_cast<double>(bytes) / static_cast<double>(q.rows * q.cols));
            } catch (const lowbit::error& e) {
                std::printf("      %s\n", e.what());
            }
        }
        // An MLX layer X: X.weight (U32 codes), X.scales, X.biases.
        if (n.ends_with(".scales")) {
            const std::string layer(n.substr(0, n.size() - 7));
            const auto* w = f.find(layer + ".weight");
            if (w && w->dtype == lowbit::safetensors::dtype::u32 && f.find(layer + ".biases")) {
                if (!mlx_format) {
                    std::printf("      MLX layer %s: no config.json beside the file says its bits and group size\n",
                                layer.c_str());
                } else {
                    try {
                        const auto lf = mlx_format->of(layer);
                        const auto q = lowbit::mlx::read_layer(f, layer, lf);
                        std::printf("      MLX layer %s: %s, %zu x %zu, %.4f bits/w\n", layer.c_str(), lf.name().c_str(),
                                    q->rows(), q->cols(), q->bits_per_weight());
                    } catch (const lowbit::error& e) {
                        std::printf("      %s\n", e.what());
                    }
                }
            }
        }
    }
    std::printf("\n%-5s %-56s %-8s %-20s %12s\n", "", "total", "", "", mib(total).c_str());
    return 0;
}

int cmd_inspect(int argc, char** argv) {
    if (argc != 1) LOWBIT_THROW(lowbit::errc::invalid_argument, "inspect takes one GGUF or safetensors file");
    if (is_safetensors(argv[0])) return inspect_safetensors(argv[0]);
    const auto f = lowbit::read_gguf(argv[0]);
    std::printf("%s: GGUF v%u, %zu metadata keys, %zu tensors, alignment %u, data at byte %llu\n\n", argv[0],
                f.version(), f.metadata().size(), f.tensors().size(), f.alignment(),
                static_cast<unsigned long long>(f.data_offset()));
    std::printf("%-44s %-8s %s\n", "key", "type", "value");
    for (const auto& kv : f.metadata())
        std::printf("%-44s %-8s %s\n", kv.key.c_str(), std::string(lowbit::to_string(lowbit::type_of(kv.value))).c_str(),
                    value_string(kv.value).c_str());
    std::printf("\n%-5s %-40s %-8s %-24s %12s %14s\n", "#", "tensor", "type", "shape", "bytes", "offset");
    std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> by_type;  // type -> (elements, bytes)
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < f.tensors().size(); ++i) {
        const auto& t = f.tensors()[i];
        const std::string tn(lowbit::ggml::traits(t.type).name);
        std::printf("%-5zu %-40s %-8s %-24s %12llu %14llu\n", i, t.name.c_str(), tn.c_str(),
                    shape_string(t.shape).c_str(), static_cast<unsigned long long>(t.size),
                    static_cast<unsigned long long>(t.offset));
        by_type[tn].first += t.n_elements();
        by_type[tn].second += t.size;
        total += t.size;
    }
    std::printf("\n%-8s %14s %12s %10s\n", "type", "elements", "size", "bits/w");
    for (const auto& [tn, eb] : by_type)
        std::printf("%-8s %14llu %12s %10.4f\n", tn.c_str(), static_cast<unsigned long long>(eb.first),
                    mib(eb.second).c_str(), eb.first ? 8.0 * static_cast<double>(eb.second) / static_cast<double>(eb.first) : 0.0);
    std::printf("%-8s %14s %12s\n", "total", "", mib(total).c_str());
    return 0;
}

// A count flag's value: digits only, within [lo, hi] (no wrap-around).
std::uint64_t parse_count(std::string_view flag, const std::string& v, std::uint64_t lo, std::uint64_t hi) {
    std::uint64_t n = 0;
    const auto r = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || r.ptr != v.data() + v.size() || (r.ec != std::errc{} && r.ec != std::errc::result_out_of_range))
        LOWBIT_THROW(lowbit::errc::invalid_argument, std::string(flag) + ": '" + v + "' is not a " +
                                                         (lo ? "positive" : "non-negative") + " integer");
    if (r.ec == std::errc::result_out_of_range || n < lo || n > hi)
        LOWBIT_THROW(lowbit::errc::invalid_argument, std::string(flag) + ": " + v + " is outside " +
                                                         std::to_string(lo) + ".." + std::to_string(hi));
    return n;
}

unsigned parse_threads(const std::string& v) {
    return static_cast<unsigned>(parse_count("--threads", v, 0, lowbit::max_threads));
}

// A command's arguments in order: for each one starting with "--",
// on_option(name, value) handles it (value() takes the next argument, or is an
// error naming the option) and returns false for an option it does not know;
// the others are returned, positional, in order. `what` ends the unknown
// option's message ("quantize: unknown option '--x'" + what).
template <class F>
std::vector<std::string> parse_args(int argc, char** argv, std::string_view command, std::string_view what,
                                    F&& on_option) {
    std::vector<std::string> pos;
    for (int i = 0; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (!a.starts_with("--")) {
            pos.emplace_back(a);
            continue;
        }
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) LOWBIT_THROW(lowbit::errc::invalid_argument, std::string(a) + " needs a value");
            return argv[++i];
        };
        if (!on_option(a, value))
            LOWBIT_THROW(lowbit::errc::invalid_argument,
                         std::string(command) + ": unknown option '" + std::string(a) + "'" + std::string(what));
    }
    return pos;
}

// An output path must name the container being written (checked before any work).
void require_extension(const std::string& out, std::string_view ext) {
    if (!out.ends_with(ext))
        LOWBIT_THROW(lowbit::errc::invalid_argument, "quantize: the output '" + out + "' must end in " +
                                                         std::string(ext) + ", the container being written");
}

// A progress bar on stderr when it is a terminal: (index, count, name, quantized).
lowbit::safetensors::rewrite_progress progress_bar() {
    if (!isatty(STDERR_FILENO)) return {};
    return [](std::size_t i, std::size_t n, const std::string& name, bool q) {
        const int width = 30, filled = static_cast<int>(static_cast<double>(i + 1) / static_cast<double>(n) * width);
        std::fprintf(stderr, "\r[%-*s] %zu/%zu  %-48.48s %s", width, std::string(static_cast<std::size_t>(filled), '#').c_str(),
                     i + 1, n, name.c_str(), q ? "quantized" : "kept");
    };
}

void print_size_line(const lowbit::safetensors::rewrite_counts& counts) {
    std::printf("  size         %s -> %s (%.1f%%)\n", mib(counts.bytes_in).c_str(), mib(counts.bytes_out).c_str(),
                counts.bytes_in ? 100.0 * static_cast<double>(counts.bytes_out) / static_cast<double>(counts.bytes_in)
                                : 100.0);
}

// lowbit quantize IN.safetensors OUT.safetensors --format gptq-4b-g128 --calib ACTS.safetensors ...:
// GPTQ on the layers ACTS names, into a GPTQ checkpoint with quantize_config.json beside it.
#if LOWBIT_CLI_CALIBRATION
// The per-layer table of a GPTQ run (gptq::layer_report or a kind of it);
// `after(l)` runs after each row.
template <class Layer, class After>
void print_gptq_layers(const std::vector<Layer>& layers, std::size_t error_rows, After&& after) {
    std::printf("\n  %-40s %13s %8s %10s %10s %7s %8s\n", "layer", "out x in", "tokens", "rtn err", "gptq err",
                "ratio", "time");
    for (const auto& l : layers) {
        const std::string shape = std::to_string(l.rows) + " x " + std::to_string(l.cols);
        const std::string tokens = l.tokens ? std::to_string(l.tokens) : "hessian";
        std::printf("  %-40.40s %13s %8s %10.3e %10.3e %7.3f %7.2fs\n", l.layer.c_str(), shape.c_str(), tokens.c_str(),
                    l.rtn_error, l.gptq_error, l.rtn_error > 0.0 ? l.gptq_error / l.rtn_error : 0.0, l.seconds);
        after(l);
    }
    std::printf("  (err: relative output error ||X (W - Q)^T||^2 / ||X W^T||^2 on the calibration inputs, over up to "
                "%zu rows a layer)\n\n",
                error_rows);
}
#endif

// --damp X: GPTQ's damping, a fraction of the mean Hessian diagonal in (0, 1).
[[maybe_unused]] float parse_damp(const std::string& v) {
    float d = 0.0f;
    const auto r = std::from_chars(v.data(), v.data() + v.size(), d);
    if (r.ec != std::errc{} || r.ptr != v.data() + v.size() || !(d > 0.0f && d < 1.0f))
        LOWBIT_THROW(lowbit::errc::invalid_argument, "--damp: '" + v + "' is not a number in (0, 1)");
    return d;
}

int quantize_gptq(int argc, char** argv) {
#if LOWBIT_CLI_CALIBRATION
    std::string format, calib;
    lowbit::gptq::quantize_options opt;
    bool act_order = false, sym = false, static_groups = false;
    std::optional<float> damp;
    std::optional<lowbit::gptq_zero_format> zeros;
    const auto pos = parse_args(argc, argv, "quantize", " for a GPTQ checkpoint",
                                [&](std::string_view a, const auto& value) {
        if (a == "--format") {
            format = value();
        } else if (a == "--calib") {
            calib = value();
        } else if (a == "--act-order") {
            act_order = true;
        } else if (a == "--sym") {
            sym = true;
        } else if (a == "--static-groups") {
            static_groups = true;
        } else if (a == "--damp") {
            damp = parse_damp(value());
        } else if (a == "--checkpoint-format") {
            const std::string v = value();
            if (v != "gptq" && v != "gptq_v2")
                LOWBIT_THROW(lowbit::errc::invalid_argument, "--checkpoint-format: '" + v + "' is not gptq or gptq_v2");
            zeros = v == "gptq" ? lowbit::gptq_zero_format::v1 : lowbit::gptq_zero_format::v2;
        } else if (a == "--min-tokens") {
            opt.min_tokens = parse_count("--min-tokens", value(), 1, std::size_t{1} << 40);
        } else if (a == "--threads") {
            opt.threads = parse_threads(value());
        } else {
            return false;
        }
        return true;
    });
    if (pos.size() != 2 || calib.empty())
        LOWBIT_THROW(lowbit::errc::invalid_argument,
                     "usage: lowbit quantize IN.safetensors OUT.safetensors --format gptq-4b-g128 --calib "
                     "ACTS.safetensors [--act-order] [--sym] [--static-groups] [--damp X] "
                     "[--checkpoint-format gptq|gptq_v2] [--min-tokens N] [--threads N]");
    opt.format = lowbit::gptq::parse_checkpoint_format(format);
    opt.format.desc_act = act_order;
    opt.format.sym = sym;
    opt.format.static_groups = static_groups;
    if (damp) opt.format.damp_percent = *damp;
    if (zeros) opt.format.zeros = *zeros;
    require_extension(pos[1], ".safetensors");
    opt.progress = progress_bar();
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = lowbit::gptq::quantize_checkpoint(pos[0], pos[1], calib, opt);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (opt.progress) std::fprintf(stderr, "\r%-120s\r", "");
    const auto& f = opt.format;
    std::printf("%s -> %s (GPTQ %d-bit, %s, %s%s%s; checkpoint_format %s)\n", pos[0].c_str(), pos[1].c_str(), f.bits,
                f.group ? ("groups of " + std::to_string(f.group)).c_str() : "one group per output row",
                f.sym ? "symmetric" : "asymmetric", f.desc_act ? ", act-order" : "",
                f.static_groups ? ", static groups" : "", std::string(f.zero_format_name()).c_str());
    std::printf("  tensors      %zu quantized, %zu kept as they were\n", r.quantized, r.tensors - r.quantized);
    std::size_t zero_zeros = 0;
    print_gptq_layers(r.layers, opt.error_rows,
                      [&](const lowbit::gptq::layer_report& l) { zero_zeros += l.zero_zero_points; });
    print_size_line(r);
    std::printf("  time         %.2f s (%u thread%s)\n", secs, opt.threads, opt.threads == 1 ? "" : "s");
    if (zero_zeros)
        std::printf("  note         %zu groups have zero point 0, which the v1 format stores as -1: GPTQModel and lowbit "
                    "read them back exactly, readers that unpack qzeros field by field see the next field one lower; "
                    "--checkpoint-format gptq_v2 or --sym avoid it\n",
                    zero_zeros);
    const auto cfg = std::filesystem::path(pos[1]).parent_path() / "quantize_config.json";
    std::printf("\n  wrote %s; transformers reads the checkpoint with config.json's \"quantization_config\": %s\n",
                cfg.string().c_str(), r.config_json.c_str());
    return 0;
#else
    (void)argc;
    (void)argv;
    LOWBIT_THROW(lowbit::errc::unsupported,
                 "quantize: GPTQ needs lowbit::calibration (OpenBLAS), which this build of lowbit was made without");
#endif
}

// lowbit quantize IN.safetensors OUT.safetensors --format ct-w4a16 --calib ACTS.safetensors ...: GPTQ as
// llm-compressor runs it on the layers ACTS names (the other linears rounded to nearest), into a
// compressed-tensors pack-quantized checkpoint.
int quantize_ct_gptq(int argc, char** argv) {
#if LOWBIT_CLI_CALIBRATION
    std::string format, calib, rules;
    lowbit::ct::quantize_options opt;
    bool no_act_order = false;
    const auto pos = parse_args(argc, argv, "quantize", " for a compressed-tensors checkpoint with --calib",
                                [&](std::string_view a, const auto& value) {
        if (a == "--format") {
            format = value();
        } else if (a == "--calib") {
            calib = value();
        } else if (a == "--no-act-order") {
            no_act_order = true;
        } else if (a == "--damp") {
            opt.damp = parse_damp(value());
        } else if (a == "--rules") {
            rules = value();
        } else if (a == "--min-tokens") {
            opt.min_tokens = parse_count("--min-tokens", value(), 1, std::size_t{1} << 40);
        } else if (a == "--threads") {
            opt.threads = parse_threads(value());
        } else {
            return false;
        }
        return true;
    });
    if (pos.size() != 2 || calib.empty())
        LOWBIT_THROW(lowbit::errc::invalid_argument,
                     "usage: lowbit quantize IN.safetensors OUT.safetensors --format ct-w4a16 --calib ACTS.safetensors "
                     "[--no-act-order] [--damp X] [--rules cuda|cpu] [--min-tokens N] [--threads N]");
    opt.format = lowbit::ct::parse_checkpoint_format(format);
    opt.format.act_order = !no_act_order;
    if (!rules.empty()) opt.format.numerics = lowbit::ct::parse_rules(rules);
    require_extension(pos[1], ".safetensors");
    opt.progress = progress_bar();
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = lowbit::ct::quantize_checkpoint(pos[0], pos[1], calib, opt);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (opt.progress) std::fprintf(stderr, "\r%-120s\r", "");
    std::printf("%s -> %s (compressed-tensors pack-quantized %s, GPTQ%s, damping %g, %s rules)\n", pos[0].c_str(),
                pos[1].c_str(), opt.format.name().c_str(), opt.format.act_order ? " with actorder static" : "",
                static_cast<double>(opt.damp), std::string(lowbit::ct::to_string(opt.format.numerics)).c_str());
    std::printf("  tensors      %zu quantized (%zu with GPTQ, %zu rounded to nearest), %zu kept as they were\n",
                r.quantized, r.layers.size(), r.rounded.size(), r.tensors - r.quantized);
    for (const auto& n : r.rounded) std::printf("  rounded      %s: no calibration data\n", n.c_str());
    for (const auto& [n, why] : r.kept) std::printf("  kept         %s: %s\n", n.c_str(), why.c_str());
    print_gptq_layers(r.layers, opt.error_rows, [](const lowbit::ct::layer_report& l) {
        if (!l.note.empty()) std::printf("    note: %s\n", l.note.c_str());
    });
    print_size_line(r);
    std::printf("  time         %.2f s (%u thread%s)\n", secs, opt.threads, opt.threads == 1 ? "" : "s");
    if (!r.config_written.empty()) std::printf("  config       %s\n", r.config_written.string().c_str());
    std::printf("\n  vLLM and transformers read it with config.json's \"quantization_config\": %s\n",
                r.config_json.c_str());
    return 0;
#else
    (void)argc;
    (void)argv;
    LOWBIT_THROW(lowbit::errc::unsupported, "quantize: GPTQ for a compressed-tensors checkpoint needs "
                                            "lowbit::calibration (OpenBLAS), which this build of lowbit was made "
                                            "without");
#endif
}

// lowbit quantize IN.safetensors OUT.safetensors --format awq-4b-g128 --calib ACTS.safetensors ...:
// AWQ on the layers ACTS names (and those sharing their inputs), into an AWQ GEMM checkpoint.
int quantize_awq(int argc, char** argv) {
#if LOWBIT_CLI_CALIBRATION
    std::string format, calib;
    lowbit::awq::quantize_options opt;
    const auto pos = parse_args(argc, argv, "quantize", " for an AWQ checkpoint",
                                [&](std::string_view a, const auto& value) {
        if (a == "--format") {
            format = value();
        } else if (a == "--calib") {
            calib = value();
        } else if (a == "--no-clip") {
            opt.clip = false;
        } else if (a == "--no-duo-scaling") {
            opt.duo_scaling = false;
        } else if (a == "--min-tokens") {
            opt.min_tokens = parse_count("--min-tokens", value(), 1, std::size_t{1} << 40);
        } else if (a == "--threads") {
            opt.threads = parse_threads(value());
        } else {
            return false;
        }
        return true;
    });
    if (pos.size() != 2 || calib.empty())
        LOWBIT_THROW(lowbit::errc::invalid_argument,
                     "usage: lowbit quantize IN.safetensors OUT.safetensors --format awq-4b-g128 --calib "
                     "ACTS.safetensors [--no-clip] [--no-duo-scaling] [--min-tokens N] [--threads N]");
    opt.format = lowbit::awq::parse_checkpoint_format(format);
    require_extension(pos[1], ".safetensors");
    opt.progress = progress_bar();
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = lowbit::awq::quantize_checkpoint(pos[0], pos[1], calib, opt);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (opt.progress) std::fprintf(stderr, "\r%-120s\r", "");
    std::printf("%s -> %s (AWQ %d-bit, groups of %zu, zero point%s%s)\n", pos[0].c_str(), pos[1].c_str(),
                opt.format.bits, opt.format.group, opt.duo_scaling ? ", duo scaling" : "",
                opt.clip ? ", clip search" : "");
    std::printf("  tensors      %zu quantized, %zu with 1/s folded in, %zu kept as they were\n", r.quantized,
                r.folded.size(), r.tensors - r.quantized - r.folded.size());
    for (const auto& n : r.folded) std::printf("  folded       %s\n", n.c_str());
    std::printf("\n  %-40s %13s %8s %-26s %5s %4s %10s %10s %7s %8s\n", "layer", "out x in", "tokens", "s folded into",
                "ratio", "clip", "rtn err", "awq err", "ratio", "time");
    for (const auto& l : r.layers) {
        const std::string shape = std::to_string(l.rows) + " x " + std::to_string(l.cols);
        // The op folded into, named within the layer's block.
        std::size_t common = 0;
        for (std::size_t i = 0; i < l.folded_into.size() && i < l.layer.size() && l.folded_into[i] == l.layer[i]; ++i)
            if (l.layer[i] == '.') common = i + 1;
        const std::string into = l.folded_into.empty() ? "- (none before it)" : l.folded_into.substr(common);
        std::printf("  %-40.40s %13s %8zu %-26.26s %5.2f %4s %10.3e %10.3e %7.3f %7.2fs\n", l.layer.c_str(),
                    shape.c_str(), l.tokens, into.c_str(), l.ratio, l.clipped ? "yes" : "no", l.rtn_error,
                    l.awq_error, l.rtn_error > 0.0 ? l.awq_error / l.rtn_error : 0.0, l.seconds);
    }
    std::printf("  (err: relative output error ||X (W - Q)^T||^2 / ||X W^T||^2 on the calibration inputs, over up to "
                "%zu rows a layer)\n\n",
                opt.error_rows);
    print_size_line(r);
    std::printf("  time         %.2f s (%u thread%s)\n", secs, opt.threads, opt.threads == 1 ? "" : "s");
    if (!r.config_written.empty())
        std::printf("\n  wrote %s (the model's, with \"quantization_config\": %s), which transformers and vLLM read\n",
                    r.config_written.string().c_str(), r.config_json.c_str());
    else
        std::printf("\n  transformers and vLLM read it with config.json's \"quantization_config\": %s\n",
                    r.config_json.c_str());
    return 0;
#else
    (void)argc;
    (void)argv;
    LOWBIT_THROW(lowbit::errc::unsupported,
                 "quantize: AWQ needs lowbit::calibration (OpenBLAS), which this build of lowbit was made without");
#endif
}

// lowbit quantize IN.safetensors OUT.safetensors --format nf4-b64-dq|llm-int8|mlx-4b-g64:
// a bitsandbytes checkpoint in transformers' state-dict layout, or an MLX
// checkpoint in mlx-lm's.
int quantize_safetensors(int argc, char** argv) {
    for (int i = 0; i + 1 < argc; ++i)
        if (std::string_view(argv[i]) == "--format" && std::string_view(argv[i + 1]).starts_with("gptq-"))
            return quantize_gptq(argc, argv);
        else if (std::string_view(argv[i]) == "--format" && std::string_view(argv[i + 1]).starts_with("awq-"))
            return quantize_awq(argc, argv);
    for (int i = 0; i < argc; ++i)
        if (std::string_view(argv[i]) == "--calib")
            for (int j = 0; j + 1 < argc; ++j)
                if (std::string_view(argv[j]) == "--format" && std::string_view(argv[j + 1]).starts_with("ct-"))
                    return quantize_ct_gptq(argc, argv);
    std::string format;
    lowbit::bnb::convert_options opt;
    std::vector<lowbit::mlx::layer_rule> layer_rules;
    bool rules_given = false;
    std::string rules_text;
    const auto pos = parse_args(argc, argv, "quantize", " for a safetensors checkpoint",
                                [&](std::string_view a, const auto& value) {
        if (a == "--format") {
            format = value();
        } else if (a == "--rules") {
            rules_text = value();
            rules_given = true;
        } else if (a == "--include-embeddings") {
            opt.include_embeddings = true;
        } else if (a == "--layer-format") {
            layer_rules.push_back(lowbit::mlx::parse_layer_rule(value()));
        } else if (a == "--threads") {
            opt.threads = parse_threads(value());
        } else {
            return false;
        }
        return true;
    });
    if (pos.size() != 2 || format.empty())
        LOWBIT_THROW(lowbit::errc::invalid_argument,
                     "usage: lowbit quantize IN.safetensors OUT.safetensors --format nf4-b64-dq|fp4-b64|llm-int8|"
                     "mlx-4b-g64|hqq-4b-g64|ct-w4a16|... [--rules cuda|cpu] [--include-embeddings] [--layer-format REGEX=mlx-8b-g64] "
                     "[--threads N]");
    const bool mlx = format.starts_with("mlx-"), hqq = format.starts_with("hqq-"), ct = format.starts_with("ct-");
    lowbit::mlx::convert_options mopt;
    lowbit::hqq_checkpoint::convert_options hopt;
    lowbit::ct::convert_options copt;
    if (ct) {
        copt.format = lowbit::ct::parse_checkpoint_format(format);
        if (rules_given) copt.format.numerics = lowbit::ct::parse_rules(rules_text);
        copt.threads = opt.threads;
        if (opt.include_embeddings || !layer_rules.empty())
            LOWBIT_THROW(lowbit::errc::invalid_argument,
                         std::string("quantize: ") + (opt.include_embeddings ? "--include-embeddings" : "--layer-format") +
                             " is not a compressed-tensors option; a pack-quantized checkpoint quantizes every linear "
                             "weight but embeddings and lm_head, as llm-compressor's schemes do");
    } else if (hqq) {
        hopt.format = lowbit::hqq_checkpoint::parse_checkpoint_format(format);
        hopt.threads = opt.threads;
        if (rules_given || opt.include_embeddings || !layer_rules.empty())
            LOWBIT_THROW(lowbit::errc::invalid_argument,
                         std::string("quantize: ") +
                             (rules_given ? "--rules" : opt.include_embeddings ? "--include-embeddings" : "--layer-format") +
                             " is not an HQQ option; an HQQ checkpoint quantizes every linear weight but embeddings "
                             "and lm_head, as transformers' HQQ does");
    } else if (mlx) {
        mopt.format = lowbit::mlx::parse_checkpoint_format(format);
        mopt.layers = layer_rules;
        mopt.threads = opt.threads;
        if (rules_given || opt.include_embeddings)
            LOWBIT_THROW(lowbit::errc::invalid_argument,
                         std::string("quantize: ") + (rules_given ? "--rules" : "--include-embeddings") +
                             " is for bitsandbytes formats; an MLX checkpoint quantizes every weight whose rows "
                             "divide into groups, embeddings and lm_head included, as mlx-lm does");
    } else {
        opt.format = lowbit::bnb::parse_checkpoint_format(format);
        if (rules_given) opt.rules = lowbit::bnb::parse_kernel_rules(rules_text);
        if (!layer_rules.empty())
            LOWBIT_THROW(lowbit::errc::invalid_argument, "quantize: --layer-format is for MLX formats");
    }
    require_extension(pos[1], ".safetensors");
    const auto progress = progress_bar();
    const bool tty = static_cast<bool>(progress);
    opt.progress = progress;
    mopt.progress = progress;
    hopt.progress = progress;
    copt.progress = progress;
    const auto t0 = std::chrono::steady_clock::now();
    lowbit::safetensors::rewrite_counts counts;
    std::vector<std::string> not_divisible, per_layer;
    std::string config_block;  // MLX: config.json's "quantization"
    std::filesystem::path config_written;
    if (ct) {
        const auto r = lowbit::ct::convert_checkpoint(pos[0], pos[1], copt);
        counts = r;
        config_block = r.config_json;
        config_written = r.config_written;
        for (const auto& [name, why] : r.kept) not_divisible.push_back(name + ": " + why);
    } else if (hqq) {
        const auto r = lowbit::hqq_checkpoint::convert_checkpoint(pos[0], pos[1], hopt);
        counts = r;
        config_block = r.config_json;
        for (const auto& [name, why] : r.kept) not_divisible.push_back(name + ": " + why);
    } else if (mlx) {
        const auto r = lowbit::mlx::convert_checkpoint(pos[0], pos[1], mopt);
        counts = r;
        not_divisible = r.not_divisible;
        config_block = r.config_json(mopt.format);
        for (const auto& [layer, f] : r.per_layer) per_layer.push_back(layer + ": " + f.name());
    } else {
        counts = lowbit::bnb::convert_checkpoint(pos[0], pos[1], opt);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (tty) std::fprintf(stderr, "\r%-120s\r", "");
    if (ct)
        std::printf("%s -> %s (compressed-tensors pack-quantized %s, %s rules)\n", pos[0].c_str(), pos[1].c_str(),
                    copt.format.name().c_str(), std::string(lowbit::ct::to_string(copt.format.numerics)).c_str());
    else if (hqq)
        std::printf("%s -> %s (HQQ %d-bit, groups of %zu)\n", pos[0].c_str(), pos[1].c_str(), hopt.format.bits,
                    hopt.format.group);
    else if (mlx)
        std::printf("%s -> %s (MLX %d-bit, groups of %zu)\n", pos[0].c_str(), pos[1].c_str(), mopt.format.bits,
                    mopt.format.group);
    else
        std::printf("%s -> %s (bitsandbytes %s, %s rules)\n", pos[0].c_str(), pos[1].c_str(), opt.format.name().c_str(),
                    std::string(lowbit::bnb::to_string(opt.rules)).c_str());
    std::printf("  tensors      %zu quantized, %zu kept as they were\n", counts.quantized,
                counts.tensors - counts.quantized);
    for (const auto& l : per_layer) std::printf("  layer        %s\n", l.c_str());
    for (const auto& n : not_divisible)
        if (hqq || ct)
            std::printf("  kept         %s\n", n.c_str());
        else
            std::printf("  kept         %s: its rows do not divide into its groups (mlx-lm leaves it unquantized "
                        "too)\n",
                        n.c_str());
    print_size_line(counts);
    std::printf("  time         %.2f s (%u thread%s)\n", secs, opt.threads, opt.threads == 1 ? "" : "s");
    if (ct) {
        if (!config_written.empty()) std::printf("  config       %s\n", config_written.string().c_str());
        std::printf("\n  vLLM and transformers read it with config.json's \"quantization_config\": %s\n",
                    config_block.c_str());
    } else if (hqq)
        std::printf("\n  transformers (HqqConfig) reads it with config.json's \"quantization_config\": %s\n",
                    config_block.c_str());
    else if (mlx)
        std::printf("\n  mlx-lm reads it with config.json's \"quantization\": %s (and the same under "
                    "\"quantization_config\")\n",
                    config_block.c_str());
    else if (!opt.format.int8)
        std::printf("\n  transformers reads it with quantization_config {\"quant_method\": \"bitsandbytes\", "
                    "\"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"%s\", \"bnb_4bit_use_double_quant\": %s}\n",
                    std::string(lowbit::bnb::to_string(opt.format.type)).c_str(), opt.format.nested ? "true" : "false");
    else
        std::printf("\n  transformers reads it with quantization_config {\"quant_method\": \"bitsandbytes\", "
                    "\"load_in_8bit\": true}\n");
    return 0;
}

int cmd_quantize(int argc, char** argv) {
    if (argc >= 1 && is_safetensors(argv[0])) return quantize_safetensors(argc, argv);
    lowbit::gguf_quantize_options opt;
    bool have_type = false;
    const auto pos = parse_args(argc, argv, "quantize", "", [&](std::string_view a, const auto& value) {
        if (a == "--type") {
            opt.type = value();
            have_type = true;
        } else if (a == "--imatrix") {
            opt.imatrix = value();
        } else if (a == "--threads") {
            opt.threads = parse_threads(value());
        } else if (a == "--leave-output-tensor") {
            opt.leave_output_tensor = true;
        } else if (a == "--pure") {
            opt.pure = true;
        } else if (a == "--allow-requantize") {
            opt.allow_requantize = true;
        } else {
            return false;
        }
        return true;
    });
    if (pos.size() != 2 || !have_type)
        LOWBIT_THROW(lowbit::errc::invalid_argument, "usage: lowbit quantize IN.gguf OUT.gguf --type T [--imatrix FILE]");
    require_extension(pos[1], ".gguf");
    const bool tty = isatty(STDERR_FILENO);
    opt.progress = [&](std::size_t i, std::size_t n, double frac, const lowbit::gguf_tensor_report& r) {
        if (!tty) return;
        const int width = 30, filled = static_cast<int>(frac * width);
        std::fprintf(stderr, "\r[%-*s] %5.1f%%  %zu/%zu  %-36.36s %s -> %s", width,
                     std::string(static_cast<std::size_t>(filled), '#').c_str(), 100 * frac, i + 1, n, r.name.c_str(),
                     std::string(lowbit::ggml::traits(r.from).name).c_str(),
                     std::string(lowbit::ggml::traits(r.to).name).c_str());
    };
    const auto s = lowbit::quantize_gguf(pos[0], pos[1], opt);
    if (tty) std::fprintf(stderr, "\r%-120s\r", "");
    std::map<std::string, std::pair<std::size_t, std::uint64_t>> to_types;
    std::size_t n_quant = 0, n_kept = 0, n_fallback = 0, n_imatrix = 0, n_requant = 0;
    for (const auto& r : s.tensors) {
        if (r.quantized) {
            ++n_quant;
            n_requant += r.requantized;
            auto& e = to_types[std::string(lowbit::ggml::traits(r.to).name)];
            ++e.first;
            e.second += r.bytes_out;
            n_fallback += r.fell_back;
            n_imatrix += r.used_imatrix;
        } else {
            ++n_kept;
        }
    }
    std::printf("%s -> %s (%s)\n", pos[0].c_str(), pos[1].c_str(), s.file_type.c_str());
    std::printf("  tensors      %zu quantized, %zu kept as they were", n_quant, n_kept);
    if (n_fallback) std::printf(", %zu fell back to another type (row length)", n_fallback);
    std::printf("\n");
    if (n_requant)
        std::printf("  requantized  %zu tensors were already quantized: dequantized to f32, then quantized again\n",
                    n_requant);
    if (opt.imatrix) std::printf("  imatrix      %zu entries, used for %zu tensors\n", s.imatrix_entries, n_imatrix);
    std::printf("  size         %s -> %s (%.1f%%)\n", mib(s.bytes_in).c_str(), mib(s.bytes_out).c_str(),
                s.bytes_in ? 100.0 * static_cast<double>(s.bytes_out) / static_cast<double>(s.bytes_in) : 100.0);
    std::printf("  bits/weight  %.4f over the quantized tensors\n", s.bits_per_weight());
    std::printf("  time         %.2f s (%u thread%s)\n", s.seconds, opt.threads, opt.threads == 1 ? "" : "s");
    if (!to_types.empty()) {
        std::printf("\n  %-8s %8s %12s\n", "type", "tensors", "size");
        for (const auto& [tn, e] : to_types) std::printf("  %-8s %8zu %12s\n", tn.c_str(), e.first, mib(e.second).c_str());
    }
    return 0;
}

int usage(int code) {
    std::fprintf(code ? stderr : stdout,
                 "usage: lowbit compare [--formats a,b,...] [--data gaussian,student-t,llm] [--rows N] [--cols N]\n"
                 "                      [--seed S] [--threads N] [--csv] [--plot FILE.svg]\n"
                 "       lowbit quantize IN.gguf OUT.gguf --type T [--imatrix FILE] [--threads N]\n"
                 "                       [--leave-output-tensor] [--pure] [--allow-requantize]\n"
                 "       lowbit quantize IN.safetensors OUT.safetensors --format nf4-b64-dq|fp4-b64|llm-int8|mlx-4b-g64|\n"
                 "                       hqq-4b-g64|ct-w4a16|ct-4b-g128-asym|...\n"
                 "                       [--rules cuda|cpu] [--include-embeddings] [--layer-format REGEX=F2] [--threads N]\n"
                 "       lowbit quantize IN.safetensors OUT.safetensors --format gptq-4b-g128 --calib ACTS.safetensors\n"
                 "                       [--act-order] [--sym] [--static-groups] [--damp X]\n"
                 "                       [--checkpoint-format gptq|gptq_v2] [--min-tokens N] [--threads N]\n"
                 "       lowbit quantize IN.safetensors OUT.safetensors --format awq-4b-g128 --calib ACTS.safetensors\n"
                 "                       [--no-clip] [--no-duo-scaling] [--min-tokens N] [--threads N]\n"
                 "       lowbit quantize IN.safetensors OUT.safetensors --format ct-w4a16 --calib ACTS.safetensors\n"
                 "                       [--no-act-order] [--damp X] [--rules cuda|cpu] [--min-tokens N] [--threads N]\n"
                 "       lowbit inspect FILE.gguf|FILE.safetensors\n"
                 "       lowbit formats\n"
                 "       lowbit --version\n");
    return code;
}

int cmd_formats() {
    int width = 6;
    for (const auto& f : lowbit::formats()) width = std::max(width, static_cast<int>(f.name.size()));
    std::printf("%-*s %-10s %s\n", width, "format", "family", "description");
    for (const auto& f : lowbit::formats())
        std::printf("%-*s %-10s %s\n", width, std::string(f.name).c_str(), std::string(f.family).c_str(),
                    std::string(f.description).c_str());
    return 0;
}

int cmd_compare(int argc, char** argv) {
    std::vector<std::string> fmts, kinds = {"gaussian", "student-t", "llm"};
    std::size_t rows = 1024, cols = 4096;
    std::uint64_t seed = 42;
    bool csv = false;
    unsigned threads = 1;
    std::string plot;
    for (int i = 0; i < argc; ++i) {
        const std::string_view a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) LOWBIT_THROW(lowbit::errc::invalid_argument, std::string(a) + " needs a value");
            return argv[++i];
        };
        if (a == "--formats") fmts = split(value(), ',');
        else if (a == "--data") kinds = split(value(), ',');
        else if (a == "--rows") rows = static_cast<std::size_t>(parse_count(a, value(), 1, SIZE_MAX));
        else if (a == "--cols") cols = static_cast<std::size_t>(parse_count(a, value(), 1, SIZE_MAX));
        else if (a == "--seed") seed = parse_count(a, value(), 0, UINT64_MAX);
        else if (a == "--threads") threads = parse_threads(value());
        else if (a == "--csv") csv = true;
        else if (a == "--plot") plot = value();
        else if (a == "-h" || a == "--help") return usage(0);
        else LOWBIT_THROW(lowbit::errc::invalid_argument, "compare: unknown option '" + std::string(a) + "'");
    }
    std::vector<const lowbit::format*> chosen;
    if (fmts.empty())
        for (const auto& f : lowbit::formats()) {
            if (f.in_default_comparison) chosen.push_back(&f);
        }
    else
        for (const auto& n : fmts) chosen.push_back(&lowbit::find_format(n));
    // Each data set and its dequantized copy are rows x cols floats.
    if (cols > SIZE_MAX / 4 / rows)
        LOWBIT_THROW(lowbit::errc::invalid_argument, "compare: --rows " + std::to_string(rows) + " x --cols " +
                                                         std::to_string(cols) + " floats overflow this machine's sizes");
    std::vector<dataset> data;
    for (std::size_t k = 0; k < kinds.size(); ++k) {
        try {
            data.push_back(make_dataset(kinds[k], rows, cols, seed + k));
        } catch (const std::bad_alloc&) {
            lowbit::throw_out_of_memory("the " + kinds[k] + " data set, " + std::to_string(rows) + " x " +
                                            std::to_string(cols) + " floats (use smaller --rows/--cols)",
                                        4ull * rows * cols);
        }
    }
    std::vector<row_result> results;
    std::set<std::string_view> left_out;  // default formats the shape does not fit
    const bool progress = !csv && isatty(STDERR_FILENO);
    for (const auto& d : data)
        for (const auto* f : chosen) {
            if (left_out.count(f->name)) continue;
            if (progress) std::fprintf(stderr, "\r%-60s", ("  " + d.name + " / " + std::string(f->name)).c_str());
            try {
                results.push_back(evaluate(d, *f, threads));
            } catch (const lowbit::error& e) {
                // A default format whose blocks do not divide --cols is left out, with a note;
                // one asked for by name is an error.
                if (!fmts.empty() || e.code() != lowbit::errc::not_divisible) throw;
                if (progress) std::fprintf(stderr, "\r%-60s\r", "");
                std::fprintf(stderr, "compare: %s left out: %s\n", std::string(f->name).c_str(), e.what());
                left_out.insert(f->name);
            }
        }
    if (progress) std::fprintf(stderr, "\r%-60s\r", "");
    if (csv)
        print_csv(results);
    else
        print_table(results, data, threads);
    if (!plot.empty()) {
        write_plot(plot, results, data);
        if (!csv) std::printf("plot: %s\n", plot.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // An interrupted write leaves no temporary file; a mapped input that
    // shrinks under us is an error naming it, not a bus error.
    lowbit::install_signal_cleanup();
    try {
        if (argc < 2) return usage(2);
        const std::string_view cmd = argv[1];
        if (cmd == "compare") return cmd_compare(argc - 2, argv + 2);
        if (cmd == "formats") return cmd_formats();
        if (cmd == "quantize") return cmd_quantize(argc - 2, argv + 2);
        if (cmd == "inspect") return cmd_inspect(argc - 2, argv + 2);
        if (cmd == "--version") {
            std::printf("lowbit %d.%d.%d\n", LOWBIT_VERSION_MAJOR, LOWBIT_VERSION_MINOR, LOWBIT_VERSION_PATCH);
            return 0;
        }
        if (cmd == "-h" || cmd == "--help" || cmd == "help") return usage(0);
        std::fprintf(stderr, "lowbit: unknown command '%s'\n", argv[1]);
        return usage(2);
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "lowbit: out of memory: a buffer this run needs does not fit in memory\n");
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
