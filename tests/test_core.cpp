#include "catch.hpp"

#include <lowbit/core/finite.hpp>
#include <lowbit/core/error.hpp>
#include <lowbit/core/view.hpp>
#include <lowbit/kernels/dispatch.hpp>

#include <cstring>
#include <limits>
#include <vector>

TEST_CASE("matrix_view addresses rows through the stride") {
    std::vector<float> buf(3 * 5);
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
    lowbit::matrix_view<float> v(buf.data(), 3, 4, 5);
    REQUIRE(v(2, 3) == 13.0f);
    REQUIRE(v.row(1)[0] == 5.0f);
    REQUIRE_FALSE(v.contiguous());
    lowbit::matrix_view<const float> c = v;
    REQUIRE(c.rows(1, 3)(0, 1) == 6.0f);
    REQUIRE_THROWS_AS(lowbit::matrix_view<float>(buf.data(), 3, 5, 4), lowbit::error);
}

TEST_CASE("error carries its code and a message") {
    try {
        LOWBIT_THROW(lowbit::errc::not_divisible, "row 3 has 100 columns, not a multiple of group 64");
        FAIL("no throw");
    } catch (const lowbit::error& e) {
        REQUIRE(e.code() == lowbit::errc::not_divisible);
        REQUIRE(std::string(e.what()).find("row 3") != std::string::npos);
    }
}

TEST_CASE("dispatch lists the scalar path and honours set_active_isa") {
    using namespace lowbit::kernels;
    auto isas = available_isas();
    REQUIRE_FALSE(isas.empty());
    REQUIRE(isas.back() == isa::scalar);
    const isa before = active_isa();
    for (isa i : isas) {
        set_active_isa(i);
        REQUIRE(active_isa() == i);
    }
    set_active_isa(before);
}

#include <lowbit/parallel.hpp>

#include <atomic>

TEST_CASE("parallel_for covers every index once and rethrows errors") {
    for (unsigned threads : {0u, 1u, 2u, 5u}) {
        std::vector<std::atomic<int>> hits(1000);
        lowbit::parallel_for(hits.size(), threads, 7, [&](std::size_t b, std::size_t e) {
            REQUIRE(b % 7 == 0);
            for (std::size_t i = b; i < e; ++i) hits[i]++;
        });
        for (auto& h : hits) REQUIRE(h.load() == 1);
    }
    REQUIRE_THROWS_AS(lowbit::parallel_for(100, 4, 1,
                                           [](std::size_t b, std::size_t) {
                                               if (b > 50) LOWBIT_THROW(lowbit::errc::io, "chunk failed");
                                           }),
                      lowbit::error);
}

TEST_CASE("first_beyond: NaN, Inf and values past a bound in f32, f16 and bf16 runs, at any alignment") {
    using lowbit::float_storage;
    for (std::size_t n : {std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{65}, std::size_t{1000}}) {
        for (std::size_t at : {std::size_t{0}, n / 2, n - 1}) {
            // f32 one byte past an aligned start, so no load may assume alignment.
            std::vector<unsigned char> f32(4 * n + 1), f16(2 * n + 1), b16(2 * n + 1);
            for (std::size_t i = 0; i < n; ++i) {
                const float v = static_cast<float>(i % 7) - 3.0f;
                std::memcpy(f32.data() + 1 + 4 * i, &v, 4);
                const std::uint16_t h = lowbit::float_to_fp16(v), b = lowbit::float_to_bf16(v);
                std::memcpy(f16.data() + 1 + 2 * i, &h, 2);
                std::memcpy(b16.data() + 1 + 2 * i, &b, 2);
            }
            INFO("n " << n << ", at " << at);
            CHECK(lowbit::first_non_finite(float_storage::f32, f32.data() + 1, n) == n);
            CHECK(lowbit::first_beyond(float_storage::f32, f32.data() + 1, n, 3.0f) == n);
            CHECK(lowbit::first_beyond(float_storage::f16, f16.data() + 1, n, 3.0f) == n);
            CHECK(lowbit::first_beyond(float_storage::bf16, b16.data() + 1, n, 3.0f) == n);
            const float big = -3.5f, nan = std::numeric_limits<float>::quiet_NaN();
            std::memcpy(f32.data() + 1 + 4 * at, &big, 4);
            CHECK(lowbit::first_beyond(float_storage::f32, f32.data() + 1, n, 3.0f) == at);
            CHECK(lowbit::first_non_finite(float_storage::f32, f32.data() + 1, n) == n);
            std::memcpy(f32.data() + 1 + 4 * at, &nan, 4);
            CHECK(lowbit::first_non_finite(float_storage::f32, f32.data() + 1, n) == at);
            const std::uint16_t hinf = 0xFC00, binf = 0x7F80, hbig = lowbit::float_to_fp16(3.5f);
            std::memcpy(f16.data() + 1 + 2 * at, &hbig, 2);
            CHECK(lowbit::first_beyond(float_storage::f16, f16.data() + 1, n, 3.0f) == at);
            CHECK(lowbit::first_non_finite(float_storage::f16, f16.data() + 1, n) == n);
            std::memcpy(f16.data() + 1 + 2 * at, &hinf, 2);
            CHECK(lowbit::first_non_finite(float_storage::f16, f16.data() + 1, n) == at);
            std::memcpy(b16.data() + 1 + 2 * at, &binf, 2);
            CHECK(lowbit::first_non_finite(float_storage::bf16, b16.data() + 1, n) == at);
            CHECK(lowbit::float_at(float_storage::bf16, b16.data() + 1, at) == std::numeric_limits<float>::infinity());
        }
    }
}
