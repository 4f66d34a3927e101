#pragma once
// What the C entry points for the Python interop tests share: run a body and
// turn an exception into its message on stderr and a 0 return (1: success).

#include <cstdio>
#include <exception>

namespace lowbit_capi {

template <class F>
int guarded(F&& f) {
    try {
        f();
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 0;
    }
}

}  // namespace lowbit_capi
