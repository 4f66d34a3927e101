// libFuzzer target for the GGUF reader: any input either parses into a file
// whose every tensor lies inside the input, or is rejected with lowbit::error.
// Build and run: ./dev.sh fuzz [SECONDS]
#include <lowbit/formats/gguf.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    try {
        const auto f = lowbit::read_gguf_from_memory(bytes);
        std::size_t total = 0;
        for (const auto& t : f.tensors()) {
            const auto s = f.tensor(t);
            if (s.data() < bytes.data() || s.data() + s.size() > bytes.data() + bytes.size()) std::abort();
            if (!s.empty()) total += static_cast<std::size_t>(s.front()) + static_cast<std::size_t>(s.back());
        }
        for (const auto& kv : f.metadata()) total += kv.key.size();
        (void)total;
    } catch (const lowbit::error&) {
        // Rejected with a message: the defined outcome for bad input.
    }
    return 0;
}
