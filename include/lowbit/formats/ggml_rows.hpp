#pragma once
// The one way a row of floats becomes ggml blocks and back: the checks a row
// call makes, the aligned copy an unaligned row goes through, and the macro
// that names ggml's public pair quantize_row_<t> / dequantize_row_<t> for a
// block type. Each type's rule is a pair of functions over whole blocks,
//   quantize_blocks(const float* x, block_<t>* y, std::size_t nblocks, const float* imatrix)
//   dequantize_blocks(const block_<t>* b, float* y, std::size_t nblocks)
// in formats/ggml_blocks.hpp and formats/ggml_kquants.hpp.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "ggml_types.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml::detail::rows {

/// A block struct is ggml's: its size and block size are the type table's,
/// and it is trivially copyable, so rows are plain bytes.
template <class B>
constexpr bool matches_ggml() {
    const auto t = find_base_traits(static_cast<std::uint32_t>(B::type_id));
    return t && t->type_size == sizeof(B) && t->block_size == B::block_size && std::is_trivial_v<B> &&
           std::is_standard_layout_v<B>;
}

/// A row call's arguments: n a whole number of blocks, no null pointer.
inline void check(const char* fn, std::size_t n, std::size_t block_size, const void* a, const void* b) {
    if (n % block_size != 0)
        LOWBIT_THROW(errc::not_divisible, std::string("ggml ") + fn + ": a row of " + std::to_string(n) +
                                              " values is not a whole number of blocks of " +
                                              std::to_string(block_size));
    if (n != 0 && (!a || !b)) LOWBIT_THROW(errc::invalid_argument, std::string("ggml ") + fn + ": null pointer");
}

/// Block arrays at any address: an unaligned row (a sub-view, a packed file
/// buffer) goes through an aligned copy, so block fields are never accessed
/// misaligned.
template <class Block>
class aligned_out {
public:
    aligned_out(void* dst, std::size_t nblocks) : dst_(dst), n_(nblocks) {
        if (reinterpret_cast<std::uintptr_t>(dst) % alignof(Block) != 0) tmp_.resize(nblocks);
    }
    ~aligned_out() {
        if (!tmp_.empty()) std::memcpy(dst_, tmp_.data(), n_ * sizeof(Block));
    }
    aligned_out(const aligned_out&) = delete;
    aligned_out& operator=(const aligned_out&) = delete;
    Block* get() noexcept { return tmp_.empty() ? static_cast<Block*>(dst_) : tmp_.data(); }

private:
    void* dst_;
    std::size_t n_;
    std::vector<Block> tmp_;
};

template <class Block>
class aligned_in {
public:
    aligned_in(const void* src, std::size_t nblocks) : src_(src) {
        if (reinterpret_cast<std::uintptr_t>(src) % alignof(Block) != 0) {
            tmp_.resize(nblocks);
            std::memcpy(tmp_.data(), src, nblocks * sizeof(Block));
        }
    }
    const Block* get() const noexcept { return tmp_.empty() ? static_cast<const Block*>(src_) : tmp_.data(); }

private:
    const void* src_;
    std::vector<Block> tmp_;
};

template <class Block>
using quantize_blocks_fn = void (*)(const float* x, Block* y, std::size_t nblocks, const float* imatrix);
template <class Block>
using dequantize_blocks_fn = void (*)(const Block* b, float* y, std::size_t nblocks);

template <class Block>
inline void quantize(const char* fn, const float* x, void* dst, std::size_t n, const float* imatrix,
                     quantize_blocks_fn<Block> rule) {
    check(fn, n, Block::block_size, x, dst);
    aligned_out<Block> out(dst, n / Block::block_size);
    rule(x, out.get(), n / Block::block_size, imatrix);
}

template <class Block>
inline void dequantize(const char* fn, const void* src, float* y, std::size_t n, dequantize_blocks_fn<Block> rule) {
    check(fn, n, Block::block_size, src, y);
    const aligned_in<Block> in(src, n / Block::block_size);
    rule(in.get(), y, n / Block::block_size);
}

}  // namespace ggml::detail::rows
LOWBIT_NAMESPACE_END

/// ggml's public row pair for block_<t>, over the block rules of namespace
/// `rules` (expanded inside namespace lowbit::ggml). Bytes follow ggml's
/// quantize_row_*_ref without an importance matrix (x: n floats, n a multiple
/// of the block size), ggml_quantize_chunk with one (n values, one per column).
#define LOWBIT_GGML_ROW_FUNCTIONS(t, rules)                                                                  \
    inline void quantize_row_##t(const float* x, void* dst, std::size_t n, const float* imatrix = nullptr) { \
        detail::rows::quantize<block_##t>("quantize_row_" #t, x, dst, n, imatrix, &rules::quantize_blocks);  \
    }                                                                                                        \
    inline void dequantize_row_##t(const void* src, float* y, std::size_t n) {                               \
        detail::rows::dequantize<block_##t>("dequantize_row_" #t, src, y, n, &rules::dequantize_blocks);     \
    }
