// llama.cpp importance matrices: the legacy .dat form from hand-assembled
// bytes, its failure modes, and the GGUF form's in_sum2/counts tensors.

#include <lowbit/formats/imatrix.hpp>
#include <lowbit/formats/imatrix_file.hpp>

#include <bit>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include <unistd.h>
#include <string>
#include <vector>

#include "catch.hpp"

using namespace lowbit::ggml;
using lowbit::errc;

namespace {

// Builds .dat bytes the way llama-imatrix writes them (little-endian).
struct dat_writer {
    std::vector<std::byte> b;
    void i32(std::int32_t v) {
        const auto u = static_cast<std::uint32_t>(v);
        for (int k = 0; k < 4; ++k) b.push_back(static_cast<std::byte>((u >> (8 * k)) & 0xff));
    }
    void f32(float v) { i32(static_cast<std::int32_t>(std::bit_cast<std::uint32_t>(v))); }
    void str(const std::string& s) {
        i32(static_cast<std::int32_t>(s.size()));
        for (char c : s) b.push_back(static_cast<std::byte>(c));
    }
    void entry(const std::string& name, std::int32_t ncall, const std::vector<float>& v) {
        str(name);
        i32(ncall);
        i32(static_cast<std::int32_t>(v.size()));
        for (float x : v) f32(x);
    }
};

errc code_of(std::span<const std::byte> bytes) {
    try {
        (void)parse_imatrix_dat(bytes);
    } catch (const lowbit::error& e) {
        return e.code();
    }
    FAIL("no error");
    return errc::invalid_argument;
}

}  // namespace

TEST_CASE("legacy .dat: values are divided by ncall", "[imatrix]") {
    dat_writer w;
    w.i32(3);
    w.entry("blk.0.attn_q.weight", 4, {4.0f, 8.0f, 2.0f, 1.0f});
    w.entry("blk.0.ffn_down.weight", 0, {3.0f, 5.0f});   // no calls: kept as stored
    w.entry("blk.0.ffn_up.weight", -2, {7.0f});          // negative: kept as stored
    const std::size_t entries_end = w.b.size();
    w.i32(123);
    w.str("wiki.train.raw");

    const imatrix m = parse_imatrix_dat(w.b);
    CHECK(m.legacy);
    REQUIRE(m.size() == 3);
    CHECK(*m.find("blk.0.attn_q.weight") == std::vector<float>{1.0f, 2.0f, 0.5f, 0.25f});
    CHECK(*m.find("blk.0.ffn_down.weight") == std::vector<float>{3.0f, 5.0f});
    CHECK(*m.find("blk.0.ffn_up.weight") == std::vector<float>{7.0f});
    CHECK(m.find("blk.1.attn_q.weight") == nullptr);
    CHECK(m.chunk_count == 123);
    REQUIRE(m.datasets.size() == 1);
    CHECK(m.datasets[0] == "wiki.train.raw");

    SECTION("the trailer is optional, and old files end after the chunk count") {
        std::vector<std::byte> no_trailer(w.b.begin(), w.b.begin() + static_cast<std::ptrdiff_t>(entries_end));
        const imatrix a = parse_imatrix_dat(no_trailer);
        CHECK(a.size() == 3);
        CHECK(a.chunk_count == 0);
        CHECK(a.datasets.empty());
        std::vector<std::byte> count_only(w.b.begin(), w.b.begin() + static_cast<std::ptrdiff_t>(entries_end + 4));
        const imatrix b = parse_imatrix_dat(count_only);
        CHECK(b.chunk_count == 123);
        CHECK(b.datasets.empty());
    }
    SECTION("an empty dataset name is no dataset") {
        dat_writer v;
        v.i32(1);
        v.entry("x", 1, {1.0f});
        v.i32(5);
        v.i32(0);
        const imatrix a = parse_imatrix_dat(v.b);
        CHECK(a.chunk_count == 5);
        CHECK(a.datasets.empty());
    }
}

TEST_CASE("legacy .dat: names are C strings, later duplicates win", "[imatrix]") {
    dat_writer w;
    w.i32(2);
    w.entry(std::string("abc\0def", 7), 1, {1.0f});
    w.entry("abc", 2, {4.0f, 6.0f});
    const imatrix m = parse_imatrix_dat(w.b);
    REQUIRE(m.size() == 1);
    CHECK(*m.find("abc") == std::vector<float>{2.0f, 3.0f});
}

