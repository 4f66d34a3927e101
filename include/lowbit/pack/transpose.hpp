#pragma once
// The transpose of a matrix of codes: checkpoints that pack along the input
// dimension (GPTQ, AWQ) store the [in][out] transpose of a Linear weight's
// [out][in] codes.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/view.hpp"

LOWBIT_NAMESPACE_BEGIN

/// rows x cols in, cols x rows out (row-major).
inline std::vector<std::uint8_t> transposed(matrix_view<const std::uint8_t> m) {
    std::vector<std::uint8_t> t(m.rows() * m.cols());
    for (std::size_t r = 0; r < m.rows(); ++r)
        for (std::size_t c = 0; c < m.cols(); ++c) t[c * m.rows() + r] = m(r, c);
    return t;
}

LOWBIT_NAMESPACE_END
