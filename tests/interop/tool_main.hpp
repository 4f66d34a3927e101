#pragma once
// What the interop tools share: the byte hash the Python tests recompute, and
// a main() that turns a bad command line into the usage text (exit code 2)
// and an exception into its message (exit code 1).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <string_view>
#include <vector>

namespace lowbit_tool {

/// 64-bit FNV-1a of `bytes`.
inline std::uint64_t fnv1a64(std::span<const std::byte> bytes) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (const auto b : bytes) {
        h ^= std::to_integer<std::uint64_t>(b);
        h *= 0x100000001b3ull;
    }
    return h;
}

/// Calls run(args) with argv[1..]; run returns false if it does not know the command.
template <class Run>
int tool_main(int argc, char** argv, const char* usage, Run&& run) {
    const std::vector<std::string_view> args(argv + 1, argv + argc);
    try {
        if (run(args)) return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    std::fprintf(stderr, "usage: %s\n", usage);
    return 2;
}

}  // namespace lowbit_tool
