#!/usr/bin/env bash
# lowbit's developer entry point. Each command installs what it needs first
# (Debian 12 / Ubuntu packages through apt-get).
#
#   ./dev.sh compare [ARGS]   build the lowbit program and run `lowbit compare ARGS`
#   ./dev.sh test             build everything and run the test suite (cmake --workflow --preset test)
#   ./dev.sh interop          cross-check against the formats' owners (gguf, ggml, safetensors, bitsandbytes) with pytest
#   ./dev.sh gemv-vs-ggml [ARGS]  GEMV time against ggml's CPU kernels built natively, side by side
#                             (tests/interop/gemv_vs_ggml.py ARGS: --rows --cols --m --threads --types)
#   ./dev.sh fuzz [SECONDS]   fuzz the GGUF, safetensors and imatrix readers and the quantize pipeline with
#                             libFuzzer (clang), SECONDS each (default 60)
#   ./dev.sh tsan             the lowbit program's threaded paths under ThreadSanitizer (build-tsan/)
#   ./dev.sh aarch64 [ARGS]   cross-compile the tests for AArch64 (NEON) into build-aarch64/ and run them
#                             under qemu-user with ctest (ARGS go to ctest); tests/cross/aarch64.sh
#   ./dev.sh xsimd-only       the kernel tests built with LOWBIT_XSIMD_ONLY (every kernel's xsimd body on x86)
#   ./dev.sh bench [FILTER]   build and run the Google Benchmark programs
#   ./dev.sh deps             only install the dependencies
set -euo pipefail
cd "$(dirname "$0")"
# ccache hashes paths relative to the checkout, so every clone and worktree
# (CI clones into a new directory each run) shares one cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

PACKAGES=(cmake g++ make pkg-config ccache libxsimd-dev libxtensor-dev xtl-dev catch2 libbenchmark-dev libopenblas-dev)

deps() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "lowbit: installing ${missing[*]}" >&2
        local sudo=""
        if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

configure() {
    # An existing build tree is re-generated, so targets added since it was made exist.
    if [[ -f build/CMakeCache.txt ]]; then cmake build >/dev/null; else cmake --preset default >/dev/null; fi
}

# The interop suite: a venv with the owners' Python packages, ggml's own
# library built from the sources PyPI's llama-cpp-python ships, and pytest.
REF_GGML_VERSION=0.3.36
TORCH_VERSION=2.9.1
BNB_VERSION=0.50.2
# The newest torchao that imports beside that torch; the torchao-int4-* rule follows it.
TORCHAO_VERSION=0.15.0
HQQ_VERSION=0.2.8.post1
# AutoAWQ's source for test_awq.py (its functions need only torch; not installed).
AUTOAWQ_VERSION=0.2.9
# compressed-tensors for test_ct.py, with the packages its import and
# transformers' loading path need, pinned, installed --no-deps into a small
# venv over the interop venv (its metadata asks torch >= 2.10; the integer
# paths run on 2.9).
CT_PACKAGES=(compressed-tensors==0.20.1 transformers==5.25.0 pydantic==2.14.4 pydantic-core==2.50.5
             annotated-types==0.8.0 typing-inspection==0.4.5 loguru==0.7.3 psutil==7.2.2 regex==2026.12.2
             huggingface-hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 h11==0.16.0)
