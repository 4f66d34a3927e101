// Per-tensor type choices of llama.cpp's quantization mixes. Expected values
// were traced by hand from the rules in llama.cpp's src/llama-quant.cpp.

#include <lowbit/formats/gguf_recipes.hpp>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "catch.hpp"

using namespace lowbit::ggml;
using lowbit::errc;

namespace {

std::string blk(int i, const char* what) { return "blk." + std::to_string(i) + "." + what + ".weight"; }

struct dims {
    int n_layer = 32;
    std::uint64_t n_embd = 4096, n_ff = 11008, n_embd_kv = 4096, n_vocab = 32000;
    std::uint64_t n_expert = 0;  // > 0: stacked expert FFN tensors and a router
    bool with_output = true;
    bool shared_expert = false;
};

// Tensors in the order convert_hf_to_gguf writes a llama model.
std::vector<recipe_tensor> llama_like(const dims& d) {
    std::vector<recipe_tensor> t;
    t.push_back({"token_embd.weight", {d.n_embd, d.n_vocab}, type::f16});
    for (int i = 0; i < d.n_layer; ++i) {
        t.push_back({blk(i, "attn_norm"), {d.n_embd}, type::f32});
        t.push_back({blk(i, "attn_q"), {d.n_embd, d.n_embd}, type::f16});
        t.push_back({blk(i, "attn_k"), {d.n_embd, d.n_embd_kv}, type::f16});
        t.push_back({blk(i, "attn_v"), {d.n_embd, d.n_embd_kv}, type::f16});
        t.push_back({blk(i, "attn_output"), {d.n_embd, d.n_embd}, type::f16});
        t.push_back({blk(i, "ffn_norm"), {d.n_embd}, type::f32});
        if (d.n_expert) {
            t.push_back({blk(i, "ffn_gate_inp"), {d.n_embd, d.n_expert}, type::f32});
            t.push_back({blk(i, "ffn_gate_exps"), {d.n_embd, d.n_ff, d.n_expert}, type::f16});
            t.push_back({blk(i, "ffn_up_exps"), {d.n_embd, d.n_ff, d.n_expert}, type::f16});
            t.push_back({blk(i, "ffn_down_exps"), {d.n_ff, d.n_embd, d.n_expert}, type::f16});
            if (d.shared_expert) {
                t.push_back({blk(i, "ffn_gate_shexp"), {d.n_embd, d.n_ff}, type::f16});
                t.push_back({blk(i, "ffn_up_shexp"), {d.n_embd, d.n_ff}, type::f16});
                t.push_back({blk(i, "ffn_down_shexp"), {d.n_ff, d.n_embd}, type::f16});
            }
        } else {
            t.push_back({blk(i, "ffn_gate"), {d.n_embd, d.n_ff}, type::f16});
            t.push_back({blk(i, "ffn_up"), {d.n_embd, d.n_ff}, type::f16});
            t.push_back({blk(i, "ffn_down"), {d.n_ff, d.n_embd}, type::f16});
        }
    }
    t.push_back({"output_norm.weight", {d.n_embd}, type::f32});
    if (d.with_output) t.push_back({"output.weight", {d.n_embd, d.n_vocab}, type::f16});
    return t;
}

recipe_model_info llama7b_info() { return {"llama", 32, 32, 32, 0, 0}; }

// use_more_bits for 32 layers: the first and last 4, and 6, 9, ..., 27.
const std::set<int> more_bits_32 = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};

// Every tensor of a 7B llama gets: `v` for attn_v, `down` for ffn_down per layer,
// `plain` for q/k/gate/up, `out_proj` for attn_output.
void check_llama7b(const recipe& r, type embd, type output, type plain, type out_proj, auto v_of, auto down_of) {
    CHECK(r.type_for("token_embd.weight") == embd);
    CHECK(r.type_for("output.weight") == output);
    CHECK(r.type_for("output_norm.weight") == type::f32);
    for (int i = 0; i < 32; ++i) {
        INFO("layer " << i);
        CHECK(r.type_for(blk(i, "attn_norm")) == type::f32);
        CHECK(r.type_for(blk(i, "ffn_norm")) == type::f32);
        CHECK(r.type_for(blk(i, "attn_q")) == plain);
        CHECK(r.type_for(blk(i, "attn_k")) == plain);
        CHECK(r.type_for(blk(i, "ffn_gate")) == plain);
        CHECK(r.type_for(blk(i, "ffn_up")) == plain);
        CHECK(r.type_for(blk(i, "attn_output")) == out_proj);
        CHECK(r.type_for(blk(i, "attn_v")) == v_of(i));
        CHECK(r.type_for(blk(i, "ffn_down")) == down_of(i));
    }
}

}  // namespace

