#include "catch.hpp"

#include <lowbit/formats/json.hpp>
#include <lowbit/core/utf8.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace json = lowbit::json;
using lowbit::errc;

errc error_code_of(std::string_view text, const json::parse_options& opt = {}) {
    try {
        (void)json::parse(text, opt);
    } catch (const lowbit::error& e) {
        return e.code();
    }
    FAIL("parsed without error: " << text);
    return errc::io;
}

std::string error_of(std::string_view text, const json::parse_options& opt = {}) {
    try {
        (void)json::parse(text, opt);
    } catch (const lowbit::error& e) {
        return e.what();
    }
    FAIL("parsed without error: " << text);
    return {};
}

}  // namespace

TEST_CASE("format_double_python matches Python's repr(float)", "[json]") {
    // Expected strings printed by CPython 3.11: repr(float.fromhex(...)).
    struct pair {
        double x;
        const char* repr;
    };
    const pair cases[] = {
        {0x1.999999999999ap-4, "0.1"},
        {0x1.4f8b588e368f1p-17, "1e-05"},
        {0x1.421f5f40d8376p-23, "1.5e-07"},
        {0x1.b69b4ba630f35p+56, "1.2345678901234568e+17"},
        {0x1.a36e2eb1c432dp-14, "0.0001"},
        {0x1.1c37937e08000p+53, "1e+16"},
        {0x1.948b0f999999ap-7, "0.012345678918063641"},
        {0x1.c6bf526340000p+49, "1000000000000000.0"},
        {100.0, "100.0"},
        {0.5, "0.5"},
        {-0.0, "-0.0"},
        {0.0, "0.0"},
        {0x0.0000000000001p-1022, "5e-324"},
        {0x1.fffffffffffffp+1023, "1.7976931348623157e+308"},
        {0x1.0000000000000p-1022, "2.2250738585072014e-308"},
        {-1.5, "-1.5"},
        {0x1.34a456d5cfaadp+10, "1234.5678"},
        {0x1.1c37937e07fffp+53, "9999999999999998.0"},
        {0x1.0f0cf064dd592p+73, "1e+22"},
        {0x1.f75104d551d69p-14, "0.00012"},
        {0x1.f75104d551d69p-16, "3e-05"},
        {0x1.5555555555555p-2, "0.3333333333333333"},
        {0x1.0p+53, "9007199254740992.0"},
        {0x1.d6f3454800000p+26, "123456789.125"},
        // float32 values widened to double, as numpy's float32 -> Python float.
        {static_cast<double>(0.1f), "0.10000000149011612"},
        {static_cast<double>(1.0f / 3.0f), "0.3333333432674408"},
    };
    for (const auto& c : cases) {
        INFO(c.repr);
        CHECK(json::format_double_python(c.x) == c.repr);
        // And the text reads back to the same double.
        CHECK(json::value::number(c.repr).as_double() == c.x);
    }
    CHECK(json::value(1e-05).number_text() == "1e-05");

    for (const double bad : {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                             std::numeric_limits<double>::quiet_NaN()}) {
        try {
            (void)json::format_double_python(bad);
            FAIL("no error");
        } catch (const lowbit::error& e) {
            CHECK(e.code() == errc::non_finite);
        }
    }
}

TEST_CASE("dump_python matches Python's json.dumps", "[json]") {
    // Python: json.dumps({'a': [1, 2.5, True, None, 'x\u00e9\U0001F600\x7f\x01\n"\\/'], 'b': {}, 'c': [], 'd': -0.0})
    json::value v = json::value::object();
    v.set("a", json::value::array({1, 2.5, true, nullptr, "x\u00e9\U0001F600\x7f\x01\n\"\\/"}));
    v.set("b", json::value::object());
    v.set("c", json::value::array());
    v.set("d", -0.0);
    CHECK(json::dump_python(v) ==
          R"({"a": [1, 2.5, true, null, "x\u00e9\ud83d\ude00\u007f\u0001\n\"\\/"], "b": {}, "c": [], "d": -0.0})");
    // The compact form keeps UTF-8 and DEL as they are.
    CHECK(json::dump(v) ==
          "{\"a\":[1,2.5,true,null,\"x\u00e9\U0001F600\x7f\\u0001\\n\\\"\\\\/\"],\"b\":{},\"c\":[],\"d\":-0.0}");

    // Numbers print as the int or float Python reads them as.
    CHECK(json::dump_python(json::parse("[-0, 1E2, 1.0, 18446744073709551616, 1e-7, 0.10]")) ==
          "[0, 100.0, 1.0, 18446744073709551616, 1e-07, 0.1]");
    CHECK(json::dump_python(json::value(static_cast<std::uint64_t>(-1))) == "18446744073709551615");
    CHECK(json::dump_python(json::value(std::int64_t{-42})) == "-42");
    CHECK(json::dump_python("\b\f\r\t") == R"("\b\f\r\t")");
    try {
        (void)json::dump_python(json::parse("1e400"));
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::non_finite);
    }
}

