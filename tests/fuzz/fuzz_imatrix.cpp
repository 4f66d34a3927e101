// libFuzzer target for the importance-matrix readers: a GGUF imatrix (through
// the GGUF reader and imatrix_from_gguf_tensors) or the legacy .dat form. Any
// input is either an imatrix whose weights are all finite once checked, or a
// lowbit::error. Build and run: ./dev.sh fuzz [SECONDS]
#include <lowbit/formats/gguf.hpp>
#include <lowbit/formats/imatrix.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    try {
        lowbit::ggml::imatrix m;
        if (lowbit::ggml::is_gguf(bytes)) {
            const auto g = lowbit::read_gguf_from_memory(bytes);
            std::vector<lowbit::ggml::imatrix_tensor> ts;
            for (const auto& t : g.tensors()) {
                if (t.type != lowbit::ggml::type::f32) continue;
                const auto b = g.tensor(t);
                if (reinterpret_cast<std::uintptr_t>(b.data()) % alignof(float) != 0) continue;
                ts.push_back({t.name, {reinterpret_cast<const float*>(b.data()), b.size() / sizeof(float)}, t.shape});
            }
            m = lowbit::ggml::imatrix_from_gguf_tensors(ts);
        } else {
            m = lowbit::ggml::parse_imatrix_dat(bytes);
        }
        m.check_finite();
        for (const auto& [name, w] : m.entries) {
            if (name.empty() && w.empty()) std::abort();
            for (float v : w)
                if (!std::isfinite(v)) std::abort();  // check_finite let one through
            // The lookup the quantizer makes must stay in bounds for any row length.
            (void)m.weights_for(name, w.size(), 1);
        }
    } catch (const lowbit::error&) {
        // Rejected with a message: the defined outcome for bad input.
    }
    return 0;
}
