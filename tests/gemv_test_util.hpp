#pragma once
// What the GEMV tests share: activation rows at a padded, optionally
// unaligned stride, the error bound of the kernels' header comments, and a
// guard that restores the active instruction set.

#include <lowbit/core/view.hpp>
#include <lowbit/kernels/dispatch.hpp>

#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

namespace lowbit_test {

// M rows of K N(0,1) activations at row stride K + 3; offset 1 puts rows at
// addresses that are 4 mod 16.
struct activations {
    std::size_t m, k, stride, offset;
    std::vector<float> storage;
    const float* data() const { return storage.data() + offset; }
    const float* row(std::size_t i) const { return data() + i * stride; }
    lowbit::matrix_view<const float> view() const { return lowbit::matrix_view<const float>(data(), m, k, stride); }
};

inline activations make_x(std::size_t m, std::size_t k, std::size_t offset, std::mt19937& rng) {
    activations a{m, k, k + 3, offset, {}};
    a.storage.resize(offset + m * a.stride);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : a.storage) v = nd(rng);
    return a;
}

// The bound of the GEMV headers' comments with the fewest lanes any
// instruction set has (4): (k / 4 + 4 + 2) * 2^-24 * sum |x w|, and k + 2
// terms for the scalar order.
inline double gemv_bound(lowbit::kernels::isa i, std::size_t k, double abs_sum) {
    const double terms = i == lowbit::kernels::isa::scalar ? static_cast<double>(k) + 2 : static_cast<double>(k) / 4 + 6;
    return terms * std::ldexp(1.0, -24) * abs_sum + 1e-30;
}

struct isa_reset {
    lowbit::kernels::isa saved = lowbit::kernels::active_isa();
    ~isa_reset() { lowbit::kernels::set_active_isa(saved); }
};

}  // namespace lowbit_test
