#include "catch.hpp"
#include "scratch_dir.hpp"

#include <lowbit/formats/safetensors.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace st = lowbit::safetensors;
namespace fs = std::filesystem;
using lowbit::errc;
using lowbit_test::scratch_dir;

std::vector<std::byte> bytes_of(std::string_view s) {
    std::vector<std::byte> out;
    for (const char c : s) out.push_back(static_cast<std::byte>(c));
    return out;
}

// A file assembled by hand: u64 header length, the header text as given,
// then `data` (or `data_size` bytes counting up).
std::vector<std::byte> assemble(std::string_view header, std::size_t data_size) {
    std::vector<std::byte> out;
    const std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xff));
    for (const char c : header) out.push_back(static_cast<std::byte>(c));
    for (std::size_t i = 0; i < data_size; ++i) out.push_back(static_cast<std::byte>(i & 0xff));
    return out;
}

std::string error_of(std::span<const std::byte> b, errc expected = errc::corrupt_file) {
    try {
        (void)st::file::from_memory(b);
    } catch (const lowbit::error& e) {
        CHECK(e.code() == expected);
        return e.what();
    }
    FAIL("accepted");
    return {};
}

template <class T>
std::span<const std::byte> as_bytes(const std::vector<T>& v) {
    return std::as_bytes(std::span<const T>(v));
}

std::vector<std::byte> read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> out(c.size());
    std::memcpy(out.data(), c.data(), c.size());
    return out;
}

// A writer with several dtypes, a scalar, an empty tensor, a sub-byte one and metadata.
struct sample {
    std::vector<float> f32{0.f, 1.f, 2.f, 3.f, 4.f, 5.f};
    std::vector<std::uint8_t> u8{1, 2, 3};
    std::vector<double> f64{3.5};
    std::vector<std::uint16_t> bf16{0x3f80, 0x4000, 0x4040, 0x4080};
    std::vector<std::uint8_t> f4{0x21, 0x43, 0x65, 0x87};
    std::vector<std::int64_t> i64{-1, 1ll << 40};

    st::writer make(fs::path dest = {}) const {
        st::writer w(std::move(dest));
        w.add("u8", st::dtype::u8, {3}, as_bytes(u8));
        w.add("model.w", st::dtype::f32, {2, 3}, as_bytes(f32));
        w.add("scalar", st::dtype::f64, {}, as_bytes(f64));
        w.add("empty", st::dtype::f16, {0, 4}, std::span<const std::byte>());
        w.add("bf16", st::dtype::bf16, {2, 2}, as_bytes(bf16));
        w.add("packed.f4", st::dtype::f4, {2, 4}, as_bytes(f4));
        w.add("i64 \u00e9", st::dtype::i64, {2}, [&](std::span<std::byte> out) {
            REQUIRE(out.size() == 16);
            for (const auto b : out) REQUIRE(b == std::byte{0});
            std::memcpy(out.data(), i64.data(), 16);
        });
        w.set_metadata("format", "pt");
        w.set_metadata("note", "caf\u00e9 \"quoted\" \\ \n");
        return w;
    }