TEST_CASE("file type numbers match llama_ftype", "[recipes]") {
    CHECK(static_cast<int>(file_type::all_f32) == 0);
    CHECK(static_cast<int>(file_type::mostly_f16) == 1);
    CHECK(static_cast<int>(file_type::mostly_q4_0) == 2);
    CHECK(static_cast<int>(file_type::mostly_q4_1) == 3);
    CHECK(static_cast<int>(file_type::mostly_q8_0) == 7);
    CHECK(static_cast<int>(file_type::mostly_q5_0) == 8);
    CHECK(static_cast<int>(file_type::mostly_q5_1) == 9);
    CHECK(static_cast<int>(file_type::mostly_q2_k) == 10);
    CHECK(static_cast<int>(file_type::mostly_q3_k_s) == 11);
    CHECK(static_cast<int>(file_type::mostly_q3_k_m) == 12);
    CHECK(static_cast<int>(file_type::mostly_q3_k_l) == 13);
    CHECK(static_cast<int>(file_type::mostly_q4_k_s) == 14);
    CHECK(static_cast<int>(file_type::mostly_q4_k_m) == 15);
    CHECK(static_cast<int>(file_type::mostly_q5_k_s) == 16);
    CHECK(static_cast<int>(file_type::mostly_q5_k_m) == 17);
    CHECK(static_cast<int>(file_type::mostly_q6_k) == 18);
    CHECK(static_cast<int>(file_type::mostly_q2_k_s) == 21);
    CHECK(static_cast<int>(file_type::mostly_iq4_nl) == 25);
    CHECK(static_cast<int>(file_type::mostly_iq4_xs) == 30);
    CHECK(static_cast<int>(file_type::mostly_bf16) == 32);
    CHECK(static_cast<int>(file_type::mostly_tq1_0) == 36);
    CHECK(static_cast<int>(file_type::mostly_tq2_0) == 37);
    CHECK(static_cast<int>(file_type::mostly_mxfp4_moe) == 38);
}

TEST_CASE("file type names parse as llama-quantize accepts them", "[recipes]") {
    CHECK(parse_file_type("Q4_K_M") == file_type::mostly_q4_k_m);
    CHECK(parse_file_type("q4_k_m") == file_type::mostly_q4_k_m);
    CHECK(parse_file_type("Q4_K") == file_type::mostly_q4_k_m);
    CHECK(parse_file_type("q3_k") == file_type::mostly_q3_k_m);
    CHECK(parse_file_type("Q5_K") == file_type::mostly_q5_k_m);
    CHECK(parse_file_type("Q8_0") == file_type::mostly_q8_0);
    CHECK(parse_file_type("f16") == file_type::mostly_f16);
    CHECK(parse_file_type("BF16") == file_type::mostly_bf16);
    CHECK(parse_file_type("F32") == file_type::all_f32);
    CHECK(parse_file_type("mxfp4_moe") == file_type::mostly_mxfp4_moe);
    CHECK(parse_file_type("15") == file_type::mostly_q4_k_m);
    CHECK(parse_file_type("0") == file_type::all_f32);
    CHECK(file_type_name(file_type::mostly_q4_k_m) == "Q4_K_M");
    CHECK(file_type_name(static_cast<file_type>(99)) == "unknown(99)");

    try {
        parse_file_type("Q4_K_X");
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::unknown_format);
        const std::string what = e.what();
        CHECK(what.find("Q4_K_M") != std::string::npos);
        CHECK(what.find("IQ4_XS") != std::string::npos);
    }
    for (const char* name : {"IQ2_XXS", "iq3_m", "IQ1_S", "Q2_0", "NVFP4", "19"}) {
        INFO(name);
        try {
            parse_file_type(name);
            FAIL("no error");
        } catch (const lowbit::error& e) {
            CHECK(e.code() == errc::unsupported);
        }
    }
    CHECK_THROWS_AS(parse_file_type(""), lowbit::error);
    CHECK_THROWS_AS(parse_file_type("99999999999"), lowbit::error);
    CHECK_THROWS_AS(recipe(file_type::mostly_iq2_xs, llama7b_info(), {}), lowbit::error);
}

