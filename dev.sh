#!/usr/bin/env bash
# lowbit's developer entry point. Each command installs what it needs first
# (Debian 12 / Ubuntu packages through apt-get).
#
#   ./dev.sh compare [ARGS]   build the lowbit program and run `lowbit compare ARGS`
#   ./dev.sh test             build everything and run the test suite (cmake --workflow --preset test)
#   ./dev.sh bench [FILTER]   build and run the Google Benchmark programs
#   ./dev.sh deps             only install the dependencies
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(cmake g++ make pkg-config ccache libxsimd-dev libxtensor-dev xtl-dev catch2 libbenchmark-dev)

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
    [[ -f build/CMakeCache.txt ]] || cmake --preset default >/dev/null
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
bench)
    deps
    configure
    cmake --build build -j2 --target bench_dequantize bench_quantize
    for b in build/benchmarks/bench_*; do
        [[ -x "$b" ]] && "$b" --benchmark_filter="${1:-.}"
    done
    ;;
*)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    [[ "$cmd" == help ]] || exit 2
    ;;
esac