    void check(const st::file& f) const {
        REQUIRE(f.size() == 7);
        const char* order[] = {"u8", "model.w", "scalar", "empty", "bf16", "packed.f4", "i64 \u00e9"};
        for (std::size_t i = 0; i < 7; ++i) CHECK(f.tensors()[i].name == order[i]);
        const auto same = [](std::span<const std::byte> a, std::span<const std::byte> b) {
            return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
        };
        CHECK(same(f.at("u8").data(), as_bytes(u8)));
        CHECK(same(f.at("model.w").data(), as_bytes(f32)));
        CHECK(same(f.at("scalar").data(), as_bytes(f64)));
        CHECK(f.at("empty").data().empty());
        CHECK(same(f.at("bf16").data(), as_bytes(bf16)));
        CHECK(same(f.at("packed.f4").data(), as_bytes(f4)));
        CHECK(same(f.at("i64 \u00e9").data(), as_bytes(i64)));
        CHECK(f.at("model.w").shape == std::vector<std::uint64_t>{2, 3});
        CHECK(f.at("model.w").dtype == st::dtype::f32);
        CHECK(f.at("model.w").numel() == 6);
        CHECK(f.at("scalar").shape.empty());
        CHECK(f.at("scalar").numel() == 1);
        CHECK(f.at("empty").numel() == 0);
        CHECK(f.at("packed.f4").size() == 4);
        REQUIRE(f.metadata().size() == 2);
        CHECK(f.metadata()[0] == std::pair<std::string, std::string>{"format", "pt"});
        CHECK(*f.find_metadata("note") == "caf\u00e9 \"quoted\" \\ \n");
        CHECK(f.has_metadata());
        // Every tensor starts at a file offset that is a multiple of its element size.
        CHECK(f.data_offset() % 8 == 0);
        for (const auto& t : f.tensors()) {
            const auto file_offset = static_cast<std::size_t>(f.data_offset() + t.begin);
            if (st::size(t.dtype) != 0) CHECK(file_offset % st::size(t.dtype) == 0);
        }
        // Offset order: by decreasing element size, stable.
        std::vector<std::string> by_offset;
        for (const auto* t : f.tensors_by_offset()) by_offset.push_back(t->name);
        CHECK(by_offset == std::vector<std::string>{"scalar", "i64 \u00e9", "model.w", "empty", "bf16", "u8",
                                                    "packed.f4"});
    }
};

}  // namespace

TEST_CASE("safetensors dtypes: names, sizes", "[safetensors]") {
    for (const auto t : st::all_dtypes) {
        CHECK(st::parse_dtype(st::to_string(t)) == t);
        CHECK(st::bit_size(t) % 2 == 0);
    }
    CHECK(st::parse_dtype("f32") == std::nullopt);
    CHECK(st::parse_dtype("F8_E4M3FN") == std::nullopt);
    CHECK(st::size(st::dtype::f32) == 4);
    CHECK(st::size(st::dtype::bf16) == 2);
    CHECK(st::size(st::dtype::boolean) == 1);
    CHECK(st::size(st::dtype::f8_e8m0) == 1);
    CHECK(st::size(st::dtype::c64) == 8);
    CHECK(st::size(st::dtype::f4) == 0);
    CHECK(st::bit_size(st::dtype::f4) == 4);
    CHECK(st::bit_size(st::dtype::f6_e3m2) == 6);
    CHECK(st::byte_size(st::dtype::f4, 3) == std::nullopt);
    CHECK(st::byte_size(st::dtype::f4, 4) == 2u);
    CHECK(st::byte_size(st::dtype::f6_e2m3, 4) == 3u);
    CHECK(st::byte_size(st::dtype::u64, std::uint64_t{1} << 61) == std::nullopt);
    const std::uint64_t big[] = {std::uint64_t{1} << 32, std::uint64_t{1} << 32};
    CHECK(st::element_count(big) == std::nullopt);
    const std::uint64_t with_zero[] = {std::uint64_t{1} << 40, 0, std::uint64_t{1} << 40};
    CHECK(st::element_count(with_zero) == 0u);
}

TEST_CASE("safetensors writer: the reference's exact bytes", "[safetensors]") {
    // One F32 tensor [1, 2, 3] holding 0..5: a 64-byte header (already a
    // multiple of 8), then the data.
    const std::vector<float> x{0.f, 1.f, 2.f, 3.f, 4.f, 5.f};
    st::writer w;
    w.add("attn.0", st::dtype::f32, {1, 2, 3}, as_bytes(x));
    const std::string h = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
    REQUIRE(h.size() == 64);
    auto expected = assemble(h, 0);
    const auto xb = as_bytes(x);
    expected.insert(expected.end(), xb.begin(), xb.end());
    CHECK(w.to_bytes() == expected);

    // No tensors: "{}" padded with six spaces.
    CHECK(st::writer().to_bytes() == assemble("{}      ", 0));
    // Metadata only: 35 bytes of JSON padded to 40.
    st::writer m;
    m.set_metadata("framework", "pt");
    CHECK(m.to_bytes() == assemble(R"({"__metadata__":{"framework":"pt"}})" "     ", 0));
    const auto f = st::file::from_memory(assemble(R"({"__metadata__":{"framework":"pt"}})" "     ", 0));
    CHECK(f.size() == 0);
    CHECK(f.metadata().size() == 1);
}