TEST_CASE("should_quantize keeps norms, 1-D tensors, routers and embeddings of positions", "[recipes]") {
    CHECK(should_quantize("blk.0.attn_q.weight", 2));
    CHECK(should_quantize("blk.0.ffn_down_exps.weight", 3));
    CHECK(should_quantize("output.weight", 2));
    CHECK_FALSE(should_quantize("output.weight", 2, "llama", false));
    CHECK_FALSE(should_quantize("blk.0.attn_q.weight", 1));
    CHECK_FALSE(should_quantize("blk.0.attn_q.bias", 2));
    CHECK_FALSE(should_quantize("blk.0.attn_norm.weight", 2));
    CHECK_FALSE(should_quantize("blk.0.ffn_gate_inp.weight", 2));
    CHECK_FALSE(should_quantize("position_embd.weight", 2));
    CHECK_FALSE(should_quantize("token_types.weight", 2));
    CHECK_FALSE(should_quantize("blk.0.ssm_conv1d.weight", 2));
    CHECK_FALSE(should_quantize("blk.0.time_mix_w1.weight", 2));
    CHECK_FALSE(should_quantize("v.patch_embd.weight", 4));
    CHECK(should_quantize("blk.0.attn_k_b.weight", 3, "deepseek2"));
    CHECK_FALSE(should_quantize("blk.0.attn_k_b.weight", 3, "glm5-next"));

    // A [n, 1] tensor is one-dimensional to ggml and keeps its type.
    std::vector<recipe_tensor> t = {{"blk.0.attn_q.weight", {4096, 1}, type::f16},
                                    {"blk.0.attn_k.weight", {4096, 4096}, type::f16},
                                    {"output.weight", {4096, 32000}, type::f16}};
    const recipe r(file_type::mostly_q4_0, {"llama", 1, 32, 32, 0, 0}, t);
    CHECK(r.type_for("blk.0.attn_q.weight") == type::f16);
    CHECK_FALSE(r.choice("blk.0.attn_q.weight").quantize);
    CHECK(r.type_for("blk.0.attn_k.weight") == type::q4_0);
}

TEST_CASE("llama 7B: Q4_K_M", "[recipes]") {
    const recipe r(file_type::mostly_q4_k_m, llama7b_info(), llama_like({}));
    auto more = [](type hi, type lo) { return [=](int i) { return more_bits_32.count(i) ? hi : lo; }; };
    check_llama7b(r, type::q4_k, type::q6_k, type::q4_k, type::q4_k, more(type::q6_k, type::q4_k),
                  more(type::q6_k, type::q4_k));
    CHECK(r.n_fallback() == 0);
    CHECK_FALSE(r.needs_imatrix());
    // Spot checks traced by hand.
    CHECK(r.type_for("blk.4.attn_v.weight") == type::q4_k);
    CHECK(r.type_for("blk.6.attn_v.weight") == type::q6_k);
    CHECK(r.type_for("blk.7.ffn_down.weight") == type::q4_k);
    CHECK(r.type_for("blk.28.ffn_down.weight") == type::q6_k);
}

TEST_CASE("llama 7B: Q5_K_M, Q3_K_M, Q3_K_L, Q4_K_S, Q3_K_S, Q2_K, Q6_K, Q8_0", "[recipes]") {
    auto more = [](type hi, type lo) { return [=](int i) { return more_bits_32.count(i) ? hi : lo; }; };
    auto first = [](int n, type hi, type lo) { return [=](int i) { return i < n ? hi : lo; }; };
    auto all = [](type t) { return [=](int) { return t; }; };
    SECTION("Q5_K_M") {
        const recipe r(file_type::mostly_q5_k_m, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q5_k, type::q6_k, type::q5_k, type::q5_k, more(type::q6_k, type::q5_k),
                      more(type::q6_k, type::q5_k));
    }
    SECTION("Q3_K_M") {
        // attn_v: the first two q5_K; ffn_down: layers < 32/16 q5_K, the rest q4_K.
        const recipe r(file_type::mostly_q3_k_m, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q3_k, type::q6_k, type::q3_k, type::q4_k, first(2, type::q5_k, type::q4_k),
                      first(2, type::q5_k, type::q4_k));
    }
    SECTION("Q3_K_L") {
        const recipe r(file_type::mostly_q3_k_l, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q3_k, type::q6_k, type::q3_k, type::q5_k, all(type::q5_k), all(type::q5_k));
    }
    SECTION("Q4_K_S") {
        const recipe r(file_type::mostly_q4_k_s, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q4_k, type::q6_k, type::q4_k, type::q4_k, first(4, type::q5_k, type::q4_k),
                      first(4, type::q5_k, type::q4_k));
    }
    SECTION("Q3_K_S and Q5_K_S are uniform apart from output") {
        const recipe r3(file_type::mostly_q3_k_s, llama7b_info(), llama_like({}));
        check_llama7b(r3, type::q3_k, type::q6_k, type::q3_k, type::q3_k, all(type::q3_k), all(type::q3_k));
        const recipe r5(file_type::mostly_q5_k_s, llama7b_info(), llama_like({}));
        check_llama7b(r5, type::q5_k, type::q6_k, type::q5_k, type::q5_k, all(type::q5_k), all(type::q5_k));
    }
    SECTION("Q2_K (no GQA)") {
        const recipe r(file_type::mostly_q2_k, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q2_k, type::q6_k, type::q2_k, type::q3_k, all(type::q3_k), all(type::q3_k));
    }
    SECTION("Q2_K_S needs an imatrix") {
        const recipe r(file_type::mostly_q2_k_s, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q2_k, type::q6_k, type::q2_k, type::q2_k, all(type::q2_k),
                      first(4, type::q4_k, type::q2_k));
        CHECK(r.needs_imatrix());
        CHECK(r.choice("blk.5.attn_q.weight").needs_imatrix);
        CHECK_FALSE(r.choice("token_embd.weight").needs_imatrix);
        CHECK_FALSE(r.choice("blk.0.ffn_down.weight").needs_imatrix);
    }
    SECTION("Q6_K") {
        const recipe r(file_type::mostly_q6_k, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q6_k, type::q6_k, type::q6_k, type::q6_k, all(type::q6_k), all(type::q6_k));
    }
    SECTION("Q8_0 keeps output at q8_0") {
        const recipe r(file_type::mostly_q8_0, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q8_0, type::q8_0, type::q8_0, type::q8_0, all(type::q8_0), all(type::q8_0));
    }
}

