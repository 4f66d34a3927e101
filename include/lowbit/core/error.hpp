#pragma once
// lowbit::error: every failure the library reports, with a code and a message
// that says what is wrong and where.

#include <cstddef>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../detail/config.hpp"

LOWBIT_NAMESPACE_BEGIN

enum class errc {
    invalid_argument,  ///< a parameter is out of its domain (bits, group size, ...)
    shape_mismatch,    ///< sizes that must agree do not
    not_divisible,     ///< a row does not divide into groups or blocks
    non_finite,        ///< NaN or Inf where a finite value is required
    unknown_format,    ///< a format name the registry does not know
    unsupported,       ///< a valid request this build or CPU cannot serve
    io,                ///< the operating system refused a read or write
    corrupt_file,      ///< a file's contents contradict its own header
    out_of_memory,     ///< an allocation the request needs failed (the message says how large)
};

constexpr std::string_view to_string(errc c) noexcept {
    switch (c) {
    case errc::invalid_argument: return "invalid argument";
    case errc::shape_mismatch: return "shape mismatch";
    case errc::not_divisible: return "not divisible";
    case errc::non_finite: return "non-finite value";
    case errc::unknown_format: return "unknown format";
    case errc::unsupported: return "unsupported";
    case errc::io: return "i/o error";
    case errc::corrupt_file: return "corrupt file";
    case errc::out_of_memory: return "out of memory";
    }
    return "error";
}

class error : public std::runtime_error {
public:
    error(errc code, const std::string& what)
        : std::runtime_error("lowbit: " + std::string(to_string(code)) + ": " + what), code_(code),
          prefix_(8 + to_string(code).size() + 2) {}
    errc code() const noexcept { return code_; }
    /// what() without the "lowbit: <code>: " prefix: the part a caller adding
    /// context puts after its own ("in.gguf: tensor 'x': " + message()).
    const char* message() const noexcept { return what() + prefix_; }

private:
    errc code_;
    std::size_t prefix_;
};

LOWBIT_NAMESPACE_END

// Engines built with -fno-exceptions define LOWBIT_THROW before including lowbit
// (e.g. to log and abort).
#ifndef LOWBIT_THROW
#define LOWBIT_THROW(code, msg) throw ::lowbit::error((code), (msg))
#endif

LOWBIT_NAMESPACE_BEGIN
/// Rethrows `e` with `context` in front of its message: one "lowbit: <code>:"
/// prefix however many layers add where it happened.
[[noreturn]] inline void rethrow_with_context(const error& e, const std::string& context) {
    LOWBIT_THROW(e.code(), context + ": " + e.message());
    std::abort();  // reached only if a LOWBIT_THROW replacement returns
}
/// errc::out_of_memory for a failed allocation of `bytes` bytes for `what`,
/// in place of a bare std::bad_alloc.
[[noreturn]] inline void throw_out_of_memory(const std::string& what, unsigned long long bytes) {
    const double mib = static_cast<double>(bytes) / (1024.0 * 1024.0);
    std::string size = std::to_string(bytes) + " bytes";
    if (mib >= 1) size += " (" + std::to_string(static_cast<unsigned long long>(mib + 0.5)) + " MiB)";
    LOWBIT_THROW(errc::out_of_memory, "cannot allocate " + size + " for " + what);
    std::abort();
}

/// v.assign(n, value), with a failed allocation reported as throw_out_of_memory(what).
template <class Vec, class T>
void assign_or_throw(Vec& v, std::size_t n, const T& value, const std::string& what) {
    try {
        v.assign(n, value);
    } catch (const std::bad_alloc&) {
        throw_out_of_memory(what, static_cast<unsigned long long>(n) * sizeof(typename Vec::value_type));
    }
}
LOWBIT_NAMESPACE_END