TEST_CASE("legacy .dat: every truncation is a corrupt_file error", "[imatrix]") {
    dat_writer w;
    w.i32(2);
    w.entry("blk.0.attn_q.weight", 2, {1.0f, 2.0f, 3.0f});
    w.entry("blk.0.attn_k.weight", 1, {4.0f});
    const std::size_t entries_end = w.b.size();
    w.i32(10);
    const std::size_t count_end = w.b.size();
    w.str("data.txt");
    for (std::size_t n = 0; n < w.b.size(); ++n) {
        INFO("truncated to " << n << " bytes");
        const std::span<const std::byte> part(w.b.data(), n);
        if (n == entries_end || n == count_end) {
            CHECK_NOTHROW(parse_imatrix_dat(part));
        } else {
            CHECK(code_of(part) == errc::corrupt_file);
        }
    }
    CHECK_NOTHROW(parse_imatrix_dat(w.b));
    w.b.push_back(std::byte{0});
    CHECK(code_of(w.b) == errc::corrupt_file);  // bytes after the dataset name
}

TEST_CASE("legacy .dat: impossible counts are corrupt_file errors", "[imatrix]") {
    auto with = [](auto build) {
        dat_writer w;
        build(w);
        return code_of(w.b);
    };
    // Entry count: zero, negative, larger than the file could hold.
    CHECK(with([](dat_writer& w) { w.i32(0); }) == errc::corrupt_file);
    CHECK(with([](dat_writer& w) { w.i32(-1); w.entry("a", 1, {1.0f}); }) == errc::corrupt_file);
    CHECK(with([](dat_writer& w) { w.i32(0x7fffffff); w.entry("a", 1, {1.0f}); }) == errc::corrupt_file);
    CHECK(with([](dat_writer& w) { w.i32(2); w.entry("a", 1, {1.0f}); }) == errc::corrupt_file);
    // Name length: negative, huge.
    CHECK(with([](dat_writer& w) { w.i32(1); w.i32(-5); w.i32(1); w.i32(1); w.f32(1.0f); }) == errc::corrupt_file);
    CHECK(with([](dat_writer& w) {
              w.i32(1);
              w.i32(0x7fffffff);
              w.i32(1);
              w.i32(1);
              w.f32(1.0f);
          }) == errc::corrupt_file);
    // Value count: zero, negative, huge.
    for (std::int32_t nval : {0, -1, 0x7fffffff, 0x40000000, 2}) {
        INFO("nval " << nval);
        CHECK(with([nval](dat_writer& w) {
                  w.i32(1);
                  w.str("a");
                  w.i32(1);
                  w.i32(nval);
                  w.f32(1.0f);
              }) == errc::corrupt_file);
    }
    // Dataset name length: negative, past the end.
    CHECK(with([](dat_writer& w) { w.i32(1); w.entry("a", 1, {1.0f}); w.i32(1); w.i32(-1); }) == errc::corrupt_file);
    CHECK(with([](dat_writer& w) { w.i32(1); w.entry("a", 1, {1.0f}); w.i32(1); w.i32(1000); }) == errc::corrupt_file);
}

TEST_CASE("legacy .dat: errors name the entry and byte offset", "[imatrix]") {
    dat_writer w;
    w.i32(2);
    w.entry("first", 1, {1.0f});
    const std::size_t second_at = w.b.size();
    w.str("second");
    w.i32(1);
    w.i32(1000);  // more values than the file holds
    w.f32(1.0f);
    try {
        (void)parse_imatrix_dat(w.b);
        FAIL("no error");
    } catch (const lowbit::error& e) {
        const std::string what = e.what();
        CHECK(e.code() == errc::corrupt_file);
        CHECK(what.find("entry 1 (second)") != std::string::npos);
        CHECK(what.find("offset " + std::to_string(second_at + 4 + 6 + 4)) != std::string::npos);
    }
}