TEST_CASE("llama 7B: plain file types", "[recipes]") {
    auto all = [](type t) { return [=](int) { return t; }; };
    auto first = [](int n, type hi, type lo) { return [=](int i) { return i < n ? hi : lo; }; };
    SECTION("F16, BF16, F32 convert every quantizable tensor, keep the rest") {
        const recipe r(file_type::mostly_f16, llama7b_info(), llama_like({}));
        check_llama7b(r, type::f16, type::f16, type::f16, type::f16, all(type::f16), all(type::f16));
        const recipe rb(file_type::mostly_bf16, llama7b_info(), llama_like({}));
        check_llama7b(rb, type::bf16, type::bf16, type::bf16, type::bf16, all(type::bf16), all(type::bf16));
        const recipe rf(file_type::all_f32, llama7b_info(), llama_like({}));
        check_llama7b(rf, type::f32, type::f32, type::f32, type::f32, all(type::f32), all(type::f32));
    }
    SECTION("Q4_0: output q6_K; with an imatrix the first n/8 ffn_down get q4_1") {
        const recipe r(file_type::mostly_q4_0, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q4_0, type::q6_k, type::q4_0, type::q4_0, all(type::q4_0), all(type::q4_0));
        recipe_options o;
        o.has_imatrix = true;
        const recipe ri(file_type::mostly_q4_0, llama7b_info(), llama_like({}), o);
        check_llama7b(ri, type::q4_0, type::q6_k, type::q4_0, type::q4_0, all(type::q4_0),
                      first(4, type::q4_1, type::q4_0));
        const recipe r5(file_type::mostly_q5_0, llama7b_info(), llama_like({}), o);
        check_llama7b(r5, type::q5_0, type::q6_k, type::q5_0, type::q5_0, all(type::q5_0),
                      first(4, type::q5_1, type::q5_0));
        const recipe r41(file_type::mostly_q4_1, llama7b_info(), llama_like({}), o);
        check_llama7b(r41, type::q4_1, type::q6_k, type::q4_1, type::q4_1, all(type::q4_1), all(type::q4_1));
    }
    SECTION("IQ4_NL without GQA: early ffn_down q5_K unless an imatrix is given") {
        const recipe r(file_type::mostly_iq4_nl, llama7b_info(), llama_like({}));
        check_llama7b(r, type::iq4_nl, type::q6_k, type::iq4_nl, type::iq4_nl, all(type::iq4_nl),
                      first(4, type::q5_k, type::iq4_nl));
        recipe_options o;
        o.has_imatrix = true;
        const recipe ri(file_type::mostly_iq4_xs, llama7b_info(), llama_like({}), o);
        check_llama7b(ri, type::iq4_xs, type::q6_k, type::iq4_xs, type::iq4_xs, all(type::iq4_xs), all(type::iq4_xs));
    }
    SECTION("TQ1_0: token embedding q4_K") {
        const recipe r(file_type::mostly_tq1_0, llama7b_info(), llama_like({}));
        check_llama7b(r, type::q4_k, type::q6_k, type::tq1_0, type::tq1_0, all(type::tq1_0), all(type::tq1_0));
    }
}

