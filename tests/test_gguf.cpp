#include "catch.hpp"
#include "scratch_dir.hpp"

#include <lowbit/formats/gguf.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using lowbit::gguf_array;
using lowbit::gguf_type;
using lowbit::gguf_value;
namespace ggml = lowbit::ggml;
namespace fs = std::filesystem;
using lowbit_test::scratch_dir;

// Assembles GGUF bytes field by field, following the spec, independently of
// the writer under test.
struct assembler {
    std::vector<std::byte> b;

    assembler& raw(std::string_view s) {
        for (char c : s) b.push_back(static_cast<std::byte>(c));
        return *this;
    }
    template <class T>
    assembler& le(T v) {
        std::uint64_t u = 0;
        std::memcpy(&u, &v, sizeof(T));
        for (std::size_t i = 0; i < sizeof(T); ++i) b.push_back(static_cast<std::byte>((u >> (8 * i)) & 0xff));
        return *this;
    }
    assembler& u8(std::uint8_t v) { return le(v); }
    assembler& u32(std::uint32_t v) { return le(v); }
    assembler& u64(std::uint64_t v) { return le(v); }
    assembler& str(std::string_view s) { return u64(s.size()).raw(s); }
    assembler& header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
        return raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
    }
    assembler& kv_u32(std::string_view key, std::uint32_t v) { return str(key).u32(4).u32(v); }
    assembler& tensor(std::string_view name, std::vector<std::uint64_t> dims, std::uint32_t type, std::uint64_t offset) {
        str(name).u32(static_cast<std::uint32_t>(dims.size()));
        for (auto d : dims) u64(d);
        return u32(type).u64(offset);
    }
    assembler& pad_to(std::size_t align) {
        while (b.size() % align) b.push_back(std::byte{0});
        return *this;
    }
    assembler& zeros(std::size_t n) {
        b.insert(b.end(), n, std::byte{0});
        return *this;
    }
};

std::vector<std::byte> to_bytes(std::initializer_list<int> v) {
    std::vector<std::byte> out;
    for (int x : v) out.push_back(static_cast<std::byte>(x));
    return out;
}

// The error a corrupt image gives; FAILs if it parses or throws anything else.
lowbit::error corrupt_error(std::span<const std::byte> bytes) {
    try {
        (void)lowbit::read_gguf_from_memory(bytes);
    } catch (const lowbit::error& e) {
        return e;
    }
    FAIL("a corrupt image was accepted");
    return lowbit::error(lowbit::errc::io, "unreachable");
}

