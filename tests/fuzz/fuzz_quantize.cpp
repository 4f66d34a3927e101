// libFuzzer target for the quantize pipeline (what `lowbit quantize` runs):
// a fuzzed small GGUF model is quantized to a type chosen by its last byte,
// and the output, if any, is read back and checked: every tensor passes
// ggml's validation (ggml::find_invalid_block) and dequantizes to finite
// values, and nothing but the output is left in the scratch directory.
// Build and run: ./dev.sh fuzz [SECONDS]
#include <lowbit/formats/ggml_validate.hpp>
#include <lowbit/formats/gguf_quantize.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {
const char* const types[] = {"Q4_0", "Q8_0", "Q4_K_M", "Q6_K", "IQ4_NL", "F16", "Q2_K", "Q5_1"};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace fs = std::filesystem;
    static const fs::path dir = fs::temp_directory_path() / ("lowbit_fuzz_quantize." + std::to_string(::getpid()));
    fs::create_directories(dir);
    const fs::path in = dir / "in.gguf", out = dir / "out.gguf";
    {
        std::ofstream f(in, std::ios::binary | std::ios::trunc);
        f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    fs::remove(out);
    lowbit::gguf_quantize_options o;
    o.type = types[size ? data[size - 1] % 8 : 0];
    o.threads = 2;
    o.allow_requantize = size && (data[0] & 1);
    bool wrote = false;
    try {
        lowbit::quantize_gguf(in, out, o);
        wrote = true;
    } catch (const lowbit::error&) {
    }
    for (const auto& e : fs::directory_iterator(dir)) {
        const auto n = e.path().filename().string();
        if (n != "in.gguf" && !(wrote && n == "out.gguf")) std::abort();  // a temporary or a failed output left
    }
    if (!wrote) return 0;
    const auto g = lowbit::read_gguf(out);  // what we wrote must read back
    for (const auto& t : g.tensors()) {
        const auto b = g.tensor(t);
        if (lowbit::ggml::find_invalid_block(t.type, b)) std::abort();
        const auto& tr = lowbit::ggml::traits(t.type);
        if (!tr.dequantize || t.type == lowbit::ggml::type::f32) continue;
        const std::size_t n = static_cast<std::size_t>(t.row_length()), rows = static_cast<std::size_t>(t.n_rows());
        std::vector<float> y(n * rows);
        lowbit::kernels::dequantize_ggml_rows(t.type, b.data(), y.data(), rows, n);
        for (float v : y)
            if (!std::isfinite(v)) std::abort();
    }
    return 0;
}
