// An engine's view of lowbit: quantize a matrix to 4-bit groups, dequantize it
// back, and check the round-trip bound.
#include <lowbit/lowbit.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
    const std::size_t rows = 8, cols = 256;
    std::vector<float> w(rows * cols), back(rows * cols);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.37f * static_cast<float>(i));
    lowbit::quantizer<lowbit::affine<4, lowbit::affine_mode::asymmetric>> qz({}, lowbit::per_group(128));
    const auto q = qz.quantize(lowbit::matrix_view<const float>(w.data(), rows, cols));
    q.dequantize(lowbit::matrix_view<float>(back.data(), rows, cols));
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c) {
            const float s = q.params_at(r, c).scale;
            if (std::fabs(w[r * cols + c] - back[r * cols + c]) > 0.5f * s * 1.0001f) {
                std::printf("element (%zu, %zu) off by more than scale/2\n", r, c);
                return 1;
            }
        }
    std::printf("lowbit %d.%d.%d on %s: %.3f bits/weight\n", LOWBIT_VERSION_MAJOR, LOWBIT_VERSION_MINOR,
                LOWBIT_VERSION_PATCH, std::string(lowbit::kernels::isa_name(lowbit::kernels::active_isa())).c_str(),
                q.bits_per_weight());
    return 0;
}