void require_corrupt(const std::vector<std::byte>& bytes, const std::string& field) {
    const auto e = corrupt_error(bytes);
    INFO(e.what());
    REQUIRE(e.code() == lowbit::errc::corrupt_file);
    REQUIRE(std::string(e.what()).find(field) != std::string::npos);
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
    std::vector<std::byte> v(n);
    std::mt19937 rng(seed);
    for (auto& x : v) x = static_cast<std::byte>(rng() & 0xff);
    return v;
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

void spill(const fs::path& p, std::string_view s) {
    std::ofstream out(p, std::ios::binary);
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

lowbit::gguf_metadata every_type() {
    lowbit::gguf_metadata m;
    m.set("general.architecture", "llama");
    m.set("t.u8", std::uint8_t{255});
    m.set("t.i8", std::int8_t{-128});
    m.set("t.u16", std::uint16_t{65535});
    m.set("t.i16", std::int16_t{-32768});
    m.set("t.u32", std::uint32_t{4294967295u});
    m.set("t.i32", std::int32_t{-2147483647 - 1});
    m.set("t.f32", 0.15625f);
    m.set("t.bool_t", true);
    m.set("t.bool_f", false);
    m.set("t.str", std::string("hello"));
    m.set("t.str_empty", std::string());
    m.set("t.str_unicode", std::string("h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\xa6\x99"));
    m.set("t.str_nul", std::string("a\0b", 3));
    m.set("t.u64", std::uint64_t{18446744073709551615ull});
    m.set("t.i64", std::int64_t{-9223372036854775807ll - 1});
    m.set("t.f64", 2.718281828459045);
    m.set("t.arr_u8", gguf_array{std::uint8_t{0}, std::uint8_t{255}});
    m.set("t.arr_i8", gguf_array{std::int8_t{-1}});
    m.set("t.arr_u16", gguf_array{std::uint16_t{1}, std::uint16_t{2}});
    m.set("t.arr_i16", gguf_array{std::int16_t{-3}});
    m.set("t.arr_u32", gguf_array{1u, 2u, 3u});
    m.set("t.arr_i32", gguf_array{-1, 0, 1});
    m.set("t.arr_f32", gguf_array{0.5f, -1.25f});
    m.set("t.arr_bool", gguf_array(std::vector<bool>{true, false, true}));
    m.set("t.arr_str", gguf_array(std::vector<std::string>{"a", "", "\xc3\xbc", "<|endoftext|>"}));
    m.set("t.arr_u64", gguf_array{std::uint64_t{0}, std::uint64_t{~0ull}});
    m.set("t.arr_i64", gguf_array{std::int64_t{-5}});
    m.set("t.arr_f64", gguf_array{0.1, 1e300});
    m.set("t.arr_arr", gguf_array(std::vector<gguf_array>{gguf_array{1, 2}, gguf_array{3},
                                                           gguf_array::empty_of(gguf_type::string)}));
    m.set("t.arr_arr_arr",
          gguf_array(std::vector<gguf_array>{gguf_array(std::vector<gguf_array>{
              gguf_array(std::vector<std::string>{"deep"})})}));
    for (std::uint32_t t = 0; t <= 12; ++t)
        m.set("t.empty_" + std::string(lowbit::to_string(static_cast<gguf_type>(t))),
              gguf_array::empty_of(static_cast<gguf_type>(t)));
    return m;
}

}  // namespace

TEST_CASE("gguf: a small file matches bytes assembled by hand from the spec") {
    lowbit::gguf_writer w;
    w.metadata().set("a", std::uint32_t{0x01020304});
    w.metadata().set("s", std::string("hi"));
    const float data[2] = {1.0f, 2.0f};
    w.add_tensor("w", {2}, ggml::type::f32, std::as_bytes(std::span(data)));

    const auto expected = to_bytes({
        0x47, 0x47, 0x55, 0x46,                          // "GGUF"
        0x03, 0x00, 0x00, 0x00,                          // version 3
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // tensor_count 1
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // kv_count 2
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // key length 1
        'a',                                             // key
        0x04, 0x00, 0x00, 0x00,                          // uint32
        0x04, 0x03, 0x02, 0x01,                          // 0x01020304
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // key length 1
        's',                                             // key
        0x08, 0x00, 0x00, 0x00,                          // string
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // length 2
        'h', 'i',                                        //
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // name length 1
        'w',                                             // name
        0x01, 0x00, 0x00, 0x00,                          // n_dims 1
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // ne[0] = 2
        0x00, 0x00, 0x00, 0x00,                          // GGML_TYPE_F32
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // offset 0
        // 97 bytes so far: 31 zeros up to 128, the default alignment of 32
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x00, 0x00, 0x80, 0x3f,  // 1.0f
        0x00, 0x00, 0x00, 0x40,  // 2.0f
        // the tensor is padded to 32 bytes as well
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    });
    const auto got = w.write_to_memory();
    REQUIRE(got.size() == 160);
    REQUIRE(got == expected);

    const auto f = lowbit::read_gguf_from_memory(expected);
    REQUIRE(f.version() == 3);
    REQUIRE(f.alignment() == 32);
    REQUIRE(f.data_offset() == 128);
    REQUIRE(f.get<std::uint32_t>("a") == 0x01020304u);
    REQUIRE(f.get<std::string>("s") == "hi");
    REQUIRE(f.tensors().size() == 1);
    const auto t = f.tensor("w");
    REQUIRE(t.size() == 8);
    REQUIRE(std::memcmp(t.data(), data, 8) == 0);
}

TEST_CASE("gguf: every metadata type round-trips with its type") {
    for (std::uint32_t align : {0u, 32u, 64u, 256u}) {
        INFO("alignment " << align);
        lowbit::gguf_writer w;
        w.metadata() = every_type();
        if (align) w.set_alignment(align);
        const std::uint32_t a = align ? align : 32;

        const auto f32 = pattern(3 * 8 * 4, 1);
        const auto f16 = pattern(5 * 2, 2);      // 10 bytes: the next tensor needs padding
        const auto q4_0 = pattern(2 * 2 * 18, 3);  // 2 rows of 64
        const auto q8_0 = pattern(4 * 34, 4);
        const auto q4_k = pattern(144, 5);
        const auto i8 = pattern(7, 6);
        w.add_tensor("f32", {8, 3}, ggml::type::f32, f32);
        w.add_tensor("f16", {5}, ggml::type::f16, f16);
        w.add_tensor("blk.0.attn_q.weight", {64, 2}, ggml::type::q4_0, q4_0);
        w.add_tensor("q8_0", {32, 2, 2}, ggml::type::q8_0, q8_0);
        w.add_tensor("q4_k", {256, 1, 1, 1}, ggml::type::q4_k, q4_k);
        w.add_tensor("scalar", {}, ggml::type::i8, std::span(i8).first(1));
        w.add_tensor("filled", {7}, ggml::type::i8, [&](std::span<std::byte> out) {
            REQUIRE(out.size() == 7);
            std::copy(i8.begin(), i8.end(), out.begin());
        });

        const auto bytes = w.write_to_memory();
        const auto f = lowbit::read_gguf_from_memory(bytes);
        REQUIRE(f.alignment() == a);
        REQUIRE(f.metadata() == w.metadata());
        REQUIRE(f.data_offset() % a == 0);
        // types are kept exactly, not widened
        REQUIRE(lowbit::type_of(*f.find("t.u32")) == gguf_type::uint32);
        REQUIRE(lowbit::type_of(*f.find("t.u8")) == gguf_type::uint8);
        REQUIRE(f.get<gguf_array>("t.empty_float64").element_type() == gguf_type::float64);
        REQUIRE(f.get<gguf_array>("t.empty_array").element_type() == gguf_type::array);
        REQUIRE(f.get<gguf_array>("t.arr_arr").get<gguf_array>()[2].element_type() == gguf_type::string);
        REQUIRE(f.get<std::string>("t.str_nul").size() == 3);
        // keys keep their insertion order
        std::size_t i = 0;
        for (const auto& kv : f.metadata()) REQUIRE(kv.key == w.metadata()[i++].key);

        const auto planned = w.tensors();
        REQUIRE(std::equal(planned.begin(), planned.end(), f.tensors().begin(), f.tensors().end()));
        for (const auto& t : f.tensors()) REQUIRE(t.offset % a == 0);
        auto same = [&](const char* name, std::span<const std::byte> want) {
            const auto got = f.tensor(name);
            REQUIRE(got.size() == want.size());
            REQUIRE(std::equal(got.begin(), got.end(), want.begin()));
        };
        same("f32", f32);
        same("f16", f16);
        same("blk.0.attn_q.weight", q4_0);
        same("q8_0", q8_0);
        same("q4_k", q4_k);
        same("scalar", std::span(i8).first(1));
        same("filled", i8);
        const auto& q = f.tensor_info("blk.0.attn_q.weight");
        REQUIRE(q.type == ggml::type::q4_0);
        REQUIRE(q.shape == std::vector<std::uint64_t>{64, 2});
        REQUIRE(q.row_length() == 64);
        REQUIRE(q.n_rows() == 2);
        REQUIRE(f.tensor_info("scalar").n_elements() == 1);
        // the file ends on the alignment
        REQUIRE(bytes.size() % a == 0);

        // through a file, and writing what was read gives the same bytes
        scratch_dir dir("gguf_roundtrip");
        const auto path = dir.path / "m.gguf";
        w.write(path);
        const auto g = lowbit::read_gguf(path);
        REQUIRE(g.metadata() == w.metadata());
        REQUIRE(std::equal(g.bytes().begin(), g.bytes().end(), bytes.begin(), bytes.end()));
        REQUIRE(lowbit::gguf_writer::from(g).write_to_memory() == bytes);
        REQUIRE(dir.entries() == std::vector<std::string>{"m.gguf"});
    }
}

TEST_CASE("gguf: version 2 files are read") {
    assembler a;
    a.header(1, 1, 2).kv_u32("k", 7).tensor("t", {4}, 0, 0).pad_to(32).zeros(16);
    const auto f = lowbit::read_gguf_from_memory(a.b);
    REQUIRE(f.version() == 2);
    REQUIRE(f.tensor("t").size() == 16);
}

TEST_CASE("gguf: getters name the key and the types") {
    lowbit::gguf_writer w;
    w.metadata() = every_type();
    const auto bytes = w.write_to_memory();
    const auto f = lowbit::read_gguf_from_memory(bytes);
    auto message = [](auto&& fn) {
        try {
            fn();
        } catch (const lowbit::error& e) {
            REQUIRE(e.code() == lowbit::errc::invalid_argument);
            return std::string(e.what());
        }
        FAIL("no error");
        return std::string();
    };
    REQUIRE(f.get<std::uint32_t>("t.u32") == 4294967295u);
    const auto m1 = message([&] { (void)f.get<std::uint64_t>("t.u32"); });
    REQUIRE(m1.find("'t.u32' is uint32, not uint64") != std::string::npos);
    const auto m2 = message([&] { (void)f.get<float>("no.such.key"); });
    REQUIRE(m2.find("no.such.key") != std::string::npos);
    REQUIRE(f.metadata().get_uint("t.u8") == 255);
    REQUIRE(f.metadata().get_uint("t.u32") == 4294967295u);
    REQUIRE(f.metadata().get_int("t.i64") == std::numeric_limits<std::int64_t>::min());
    REQUIRE(message([&] { (void)f.metadata().get_uint("t.i8"); }).find("t.i8") != std::string::npos);
    REQUIRE(message([&] { (void)f.metadata().get_int("t.u64"); }).find("t.u64") != std::string::npos);
    REQUIRE(message([&] { (void)f.metadata().get_uint("t.str"); }).find("not an integer") != std::string::npos);
    const auto m3 = message([&] { (void)f.get<gguf_array>("t.arr_u32").get<std::int32_t>(); });
    REQUIRE(m3.find("uint32 elements, not int32") != std::string::npos);
    REQUIRE(message([&] { (void)f.tensor("missing"); }).find("'missing'") != std::string::npos);
    REQUIRE(f.find("missing") == nullptr);
    REQUIRE(f.find_tensor("missing") == nullptr);
}

TEST_CASE("gguf: metadata keeps order through set and erase") {
    lowbit::gguf_metadata m;
    m.set("b", 1);
    m.set("a", 2);
    m.set("c", 3);
    m.set("a", std::string("x"));  // in place
    REQUIRE(m[1].key == "a");
    REQUIRE(std::get<std::string>(m[1].value) == "x");
    REQUIRE_FALSE(m.append("c", 4));
    REQUIRE(m.erase("b"));
    REQUIRE_FALSE(m.erase("b"));
    REQUIRE(m.size() == 2);
    REQUIRE(m[0].key == "a");
    REQUIRE(m.get<std::int32_t>("c") == 3);
    REQUIRE(m.position("c") == 1);
}

TEST_CASE("gguf: the writer refuses what a reader would reject") {
    lowbit::gguf_writer w;
    const auto buf = pattern(256, 9);
    auto code = [](auto&& fn) {
        try {
            fn();
        } catch (const lowbit::error& e) {
            return e.code();
        }
        return lowbit::errc::io;  // "no error": never expected here
    };
    using lowbit::errc;
    REQUIRE(code([&] { w.set_alignment(0); }) == errc::invalid_argument);
    REQUIRE(code([&] { w.set_alignment(48); }) == errc::invalid_argument);
    REQUIRE(code([&] { w.add_tensor("t", {1, 2, 3, 4, 5}, ggml::type::i8, std::span(buf).first(120)); }) ==
            errc::invalid_argument);
    REQUIRE(code([&] { w.add_tensor("t", {0}, ggml::type::i8, std::span(buf).first(0)); }) == errc::invalid_argument);
    REQUIRE(code([&] { w.add_tensor("t", {16}, ggml::type::q4_0, std::span(buf).first(9)); }) ==
            errc::invalid_argument);
    REQUIRE(code([&] { w.add_tensor("t", {4}, ggml::type::f32, std::span(buf).first(15)); }) ==
            errc::invalid_argument);
    REQUIRE(code([&] { w.add_tensor("t", {4}, static_cast<ggml::type>(4), std::span(buf).first(16)); }) ==
            errc::invalid_argument);
    REQUIRE(code([&] { w.add_tensor(std::string(65, 'n'), {4}, ggml::type::i8, std::span(buf).first(4)); }) ==
            errc::invalid_argument);
    w.add_tensor("t", {4}, ggml::type::i8, std::span(buf).first(4));
    REQUIRE(code([&] { w.add_tensor("t", {4}, ggml::type::i8, std::span(buf).first(4)); }) == errc::invalid_argument);
    w.metadata().set("general.alignment", std::uint64_t{32});
    REQUIRE(code([&] { (void)w.write_to_memory(); }) == errc::invalid_argument);
    w.metadata().set("general.alignment", std::uint32_t{32});
    gguf_array deep = gguf_array{1};
    for (int i = 0; i < 8; ++i) deep = gguf_array(std::vector<gguf_array>{deep});
    w.metadata().set("deep", deep);
    REQUIRE(code([&] { (void)w.write_to_memory(); }) == errc::invalid_argument);
}

TEST_CASE("gguf: a file truncated at any byte is corrupt, never a crash") {
    lowbit::gguf_writer w;
    w.metadata().set("general.architecture", "llama");
    w.metadata().set("x.arr", gguf_array(std::vector<std::string>{"ab", "c"}));
    w.metadata().set("x.nested", gguf_array(std::vector<gguf_array>{gguf_array{1.5f}}));
    w.metadata().set("x.b", true);
    w.metadata().set("x.f64", 1.0);
    const auto d1 = pattern(34, 1);
    const auto d2 = pattern(8, 2);
    w.add_tensor("q", {32}, ggml::type::q8_0, d1);
    w.add_tensor("f", {2}, ggml::type::f32, d2);
    const auto full = w.write_to_memory();
    const auto valid = lowbit::read_gguf_from_memory(full);
    const std::uint64_t data_end = valid.data_offset() + valid.tensor_info("f").offset + 8;
    for (std::size_t n = 0; n < full.size(); ++n) {
        INFO("truncated to " << n << " bytes");
        const std::span<const std::byte> cut(full.data(), n);
        if (n >= data_end) {
            // only padding is missing: every tensor is still whole
            REQUIRE(lowbit::read_gguf_from_memory(cut).tensors().size() == 2);
            continue;
        }
        const auto e = corrupt_error(cut);
        REQUIRE(e.code() == lowbit::errc::corrupt_file);
        const std::string what = e.what();
        INFO(what);
        REQUIRE((what.find(" at byte ") != std::string::npos || what.find("runs past the end") != std::string::npos));
    }
}

TEST_CASE("gguf: corrupt headers and metadata") {
    SECTION("empty file") { require_corrupt({}, "magic"); }
    SECTION("bad magic") {
        assembler a;
        a.raw("GGUX").u32(3).u64(0).u64(0);
        require_corrupt(a.b, "magic at byte 0");
    }
    SECTION("version 1 and 4") {
        for (std::uint32_t v : {1u, 4u, 0u}) {
            assembler a;
            a.header(0, 0, v);
            require_corrupt(a.b, "version at byte 4");
        }
    }
    SECTION("big-endian version") {
        assembler a;
        a.raw("GGUF").u32(0x03000000u).u64(0).u64(0);
        require_corrupt(a.b, "big-endian");
    }
    SECTION("huge counts") {
        assembler a;
        a.header(0, std::uint64_t{1} << 62).zeros(64);
        require_corrupt(a.b, "kv_count at byte 16");
        assembler b;
        b.header(~std::uint64_t{0}, 0).zeros(64);
        require_corrupt(b.b, "tensor_count at byte 8");
        assembler c;  // 3 pairs fit, but not also 3 tensor infos
        c.header(3, 3).zeros(3 * 13 + 3 * 24 - 1);
        require_corrupt(c.b, "tensor_count");
    }
    SECTION("key length past the end") {
        assembler a;
        a.header(0, 1).u64(1000).raw("abc").u32(4).u32(0);
        require_corrupt(a.b, "kv 0 key at byte 24");
    }
    SECTION("string value length past the end") {
        assembler a;
        a.header(0, 1).str("k").u32(8).u64(std::uint64_t{1} << 40).raw("abcdefgh");
        require_corrupt(a.b, "kv 0 'k' value at byte 37");
    }
    SECTION("unknown value type") {
        assembler a;
        a.header(0, 1).str("k").u32(13).u32(0);
        require_corrupt(a.b, "kv 0 'k' value type at byte 33");
    }
    SECTION("bool that is neither 0 nor 1") {
        assembler a;
        a.header(0, 1).str("k").u32(7).u8(2).zeros(8);
        require_corrupt(a.b, "bool");
        assembler b;
        b.header(0, 1).str("k").u32(9).u32(7).u64(2).u8(1).u8(5);
        require_corrupt(b.b, "element 1");
    }
    SECTION("unknown array element type") {
        assembler a;
        a.header(0, 1).str("k").u32(9).u32(99).u64(0);
        require_corrupt(a.b, "array element type");
    }
    SECTION("huge array count") {
        for (std::uint32_t elem : {0u, 4u, 8u, 9u, 12u}) {
            assembler a;
            a.header(0, 1).str("k").u32(9).u32(elem).u64(std::uint64_t{1} << 60).zeros(100);
            require_corrupt(a.b, "array count");
        }
    }
    SECTION("string element past the end") {
        assembler a;
        a.header(0, 1).str("tokens").u32(9).u32(8).u64(2).str("ok").u64(50).raw("short");
        require_corrupt(a.b, "kv 0 'tokens' value element 1");
    }
    SECTION("arrays nested too deep") {
        assembler a;
        a.header(0, 1).str("k").u32(9);
        for (int i = 0; i < 40; ++i) a.u32(9).u64(1);
        a.u32(0).u64(0);
        require_corrupt(a.b, "nested deeper");
    }
    SECTION("duplicate keys") {
        assembler a;
        a.header(0, 3).kv_u32("a", 1).kv_u32("b", 2).kv_u32("a", 3);
        require_corrupt(a.b, "kv 2 'a' key at byte 58: duplicates kv 0");
    }
    SECTION("alignment 0, 3, or not uint32") {
        for (std::uint32_t al : {0u, 3u, 48u}) {
            assembler a;
            a.header(0, 1).kv_u32("general.alignment", al);
            require_corrupt(a.b, "general.alignment");
        }
        assembler b;
        b.header(0, 1).str("general.alignment").u32(10).u64(32);
        require_corrupt(b.b, "not uint32");
    }
    SECTION("control characters in names are escaped") {
        assembler a;
        a.header(0, 1).str("k\n\x01").u32(13);
        const auto e = corrupt_error(a.b);
        REQUIRE(std::string(e.what()).find("'k\\x0a\\x01'") != std::string::npos);
    }
}

TEST_CASE("gguf: corrupt tensor infos and data") {
    // header (24) + "general.alignment" kv (8+17+4+4 = 33) = 57 bytes before the first tensor info
    auto base = [](std::uint64_t n_tensors) {
        assembler a;
        a.header(n_tensors, 1).kv_u32("general.alignment", 32);
        return a;
    };
    SECTION("n_dims 5") {
        auto a = base(1);
        a.tensor("t", {1, 1, 1, 1, 1}, 0, 0).pad_to(32).zeros(32);
        require_corrupt(a.b, "tensor 0 't' n_dims at byte 66: 5 exceeds GGML_MAX_DIMS");
    }
    SECTION("zero dim") {
        auto a = base(1);
        a.tensor("t", {4, 0}, 0, 0).pad_to(32).zeros(32);
        require_corrupt(a.b, "tensor 0 't' dims[1] at byte 78: is 0");
    }
    SECTION("element count overflow") {
        auto a = base(1);
        a.tensor("t", {std::uint64_t{1} << 32, std::uint64_t{1} << 32}, 0, 0).pad_to(32).zeros(32);
        require_corrupt(a.b, "dims[1]");
        auto b = base(1);  // fits int64 as elements, not as f64 bytes
        b.tensor("t", {std::uint64_t{1} << 62}, 28, 0).pad_to(32).zeros(32);
        require_corrupt(b.b, "overflows");
    }
    SECTION("unknown ggml type") {
        for (std::uint32_t t : {4u, 5u, 31u, 40u, 0xffffffffu}) {
            auto a = base(1);
            a.tensor("t", {32}, t, 0).pad_to(32).zeros(256);
            require_corrupt(a.b, "tensor 0 't' type at byte");
        }
    }
    SECTION("row not a whole number of blocks") {
        auto a = base(1);
        a.tensor("t", {16, 2}, 2, 0).pad_to(32).zeros(64);
        require_corrupt(a.b, "block size 32");
    }
    SECTION("misaligned offset") {
        auto a = base(2);
        a.tensor("a", {4}, 0, 0).tensor("b", {4}, 0, 16).pad_to(32).zeros(64);
        require_corrupt(a.b, "tensor 1 'b' offset at byte");
    }
    SECTION("misaligned under a custom alignment") {
        assembler a;
        a.header(1, 1).kv_u32("general.alignment", 64).tensor("t", {4}, 0, 32).pad_to(64).zeros(128);
        require_corrupt(a.b, "multiple of general.alignment (64)");
    }
    SECTION("data past the end of the file") {
        auto a = base(1);
        a.tensor("blk.0.attn_q.weight", {1024}, 0, 0).pad_to(32).zeros(100);
        require_corrupt(a.b, "tensor 0 'blk.0.attn_q.weight': data [offset 0, 4096 bytes)");
        require_corrupt(a.b, "runs past the end of the file (228 bytes)");
        auto b = base(1);  // offset alone beyond the end, and offset + size wrapping around
        b.tensor("t", {4}, 0, ~std::uint64_t{31}).pad_to(32).zeros(32);
        require_corrupt(b.b, "runs past the end");
    }
    SECTION("overlapping tensors") {
        auto a = base(3);
        a.tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 64).tensor("c", {8}, 0, 32).pad_to(32).zeros(128);
        require_corrupt(a.b, "tensor 2 'c': data [offset 32, 32 bytes) at file byte 160+32 overlaps tensor 0 'a'");
    }
    SECTION("duplicate tensor names") {
        auto a = base(2);
        a.tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).pad_to(32).zeros(64);
        require_corrupt(a.b, "tensor 1 'w' name at byte");
        require_corrupt(a.b, "duplicates tensor 0");
    }
    SECTION("name over 64 bytes") {
        auto a = base(1);
        a.tensor(std::string(65, 'n'), {4}, 0, 0).pad_to(32).zeros(32);
        require_corrupt(a.b, "tensor 0 name at byte 57");
    }
    SECTION("tensor data missing entirely") {
        auto a = base(1);
        a.tensor("t", {4}, 0, 0);
        require_corrupt(a.b, "runs past the end");
    }
}

