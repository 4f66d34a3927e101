#include "catch.hpp"

#include <lowbit/adapters/xtensor.hpp>
#include <lowbit/quantizer.hpp>
#include <lowbit/scheme/affine.hpp>

#include <xtensor/xview.hpp>

using namespace lowbit;

TEST_CASE("make_view adapts row-major xtensor and xarray without copying") {
    xt::xtensor<float, 2> a = {{1, 2, 3}, {4, 5, 6}};
    auto v = make_view(a);
    REQUIRE(v.rows() == 2);
    REQUIRE(v.cols() == 3);
    REQUIRE(v.data() == a.data());
    v(1, 2) = 60;
    REQUIRE(a(1, 2) == 60);

    const xt::xarray<float> b = {{1, 2}, {3, 4}, {5, 6}};
    auto cv = make_view(b);
    static_assert(std::is_same_v<decltype(cv), matrix_view<const float>>);
    REQUIRE(cv(2, 1) == 6);

    xt::xarray<float> c = xt::zeros<float>({2, 3, 4});
    REQUIRE_THROWS_AS(make_view(c), lowbit::error);
    xt::xtensor<float, 2, xt::layout_type::column_major> cm = {{1, 2}, {3, 4}};
    REQUIRE_THROWS_AS(make_view(cm), lowbit::error);
}

TEST_CASE("an xtensor weight matrix quantizes and dequantizes in place") {
    xt::xtensor<float, 2> w = xt::zeros<float>({4, 64});
    for (std::size_t r = 0; r < 4; ++r)
        for (std::size_t c = 0; c < 64; ++c) w(r, c) = static_cast<float>(r) - 0.03f * static_cast<float>(c);
    quantizer<affine<8>> qz(affine<8>{}, per_group(32));
    const auto q = qz.quantize(make_view(std::as_const(w)));
    xt::xtensor<float, 2> back = xt::zeros<float>({4, 64});
    q.dequantize(make_view(back));
    for (std::size_t r = 0; r < 4; ++r)
        for (std::size_t c = 0; c < 64; ++c)
            REQUIRE(std::fabs(back(r, c) - w(r, c)) <= 0.5f * q.params_at(r, c).scale * 1.0001f);
}
