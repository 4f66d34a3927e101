// One line per registry format: a digest of what it stores and decodes to
// (f32 and f16 output, bits per weight, or the error it reports) on ten
// adversarial data sets. Built twice, once with LOWBIT_NO_SIMD (the portable
// build, no xsimd) and once with the dispatched kernels; the test
// (compare_digests.cmake) requires the two outputs to be identical.
#include <lowbit/registry.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

std::uint64_t fnv(const void* p, std::size_t n, std::uint64_t h) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

}  // namespace

int main() {
    using namespace lowbit;
    constexpr std::size_t rows = 8, cols = 1024;
    std::vector<std::vector<float>> sets;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    const auto add = [&](auto gen) {
        std::vector<float> v(rows * cols);
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = gen(i);
        sets.push_back(std::move(v));
    };
    add([&](std::size_t) { return normal(rng); });
    add([&](std::size_t) { return std::exp(normal(rng)); });                  // one-signed
    add([&](std::size_t) { return -std::exp(2.0f * normal(rng)); });         // one-signed, wide
    add([&](std::size_t) { return uniform(rng); });
    add([&](std::size_t i) { return (i / 37) % 3 == 0 ? 0.0f : (i % 5 == 0 ? -0.0f : normal(rng)); });
    add([&](std::size_t i) { return std::round(normal(rng) * 8.0f) / 2.0f * ((i / 64) % 2 ? 1.0f : 0.25f); });  // ties
    add([&](std::size_t i) { return (i / 16) % 4 == 0 ? 3.0f : normal(rng) * 1e-30f; });
    add([&](std::size_t i) { return normal(rng) * ((i / 128) % 3 == 0 ? 1e-40f : 1e4f); });  // subnormal groups
    add([&](std::size_t i) { return (i / 32) % 2 ? -0.0f : 0.0f; });
    add([&](std::size_t i) { return static_cast<float>(static_cast<int>(i % 17) - 8) * 0.125f; });
    for (const auto& f : formats()) {
        std::uint64_t h = 1469598103934665603ull;
        for (const auto& s : sets) {
            const matrix_view<const float> v(s.data(), rows, cols);
            try {
                const auto q = quantize(f, v);
                std::vector<float> d(s.size());
                q->dequantize(matrix_view<float>(d.data(), rows, cols));
                h = fnv(d.data(), d.size() * sizeof(float), h);
                std::vector<std::uint16_t> d16(s.size());
                q->dequantize_to(d16.data(), cols, kernels::out_type::f16);
                h = fnv(d16.data(), d16.size() * sizeof(std::uint16_t), h);
                const double b = q->bits_per_weight();
                h = fnv(&b, sizeof b, h);
            } catch (const lowbit::error& e) {
                h = fnv(e.what(), std::strlen(e.what()), h);
            }
        }
        std::printf("%-24s %016llx\n", std::string(f.name).c_str(), static_cast<unsigned long long>(h));
    }
}