TEST_CASE("visiting order is by block number, not file order", "[recipes]") {
    auto tensors = llama_like({});
    const recipe a(file_type::mostly_q4_k_m, llama7b_info(), tensors);
    std::shuffle(tensors.begin(), tensors.end(), std::mt19937(7));
    const recipe b(file_type::mostly_q4_k_m, llama7b_info(), tensors);
    std::sort(tensors.begin(), tensors.end(),
              [](const recipe_tensor& x, const recipe_tensor& y) { return x.name < y.name; });  // blk.10 < blk.2
    const recipe c(file_type::mostly_q3_k_m, llama7b_info(), tensors);
    for (const auto& t : tensors) {
        INFO(t.name);
        CHECK(a.type_for(t.name) == b.type_for(t.name));
    }
    // Q3_K_M's first two attn_v are those of blocks 0 and 1, whatever the file order.
    CHECK(c.type_for("blk.0.attn_v.weight") == type::q5_k);
    CHECK(c.type_for("blk.1.attn_v.weight") == type::q5_k);
    CHECK(c.type_for("blk.10.attn_v.weight") == type::q4_k);
    CHECK(a.choices().front().name == "output.weight");
    CHECK(a.choices().back().name == "blk.31.ffn_up.weight");
}

TEST_CASE("GQA model (llama 3 8B shape)", "[recipes]") {
    dims d;
    d.n_ff = 14336;
    d.n_embd_kv = 1024;
    d.n_vocab = 128256;
    const recipe_model_info info{"llama", 32, 32, 8, 0, 0};
    CHECK(info.n_gqa() == 4);
    SECTION("Q2_K: attn_v q4_K") {
        const recipe r(file_type::mostly_q2_k, info, llama_like(d));
        for (int i = 0; i < 32; ++i) CHECK(r.type_for(blk(i, "attn_v")) == type::q4_k);
        CHECK(r.type_for(blk(0, "attn_k")) == type::q2_k);
        CHECK(r.type_for(blk(0, "ffn_down")) == type::q3_k);
    }
    SECTION("Q2_K_S: attn_v q4_K") {
        const recipe r(file_type::mostly_q2_k_s, info, llama_like(d));
        CHECK(r.type_for(blk(17, "attn_v")) == type::q4_k);
    }
    SECTION("IQ4_NL and IQ4_XS: attn_v q5_K") {
        const recipe r(file_type::mostly_iq4_nl, info, llama_like(d));
        for (int i = 0; i < 32; ++i) CHECK(r.type_for(blk(i, "attn_v")) == type::q5_k);
        const recipe rx(file_type::mostly_iq4_xs, info, llama_like(d));
        CHECK(rx.type_for(blk(9, "attn_v")) == type::q5_k);
        CHECK(rx.type_for(blk(9, "attn_q")) == type::iq4_xs);
    }
    SECTION("Q4_K_M does not depend on GQA") {
        const recipe r(file_type::mostly_q4_k_m, info, llama_like(d));
        for (int i = 0; i < 32; ++i) {
            const type want = more_bits_32.count(i) ? type::q6_k : type::q4_k;
            CHECK(r.type_for(blk(i, "attn_v"), std::vector<std::uint64_t>{4096, 1024}) == want);
            CHECK(r.type_for(blk(i, "ffn_down")) == want);
        }
    }
    SECTION("tied embeddings: token_embd is quantized like output") {
        d.with_output = false;
        const recipe r(file_type::mostly_q4_k_m, info, llama_like(d));
        CHECK(r.type_for("token_embd.weight") == type::q6_k);
        const recipe r8(file_type::mostly_q8_0, info, llama_like(d));
        CHECK(r8.type_for("token_embd.weight") == type::q8_0);
        const recipe r4(file_type::mostly_q4_0, info, llama_like(d));
        CHECK(r4.type_for("token_embd.weight") == type::q6_k);
    }
}

TEST_CASE("70B models widen attn_v", "[recipes]") {
    dims d;
    d.n_layer = 80;
    d.n_embd = 8192;
    d.n_ff = 28672;
    d.n_embd_kv = 1024;
    const recipe r(file_type::mostly_q4_k_m, {"llama", 80, 64, 8, 0, 0}, llama_like(d));
    // use_more_bits(i, 80): i < 10, i >= 70, or (i - 10) % 3 == 2.
    CHECK(r.type_for(blk(0, "attn_v")) == type::q6_k);
    CHECK(r.type_for(blk(10, "attn_v")) == type::q5_k);
    CHECK(r.type_for(blk(11, "attn_v")) == type::q5_k);
    CHECK(r.type_for(blk(12, "attn_v")) == type::q6_k);
    CHECK(r.type_for(blk(70, "attn_v")) == type::q6_k);
    CHECK(r.type_for(blk(10, "ffn_down")) == type::q4_k);

    const recipe s(file_type::mostly_q3_k_s, {"llama", 80, 64, 8, 0, 0}, llama_like(d));
    CHECK(s.type_for(blk(40, "attn_v")) == type::q5_k);
    CHECK(s.type_for(blk(40, "attn_k")) == type::q3_k);
    const recipe q(file_type::mostly_q3_k_s, {"qwen2", 80, 64, 8, 0, 0}, llama_like(d));
    CHECK(q.type_for(blk(40, "attn_v")) == type::q5_k);
    // 65B: 80 layers without GQA is not the 70B class.
    const recipe o(file_type::mostly_q3_k_s, {"llama", 80, 64, 64, 0, 0}, llama_like(d));
    CHECK(o.type_for(blk(40, "attn_v")) == type::q3_k);
}