TEST_CASE("gguf: random damage gives corrupt_file or a valid file, never a crash") {
    lowbit::gguf_writer w;
    w.metadata() = every_type();
    const auto d = pattern(34 * 2, 3);
    w.add_tensor("q", {64}, ggml::type::q8_0, d);
    w.add_tensor("f", {17}, ggml::type::f32, [](std::span<std::byte> out) { std::fill(out.begin(), out.end(), std::byte{1}); });
    const auto full = w.write_to_memory();
    const auto header_end = lowbit::read_gguf_from_memory(full).data_offset();
    std::mt19937 rng(1234);
    std::size_t rejected = 0;
    for (int iter = 0; iter < 4000; ++iter) {
        auto b = full;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < flips; ++k) {
            const auto at = rng() % header_end;  // the data section has nothing to validate
            b[at] = static_cast<std::byte>(rng() & 0xff);
        }
        try {
            (void)lowbit::read_gguf_from_memory(b);
        } catch (const lowbit::error& e) {
            REQUIRE(e.code() == lowbit::errc::corrupt_file);
            ++rejected;
        }
    }
    REQUIRE(rejected > 0);
}

TEST_CASE("gguf: write replaces the target only when complete") {
    scratch_dir dir("gguf_atomic");
    const auto out = dir.path / "model.gguf";
    const auto good = pattern(16, 5);

    SECTION("a throwing fill leaves nothing behind") {
        lowbit::gguf_writer w;
        w.metadata().set("k", 1u);
        w.add_tensor("a", {4}, ggml::type::f32, good);
        w.add_tensor("b", {4}, ggml::type::f32, [](std::span<std::byte>) { throw std::runtime_error("source gone"); });
        REQUIRE_THROWS_WITH(w.write(out), "source gone");
        REQUIRE(dir.entries().empty());
    }
    SECTION("an existing file survives a failed write and is replaced by a good one") {
        spill(out, "previous contents");
        lowbit::gguf_writer bad;
        bad.add_tensor("b", {4}, ggml::type::f32, [](std::span<std::byte>) { throw std::runtime_error("no"); });
        REQUIRE_THROWS_AS(bad.write(out), std::runtime_error);
        REQUIRE(slurp(out) == "previous contents");
        REQUIRE(dir.entries() == std::vector<std::string>{"model.gguf"});

        lowbit::gguf_writer ok;
        ok.add_tensor("a", {4}, ggml::type::f32, good);
        ok.write(out);
        REQUIRE(dir.entries() == std::vector<std::string>{"model.gguf"});
        const auto f = lowbit::read_gguf(out);
        REQUIRE(std::equal(f.tensor("a").begin(), f.tensor("a").end(), good.begin(), good.end()));
    }
    SECTION("an invalid alignment is refused before any file is created") {
        lowbit::gguf_writer w;
        w.metadata().set("general.alignment", 3u);
        REQUIRE_THROWS_AS(w.write(out), lowbit::error);
        REQUIRE(dir.entries().empty());
    }
    SECTION("a missing directory is an i/o error") {
        lowbit::gguf_writer w;
        try {
            w.write(dir.path / "no" / "such" / "dir.gguf");
            FAIL("no error");
        } catch (const lowbit::error& e) {
            REQUIRE(e.code() == lowbit::errc::io);
        }
        REQUIRE(dir.entries().empty());
    }
}

