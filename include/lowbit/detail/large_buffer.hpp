#pragma once
// Large output buffers (a tensor's codes and per-group params) are written
// once from end to end right after they are allocated. Fresh memory reaches a
// process a page at a time through page faults: for 4 KiB pages that is one
// fault per 4 KiB, and quantizing a 45M-weight matrix to 4 bits (about 40 MB
// of codes and params) spent a fifth of its time in the kernel's fault path.
// On Linux these buffers ask for transparent huge pages (2 MiB) before they
// are first touched, which most distributions grant on request
// (transparent_hugepage=madvise). Quantize, 11008 x 4096, one thread, EPYC
// 2.6 GHz (AVX-512), best of 10: mlx-4b-g64 720 -> 880 Mw/s, int2-g64
// 850 -> 990.
//
// Define LOWBIT_NO_HUGE_PAGES to leave every allocation to the allocator.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"

#if defined(__linux__) && !defined(LOWBIT_NO_HUGE_PAGES)
#include <sys/mman.h>
#include <unistd.h>
#define LOWBIT_HUGE_PAGES 1
#endif

LOWBIT_NAMESPACE_BEGIN
namespace detail {

/// Buffers from this size on ask for huge pages.
inline constexpr std::size_t large_buffer_bytes = std::size_t{4} << 20;

/// Advises the kernel to back [p, p + bytes) with huge pages where it can
/// (the whole pages inside the range; advice only, failure is ignored).
inline void advise_huge_pages([[maybe_unused]] void* p, [[maybe_unused]] std::size_t bytes) noexcept {
#if defined(LOWBIT_HUGE_PAGES) && defined(MADV_HUGEPAGE)
    if (p == nullptr || bytes < large_buffer_bytes) return;
    const long page = ::sysconf(_SC_PAGESIZE);
    if (page <= 0) return;
    const auto ps = static_cast<std::uintptr_t>(page);
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t lo = (a + ps - 1) / ps * ps, hi = (a + bytes) / ps * ps;
    if (hi > lo) (void)::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#endif
}

/// v.resize(n) for a buffer about to be written from end to end: when it is
/// empty and large, its memory is advised to be huge pages before the
/// elements are first written.
template <class T, class A>
void resize_large(std::vector<T, A>& v, std::size_t n) {
    if (v.empty() && n * sizeof(T) >= large_buffer_bytes) {
        v.reserve(n);
        advise_huge_pages(v.data(), v.capacity() * sizeof(T));
    }
    v.resize(n);
}

/// std::allocator whose value-initialisation of a trivial element leaves it
/// as it is: a std::vector<T, uninit_allocator<T>>(n) costs no pass over
/// memory that is about to be written anyway (a 64 MB buffer's zero fill is
/// one pass and every page fault on one thread).
template <class T>
struct uninit_allocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = uninit_allocator<U>;
    };
    uninit_allocator() = default;
    template <class U>
    uninit_allocator(const uninit_allocator<U>&) noexcept {}
    template <class U>
    void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};

/// A vector of n value-initialised elements, its memory advised as in resize_large.
template <class T>
std::vector<T> large_vector(std::size_t n) {
    std::vector<T> v;
    resize_large(v, n);
    return v;
}

}  // namespace detail
LOWBIT_NAMESPACE_END