TEST_CASE("falcon rules", "[recipes]") {
    const recipe_model_info info{"falcon", 32, 32, 32, 0, 0};
    const recipe r(file_type::mostly_q4_k_m, info, llama_like({}));
    CHECK(r.type_for("output.weight") == type::q8_0);
    CHECK(r.type_for(blk(0, "ffn_down")) == type::q6_k);  // < 32/16
    CHECK(r.type_for(blk(3, "ffn_down")) == type::q5_k);  // use_more_bits
    CHECK(r.type_for(blk(4, "ffn_down")) == type::q4_k);
    const recipe m(file_type::mostly_q3_k_m, info, llama_like({}));
    CHECK(m.type_for(blk(4, "ffn_down")) == type::q3_k);
    CHECK(m.type_for(blk(6, "ffn_down")) == type::q4_k);
    CHECK(m.type_for(blk(6, "attn_output")) == type::q3_k);
    const recipe l(file_type::mostly_q3_k_l, info, llama_like({}));
    CHECK(l.type_for(blk(6, "ffn_down")) == type::q4_k);
    CHECK(l.type_for(blk(6, "attn_output")) == type::q4_k);
}

TEST_CASE("MoE with 8 experts (Mixtral shape)", "[recipes]") {
    dims d;
    d.n_ff = 14336;
    d.n_embd_kv = 1024;
    d.n_expert = 8;
    const recipe_model_info info{"llama", 32, 32, 8, 8, 0};
    const recipe r(file_type::mostly_q4_k_m, info, llama_like(d));
    for (int i = 0; i < 32; ++i) {
        INFO("layer " << i);
        CHECK(r.type_for(blk(i, "attn_v")) == type::q8_0);
        CHECK(r.type_for(blk(i, "attn_k")) == type::q8_0);
        CHECK(r.type_for(blk(i, "attn_q")) == type::q4_k);
        CHECK(r.type_for(blk(i, "attn_output")) == type::q5_k);
        CHECK(r.type_for(blk(i, "ffn_gate_inp")) == type::f32);
        CHECK_FALSE(r.choice(blk(i, "ffn_gate_inp")).quantize);
        CHECK(r.type_for(blk(i, "ffn_gate_exps")) == type::q4_k);
        CHECK(r.type_for(blk(i, "ffn_up_exps")) == type::q4_k);
        CHECK(r.type_for(blk(i, "ffn_down_exps")) == (more_bits_32.count(i) ? type::q6_k : type::q4_k));
    }
    const recipe r4(file_type::mostly_q4_0, info, llama_like(d));
    CHECK(r4.type_for(blk(3, "attn_v")) == type::q8_0);
    CHECK(r4.type_for(blk(3, "attn_k")) == type::q8_0);
    CHECK(r4.type_for(blk(3, "attn_output")) == type::q4_0);
    const recipe r5(file_type::mostly_q5_k_m, info, llama_like(d));
    CHECK(r5.type_for(blk(3, "attn_output")) == type::q5_k);
    CHECK(r5.type_for(blk(4, "ffn_down_exps")) == type::q5_k);

    SECTION("MXFP4_MOE: experts mxfp4, the rest q8_0") {
        const recipe m(file_type::mostly_mxfp4_moe, info, llama_like(d));
        CHECK(m.type_for(blk(0, "ffn_down_exps")) == type::mxfp4);
        CHECK(m.type_for(blk(0, "ffn_gate_exps")) == type::mxfp4);
        CHECK(m.type_for(blk(0, "attn_q")) == type::q8_0);
        CHECK(m.type_for(blk(0, "attn_v")) == type::q8_0);
        CHECK(m.type_for(blk(0, "ffn_gate_inp")) == type::f32);
        CHECK(m.type_for("token_embd.weight") == type::q8_0);
        CHECK(m.type_for("output.weight") == type::q8_0);
    }
    SECTION("expert tensors must name a layer of the model") {
        auto t = llama_like(d);
        t.push_back({"blk.32.ffn_down_exps.weight", {14336, 4096, 8}, type::f16});
        CHECK_THROWS_AS(recipe(file_type::mostly_q4_k_m, info, t), lowbit::error);
        auto u = llama_like(d);
        u.push_back({"mtp.ffn_up.weight", {4096, 14336}, type::f16});
        CHECK_THROWS_AS(recipe(file_type::mostly_q4_k_m, info, u), lowbit::error);
    }
}