TEST_CASE("gguf: reading files") {
    scratch_dir dir("gguf_read");
    try {
        (void)lowbit::read_gguf(dir.path / "absent.gguf");
        FAIL("no error");
    } catch (const lowbit::error& e) {
        REQUIRE(e.code() == lowbit::errc::io);
        REQUIRE(std::string(e.what()).find("absent.gguf") != std::string::npos);
    }
    spill(dir.path / "empty.gguf", "");
    try {
        (void)lowbit::read_gguf(dir.path / "empty.gguf");
        FAIL("no error");
    } catch (const lowbit::error& e) {
        REQUIRE(e.code() == lowbit::errc::corrupt_file);
        // errors from a file name it
        REQUIRE(std::string(e.what()).find("empty.gguf: magic") != std::string::npos);
    }
    // the mapping outlives the first handle
    lowbit::gguf_writer w;
    const auto d = pattern(32, 8);
    w.add_tensor("t", {8}, ggml::type::f32, d);
    w.write(dir.path / "m.gguf");
    std::span<const std::byte> view;
    lowbit::gguf_file kept = [&] {
        auto f = lowbit::read_gguf(dir.path / "m.gguf");
        view = f.tensor("t");
        return f;
    }();
    REQUIRE(std::equal(view.begin(), view.end(), d.begin(), d.end()));
    REQUIRE(kept.tensors().size() == 1);
}