TEST_CASE("legacy .dat: random bytes never crash", "[imatrix]") {
    std::uint32_t state = 12345;
    auto next = [&] { return state = state * 1664525u + 1013904223u; };
    dat_writer good;
    good.i32(2);
    good.entry("blk.0.attn_q.weight", 3, {1.0f, 2.0f});
    good.entry("blk.1.attn_q.weight", 3, {3.0f});
    good.i32(1);
    good.str("d");
    for (int trial = 0; trial < 2000; ++trial) {
        auto b = good.b;
        const int flips = 1 + static_cast<int>(next() % 4);
        for (int f = 0; f < flips; ++f) b[next() % b.size()] = static_cast<std::byte>(next() & 0xff);
        try {
            (void)parse_imatrix_dat(b);
        } catch (const lowbit::error& e) {
            CHECK(e.code() == errc::corrupt_file);
        }
    }
}

TEST_CASE("read_imatrix_dat reads files and reports I/O and GGUF", "[imatrix]") {
    const auto dir = std::filesystem::temp_directory_path();
    const auto path = dir / "lowbit_test_imatrix.dat";
    dat_writer w;
    w.i32(1);
    w.entry("output.weight", 2, {2.0f, 4.0f});
    {
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<const char*>(w.b.data()), static_cast<std::streamsize>(w.b.size()));
    }
    const imatrix m = read_imatrix_dat(path);
    CHECK(*m.find("output.weight") == std::vector<float>{1.0f, 2.0f});
    {
        std::ofstream f(path, std::ios::binary);
        f.write("GGUF\3\0\0\0", 8);
    }
    try {
        (void)read_imatrix_dat(path);
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::unsupported);
    }
    {
        std::ofstream f(path, std::ios::binary);
        f.write("\1\0", 2);
    }
    try {
        (void)read_imatrix_dat(path);
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::corrupt_file);
        CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
    }
    std::filesystem::remove(path);
    try {
        (void)read_imatrix_dat(path);
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::io);
    }
}

TEST_CASE("GGUF form: per-expert sums divided by rounded counts", "[imatrix]") {
    // Two experts of rows of 3, and a dense tensor.
    const std::vector<float> sums = {2.0f, 4.0f, 6.0f, 1.0f, 1.0f, 1.0f};
    const std::vector<float> counts = {2.0f, 0.0f};  // the second expert saw nothing
    const std::vector<float> dense_sums = {9.0f, 3.0f};
    const std::vector<float> dense_counts = {2.6f};  // rounds to 3
    const std::vector<imatrix_tensor> t = {
        {"blk.0.ffn_down_exps.weight.in_sum2", sums, {3, 2}},
        {"blk.0.ffn_down_exps.weight.counts", counts, {1, 2}},
        {"blk.0.attn_q.weight.counts", dense_counts, {1, 1}},
        {"blk.0.attn_q.weight.in_sum2", dense_sums, {2, 1}},
        {"unrelated", dense_sums, {2}},
    };
    const imatrix m = imatrix_from_gguf_tensors(t);
    CHECK_FALSE(m.legacy);
    REQUIRE(m.size() == 2);
    CHECK(*m.find("blk.0.ffn_down_exps.weight") == std::vector<float>{1.0f, 2.0f, 3.0f, 1.0f, 1.0f, 1.0f});
    CHECK(*m.find("blk.0.attn_q.weight") == std::vector<float>{3.0f, 1.0f});

    CHECK(m.weights_for("blk.0.ffn_down_exps.weight", 3, 2).size() == 6);
    CHECK(m.weights_for("blk.0.attn_q.weight", 2).size() == 2);
    CHECK(m.weights_for("blk.9.attn_q.weight", 2).empty());
    try {
        (void)m.weights_for("blk.0.attn_q.weight", 4);
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::shape_mismatch);
    }
    CHECK_NOTHROW(m.check_finite());
}

