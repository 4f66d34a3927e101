#pragma once
// Helpers for the checkpoint tests: typed vectors as bytes, seeded normal
// weights, and a file rewritten with one tensor replaced or left out (to
// make a reader meet a layer that contradicts itself).

#include <cstddef>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <lowbit/formats/safetensors.hpp>

namespace lowbit_test {

template <class T>
std::span<const std::byte> bytes(const std::vector<T>& v) {
    return std::as_bytes(std::span<const T>(v));
}

inline std::vector<float> normal(std::size_t n, unsigned seed, float sd = 0.02f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

/// `good`'s tensors written to `path`, with tensor `name` left out and, if
/// `data` is not empty, written instead as (t, shape, data).
inline void rewrite_with(const lowbit::safetensors::file& good, const std::filesystem::path& path,
                         const std::string& name, lowbit::safetensors::dtype t, std::vector<std::uint64_t> shape,
                         std::vector<std::byte> data) {
    lowbit::safetensors::writer w(path);
    for (const auto& t2 : good.tensors())
        if (t2.name != name) w.add(t2.name, t2.dtype, t2.shape, t2.data());
    if (!data.empty()) w.add(name, t, std::move(shape), std::move(data));
    w.finish();
}

}  // namespace lowbit_test