TEST_CASE("json parse: values, order, offsets", "[json]") {
    const json::value v = json::parse(R"(  {"z": 1, "a": [true, false, null, "s", -0.5e+3, {}], "m": {"k": "v"}}  )");
    REQUIRE(v.is_object());
    REQUIRE(v.size() == 3);
    CHECK(v.members()[0].key == "z");
    CHECK(v.members()[1].key == "a");
    CHECK(v.members()[2].key == "m");
    CHECK(v.members()[0].key_offset == 3);
    CHECK(v.offset() == 2);
    const auto& a = v["a"];
    CHECK(a.offset() == 16);
    CHECK(a[0].as_bool());
    CHECK_FALSE(a[1].as_bool());
    CHECK(a[2].is_null());
    CHECK(a[3].as_string() == "s");
    CHECK(a[4].number_text() == "-0.5e+3");
    CHECK(a[4].as_double() == -500.0);
    CHECK(a[5].is_object());
    CHECK(v["m"]["k"].as_string() == "v");
    CHECK(v.find("nope") == nullptr);
    CHECK_THROWS_AS(v["nope"], lowbit::error);
    CHECK_THROWS_AS(v["z"].as_string(), lowbit::error);

    json::parse_options opt;
    opt.offset_base = 100;
    CHECK(json::parse(" [1]", opt)[0].offset() == 102);
}

TEST_CASE("json numbers keep their text: exact u64, i64, doubles", "[json]") {
    const auto v = json::parse("[0, 18446744073709551615, 18446744073709551616, -1, -9223372036854775808, 1.0, 1e3, "
                               "0.1, 1e-400, -1e-400, 1e400, -1e400, 0.0000000000000000000001e-400, 5e-324]");
    CHECK(v[0].to_u64() == 0u);
    CHECK(v[1].to_u64() == std::numeric_limits<std::uint64_t>::max());
    CHECK_FALSE(v[2].to_u64());
    CHECK(v[2].is_integer());
    CHECK_FALSE(v[3].to_u64());
    CHECK(v[3].to_i64() == -1);
    CHECK(v[4].to_i64() == std::numeric_limits<std::int64_t>::min());
    CHECK_FALSE(v[5].to_u64());
    CHECK_FALSE(v[5].is_integer());
    CHECK_FALSE(v[6].to_u64());
    CHECK(v[6].as_double() == 1000.0);
    CHECK(v[7].as_double() == 0.1);
    CHECK(v[8].as_double() == 0.0);
    CHECK(std::signbit(v[9].as_double()));
    CHECK(v[10].as_double() == std::numeric_limits<double>::infinity());
    CHECK(v[11].as_double() == -std::numeric_limits<double>::infinity());
    CHECK(v[12].as_double() == 0.0);
    CHECK(v[13].as_double() == 0x0.0000000000001p-1022);
    CHECK(json::parse("123456789012345678901234567890").as_double() == 123456789012345678901234567890.0);
}

