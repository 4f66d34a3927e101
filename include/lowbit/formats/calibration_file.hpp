#pragma once
// Calibration files: activation statistics saved in safetensors, per layer X
// (the weight's name without ".weight"):
//   X.hessian   F32 [in, in]  H = 2 X^T X / tokens (where it was kept)
//   X.mean_abs  F32 [in]      mean |x| of each input channel
//   X.max_abs   F32 [in]      max |x|
//   X.mean_sq   F32 [in]      mean x^2 (H's diagonal over 2; an importance matrix's weights)
//   X.tokens    I64 [1]       the tokens they were taken over
// imatrix_entry() turns a layer's statistics into an entry of a llama.cpp
// importance matrix (formats/imatrix_file.hpp, ggml::write_imatrix).
// The same file serves `lowbit quantize --calib` (formats/gptq_quantize.hpp),
// which also reads raw activations stored under the layer's own name X.
//
// Needs BLAS (the Hessian): link lowbit::calibration.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "../algorithms/activation_stats.hpp"
#include "../core/error.hpp"
#include "../core/finite.hpp"
#include "imatrix_file.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace calibration {

/// The tensor-name suffixes of a layer's statistics (".hessian", ...).
inline constexpr std::string_view stat_suffixes[] = {".hessian", ".mean_abs", ".max_abs", ".mean_sq", ".tokens"};

/// The statistic a calibration tensor's name holds ("hessian", ...) and its
/// layer, or an empty statistic for raw activations (the name is the layer).
inline std::pair<std::string, std::string_view> split_stat_name(std::string_view name) {
    for (const auto s : stat_suffixes)
        if (name.size() > s.size() && name.ends_with(s))
            return {std::string(name.substr(0, name.size() - s.size())), s.substr(1)};
    return {std::string(name), {}};
}

/// One layer's statistics as a calibration file holds them (vectors empty
/// and hessian null where the file has none). The Hessian stays in the
/// file until asked for (features^2 floats a layer).
struct layer_stats {
    std::size_t features = 0, tokens = 0;
    const safetensors::tensor_info* hessian = nullptr;  ///< F32 [features, features], checked finite
    std::vector<float> mean_abs, max_abs, mean_sq;

    /// The Hessian, full and row-major (errc::invalid_argument if there is none).
    std::vector<float> hessian_matrix() const {
        if (!hessian) LOWBIT_THROW(errc::invalid_argument, "calibration statistics without a Hessian");
        return safetensors::finite_floats(*hessian);
    }
};

namespace detail {

inline std::vector<std::byte> float_bytes(const std::vector<float>& v) {
    std::vector<std::byte> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
}

}  // namespace detail

/// The statistics of each layer written to `path` (atomically).
inline void save_stats(const std::filesystem::path& path, const std::map<std::string, activation_stats>& layers) {
    using safetensors::dtype;
    safetensors::writer w(path);
    w.set_metadata("format", "lowbit calibration statistics");
    for (const auto& [layer, s] : layers) {
        const std::uint64_t n = s.size();
        if (s.has_hessian()) w.add(layer + ".hessian", dtype::f32, {n, n}, detail::float_bytes(s.hessian().matrix()));
        w.add(layer + ".mean_abs", dtype::f32, {n}, detail::float_bytes(s.mean_abs()));
        w.add(layer + ".max_abs", dtype::f32, {n}, detail::float_bytes(s.max_abs()));
        w.add(layer + ".mean_sq", dtype::f32, {n}, detail::float_bytes(s.mean_sq()));
        std::vector<std::byte> t(8);
        const auto tokens = static_cast<std::int64_t>(s.tokens());
        std::memcpy(t.data(), &tokens, 8);
        w.add(layer + ".tokens", dtype::i64, {1}, std::move(t));
    }
    w.finish();
}

/// The statistics a calibration file holds, by layer, each checked: the
/// vectors [features] F32 and finite, the Hessian [features, features],
/// tokens one I64 >= 0, and the layer's tensors agreeing on features. Raw
/// activations (a tensor named as the layer) are not read here.
inline std::map<std::string, layer_stats> load_stats(const safetensors::file& f, const std::string& where) {
    using safetensors::dtype;
    using safetensors::detail::show_shape;
    std::map<std::string, layer_stats> out;
    const auto fail = [&](const std::string& layer, const std::string& what) {
        LOWBIT_THROW(errc::corrupt_file, where + ": layer '" + layer + "': " + what);
    };
    for (const auto& t : f.tensors()) {
        const auto [layer, stat] = split_stat_name(t.name);
        if (stat.empty()) continue;
        auto& s = out[layer];
        if (stat == "tokens") {
            if (t.dtype != dtype::i64 || t.numel() != 1)
                fail(layer, "tokens is " + std::string(safetensors::to_string(t.dtype)) + " " + show_shape(t.shape) +
                                ", expected I64 [1]");
            std::int64_t n = 0;
            std::memcpy(&n, t.data().data(), 8);
            if (n < 0) fail(layer, "tokens is " + std::to_string(n));
            s.tokens = static_cast<std::size_t>(n);
            continue;
        }
        const bool square = stat == "hessian";
        if (t.dtype != dtype::f32 || t.shape.size() != (square ? 2u : 1u) || (square && t.shape[0] != t.shape[1]))
            fail(layer, std::string(stat) + " is " + std::string(safetensors::to_string(t.dtype)) + " " +
                            show_shape(t.shape) + ", expected F32 " + (square ? "[in, in]" : "[in]"));
        const std::size_t n = static_cast<std::size_t>(t.shape[0]);
        if (s.features && s.features != n)
            fail(layer, std::string(stat) + " has " + std::to_string(n) + " features, its other statistics " +
                            std::to_string(s.features));
        s.features = n;
        if (square) {
            const std::size_t bad = first_non_finite(float_storage::f32, t.data().data(), n * n);
            if (bad != n * n)
                fail(layer, "hessian (" + std::to_string(bad / n) + ", " + std::to_string(bad % n) + ") is not finite");
            s.hessian = &t;
            continue;
        }
        std::vector<float> v;
        try {
            v = safetensors::finite_floats(t);
        } catch (const error& e) {
            rethrow_with_context(e, where + ": layer '" + layer + "': " + std::string(stat));
        }
        (stat == "mean_abs" ? s.mean_abs : stat == "max_abs" ? s.max_abs : s.mean_sq) = std::move(v);
    }
    return out;
}

/// A layer's statistics as an importance-matrix entry (ggml::write_imatrix):
/// the sums of x^2 over its tokens, one expert.
inline ggml::imatrix_sums imatrix_entry(const activation_stats& s) {
    return {s.sum_sq(), {static_cast<float>(s.tokens())}};
}

}  // namespace calibration
LOWBIT_NAMESPACE_END