TEST_CASE("gguf: strings that are not UTF-8 are corrupt, naming the field and the bad byte") {
    SECTION("a key") {
        assembler a;  // the key's bytes start at 32
        a.header(0, 1).str("ab\xff").u32(4).u32(0);
        require_corrupt(a.b, "kv 0 key at byte 34: not valid UTF-8: 0xff (after 'ab')");
    }
    SECTION("a string value") {
        assembler a;  // the value's bytes start at 45
        a.header(0, 1).str("k").u32(8).str("x\xc3\x28");
        require_corrupt(a.b, "kv 0 'k' value at byte 46: not valid UTF-8: 0xc3 (after 'x')");
    }
    SECTION("a string in an array") {
        assembler a;  // element 1's bytes start at 72
        a.header(0, 1).str("tokens").u32(9).u32(8).u64(2).str("ok").str("\xed\xa0\x80");
        require_corrupt(a.b, "kv 0 'tokens' value element 1 at byte 72: not valid UTF-8: 0xed");
    }
    SECTION("a string in a nested array") {
        assembler a;  // the inner array's string bytes start at 69
        a.header(0, 1).str("k").u32(9).u32(9).u64(1).u32(8).u64(1).str("y\xc0\xaf");
        require_corrupt(a.b, "kv 0 'k' value element 0 element 0 at byte 70: not valid UTF-8: 0xc0 (after 'y')");
    }
    SECTION("a sequence cut by the string's end, though the next file bytes would complete it") {
        assembler a;  // the value's bytes start at 45; the next key's length starts with 0xa5
        a.header(0, 2).str("k").u32(8).str("\xe6\x97").u64(0xa5).zeros(200);
        require_corrupt(a.b, "kv 0 'k' value at byte 45: not valid UTF-8: 0xe6");
    }
    SECTION("a tensor name") {
        assembler a;  // header (24) + general.alignment kv (33); the name's bytes start at 65
        a.header(1, 1).kv_u32("general.alignment", 32).tensor("w\xf4\x90\x80\x80", {4}, 0, 0).pad_to(32).zeros(32);
        require_corrupt(a.b, "tensor 0 name at byte 66: not valid UTF-8: 0xf4 (after 'w')");
    }
}

