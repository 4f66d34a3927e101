#pragma once
// Data for the calibration tests: Gaussian values, and activations correlated
// as real ones are (low rank plus noise, a few channels much louder).

#include <cstddef>
#include <random>
#include <vector>

namespace lowbit_test {

inline std::vector<float> normal(std::size_t n, std::mt19937& rng, float sd = 1.0f) {
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> v(n);
    for (float& x : v) x = nd(rng);
    return v;
}

/// tokens x in: rank-`rank` signal times 0.5 plus noise times 0.3; every
/// channel c with c % loud_every == loud_at is 15 times louder.
inline std::vector<float> correlated(std::size_t tokens, std::size_t in, std::mt19937& rng, std::size_t rank = 16,
                                     std::size_t loud_every = 97, std::size_t loud_at = 5) {
    const std::vector<float> a = normal(tokens * rank, rng), b = normal(rank * in, rng), e = normal(tokens * in, rng);
    std::vector<float> x(tokens * in);
    for (std::size_t t = 0; t < tokens; ++t)
        for (std::size_t c = 0; c < in; ++c) {
            float s = 0.0f;
            for (std::size_t k = 0; k < rank; ++k) s += a[t * rank + k] * b[k * in + c];
            x[t * in + c] = (0.5f * s + 0.3f * e[t * in + c]) * (c % loud_every == loud_at ? 15.0f : 1.0f);
        }
    return x;
}

}  // namespace lowbit_test