TEST_CASE("safetensors round trip in memory and through a file", "[safetensors]") {
    const sample s;
    const auto bytes = s.make().to_bytes();
    const auto f = st::file::from_memory(bytes);
    s.check(f);
    CHECK(f.header_size() % 8 == 0);
    CHECK(f.header_text().back() == ' ');
    CHECK(f.bytes().size() == bytes.size());

    scratch_dir dir("st");
    const fs::path p = dir.path / "m.safetensors";
    s.make(p).finish();
    CHECK(read_all(p) == bytes);
    const auto g = st::file::open(p);
    s.check(g);
    // The writer's plan agrees with what the reader finds.
    const auto plan = s.make().tensors();
    REQUIRE(plan.size() == g.size());
    for (std::size_t i = 0; i < plan.size(); ++i) CHECK(plan[i] == g.tensors()[i]);
    CHECK(dir.entries() == std::vector<std::string>{"m.safetensors"});

    // A file copied through reader and writer is byte-identical.
    st::writer copy;
    for (const auto& [k, v] : g.metadata()) copy.set_metadata(k, v);
    for (const auto& t : g.tensors()) copy.add(t.name, t.dtype, t.shape, t.data());
    CHECK(copy.to_bytes() == bytes);

    // Copies of a file share its mapping.
    const st::file h = g;
    CHECK(h.at("model.w").data().data() == g.at("model.w").data().data());

    CHECK_THROWS_AS(st::file::open(dir.path / "missing.safetensors"), lowbit::error);
    try {
        (void)st::file::open(dir.path);
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::io);
    }
}

TEST_CASE("safetensors reader: lookups and close-name suggestions", "[safetensors]") {
    const sample s;
    const auto bytes = s.make().to_bytes();
    const auto f = st::file::from_memory(bytes);
    CHECK(f.find("model.w") != nullptr);
    CHECK(f.find("model.x") == nullptr);
    CHECK(f.find_metadata("nope") == nullptr);
    try {
        (void)f.at("model.x");
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::invalid_argument);
        CHECK_THAT(e.what(), Catch::Matchers::Contains("no tensor named 'model.x'; did you mean 'model.w'?"));
    }
    try {
        (void)f.at("something else entirely");
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK_THAT(e.what(), !Catch::Matchers::Contains("did you mean"));
    }
}

TEST_CASE("safetensors reader accepts what the reference accepts", "[safetensors]") {
    // Tensors listed out of offset order, unknown fields, null metadata,
    // padding of any JSON whitespace, an empty name, a zero-size tensor
    // between others.
    const std::string h = R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6],"extra":[1]},)"
                          R"("__metadata__":null,"":{"data_offsets":[0,4],"shape":[4],"dtype":"I8"},)"
                          R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}} )" "\t\n\r";
    const auto b = assemble(h, 6);
    const auto f = st::file::from_memory(b);
    REQUIRE(f.size() == 3);
    CHECK(f.tensors()[0].name == "b");
    CHECK(f.tensors()[1].name.empty());
    CHECK_FALSE(f.has_metadata());
    CHECK(f.at("b").data().data() == b.data() + 8 + h.size() + 4);
    std::vector<std::string> by_offset;
    for (const auto* t : f.tensors_by_offset()) by_offset.push_back(t->name);
    CHECK(by_offset == std::vector<std::string>{"", "z", "b"});

    // No tensors, no data.
    CHECK(st::file::from_memory(assemble("{}", 0)).size() == 0);
    CHECK(st::file::from_memory(assemble(R"({"__metadata__":{}})", 0)).has_metadata());
}