TEST_CASE("gguf: multi-byte UTF-8 keys, values and tensor names round-trip") {
    const std::string model = "\xe6\xa8\xa1\xe5\x9e\x8b";  // 模型
    const std::string llama = "\xf0\x9f\xa6\x99";          // U+1F999, an emoji
    lowbit::gguf_writer w;
    w.metadata().set("general." + model, model + " " + llama);
    w.metadata().set(llama, gguf_array(std::vector<std::string>{model, llama, "\xc3\xa9", ""}));
    const auto d = pattern(16, 3);
    w.add_tensor(model + ".weight." + llama, {4}, ggml::type::f32, d);
    const auto bytes = w.write_to_memory();
    const auto f = lowbit::read_gguf_from_memory(bytes);
    REQUIRE(f.get<std::string>("general." + model) == model + " " + llama);
    REQUIRE(f.get<gguf_array>(llama).get<std::string>() == std::vector<std::string>{model, llama, "\xc3\xa9", ""});
    REQUIRE(f.tensors().size() == 1);
    REQUIRE(f.tensors()[0].name == model + ".weight." + llama);
    const auto t = f.tensor(model + ".weight." + llama);
    REQUIRE(std::equal(t.begin(), t.end(), d.begin(), d.end()));
}

TEST_CASE("gguf: the writer refuses strings that are not UTF-8") {
    const auto d = pattern(4, 5);
    const auto error_of = [](auto&& fn) {
        try {
            fn();
        } catch (const lowbit::error& e) {
            REQUIRE(e.code() == lowbit::errc::invalid_argument);
            return std::string(e.what());
        }
        FAIL("no error");
        return std::string();
    };
    SECTION("a tensor name, when added") {
        lowbit::gguf_writer w;
        const auto e = error_of([&] { w.add_tensor("blk.\xc0\x80", {4}, ggml::type::i8, d); });
        REQUIRE_THAT(e, Catch::Matchers::Contains("tensor name is not valid UTF-8 at byte 4: 0xc0 (after 'blk.')"));
        REQUIRE(w.tensors().empty());
        const auto e2 = error_of([&] {
            w.add_tensor("x\xe2\x82", {4}, ggml::type::i8, lowbit::gguf_fill_fn([](std::span<std::byte>) {}));
        });
        REQUIRE_THAT(e2, Catch::Matchers::Contains("tensor name is not valid UTF-8 at byte 1"));
    }
    SECTION("a key") {
        lowbit::gguf_writer w;
        w.metadata().set("general.\xff", 1u);
        REQUIRE_THAT(error_of([&] { (void)w.write_to_memory(); }),
                     Catch::Matchers::Contains("metadata key is not valid UTF-8 at byte 8: 0xff (after 'general.')"));
    }
    SECTION("a string value") {
        lowbit::gguf_writer w;
        w.metadata().set("name", std::string("ok \xed\xb0\x80"));
        REQUIRE_THAT(error_of([&] { (void)w.write_to_memory(); }),
                     Catch::Matchers::Contains("metadata 'name' value is not valid UTF-8 at byte 3: 0xed"));
    }
    SECTION("a string in an array, and in a nested array") {
        lowbit::gguf_writer w;
        w.metadata().set("tokens", gguf_array(std::vector<std::string>{"a", "b", "\xf5\x80\x80\x80"}));
        REQUIRE_THAT(error_of([&] { (void)w.write_to_memory(); }),
                     Catch::Matchers::Contains("metadata 'tokens' value element 2 is not valid UTF-8 at byte 0"));
        w.metadata().set("tokens", gguf_array(std::vector<gguf_array>{
                                       gguf_array{1}, gguf_array(std::vector<std::string>{"ok", "\x80"})}));
        REQUIRE_THAT(error_of([&] { (void)w.write_to_memory(); }),
                     Catch::Matchers::Contains("metadata 'tokens' value element 1 element 1 is not valid UTF-8"));
    }
    SECTION("write() leaves no file behind") {
        scratch_dir dir("gguf_utf8");
        lowbit::gguf_writer w;
        w.metadata().set("k", std::string("\xff"));
        (void)error_of([&] { w.write(dir.path / "m.gguf"); });
        REQUIRE(dir.entries().empty());
    }
}