TEST_CASE("MoE with many experts and shared experts reads layers from names", "[recipes]") {
    dims d;
    d.n_layer = 24;
    d.n_embd = 2048;
    d.n_ff = 1408;  // not a multiple of 256: ffn_down falls back
    d.n_embd_kv = 2048;
    d.n_vocab = 151936;
    d.n_expert = 60;
    d.shared_expert = true;
    const recipe_model_info info{"qwen2moe", 24, 16, 16, 60, 0};
    const recipe r(file_type::mostly_q4_k_m, info, llama_like(d));
    // use_more_bits(i, 24): i < 3, i >= 21, or (i - 3) % 3 == 2.
    const std::set<int> more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23};
    for (int i = 0; i < 24; ++i) {
        INFO("layer " << i);
        const bool m = more.count(i) > 0;
        CHECK(r.type_for(blk(i, "attn_v")) == (m ? type::q6_k : type::q4_k));
        CHECK(r.type_for(blk(i, "attn_k")) == type::q4_k);
        CHECK(r.type_for(blk(i, "ffn_down_exps")) == (m ? type::q8_0 : type::q5_0));  // 1408 % 256 != 0
        CHECK(r.type_for(blk(i, "ffn_down_shexp")) == (m ? type::q8_0 : type::q5_0));
        CHECK(r.type_for(blk(i, "ffn_up_exps")) == type::q4_k);
    }
    CHECK(r.n_fallback() == 48);
}

TEST_CASE("rows that do not divide into blocks fall back", "[recipes]") {
    dims d;
    d.n_layer = 8;
    d.n_embd = 4000;  // 32 | 4000, 256 does not
    d.n_embd_kv = 4000;
    d.n_ff = 11008;
    std::vector<recipe_tensor> t = llama_like(d);
    t.push_back({"blk.0.odd.weight", {100, 64}, type::f16});  // 32 does not divide 100
    const recipe_model_info info{"llama", 8, 32, 32, 0, 0};
    // use_more_bits(i, 8): i < 1, i >= 7, or (i - 1) % 3 == 2 -> 0, 3, 6, 7.
    SECTION("Q4_K_M") {
        const recipe r(file_type::mostly_q4_k_m, info, t);
        CHECK(r.type_for("output.weight") == type::q8_0);
        CHECK(r.type_for("token_embd.weight") == type::q5_0);
        CHECK(r.type_for(blk(1, "attn_q")) == type::q5_0);
        CHECK(r.type_for(blk(1, "attn_v")) == type::q5_0);
        CHECK(r.type_for(blk(3, "attn_v")) == type::q8_0);
        CHECK(r.type_for(blk(3, "ffn_down")) == type::q6_k);  // rows of 11008 are whole blocks
        CHECK(r.type_for(blk(1, "ffn_gate")) == type::q5_0);
        CHECK(r.type_for("blk.0.odd.weight") == type::f16);
        CHECK(r.choice("blk.0.odd.weight").fell_back);
        CHECK_FALSE(r.choice(blk(3, "ffn_down")).fell_back);
        // token_embd + 8 layers x (q, k, v, output, gate, up) + odd
        CHECK(r.n_fallback() == 1 + 8 * 6 + 1);
    }
    SECTION("other K-quants") {
        const recipe r5(file_type::mostly_q5_k_m, info, t);
        CHECK(r5.type_for(blk(1, "attn_q")) == type::q5_1);
        const recipe r3(file_type::mostly_q3_k_m, info, t);
        CHECK(r3.type_for(blk(1, "attn_q")) == type::q4_0);
        CHECK(r3.type_for(blk(0, "attn_v")) == type::q5_1);
        CHECK(r3.type_for(blk(4, "attn_v")) == type::q5_0);
        const recipe r2(file_type::mostly_q2_k, info, t);
        CHECK(r2.type_for(blk(1, "attn_q")) == type::q4_0);
        const recipe r6(file_type::mostly_q6_k, info, t);
        CHECK(r6.type_for(blk(1, "attn_q")) == type::q8_0);
        const recipe rx(file_type::mostly_iq4_xs, info, t);
        CHECK(rx.type_for(blk(1, "attn_q")) == type::iq4_nl);
        const recipe rt(file_type::mostly_tq2_0, info, t);
        CHECK(rt.type_for(blk(1, "attn_q")) == type::q4_0);
    }
    SECTION("32-block types only fall back to f16") {
        const recipe r(file_type::mostly_q4_0, info, t);
        CHECK(r.type_for(blk(1, "attn_q")) == type::q4_0);
        CHECK(r.type_for("blk.0.odd.weight") == type::f16);
        CHECK(r.type_for("output.weight") == type::q8_0);
        const recipe f(file_type::mostly_f16, info, t);
        CHECK(f.type_for("blk.0.odd.weight") == type::f16);
        CHECK(f.n_fallback() == 0);
    }
    SECTION("output rows not divisible by 32 end at f16") {
        std::vector<recipe_tensor> u = {{"output.weight", {100, 1000}, type::f32}};
        const recipe r(file_type::mostly_q4_k_m, info, u);
        CHECK(r.type_for("output.weight") == type::f16);
    }
}