TEST_CASE("safetensors reader: every truncation is a clean error", "[safetensors]") {
    const sample s;
    const auto bytes = s.make().to_bytes();
    for (std::size_t n = 0; n < bytes.size(); ++n) {
        const std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
        INFO("length " << n);
        try {
            (void)st::file::from_memory(cut);
            FAIL("accepted");
        } catch (const lowbit::error& e) {
            CHECK(e.code() == errc::corrupt_file);
        }
    }
    // And one byte more is an error too.
    auto longer = bytes;
    longer.push_back(std::byte{0});
    CHECK_THAT(error_of(longer), Catch::Matchers::Contains("belong to no tensor"));
}

TEST_CASE("safetensors reader: corrupt files name the problem and where", "[safetensors]") {
    using Catch::Matchers::Contains;
    const auto t = [](std::string_view fields) {
        return "{\"w\":{" + std::string(fields) + "}}";
    };

    SECTION("header length") {
        CHECK_THAT(error_of(bytes_of("abc")), Contains("has 3 bytes, fewer than the 8"));
        auto huge = assemble("{}", 0);
        huge[7] = std::byte{0x80};
        CHECK_THAT(error_of(huge), Contains("header length at byte 0: 9223372036854775810 exceeds the limit"));
        auto over = assemble("{}", 0);
        const std::uint64_t n = 100'000'001;
        for (int i = 0; i < 8; ++i) over[static_cast<std::size_t>(i)] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
        CHECK_THAT(error_of(over), Contains("exceeds the limit of 100000000 bytes"));
        auto past = assemble("{}", 0);
        past[0] = std::byte{3};
        CHECK_THAT(error_of(past), Contains("3 bytes of header run past the end of the file (2 bytes follow"));
    }
    SECTION("header JSON") {
        CHECK_THAT(error_of(assemble("{\"w\":", 0)), Contains("header at byte 13:"));
        CHECK_THAT(error_of(assemble("[]", 0)), Contains("header at byte 8: is a JSON array, not an object"));
        CHECK_THAT(error_of(assemble(std::string_view("{}\0\0", 4), 0)), Contains("header at byte 10: unexpected byte 0x00"));
        CHECK_THAT(error_of(assemble("{\"\xff\":1}", 0)), Contains("invalid UTF-8"));
        CHECK_THAT(error_of(assemble(R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"w":{}})", 4)),
                   Contains("at byte 61: duplicate key \"w\" (first at byte 9)"));
        CHECK_THAT(error_of(assemble(R"({"__metadata__":{"a":"1","a":"2"}})", 0)), Contains("duplicate key \"a\""));
        CHECK_THAT(error_of(assemble(R"({"w":[]})", 0)), Contains("tensor 'w' at byte 13: entry is a JSON array"));
    }
    SECTION("metadata") {
        CHECK_THAT(error_of(assemble(R"({"__metadata__":{"n":1}})", 0)),
                   Contains("__metadata__ value of 'n' at byte 29: is a JSON number, not a string"));
        CHECK_THAT(error_of(assemble(R"({"__metadata__":{"n":null}})", 0)), Contains("is a JSON null, not a string"));
        CHECK_THAT(error_of(assemble(R"({"__metadata__":["a"]})", 0)),
                   Contains("__metadata__ at byte 24: is a JSON array, not an object of strings"));
    }
    SECTION("fields") {
        CHECK_THAT(error_of(assemble(t(R"("shape":[],"data_offsets":[0,4])"), 4)), Contains("entry has no \"dtype\""));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","data_offsets":[0,4])"), 4)), Contains("entry has no \"shape\""));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[])"), 4)), Contains("entry has no \"data_offsets\""));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F33","shape":[],"data_offsets":[0,4])"), 4)),
                   Contains("tensor 'w' dtype at byte 22: 'F33' is not a safetensors dtype (BOOL, F4,"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":32,"shape":[],"data_offsets":[0,4])"), 4)),
                   Contains("dtype at byte 22: is a JSON number, not a string"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[-1],"data_offsets":[0,4])"), 4)),
                   Contains("tensor 'w' shape[0] at byte 37: -1 is not an integer in [0, 2^64)"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[1.0],"data_offsets":[0,4])"), 4)),
                   Contains("shape[0] at byte 37: 1.0 is not an integer"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":["1"],"data_offsets":[0,4])"), 4)),
                   Contains("shape[0] at byte 37: a JSON string is not an integer"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":{},"data_offsets":[0,4])"), 4)),
                   Contains("shape at byte 36: is a JSON object, not an array"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[],"data_offsets":[0,4,8])"), 4)),
                   Contains("data_offsets at byte 54: has 3 entries, not [begin, end]"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[],"data_offsets":[0,18446744073709551616])"), 4)),
                   Contains("data_offsets[1] at byte 57: 18446744073709551616 is not an integer in [0, 2^64)"));
    }
    SECTION("sizes and overflow") {
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[2],"data_offsets":[0,4])"), 4)),
                   Contains("tensor 'w' data_offsets at byte 55: [0, 4) holds 4 bytes, but shape [2] of F32 needs 8"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[],"data_offsets":[4,0])"), 4)),
                   Contains("end 0 is before begin 4"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0])"), 0)),
                   Contains("shape at byte 35: [4294967296, 4294967296] has more than 2^64-1 elements"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0])"), 0)),
                   Contains("of F32 has more than 2^64-1 bits"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F4","shape":[3],"data_offsets":[0,2])"), 2)),
                   Contains("3 elements of F4 (4 bits each) do not fill a whole number of bytes"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"F32","shape":[2],"data_offsets":[0,8])"), 4)),
                   Contains("[0, 8) runs past the end of the data section (4 bytes from file byte"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"U8","shape":[4],"data_offsets":[18446744073709551610,18446744073709551614])"), 4)),
                   Contains("runs past the end of the data section"));
    }
    SECTION("coverage: gaps, overlaps, trailing bytes") {
        const std::string gap = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})";
        CHECK_THAT(error_of(assemble(gap, 6)),
                   Contains("data section bytes [2, 4) (file bytes from 115) belong to no tensor: a gap before "
                            "tensor 'b' at byte 61 (data_offsets [4, 6))"));
        const std::string at_start = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})";
        CHECK_THAT(error_of(assemble(at_start, 4)), Contains("data section bytes [0, 2)"));
        const std::string overlap = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                    R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})";
        CHECK_THAT(error_of(assemble(overlap, 6)),
                   Contains("tensor 'b' at byte 61 (data_offsets [2, 6)) overlaps tensor 'a' at byte 9"));
        const std::string same = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                 R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
        CHECK_THAT(error_of(assemble(same, 4)), Contains("overlaps"));
        const std::string inside_zero = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                        R"("b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})";
        CHECK_THAT(error_of(assemble(inside_zero, 4)), Contains("overlaps"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"U8","shape":[2],"data_offsets":[0,2])"), 3)),
                   Contains("data section bytes [2, 3)"));
        CHECK_THAT(error_of(assemble(t(R"("dtype":"U8","shape":[2],"data_offsets":[0,2])"), 3)),
                   Contains("the tensors end before the file does"));
        CHECK_THAT(error_of(assemble("{}", 1)), Contains("data section bytes [0, 1)"));
    }
}

