#!/usr/bin/env bash
# The lowbit program's threaded paths give the same bytes on 1, 2, 4 and 8
# threads: GGUF quantize (with and without an importance matrix), the
# bitsandbytes checkpoint formats, and compare. Run by ctest (cli_threads) and,
# built with -fsanitize=thread, by CI's TSan step (./dev.sh tsan).
#
#   thread_cases.sh LOWBIT MAKE_FIXTURES SCRATCH_DIR
set -uo pipefail
LOWBIT=$1
MAKE_FIXTURES=$2
D=$3
rm -rf "$D" && mkdir -p "$D" || exit 2
"$MAKE_FIXTURES" "$D/in" --no-large || { echo "make_fixtures failed"; exit 2; }
IN=$D/in
pass=0 fail=0

# same NAME EXT ARGS...: lowbit quantize ARGS OUT --threads N for each N; outputs equal.
same() {
    local name=$1 ext=$2
    shift 2
    local n ok=1 msg=""
    for n in 1 2 4 8; do
        if ! msg=$("$LOWBIT" "$@" "$D/out.$n.$ext" --threads $n 2>&1 >/dev/null); then
            ok=0; msg="threads $n: $msg"; break
        fi
        if [[ $n != 1 ]] && ! cmp -s "$D/out.1.$ext" "$D/out.$n.$ext"; then
            ok=0; msg="threads $n: the output differs from one thread's"; break
        fi
    done
    rm -f "$D"/out.*
    if ((ok)); then pass=$((pass + 1)); echo "ok    $name"; else fail=$((fail + 1)); echo "FAIL  $name: $msg"; fi
}

same q4_k_m gguf quantize "$IN/model.gguf" --type Q4_K_M
same q4_k_m-imatrix gguf quantize "$IN/model.gguf" --type Q4_K_M --imatrix "$IN/imatrix.gguf"
same q6_k gguf quantize "$IN/model.gguf" --type Q6_K
same q8_0-requantize gguf quantize "$IN/q8.gguf" --type Q4_0 --allow-requantize
same nf4-b64-dq safetensors quantize "$IN/model.safetensors" --format nf4-b64-dq
same llm-int8 safetensors quantize "$IN/model.safetensors" --format llm-int8
# An error found by one of several threads is reported once, with its position.
msg=$("$LOWBIT" quantize "$IN/nan.gguf" "$D/x.gguf" --type Q4_K_M --threads 8 2>&1 >/dev/null)
if [[ $? -eq 1 && $msg == *"row 2, column 5 is NaN"* && -z $(compgen -G "$D/x.gguf*") ]]; then
    pass=$((pass + 1)); echo "ok    error-from-a-thread"
else
    fail=$((fail + 1)); echo "FAIL  error-from-a-thread: $msg"
fi
# compare quantizes on threads too; its error metrics do not depend on them.
c1=$("$LOWBIT" compare --rows 64 --cols 512 --formats q4_K,nf4-b64-dq,int4-g128-asym --csv --threads 1 | cut -d, -f1-7)
c4=$("$LOWBIT" compare --rows 64 --cols 512 --formats q4_K,nf4-b64-dq,int4-g128-asym --csv --threads 4 | cut -d, -f1-7)
if [[ -n $c1 && $c1 == "$c4" ]]; then pass=$((pass + 1)); echo "ok    compare"; else fail=$((fail + 1)); echo "FAIL  compare"; fi

echo
echo "thread_cases: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