TEST_CASE("options: leave output, explicit output/embedding types, pure", "[recipes]") {
    recipe_options o;
    o.quantize_output_tensor = false;
    const recipe a(file_type::mostly_q4_k_m, llama7b_info(), llama_like({}), o);
    CHECK(a.type_for("output.weight") == type::f16);
    CHECK_FALSE(a.choice("output.weight").quantize);

    recipe_options e;
    e.output_tensor_type = type::q8_0;
    e.token_embedding_type = type::q4_0;
    const recipe b(file_type::mostly_q4_k_m, llama7b_info(), llama_like({}), e);
    CHECK(b.type_for("output.weight") == type::q8_0);
    CHECK(b.type_for("token_embd.weight") == type::q4_0);

    recipe_options p;
    p.pure = true;
    const recipe c(file_type::mostly_q4_k_m, llama7b_info(), llama_like({}), p);
    for (const auto& ch : c.choices())
        if (ch.quantize) CHECK(ch.chosen == type::q4_k);
}

TEST_CASE("bad requests are errors", "[recipes]") {
    const recipe r(file_type::mostly_q4_k_m, llama7b_info(), llama_like({}));
    CHECK_THROWS_AS(r.type_for("nope.weight"), lowbit::error);
    try {
        (void)r.type_for("blk.0.attn_q.weight", std::vector<std::uint64_t>{4096, 4095});
        FAIL("no error");
    } catch (const lowbit::error& ex) {
        CHECK(ex.code() == errc::shape_mismatch);
    }
    CHECK_THROWS_AS(recipe(file_type::mostly_q4_k_m, {"llama", 0, 32, 32, 0, 0}, {}), lowbit::error);
    std::vector<recipe_tensor> dup = {{"a.weight", {32, 32}, type::f16}, {"a.weight", {32, 32}, type::f16}};
    CHECK_THROWS_AS(recipe(file_type::mostly_q4_k_m, llama7b_info(), dup), lowbit::error);
    std::vector<recipe_tensor> five = {{"a.weight", {32, 32, 1, 1, 1}, type::f16}};
    CHECK_THROWS_AS(recipe(file_type::mostly_q4_k_m, llama7b_info(), five), lowbit::error);
}

TEST_CASE("architecture-specific rules: glm5-next and bailingmoe3", "[recipes]") {
    const std::vector<recipe_tensor> glm = {{"blk.0.attn_q_a.weight", {4096, 1536}, type::bf16},
                                            {"blk.0.attn_q.weight", {4096, 4096}, type::bf16},
                                            {"blk.0.hc_attn_fn.weight", {4096, 24}, type::bf16},
                                            {"output.weight", {4096, 1000}, type::bf16}};
    const recipe g(file_type::mostly_q4_k_m, {"glm5-next", 1, 32, 32, 0, 0}, glm);
    CHECK(g.type_for("blk.0.attn_q_a.weight") == type::q8_0);
    CHECK(g.type_for("blk.0.attn_q.weight") == type::q4_k);
    CHECK(g.type_for("blk.0.hc_attn_fn.weight") == type::bf16);
    const recipe gf(file_type::mostly_f16, {"glm5-next", 1, 32, 32, 0, 0}, glm);
    CHECK(gf.type_for("blk.0.attn_q_a.weight") == type::f16);

    const std::vector<recipe_tensor> moe = {{"blk.0.attn_k_b.weight", {128, 512, 16}, type::bf16},
                                            {"blk.0.ffn_down_exps.weight", {1024, 4096, 16}, type::bf16}};
    const recipe b(file_type::mostly_mxfp4_moe, {"bailingmoe3", 1, 16, 16, 16, 0}, moe);
    CHECK(b.type_for("blk.0.attn_k_b.weight") == type::q8_0);
    CHECK(b.type_for("blk.0.ffn_down_exps.weight") == type::mxfp4);
    const recipe d(file_type::mostly_mxfp4_moe, {"deepseek2", 1, 16, 16, 16, 0}, moe);
    CHECK(d.type_for("blk.0.attn_k_b.weight") == type::mxfp4);
}