TEST_CASE("safetensors reader: errors from a file name the file", "[safetensors]") {
    scratch_dir dir("st");
    const fs::path p = dir.path / "bad.safetensors";
    {
        const auto b = assemble("{\"w\":1}", 0);
        std::ofstream out(p, std::ios::binary);
        out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    }
    try {
        (void)st::file::open(p);
        FAIL("accepted");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::corrupt_file);
        CHECK_THAT(e.what(), Catch::Matchers::Contains(p.string() + ": tensor 'w' at byte 13: entry is a JSON number"));
    }
}

TEST_CASE("safetensors writer rejects bad tensors and names", "[safetensors]") {
    const std::vector<float> x(4);
    st::writer w;
    w.add("a", st::dtype::f32, {4}, as_bytes(x));
    const auto code = [&](auto&& f) {
        try {
            f();
        } catch (const lowbit::error& e) {
            return e.code();
        }
        FAIL("accepted");
        return errc::io;
    };
    CHECK(code([&] { w.add("a", st::dtype::f32, {4}, as_bytes(x)); }) == errc::invalid_argument);
    CHECK(code([&] { w.add("", st::dtype::f32, {4}, as_bytes(x)); }) == errc::invalid_argument);
    CHECK(code([&] { w.add("__metadata__", st::dtype::f32, {4}, as_bytes(x)); }) == errc::invalid_argument);
    CHECK(code([&] { w.add("__x", st::dtype::f32, {4}, as_bytes(x)); }) == errc::invalid_argument);
    CHECK(code([&] { w.add("b\xff", st::dtype::f32, {4}, as_bytes(x)); }) == errc::invalid_argument);
    CHECK(code([&] { w.add("b", st::dtype::f32, {2, 3}, as_bytes(x)); }) == errc::shape_mismatch);
    CHECK(code([&] { w.add("b", st::dtype::f4, {3}, as_bytes(x)); }) == errc::invalid_argument);
    CHECK(code([&] { w.add("b", st::dtype::u8, {1ull << 32, 1ull << 32}, st::fill_fn([](auto) {})); }) ==
          errc::invalid_argument);
    CHECK(code([&] { w.add("b", st::dtype::f32, {4}, st::fill_fn()); }) == errc::invalid_argument);
    CHECK(code([&] { w.set_metadata("k", "\xc0\x80"); }) == errc::invalid_argument);
    CHECK(code([&] { w.finish(); }) == errc::invalid_argument);  // no destination
    // A name like "_x" or "a__" is fine.
    w.add("_x", st::dtype::f32, {4}, as_bytes(x));
    w.add("a__", st::dtype::f32, {4}, as_bytes(x));
    CHECK(st::file::from_memory(w.to_bytes()).size() == 3);
}