# llm-compressor's GPTQ for test_ct.py: the two files of its wheel that hold
# it (not installed: the package root imports far more).
LLMCOMPRESSOR_VERSION=0.14.0.1
# The venv (about 7 GB with torch) and ggml's built library go under build/, or,
# with LOWBIT_CACHE set (CI sets $HOME/.cache/lowbit), into that folder under
# names carrying their versions, shared by every checkout.
cached() { if [[ -n ${LOWBIT_CACHE:-} ]]; then echo "$LOWBIT_CACHE/$1"; else echo "build/$2"; fi; }
interop_venv() {
    cached "venv-py$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')-torch$TORCH_VERSION-bnb$BNB_VERSION-ao$TORCHAO_VERSION" venv
}
# The venv, ggml's libraries and lowbit's C entry points for the interop
# suite; sets venv, ref, src and env (the variables the scripts read).
interop_prepare() {
    python3 -m venv --help >/dev/null 2>&1 && python3 -c "import ensurepip" 2>/dev/null || PACKAGES+=(python3-venv)
    PACKAGES+=(python3 python3-pip)
    deps
    configure
    cmake --build build -j2 --target ggml_capi bnb_capi affine_capi mx_capi calibration_capi gguf_tool safetensors_tool \
        lowbit_cli >/dev/null
    venv=$(interop_venv)
    [[ -x $venv/bin/pytest ]] || { python3 -m venv $venv && $venv/bin/pip install -q gguf numpy pytest safetensors; }
    # A venv made before safetensors joined the suite (or by ./dev.sh fuzz) lacks it.
    $venv/bin/python -c "import safetensors" 2>/dev/null || $venv/bin/pip install -q safetensors
    # bitsandbytes runs on the CPU with PyPI's torch (a CUDA build: about 7 GB
    # installed, two minutes here). LOWBIT_NO_TORCH=1 skips it, and with it the
    # bitsandbytes tests (they then report as skipped).
    if [[ -z ${LOWBIT_NO_TORCH:-} ]] && ! $venv/bin/python -c "import torch, bitsandbytes" 2>/dev/null; then
        $venv/bin/pip install -q "torch==$TORCH_VERSION" "bitsandbytes==$BNB_VERSION"
    fi
    # torchao for test_torchao.py (pure Python on the CPU; --no-deps keeps the torch above).
    if [[ -z ${LOWBIT_NO_TORCH:-} ]] && ! $venv/bin/python -c "import torchao" 2>/dev/null; then
        $venv/bin/pip install -q --no-deps "torchao==$TORCHAO_VERSION" ||
            echo "== torchao $TORCHAO_VERSION does not install here: tests/interop/test_torchao.py is skipped"
    fi
    # hqq for test_hqq.py: an sdist whose setup.py builds CUDA kernels unless
    # DISABLE_CUDA=1; its quantizer needs only torch, numpy and termcolor.
    if [[ -z ${LOWBIT_NO_TORCH:-} ]] && ! $venv/bin/python -c "import hqq.core.quantize" 2>/dev/null; then
        { $venv/bin/pip install -q wheel termcolor &&
          DISABLE_CUDA=1 $venv/bin/pip install -q --no-deps --no-build-isolation "hqq==$HQQ_VERSION"; } ||
            echo "== hqq $HQQ_VERSION does not install here: tests/interop/test_hqq.py is skipped"
    fi
    # AutoAWQ's source distribution for test_awq.py, unpacked (not installed:
    # its package root imports transformers, its functions need only torch).
    awq_src=$(cached autoawq-$AUTOAWQ_VERSION autoawq)
    if [[ -z ${LOWBIT_NO_TORCH:-} && ! -d $awq_src/autoawq-$AUTOAWQ_VERSION/awq ]]; then
        mkdir -p $awq_src
        { $venv/bin/pip download -q --no-deps --no-binary :all: "autoawq==$AUTOAWQ_VERSION" -d $awq_src &&
          tar xzf $awq_src/autoawq-$AUTOAWQ_VERSION.tar.gz -C $awq_src; } ||
            echo "== autoawq $AUTOAWQ_VERSION does not download here: tests/interop/test_awq.py is skipped"
    fi
    # MLX's CPU build for test_mlx.py; where no wheel installs, its tests report as skipped.
    $venv/bin/python -c "import mlx.core" 2>/dev/null || $venv/bin/pip install -q "mlx[cpu]" ||
        echo "== mlx[cpu] does not install here: tests/interop/test_mlx.py is skipped"
    ct_venv=$venv-ct0.20.1
    if [[ -z ${LOWBIT_NO_TORCH:-} ]] && ! $ct_venv/bin/python -c "import compressed_tensors, transformers" 2>/dev/null; then
        rm -rf $ct_venv
        { python3 -m venv $ct_venv &&
          $venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
              > "$($ct_venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/lowbit_interop.pth" &&
          $ct_venv/bin/pip install -q --no-deps "${CT_PACKAGES[@]}"; } ||
            echo "== compressed-tensors does not install here: tests/interop/test_ct.py is skipped"
    fi
    llmc_src=$(cached llmcompressor-$LLMCOMPRESSOR_VERSION llmcompressor)
    if [[ -z ${LOWBIT_NO_TORCH:-} && ! -f $llmc_src/llmcompressor/modifiers/gptq/gptq_quantize.py ]]; then
        mkdir -p $llmc_src
        { $venv/bin/pip download -q --no-deps "llmcompressor==$LLMCOMPRESSOR_VERSION" -d $llmc_src &&
          python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.startswith("llmcompressor/modifiers/gptq/"): z.extract(n, sys.argv[2])' \
              $llmc_src/llmcompressor-$LLMCOMPRESSOR_VERSION-py3-none-any.whl $llmc_src; } ||
            echo "== llmcompressor $LLMCOMPRESSOR_VERSION does not download here: its GPTQ tests are skipped"
    fi
    ref=$(cached ref-ggml-$REF_GGML_VERSION ref-ggml)
    src=$ref/llama_cpp_python-$REF_GGML_VERSION/vendor/llama.cpp/ggml
    if [[ ! -f $ref/build/src/libggml-base.so ]]; then
        rm -rf $ref && mkdir -p $ref
        $venv/bin/pip download -q --no-deps --no-binary :all: "llama-cpp-python==$REF_GGML_VERSION" -d $ref
        tar xzf $ref/llama_cpp_python-$REF_GGML_VERSION.tar.gz -C $ref
        touch $src/ggml.pc.in  # the sdist leaves out this template; ggml-base does not need it
        cmake -S $src -B $ref/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_CPU=OFF \
              -DGGML_BACKEND_DL=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=ON \
              -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
        cmake --build $ref/build --target ggml-base -j2 >/dev/null
    fi
    # ggml's CPU backend (vec_dot, from_float) for test_gemv_ggml.py: the build
    # ggml ships (GGML_NATIVE off: its AVX2 kernels).
    if [[ ! -f $ref/build-cpu/.built ]]; then
        cmake -S $src -B $ref/build-cpu -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_CPU=ON \
              -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=OFF -DGGML_LLAMAFILE=OFF -DGGML_BUILD_TESTS=OFF \
              -DGGML_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=ON \
              -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
        cmake --build $ref/build-cpu --target ggml-cpu -j2 >/dev/null
        touch $ref/build-cpu/.built
    fi
    local ggml_cpu; ggml_cpu=$(find "$(realpath $ref/build-cpu)" -name libggml-cpu.so | head -n 1)
    env=(LOWBIT_GGML_CAPI="$PWD/build/tests/interop/libggml_capi.so"
               LOWBIT_BNB_CAPI="$PWD/build/tests/interop/libbnb_capi.so"
               LOWBIT_AFFINE_CAPI="$PWD/build/tests/interop/libaffine_capi.so"
               LOWBIT_MX_CAPI="$PWD/build/tests/interop/libmx_capi.so"
               LOWBIT_CALIBRATION_CAPI="$PWD/build/tests/interop/libcalibration_capi.so"
               LOWBIT_AUTOAWQ_SRC="$(realpath -m $awq_src)/autoawq-$AUTOAWQ_VERSION"
               LOWBIT_LLMCOMPRESSOR_SRC="$(realpath -m $llmc_src)"
               LOWBIT_GGUF_TOOL="$PWD/build/tests/interop/gguf_tool"
               LOWBIT_SAFETENSORS_TOOL="$PWD/build/tests/interop/safetensors_tool"
               LOWBIT_CLI="$PWD/build/bin/lowbit"
               LOWBIT_REF_GGML="$(realpath $ref)/build/src/libggml-base.so"
               LOWBIT_REF_GGML_CPU="$ggml_cpu")
}

interop() {
    interop_prepare
    local rc=0 rc_scalar=0
    env "${env[@]}" $venv/bin/pytest -q tests/interop "$@" || rc=$?
    # The main run uses the best instruction set, whose kernels the C++ tests
    # hold to the scalar reference; here that reference meets ggml directly.
    # (Exit status 5: the extra arguments selected none of these tests.)
    echo "== tests/interop/test_ggml_blocks.py again on lowbit's scalar reference (LOWBIT_ARCH=scalar)"
    env "${env[@]}" LOWBIT_ARCH=scalar $venv/bin/pytest -q tests/interop/test_ggml_blocks.py "$@" || rc_scalar=$?
    (( rc_scalar == 5 )) && rc_scalar=0
    # compressed-tensors lives in its own venv over this one.
    local rc_ct=0
    if [[ -x $ct_venv/bin/python ]]; then
        echo "== tests/interop/test_ct.py with compressed-tensors (venv $ct_venv)"
        env "${env[@]}" $ct_venv/bin/python -m pytest -q tests/interop/test_ct.py "$@" || rc_ct=$?
        (( rc_ct == 5 )) && rc_ct=0
    fi
    (( rc != 0 )) && return $rc
    (( rc_scalar != 0 )) && return $rc_scalar
    return $rc_ct
}

# GEMV time side by side with ggml's CPU kernels built for this machine
# (GGML_NATIVE on, as llama.cpp builds them), same matrix, same threads:
# tests/interop/gemv_vs_ggml.py. Not in CI (a timing, not a check).
gemv_vs_ggml() {
    LOWBIT_NO_TORCH=1 interop_prepare
    cmake --build build -j2 --target ggml_capi >/dev/null
    if [[ ! -f $ref/build-cpu-native/.built ]]; then
        cmake -S $src -B $ref/build-cpu-native -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CPU=ON \
              -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF \
              -DBUILD_SHARED_LIBS=ON -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
        cmake --build $ref/build-cpu-native --target ggml-cpu -j2 >/dev/null
        touch $ref/build-cpu-native/.built
    fi
    local native; native=$(find "$(realpath $ref/build-cpu-native)" -name libggml-cpu.so | head -n 1)
    env "${env[@]}" LOWBIT_REF_GGML_CPU="$native" $venv/bin/python tests/interop/gemv_vs_ggml.py "$@"
}

fuzz() {
    PACKAGES+=(clang libclang-rt-14-dev python3 python3-pip)
    python3 -c "import ensurepip" 2>/dev/null || PACKAGES+=(python3-venv)
    deps
    mkdir -p build/fuzz
    local venv; venv=$(interop_venv)
    [[ -x $venv/bin/pytest ]] || { python3 -m venv $venv && $venv/bin/pip install -q gguf numpy pytest; }
    $venv/bin/python tests/fuzz/make_seeds.py build/fuzz/seeds
    python3 tests/fuzz/make_safetensors_seeds.py build/fuzz/seeds_safetensors
    local flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude)
    clang++ "${flags[@]}" tests/fuzz/fuzz_gguf.cpp -o build/fuzz/fuzz_gguf
    clang++ "${flags[@]}" tests/fuzz/fuzz_safetensors.cpp -o build/fuzz/fuzz_safetensors
    clang++ "${flags[@]}" tests/fuzz/fuzz_imatrix.cpp -o build/fuzz/fuzz_imatrix
    clang++ "${flags[@]}" tests/fuzz/fuzz_quantize.cpp -o build/fuzz/fuzz_quantize
    mkdir -p build/fuzz/corpus build/fuzz/corpus_safetensors build/fuzz/corpus_imatrix build/fuzz/corpus_quantize
    echo "== fuzz_gguf (${1:-60} s)"
    ./build/fuzz/fuzz_gguf -max_total_time="${1:-60}" -max_len=4096 -print_final_stats=1 \
        build/fuzz/corpus build/fuzz/seeds 2>&1 | tail -n 12
    echo "== fuzz_safetensors (${1:-60} s)"
    ./build/fuzz/fuzz_safetensors -max_total_time="${1:-60}" -max_len=4096 -print_final_stats=1 \
        -dict=tests/fuzz/safetensors.dict build/fuzz/corpus_safetensors build/fuzz/seeds_safetensors 2>&1 | tail -n 12
    # The imatrix readers and the quantize pipeline start from the seeds of their kind.
    mkdir -p build/fuzz/seeds_imatrix build/fuzz/seeds_quantize
    cp build/fuzz/seeds/imatrix.gguf build/fuzz/seeds/imatrix.dat build/fuzz/seeds_imatrix/
    cp build/fuzz/seeds/tiny_model.gguf build/fuzz/seeds/small.gguf build/fuzz/seeds_quantize/
    echo "== fuzz_imatrix (${1:-60} s)"
    ./build/fuzz/fuzz_imatrix -max_total_time="${1:-60}" -max_len=4096 -print_final_stats=1 \
        build/fuzz/corpus_imatrix build/fuzz/seeds_imatrix 2>&1 | tail -n 12
    echo "== fuzz_quantize (${1:-60} s)"
    ./build/fuzz/fuzz_quantize -max_total_time="${1:-60}" -max_len=4096 -print_final_stats=1 \
        build/fuzz/corpus_quantize build/fuzz/seeds_quantize 2>&1 | tail -n 12
}

