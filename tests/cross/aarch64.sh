#!/usr/bin/env bash
# Cross-compile lowbit's test programs for AArch64 (Debian's
# g++-aarch64-linux-gnu) into build-aarch64/ and run them under qemu-user
# through ctest (CMAKE_CROSSCOMPILING_EMULATOR): the NEON kernels (xsimd::neon64)
# against the scalar references, bit for bit as on x86.
#
#   tests/cross/aarch64.sh [ctest args...]      (or ./dev.sh aarch64)
#
# Installs what it needs with apt-get. xsimd, xtensor, xtl and Catch2 are
# header-only: the build machine's packages serve (see cmake/aarch64-linux-gnu.cmake).
set -euo pipefail
cd "$(dirname "$0")/../.."

PACKAGES=(cmake make ccache g++-aarch64-linux-gnu qemu-user libxsimd-dev libxtensor-dev xtl-dev catch2)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "lowbit: installing ${missing[*]}" >&2
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build=build-aarch64
host_cmake="/usr/lib/$(gcc -print-multiarch)/cmake"
if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B $build -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
          -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
          -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_INSTALL=OFF -DLOWBIT_CALIBRATION=OFF \
          -Dxtl_DIR=/usr/share/cmake/xtl -Dxsimd_DIR="$host_cmake/xsimd" -Dxtensor_DIR="$host_cmake/xtensor" \
          -DCatch2_DIR="$PWD/tests/cross/catch2" >/dev/null
else
    cmake $build -DLOWBIT_CALIBRATION=OFF >/dev/null  # picks up test programs added since
fi

targets=()
for src in tests/test_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
cmake --build $build -j2 --target "${targets[@]}"

# ctest runs each program as `qemu-aarch64 -L /usr/aarch64-linux-gnu <program>`.
ctest --test-dir $build -R '^test_' --output-on-failure -j2 "$@"