TEST_CASE("json strings: escapes, surrogate pairs, UTF-8", "[json]") {
    CHECK(json::parse(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
    CHECK(json::parse(R"("\u0041\u00e9\u20AC\ud83d\ude00")").as_string() == "A\u00e9\u20ac\U0001F600");
    CHECK(json::parse("\"\u00e9\U0001F600\"").as_string() == "\u00e9\U0001F600");
    CHECK(json::parse(R"("\u0000")").as_string() == std::string(1, '\0'));

    for (const char* bad : {
             R"("\ud83d")",          // lone high surrogate
             R"("\ud83dx")",         // high surrogate, then no escape
             R"("\ud83d\u0041")",    // high surrogate, then not a low one
             R"("\ude00")",          // lone low surrogate
             R"("\u12")",            // short escape
             R"("\u12G4")",          // not hex
             R"("\x")",              // unknown escape
             "\"a\x01\"",            // raw control character
             "\"\xff\"",             // not UTF-8
             "\"\xc0\x80\"",         // overlong NUL
             "\"\xed\xa0\x80\"",     // UTF-8-encoded surrogate
             "\"\xf4\x90\x80\x80\"", // past U+10FFFF
             "\"\xe2\x82\"",         // truncated sequence
             "\"abc",                // unterminated
             "\"abc\\",              // ends in an escape
         }) {
        INFO(bad);
        CHECK(error_code_of(bad) == errc::corrupt_file);
    }
}

// The one UTF-8 rule (core/utf8.hpp) that JSON, safetensors and GGUF share.
static_assert(lowbit::utf8::sequence_length("\xe6\xa8\xa1") == 3);
static_assert(lowbit::utf8::first_invalid("ab\xc0\x80") == 2);

TEST_CASE("utf8: well-formed sequences and the first bad byte", "[json][utf8]") {
    namespace utf8 = lowbit::utf8;
    CHECK(utf8::sequence_length("") == 0);
    CHECK(utf8::sequence_length("a") == 1);
    CHECK(utf8::sequence_length("\xc2\x80") == 2);            // U+0080, the first 2-byte one
    CHECK(utf8::sequence_length("\xe0\xa0\x80") == 3);        // U+0800
    CHECK(utf8::sequence_length("\xed\x9f\xbf") == 3);        // U+D7FF, just below the surrogates
    CHECK(utf8::sequence_length("\xee\x80\x80") == 3);        // U+E000, just above them
    CHECK(utf8::sequence_length("\xf0\x9f\x98\x80") == 4);    // U+1F600
    CHECK(utf8::sequence_length("\xf4\x8f\xbf\xbf") == 4);    // U+10FFFF
    CHECK(utf8::is_valid(""));
    CHECK(utf8::is_valid("plain ascii\x7f"));
    CHECK(utf8::is_valid("\xe6\xa8\xa1\xe5\x9e\x8b \xf0\x9f\xa6\x99"));  // U+6A21 U+578B, U+1F999
    CHECK(utf8::is_valid(std::string("a\0b", 3)));
    const struct {
        std::string_view s;
        std::size_t bad;
    } cases[] = {
        {"\x80", 0},                  // lone continuation byte
        {"ab\xff", 2},                // never in UTF-8
        {"\xc0\x80", 0},              // overlong NUL
        {"\xc1\xbf", 0},              // overlong 2-byte
        {"\xe0\x9f\xbf", 0},          // overlong 3-byte
        {"\xf0\x8f\xbf\xbf", 0},      // overlong 4-byte
        {"x\xed\xa0\x80", 1},         // UTF-8-encoded high surrogate
        {"\xed\xbf\xbf", 0},          // low surrogate
        {"\xf4\x90\x80\x80", 0},      // U+110000
        {"\xf5\x80\x80\x80", 0},      // lead byte past U+10FFFF
        {"ok\xe2\x82", 2},            // truncated at the end
        {"\xe2\x82x", 0},             // truncated by an ASCII byte
        {"\xc3\xa9\xf0\x9f\x98", 2},  // valid, then a truncated 4-byte sequence
    };
    for (const auto& c : cases) {
        INFO(std::string(c.s));
        CHECK(utf8::first_invalid(c.s) == c.bad);
        CHECK_FALSE(utf8::is_valid(c.s));
    }
    // A string_view ends the sequence: bytes past it are not read.
    const std::string_view cut = std::string_view("\xe6\xa8\xa1").substr(0, 2);
    CHECK(utf8::first_invalid(cut) == 0);
}

TEST_CASE("json parse rejects what RFC 8259 does, with byte offsets", "[json]") {
    for (const char* bad : {"", " ", "{", "[", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "-", "+1",
                            "1e", "1e+", "0x10", "NaN", "Infinity", "tru", "nul", "[1 2]", "{} {}", "[1]]", "// c\n1",
                            "'s'", "\"a\"\"b\"", "{\"a\":1 \"b\":2}", "[\"a\"\x01]", "\xef\xbb\xbf{}"}) {
        INFO(bad);
        CHECK(error_code_of(bad) == errc::corrupt_file);
    }
    CHECK_THAT(error_of("[1, 2,, 3]"), Catch::Matchers::Contains("json at byte 6:"));
    CHECK_THAT(error_of("{\"a\": 1, \"b\": 2, \"a\": 3}"), Catch::Matchers::Contains("at byte 17: duplicate key \"a\" (first at byte 1)"));
    json::parse_options opt;
    opt.what = "x.safetensors: header";
    opt.offset_base = 8;
    CHECK_THAT(error_of("{\"a\": tru}", opt), Catch::Matchers::Contains("x.safetensors: header at byte 14:"));
    // Trailing whitespace of every kind is fine; other trailing bytes are not.
    CHECK(json::parse("{} \t\r\n   ").is_object());
    CHECK(error_code_of(std::string_view("{}\0", 3)) == errc::corrupt_file);
}

TEST_CASE("json duplicate keys: rejected at any size, or kept when allowed", "[json]") {
    std::string big = "{";
    for (int i = 0; i < 100; ++i) big += "\"k" + std::to_string(i) + "\": " + std::to_string(i) + ", ";
    big += "\"k42\": 0, \"k7\": 1}";
    // The first duplicate in the text is the one reported.
    CHECK_THAT(error_of(big), Catch::Matchers::Contains("duplicate key \"k42\""));
    CHECK_THAT(error_of(R"({"o": {"x": 1, "x": 2}})"), Catch::Matchers::Contains("at byte 15: duplicate key \"x\""));
    json::parse_options opt;
    opt.allow_duplicate_keys = true;
    const auto v = json::parse(R"({"x": 1, "x": 2})", opt);
    CHECK(v.size() == 2);
    CHECK(v["x"].to_u64() == 1u);
}

TEST_CASE("json depth limit", "[json]") {
    const std::string ok = std::string(128, '[') + std::string(128, ']');
    CHECK(json::parse(ok).is_array());
    const std::string deep = std::string(129, '[') + std::string(129, ']');
    CHECK_THAT(error_of(deep), Catch::Matchers::Contains("deeper than the limit of 128"));
    // Far deeper input fails the same way, without exhausting the stack.
    const std::string very_deep(1'000'000, '[');
    CHECK(error_code_of(very_deep) == errc::corrupt_file);
    json::parse_options opt;
    opt.max_depth = 2;
    CHECK(json::parse(R"({"a": [1]})", opt).is_object());
    CHECK(error_code_of(R"({"a": [[1]]})", opt) == errc::corrupt_file);
}

TEST_CASE("json round trip: parse(dump(v)) == v", "[json]") {
    const char* texts[] = {
        R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})",
        R"([1,-2,3.5,1e-05,"\u00e9",true,false,null,[],{},[[[]]]])",
        R"("\u0001\u001f\"\\")",
    };
    for (const char* t : texts) {
        const auto v = json::parse(t);
        CHECK(json::parse(json::dump(v)) == v);
        CHECK(json::parse(json::dump_python(v)) == v);
    }
    CHECK(json::dump(json::parse(texts[0])) == texts[0]);

    // Building values in code.
    json::value o = json::value::object();
    o.set("n", 3);
    o.set("f", 0.25f);
    o.set("s", std::string("x"));
    o.set("n", 4);  // replaces
    CHECK(json::dump(o) == R"({"n":4,"f":0.25,"s":"x"})");
    CHECK_THROWS_AS(json::value::number("1."), lowbit::error);
    CHECK_THROWS_AS(json::value(std::nan("")), lowbit::error);
    CHECK_THROWS_AS(json::dump(json::value(std::string("\xff"))), lowbit::error);
}