# ThreadSanitizer over the threaded paths: the lowbit program quantizes GGUF
# and bitsandbytes checkpoints on 1-8 threads (tests/cli/thread_cases.sh).
tsan() {
    deps
    if [[ -f build-tsan/CMakeCache.txt ]]; then cmake build-tsan >/dev/null; else cmake --preset tsan >/dev/null; fi
    cmake --build build-tsan -j2 --target lowbit_cli make_cli_fixtures >/dev/null
    TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" \
        tests/cli/thread_cases.sh build-tsan/bin/lowbit build-tsan/tests/make_cli_fixtures build-tsan/thread_cases
}

# AArch64: Debian's cross compiler, the tests under qemu-aarch64 (it installs what it needs).
aarch64() {
    tests/cross/aarch64.sh "$@"
}

# The kernel tests with LOWBIT_XSIMD_ONLY (build-xsimd-only/): every kernel's
# xsimd body, the one NEON runs, against the scalar references at x86's batch
# widths (SSE4.1, AVX2, AVX-512), with no intrinsic path standing in for it.
xsimd_only() {
    deps
    local b=build-xsimd-only
    local tests=(test_kernels_dequantize test_kernels_encode test_kernels_ggml_dequantize test_kernels_ggml_quantize
                 test_kernels_ggml_quantize_f16 test_kernels_ggml_gemv test_kernels_gemv test_kernels_gemv_q8 test_bnb
                 test_ggml_golden test_quantizer)
    cmake -S . -B $b -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="-DLOWBIT_XSIMD_ONLY" \
          -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
    cmake --build $b -j2 --target "${tests[@]}" >/dev/null
    local regex
    regex="^($(IFS='|'; echo "${tests[*]}"))\$"
    ctest --test-dir $b -R "$regex" --output-on-failure
}

cmd="${1:-help}"
shift || true
case "$cmd" in
deps) deps ;;
compare)
    deps
    configure
    cmake --build build --target lowbit_cli -j2 >/dev/null
    exec ./build/bin/lowbit compare "$@"
    ;;
test)
    deps
    cmake --workflow --preset test
    ;;
interop) interop "$@" ;;
gemv-vs-ggml) gemv_vs_ggml "$@" ;;
fuzz) fuzz "$@" ;;
tsan) tsan ;;
aarch64) aarch64 "$@" ;;
xsimd-only) xsimd_only ;;
bench)
    deps
    configure
    # Every benchmarks/bench_*.cpp is built, then run: none runs stale.
    targets=()
    for src in benchmarks/bench_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
    cmake --build build -j2 --target "${targets[@]}"
    for t in "${targets[@]}"; do
        build/benchmarks/$t --benchmark_filter="${1:-.}"
    done
    ;;
*)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    [[ "$cmd" == help ]] || exit 2
    ;;
esac
