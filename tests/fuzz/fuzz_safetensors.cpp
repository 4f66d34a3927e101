// libFuzzer target for the safetensors reader (and the JSON parser under it):
// any input either parses into a file whose every tensor lies inside the
// input, or is rejected with lowbit::error. What parses is written back with
// the writer and must read back the same.
// Build and run: ./dev.sh fuzz [SECONDS]
#include <lowbit/formats/json.hpp>
#include <lowbit/formats/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>

namespace {

void check_json(std::string_view text) {
    lowbit::json::value v;
    try {
        v = lowbit::json::parse(text);
    } catch (const lowbit::error&) {
        return;
    }
    // What parses serializes to text that parses back to the same value.
    if (!(lowbit::json::parse(lowbit::json::dump(v)) == v)) std::abort();
    try {
        (void)lowbit::json::parse(lowbit::json::dump_python(v));
    } catch (const lowbit::error& e) {
        if (e.code() != lowbit::errc::non_finite) std::abort();  // only 1e400 and the like may fail
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace st = lowbit::safetensors;
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    if (size >= 8) check_json(std::string_view(reinterpret_cast<const char*>(data) + 8, size - 8));
    st::file f = [&] {
        try {
            return st::file::from_memory(bytes);
        } catch (const lowbit::error&) {
            // Rejected with a message: the defined outcome for bad input.
            return st::file::from_memory(st::writer().to_bytes());
        }
    }();
    std::uint64_t covered = 0;
    for (const auto& t : f.tensors()) {
        const auto s = t.data();
        if (f.size() > 0 && (s.data() < bytes.data() || s.data() + s.size() > bytes.data() + bytes.size()))
            std::abort();
        if (s.size() != t.size()) std::abort();
        covered += t.size();
    }
    if (f.size() > 0 && f.data_offset() + covered != size) std::abort();

    // Write it back (the writer refuses names the reader tolerates) and compare.
    st::writer w;
    for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
    try {
        for (const auto& t : f.tensors()) w.add(t.name, t.dtype, t.shape, t.data());
    } catch (const lowbit::error&) {
        return 0;
    }
    const auto again_bytes = w.to_bytes();
    const auto again = st::file::from_memory(again_bytes);
    if (again.size() != f.size()) std::abort();
    for (const auto& t : f.tensors()) {
        const auto& u = again.at(t.name);
        if (u.dtype != t.dtype || u.shape != t.shape || u.size() != t.size()) std::abort();
        if (t.size() && std::memcmp(u.data().data(), t.data().data(), t.size()) != 0) std::abort();
    }
    return 0;
}