TEST_CASE("GGUF form: inconsistent tensors are errors", "[imatrix]") {
    const std::vector<float> three = {1.0f, 2.0f, 3.0f};
    const std::vector<float> two = {1.0f, 1.0f};
    const std::vector<float> one = {1.0f};
    auto code = [](const std::vector<imatrix_tensor>& t) {
        try {
            (void)imatrix_from_gguf_tensors(t);
        } catch (const lowbit::error& e) {
            return e.code();
        }
        FAIL("no error");
        return errc::invalid_argument;
    };
    CHECK(code({}) == errc::corrupt_file);
    CHECK(code({{"a.in_sum2", three, {3}}}) == errc::corrupt_file);
    CHECK(code({{"a.counts", one, {1, 1}}}) == errc::corrupt_file);
    CHECK(code({{"a.in_sum2", three, {3}}, {"a.counts", two, {1, 2}}}) == errc::corrupt_file);
    CHECK(code({{"a.in_sum2", three, {3}}, {"a.in_sum2", three, {3}}, {"a.counts", one, {1}}}) == errc::corrupt_file);
    CHECK(code({{"a.in_sum2", three, {4}}, {"a.counts", one, {1}}}) == errc::shape_mismatch);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> bad_count = {nan};
    CHECK(code({{"a.in_sum2", three, {3}}, {"a.counts", bad_count, {1}}}) == errc::corrupt_file);
    const std::vector<float> huge_count = {1e30f};
    CHECK(code({{"a.in_sum2", three, {3}}, {"a.counts", huge_count, {1}}}) == errc::corrupt_file);

    const std::vector<float> with_nan = {1.0f, nan};
    const imatrix m = imatrix_from_gguf_tensors(std::vector<imatrix_tensor>{{"a.in_sum2", with_nan, {2}}, {"a.counts", one, {1}}});
    try {
        m.check_finite();
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::non_finite);
    }
}

TEST_CASE("token embedding entries of the wrong size are ignored, as llama-quantize does", "[imatrix]") {
    imatrix m;
    m.entries["token_embd.weight"] = {1.0f, 2.0f};
    CHECK(m.weights_for("token_embd.weight", 4096).empty());
    CHECK(m.weights_for("token_embd.weight", 2).size() == 2);
}

TEST_CASE("GGUF form: written as llama-imatrix writes it and read back", "[imatrix]") {
    const auto dir = std::filesystem::temp_directory_path() / ("lowbit_imatrix_write_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto path = dir / "imatrix.gguf";
    std::map<std::string, imatrix_sums> e;
    e["blk.0.attn_q.weight"] = {{8.0f, 2.0f, 0.5f, 0.0f}, {4.0f}};
    e["blk.0.ffn_down_exps.weight"] = {{6.0f, 3.0f, 1.0f, 1.0f}, {3.0f, 0.0f}};  // 2 experts, the second unused
    write_imatrix(path, e, {"wiki.train.raw"}, 12, 512);
    const imatrix m = read_imatrix(path);
    CHECK_FALSE(m.legacy);
    CHECK(m.datasets == std::vector<std::string>{"wiki.train.raw"});
    CHECK(m.chunk_count == 12);
    CHECK(m.chunk_size == 512);
    REQUIRE(m.size() == 2);
    CHECK(*m.find("blk.0.attn_q.weight") == std::vector<float>{2.0f, 0.5f, 0.125f, 0.0f});
    CHECK(*m.find("blk.0.ffn_down_exps.weight") == std::vector<float>{2.0f, 1.0f, 1.0f, 1.0f});
    // The GGUF as llama.cpp lays it out: general.type and F32 tensors of ne [n_per_row, n_expert], [1, n_expert].
    const auto g = lowbit::read_gguf(path);
    const auto* type = g.find("general.type");
    REQUIRE(type);
    CHECK(std::get<std::string>(*type) == "imatrix");
    const auto* sums = g.find_tensor("blk.0.ffn_down_exps.weight.in_sum2");
    const auto* counts = g.find_tensor("blk.0.ffn_down_exps.weight.counts");
    REQUIRE(sums);
    REQUIRE(counts);
    CHECK(sums->shape == std::vector<std::uint64_t>{2, 2});
    CHECK(counts->shape == std::vector<std::uint64_t>{1, 2});
    // Bad entries: named, and nothing written.
    e["blk.1.attn_k.weight"] = {{1.0f, 2.0f, 3.0f}, {1.0f, 1.0f}};
    CHECK_THROWS_WITH(write_imatrix(dir / "bad.gguf", e, {}, 1, 1),
                      Catch::Contains("entry 'blk.1.attn_k.weight': 3 sums do not split into 2 experts"));
    e["blk.1.attn_k.weight"] = {{1.0f, -2.0f}, {1.0f}};
    CHECK_THROWS_WITH(write_imatrix(dir / "bad.gguf", e, {}, 1, 1),
                      Catch::Contains("entry 'blk.1.attn_k.weight': sum 1 is -2"));
    CHECK_FALSE(std::filesystem::exists(dir / "bad.gguf"));
    std::filesystem::remove_all(dir);
}