TEST_CASE("safetensors writer keeps buffers given by value", "[safetensors]") {
    // Built by append: g++ 12's -Wrestrict misfires on "t" + std::to_string(i) at -O3.
    const auto name = [](int i) { return std::string("t").append(std::to_string(i)); };
    const auto payload = [](int i) { return std::string("ab").append(std::to_string(i % 10)); };
    st::writer w;
    for (int i = 0; i < 50; ++i) w.add(name(i), st::dtype::u8, {3}, bytes_of(payload(i)));
    CHECK_THROWS_AS(w.add("bad", st::dtype::u8, {2}, bytes_of("abc")), lowbit::error);
    const auto b = w.to_bytes();
    const auto f = st::file::from_memory(b);
    REQUIRE(f.size() == 50);
    for (int i = 0; i < 50; ++i) {
        const auto d = f.at(name(i)).data();
        CHECK(std::string(reinterpret_cast<const char*>(d.data()), d.size()) == payload(i));
    }
}

TEST_CASE("safetensors writer is atomic", "[safetensors]") {
    scratch_dir dir("st");
    const fs::path p = dir.path / "out.safetensors";
    const std::vector<float> x(1024, 1.f);
    const auto make = [&](bool fail) {
        st::writer w(p);
        w.add("first", st::dtype::f32, {1024}, as_bytes(x));
        w.add("streamed", st::dtype::f32, {1024}, [fail](std::span<std::byte> out) {
            if (fail) throw std::runtime_error("converter failed");
            std::memset(out.data(), 0x3f, out.size());
        });
        w.set_metadata("k", "v");
        return w;
    };

    // A throwing fill function: its exception propagates, and neither the
    // destination nor a temporary file is left.
    CHECK_THROWS_WITH(make(true).finish(), "converter failed");
    CHECK(dir.entries().empty());

    // An existing destination is untouched by a failed write...
    make(false).finish();
    const auto good = read_all(p);
    CHECK(st::file::open(p).size() == 2);
    CHECK_THROWS_AS(make(true).finish(), std::runtime_error);
    CHECK(read_all(p) == good);
    CHECK(dir.entries() == std::vector<std::string>{"out.safetensors"});

    // ...and replaced by a successful one.
    st::writer other(p);
    other.add("only", st::dtype::u8, {1}, bytes_of("x"));  // a temporary buffer: the writer keeps it
    other.finish();
    CHECK(st::file::open(p).size() == 1);
    CHECK(dir.entries() == std::vector<std::string>{"out.safetensors"});

    // A destination in a missing directory is an i/o error.
    st::writer nowhere(dir.path / "no" / "such" / "dir.safetensors");
    try {
        nowhere.finish();
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::io);
    }
}

