#include "catch.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/core/view.hpp>
#include <lowbit/kernels/dispatch.hpp>

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
