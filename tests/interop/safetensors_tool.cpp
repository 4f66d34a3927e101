// safetensors_tool dump IN        JSON lines: the header (size, data offset,
//                                 metadata or null), then each tensor in header
//                                 order (name, dtype, shape, data_offsets,
//                                 fnv1a64 of its bytes)
// safetensors_tool copy IN OUT    read IN with lowbit, write it back with lowbit
// safetensors_tool sample OUT     write a fixed set of tensors and metadata
//                                 (the values test_safetensors_files.py expects)
// The interop tests drive it against the `safetensors` Python package.

#include <lowbit/formats/json.hpp>
#include <lowbit/formats/safetensors.hpp>

#include "tool_main.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace st = lowbit::safetensors;
namespace json = lowbit::json;
using lowbit_tool::fnv1a64;

void dump(const st::file& f) {
    json::value head = json::value::object();
    head.set("header_size", f.header_size());
    head.set("data_offset", f.data_offset());
    if (f.has_metadata()) {
        json::value md = json::value::object();
        for (const auto& [k, v] : f.metadata()) md.set(k, v);
        head.set("metadata", std::move(md));
    } else {
        head.set("metadata", nullptr);
    }
    std::printf("%s\n", json::dump(head).c_str());
    for (const auto& t : f.tensors()) {
        json::value shape = json::value::array();
        for (const auto d : t.shape) shape.push_back(d);
        json::value line = json::value::object();
        line.set("tensor", t.name);
        line.set("dtype", std::string(st::to_string(t.dtype)));
        line.set("shape", std::move(shape));
        line.set("data_offsets", json::value::array({t.begin, t.end}));
        line.set("fnv1a64", fnv1a64(t.data()));
        std::printf("%s\n", json::dump(line).c_str());
    }
}

void rewrite(const std::filesystem::path& in, const std::filesystem::path& out) {
    const auto f = st::file::open(in);
    st::writer w(out);
    for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
    for (const auto& t : f.tensors()) w.add(t.name, t.dtype, t.shape, t.data());
    w.finish();
}

template <class T>
st::fill_fn fill_with(std::vector<T> values) {
    return [values = std::move(values)](std::span<std::byte> out) {
        if (out.size() != values.size() * sizeof(T)) std::abort();
        if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());  // little-endian hosts only
    };
}

// Values the Python test recomputes with numpy; tensors are added in an order
// the writer's size-descending layout reorders.
void sample(const std::filesystem::path& out) {
    st::writer w(out);
    std::vector<float> f32(12);
    for (std::size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(i) * 0.5f - 1.0f;
    std::vector<std::uint16_t> f16_bits(5);
    for (std::size_t i = 0; i < f16_bits.size(); ++i) f16_bits[i] = static_cast<std::uint16_t>(0x3c00 + i);
    std::vector<std::int64_t> i64(6);
    for (std::size_t i = 0; i < i64.size(); ++i) i64[i] = (static_cast<std::int64_t>(i) - 3) << 40;
    std::vector<std::uint8_t> u8{0, 1, 2, 3, 4, 5, 255};
    std::vector<std::uint8_t> flags{1, 0, 1, 1};
    std::vector<std::int8_t> i8{-128, -1, 0, 127};
    std::vector<std::uint32_t> u32{0u, 1u, 4294967295u};

    w.add("u8", st::dtype::u8, {7}, fill_with(u8));
    w.add("layers.0.weight", st::dtype::f32, {3, 4}, fill_with(f32));
    w.add("half", st::dtype::f16, {5}, fill_with(f16_bits));
    w.add("flags", st::dtype::boolean, {4}, fill_with(flags));
    w.add("big", st::dtype::i64, {2, 3}, fill_with(i64));
    w.add("scalar", st::dtype::f64, {}, fill_with(std::vector<double>{2.5}));
    w.add("empty", st::dtype::i32, {0, 3}, fill_with(std::vector<std::int32_t>{}));
    w.add("i8", st::dtype::i8, {2, 2}, fill_with(i8));
    w.add("u32", st::dtype::u32, {3}, fill_with(u32));
    w.set_metadata("format", "np");
    w.set_metadata("unicode", "caf\u00e9 \u2713 \U0001F600");
    w.set_metadata("quote", "a\"b\\c\nd");
    w.set_metadata("empty", "");
    w.finish();
}

}  // namespace

int main(int argc, char** argv) {
    return lowbit_tool::tool_main(argc, argv, "safetensors_tool dump IN | copy IN OUT | sample OUT", [](const auto& a) {
        using path = std::filesystem::path;
        if (a.size() == 2 && a[0] == "dump")
            dump(st::file::open(path(a[1])));
        else if (a.size() == 3 && a[0] == "copy")
            rewrite(path(a[1]), path(a[2]));
        else if (a.size() == 2 && a[0] == "sample")
            sample(path(a[1]));
        else
            return false;
        return true;
    });
}