TEST_CASE("safetensors writer names the bad byte of a string that is not UTF-8", "[safetensors]") {
    using Catch::Matchers::Contains;
    const std::vector<float> x(1);
    st::writer w;
    const auto error_of_add = [&](auto&& f) {
        try {
            f();
        } catch (const lowbit::error& e) {
            CHECK(e.code() == errc::invalid_argument);
            return std::string(e.what());
        }
        FAIL("accepted");
        return std::string();
    };
    CHECK_THAT(error_of_add([&] { w.add("layer.\xed\xa0\x80", st::dtype::f32, {1}, as_bytes(x)); }),
               Contains("tensor name is not valid UTF-8: byte 6 (0xed, after 'layer.')"));
    CHECK_THAT(error_of_add([&] { w.set_metadata("k\xc0\xaf", "v"); }),
               Contains("metadata key is not valid UTF-8: byte 1 (0xc0, after 'k')"));
    CHECK_THAT(error_of_add([&] { w.set_metadata("k", "ab\xf4\x90\x80\x80"); }),
               Contains("metadata value of 'k' is not valid UTF-8: byte 2 (0xf4, after 'ab')"));
    CHECK(w.tensors().empty());
    CHECK(w.metadata().empty());
    // Multi-byte UTF-8 is fine, and round-trips.
    w.add("\xe6\xa8\xa1\xe5\x9e\x8b.\xf0\x9f\xa6\x99", st::dtype::f32, {1}, as_bytes(x));
    w.set_metadata("\xe6\xa8\xa1\xe5\x9e\x8b", "\xf0\x9f\xa6\x99");
    const auto f = st::file::from_memory(w.to_bytes());
    CHECK(f.find("\xe6\xa8\xa1\xe5\x9e\x8b.\xf0\x9f\xa6\x99") != nullptr);
    REQUIRE(f.find_metadata("\xe6\xa8\xa1\xe5\x9e\x8b") != nullptr);
    CHECK(*f.find_metadata("\xe6\xa8\xa1\xe5\x9e\x8b") == "\xf0\x9f\xa6\x99");
}

TEST_CASE("safetensors writer: set_metadata replaces a value in place", "[safetensors]") {
    st::writer w;
    w.set_metadata("b", "1");
    w.set_metadata("a", "2");
    w.set_metadata("b", "3");
    REQUIRE(w.metadata().size() == 2);
    CHECK(w.metadata()[0] == std::pair<std::string, std::string>{"b", "3"});
    CHECK(w.metadata()[1] == std::pair<std::string, std::string>{"a", "2"});
}

// 10^5 tensors (and as many metadata pairs): every per-tensor step of the
// writer and the reader must be O(1) or O(log n); a linear scan per tensor
// (as the writer's duplicate check once was: 20 s) makes this take minutes.
TEST_CASE("safetensors: 100 000 tensors round-trip quickly", "[safetensors]") {
    constexpr std::size_t n = 100'000;
    const auto name = [](std::size_t i) { return "blk." + std::to_string(i) + ".w"; };
    const std::vector<std::uint8_t> one{1};
    st::writer w;
    for (std::size_t i = 0; i < n; ++i) w.set_metadata("k." + std::to_string(i), std::to_string(i));
    for (std::size_t i = 0; i < n; ++i) w.add(name(i), st::dtype::u8, {1}, as_bytes(one));
    CHECK_THROWS_AS(w.add(name(n / 2), st::dtype::u8, {1}, as_bytes(one)), lowbit::error);
    const auto bytes = w.to_bytes();
    const auto f = st::file::from_memory(bytes);
    REQUIRE(f.size() == n);
    REQUIRE(f.metadata().size() == n);
    bool ok = true;
    for (std::size_t i = 0; i < n && ok; ++i) {
        const auto* t = f.find(name(i));
        const auto* v = f.find_metadata("k." + std::to_string(i));
        ok = f.tensors()[i].name == name(i) && t == &f.tensors()[i] && t->begin == i && v &&
             *v == std::to_string(i);
    }
    REQUIRE(ok);
}