// 10^5 tensors (and as many metadata pairs): every per-tensor step of the
// writer and the reader must be O(1) or O(log n); a linear scan per tensor
// (as the writer's duplicate check once was: 17 s) makes this take minutes.
TEST_CASE("gguf: 100 000 tensors round-trip quickly") {
    constexpr std::size_t n = 100'000;
    const auto name = [](std::size_t i) { return "blk." + std::to_string(i) + ".w"; };
    const std::int8_t one = 1;
    const auto data = std::as_bytes(std::span<const std::int8_t>(&one, 1));
    lowbit::gguf_writer w;
    for (std::size_t i = 0; i < n; ++i) w.metadata().set("k." + std::to_string(i), static_cast<std::uint32_t>(i));
    w.set_alignment(1);  // keeps the image small
    for (std::size_t i = 0; i < n; ++i) w.add_tensor(name(i), {1}, ggml::type::i8, data);
    REQUIRE_THROWS_AS(w.add_tensor(name(n / 2), {1}, ggml::type::i8, data), lowbit::error);
    const auto bytes = w.write_to_memory();
    const auto f = lowbit::read_gguf_from_memory(bytes);
    REQUIRE(f.tensors().size() == n);
    REQUIRE(f.metadata().size() == n + 1);
    bool ok = true;
    for (std::size_t i = 0; i < n && ok; ++i) {
        ok = f.tensors()[i].name == name(i) && f.tensors()[i].offset == i;
        const auto* t = f.find_tensor(name(i));
        ok = ok && t == &f.tensors()[i] && f.metadata()[i].key == "k." + std::to_string(i) &&
             f.metadata().get<std::uint32_t>("k." + std::to_string(i)) == i;
    }
    REQUIRE(ok);
    REQUIRE(f.tensor(name(n - 1))[0] == std::byte{1});
}
