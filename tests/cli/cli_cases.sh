#!/usr/bin/env bash
# The lowbit program against bad inputs and bad output targets: each case has
# the exit status and a fragment of the message it must print, and after each
# the scratch directory must hold no temporary file and the inputs must be
# unchanged. Run by ctest (test cli_cases):
#
#   cli_cases.sh LOWBIT MAKE_FIXTURES SCRATCH_DIR
set -uo pipefail
LOWBIT=$1
MAKE_FIXTURES=$2
D=$3
rm -rf "$D" && mkdir -p "$D" || exit 2
"$MAKE_FIXTURES" "$D/in" || { echo "make_fixtures failed"; exit 2; }
IN=$D/in
OUT=$D/out
mkdir -p "$OUT"
pass=0 fail=0

sums() { (cd "$IN" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
before=$(sums)

# check NAME EXPECTED_STATUS FRAGMENT -- ARGS...: run lowbit ARGS (10 s limit).
check() {
    local name=$1 want=$2 frag=$3
    shift 4
    local got msg
    msg=$(timeout 10 "$LOWBIT" "$@" 2>&1 >/dev/null)
    got=$?
    local why=""
    [[ $got -eq $want ]] || why="exit $got, expected $want"
    [[ -z $frag || $msg == *"$frag"* ]] || why="${why:+$why; }message lacks '$frag'"
    # One "lowbit: <code>:" prefix, however many layers added context.
    [[ $(grep -o 'lowbit: ' <<<"$msg" | wc -l) -le 1 ]] || why="${why:+$why; }repeated prefix"
    local left
    left=$(find "$OUT" "$IN" -name '*.tmp.*' | head -n 3)
    [[ -z $left ]] || why="${why:+$why; }left behind: $left"
    if [[ $(sums) != "$before" ]]; then why="${why:+$why; }an input changed"; before=$(sums); fi
    if [[ -z $why ]]; then
        pass=$((pass + 1))
        echo "ok    $name"
    else
        fail=$((fail + 1))
        echo "FAIL  $name: $why"
        echo "      lowbit $*"
        echo "      said: $msg"
    fi
}

# 1. Inputs and outputs are what they claim to be.
check same-file-gguf 1 "is the input" -- quantize "$IN/model.gguf" "$IN/model.gguf" --type Q4_0
ln -sf "$IN/model.gguf" "$OUT/link.gguf"
check same-file-symlink 1 "is the input" -- quantize "$IN/model.gguf" "$OUT/link.gguf" --type Q4_0
ln -f "$IN/model.gguf" "$OUT/hard.gguf"
check same-file-hardlink 1 "is the input" -- quantize "$IN/model.gguf" "$OUT/hard.gguf" --type Q4_0
rm -f "$OUT/link.gguf" "$OUT/hard.gguf"
check same-file-safetensors 1 "is the input" -- quantize "$IN/model.safetensors" "$IN/model.safetensors" --format nf4-b64
check same-file-imatrix 1 "is the imatrix" -- quantize "$IN/model.gguf" "$IN/imatrix.gguf" --type Q4_0 --imatrix "$IN/imatrix.gguf"
mkfifo "$OUT/fifo.gguf"
check output-fifo 1 "is a FIFO" -- quantize "$IN/model.gguf" "$OUT/fifo.gguf" --type Q4_0
[[ -p $OUT/fifo.gguf ]] || { echo "FAIL  output-fifo: the FIFO was replaced"; fail=$((fail + 1)); }
check input-fifo 1 "is a FIFO" -- quantize "$OUT/fifo.gguf" "$OUT/x.gguf" --type Q4_0
check inspect-fifo 1 "is a FIFO" -- inspect "$OUT/fifo.gguf"
rm -f "$OUT/fifo.gguf"
if [[ -c /dev/null ]]; then
    ln -sf /dev/null "$OUT/null.gguf"
    check output-device 1 "is a character device" -- quantize "$IN/model.gguf" "$OUT/null.gguf" --type Q4_0
    [[ -c /dev/null ]] || { echo "FAIL  output-device: /dev/null replaced"; fail=$((fail + 1)); }
    rm -f "$OUT/null.gguf"
fi
mkdir -p "$OUT/dir.gguf"
check output-directory 1 "is a directory" -- quantize "$IN/model.gguf" "$OUT/dir.gguf" --type Q4_0
check input-directory 1 "is a directory" -- inspect "$OUT/dir.gguf"
rmdir "$OUT/dir.gguf"
check output-extension-gguf 1 "must end in .gguf" -- quantize "$IN/model.gguf" "$OUT/x.safetensors" --type Q4_0
check output-extension-st 1 "must end in .safetensors" -- quantize "$IN/model.safetensors" "$OUT/x.gguf" --format nf4-b64
check missing-input 1 "cannot open" -- quantize "$IN/nope.gguf" "$OUT/x.gguf" --type Q4_0

# An existing output is replaced with its permission bits kept.
cp "$IN/model.gguf" "$OUT/perm.gguf" && chmod 640 "$OUT/perm.gguf"
check overwrite-keeps-mode 0 "" -- quantize "$IN/model.gguf" "$OUT/perm.gguf" --type Q8_0
mode=$(stat -c %a "$OUT/perm.gguf")
[[ $mode == 640 ]] && { pass=$((pass + 1)); echo "ok    overwrite-mode-640"; } ||
    { fail=$((fail + 1)); echo "FAIL  overwrite-mode-640: mode is $mode"; }
cp "$IN/model.safetensors" "$OUT/perm.safetensors" && chmod 600 "$OUT/perm.safetensors"
check overwrite-keeps-mode-st 0 "" -- quantize "$IN/model.safetensors" "$OUT/perm.safetensors" --format nf4-b64
mode=$(stat -c %a "$OUT/perm.safetensors")
[[ $mode == 600 ]] && { pass=$((pass + 1)); echo "ok    overwrite-mode-600"; } ||
    { fail=$((fail + 1)); echo "FAIL  overwrite-mode-600: mode is $mode"; }

# 2. Non-finite values never pass silently; finite ones a type cannot hold are errors.
check nan-q4_0 1 "tensor 'blk.0.attn_q.weight': row 2, column 5 is NaN" -- quantize "$IN/nan.gguf" "$OUT/x.gguf" --type Q4_0
check inf-q8_0 1 "row 2, column 5 is +Inf" -- quantize "$IN/inf.gguf" "$OUT/x.gguf" --type Q8_0
check neginf-q4_k 1 "row 2, column 5 is -Inf" -- quantize "$IN/neginf.gguf" "$OUT/x.gguf" --type Q4_K_M
check nan-f16 1 "row 2, column 5 is NaN" -- quantize "$IN/nan.gguf" "$OUT/x.gguf" --type F16
for t in Q4_0 Q4_1 Q8_0 Q4_K_M IQ4_NL F16; do
    check "huge-$t" 1 "row 2, column" -- quantize "$IN/huge.gguf" "$OUT/x.gguf" --type $t
    check "max-$t" 1 "row 2, column" -- quantize "$IN/max.gguf" "$OUT/x.gguf" --type $t
done
check spike-Q4_0 1 "row 2, column 5: -1000000 is beyond q4_0's range" -- quantize "$IN/spike.gguf" "$OUT/x.gguf" --type Q4_0
check spike-Q4_1 1 "row 2, columns 0-31: a q4_1 block cannot hold these values" -- quantize "$IN/spike.gguf" "$OUT/x.gguf" --type Q4_1
check spike-F16 1 "row 2, column 5: -1000000 is beyond f16's range" -- quantize "$IN/spike.gguf" "$OUT/x.gguf" --type F16
check f16-range 1 "100000 is beyond f16's range" -- quantize "$IN/f16range.gguf" "$OUT/x.gguf" --type F16
check f16-range-q8_0 0 "" -- quantize "$IN/f16range.gguf" "$OUT/x.gguf" --type Q8_0
check nan-nf4 1 "tensor 'model.layers.0.mlp.down_proj.weight': row 3, column 9 is NaN" -- \
    quantize "$IN/nan.safetensors" "$OUT/x.safetensors" --format nf4-b64-dq
check nan-int8 1 "row 3, column 9 is NaN" -- quantize "$IN/nan.safetensors" "$OUT/x.safetensors" --format llm-int8
check int8-fp16-range 1 "row 1, column 2: 100000 is beyond float16's range" -- \
    quantize "$IN/f16range.safetensors" "$OUT/x.safetensors" --format llm-int8
check nan-mlx 1 "tensor 'model.layers.0.mlp.down_proj.weight': row 3, column 9 is NaN" -- \
    quantize "$IN/nan.safetensors" "$OUT/x.safetensors" --format mlx-4b-g64
check mlx-bad-format 1 "is not mlx-{2,3,4,5,6,8}b-g{32,64,128}" -- \
    quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format mlx-7b-g64
check mlx-rules 1 "--rules is for bitsandbytes formats" -- \
    quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format mlx-4b-g64 --rules cpu
check mlx-ok 0 "" -- quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format mlx-4b-g32
check nan-hqq 1 "tensor 'model.layers.0.mlp.down_proj.weight': row 3, column 9 is NaN" -- \
    quantize "$IN/nan.safetensors" "$OUT/x.safetensors" --format hqq-4b-g64
check hqq-bad-format 1 "is not hqq-{1,2,3,4,8}b-g<G> with G a multiple of 8" -- \
    quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format hqq-4b-g60
check hqq-rules 1 "--rules is not an HQQ option" -- \
    quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format hqq-4b-g64 --rules cpu
check hqq-ok 0 "" -- quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format hqq-3b-g32
"$LOWBIT" inspect "$OUT/x.safetensors" | grep -q "HQQ layer model.layers.0.mlp.down_proj: hqq-3b-g32, 64 x 128" ||
    { echo "FAIL  hqq-inspect: $("$LOWBIT" inspect "$OUT/x.safetensors" | grep HQQ)"; fail=$((fail + 1)); }
check nan-ct 1 "tensor 'model.layers.0.mlp.down_proj.weight': row 3, column 9 is NaN" -- \
    quantize "$IN/nan.safetensors" "$OUT/x.safetensors" --format ct-w4a16
check ct-bad-format 1 "is not ct-<2..8>b-g<group>" -- \
    quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-w4a8
check ct-embeddings 1 "--include-embeddings is not a compressed-tensors option" -- \
    quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-w4a16 --include-embeddings
check ct-bad-rules 1 "are not cuda or cpu" -- \
    quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-w4a16 --rules gpu
check ct-ok 0 "" -- quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-4b-g32-asym --rules cpu
mkdir -p "$OUT/ct_in" "$OUT/ct_out" && cp "$IN/model.safetensors" "$OUT/ct_in/" &&
    echo '{"architectures": ["LlamaForCausalLM"]}' > "$OUT/ct_in/config.json"
check ct-config 0 "" -- quantize "$OUT/ct_in/model.safetensors" "$OUT/ct_out/model.safetensors" --format ct-w4a16
if grep -q '"quant_method": "compressed-tensors"' "$OUT/ct_out/config.json" &&
    "$LOWBIT" inspect "$OUT/ct_out/model.safetensors" |
    grep -q "compressed-tensors layer model.layers.0.mlp.down_proj: ct-4b-g128 (pack-quantized, F32 scales), 64 x 128"; then
    pass=$((pass + 1)); echo "ok    ct-inspect"
else
    fail=$((fail + 1)); echo "FAIL  ct-inspect: $("$LOWBIT" inspect "$OUT/ct_out/model.safetensors" | grep compressed)"
fi
rm -rf "$OUT/ct_in" "$OUT/ct_out"
# GPTQ, where this lowbit was built with lowbit::calibration.
if ! "$LOWBIT" quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-4b-g64 --calib x 2>&1 |
    grep -q "made without"; then
    DOWN="layer 'model.layers.0.mlp.down_proj'"
    check gptq-no-calib 1 "--calib ACTS.safetensors" -- quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-4b-g64
    check gptq-bad-format 1 "is not gptq-{2,3,4,8}b-g<group>" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-5b-g64 --calib "$IN/calib.safetensors"
    check gptq-calib-is-output 1 "is the calibration file" -- \
        quantize "$IN/model.safetensors" "$IN/calib.safetensors" --format gptq-4b-g64 --calib "$IN/calib.safetensors"
    check gptq-missing-layer 1 "layer 'model.layers.0.mlp.up_proj': the model has no tensor 'model.layers.0.mlp.up_proj.weight'" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-4b-g64 --calib "$IN/calib_missing.safetensors"
    check gptq-width 1 "$DOWN: activations [256, 64] are not [tokens, 128]" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-4b-g64 --calib "$IN/calib_width.safetensors"
    check gptq-nan 1 "$DOWN: activations: row 7, column 3 is NaN" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-4b-g64 --calib "$IN/calib_nan.safetensors"
    check gptq-few-tokens 1 "$DOWN: 16 calibration tokens; at least 128 are needed" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-4b-g64 --calib "$IN/calib_few.safetensors"
    [[ ! -e $OUT/quantize_config.json ]] || { echo "FAIL  gptq: quantize_config.json written by a failed run"; fail=$((fail + 1)); }
    check gptq-few-tokens-allowed 0 "" -- quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-4b-g64 \
        --calib "$IN/calib_few.safetensors" --min-tokens 16
    check gptq-ok 0 "" -- quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format gptq-3b-g64 --act-order --sym \
        --calib "$IN/calib.safetensors"
    grep -q '"bits": 3, "group_size": 64, .*"desc_act": true, .*"sym": true' "$OUT/quantize_config.json" ||
        { echo "FAIL  gptq-ok: quantize_config.json: $(cat "$OUT/quantize_config.json")"; fail=$((fail + 1)); }
    "$LOWBIT" inspect "$OUT/x.safetensors" |
        grep -q "GPTQ layer model.layers.0.mlp.down_proj: gptq-3b-g64 (gptq, symmetric, act-order), 64 x 128" ||
        { echo "FAIL  gptq-inspect: $("$LOWBIT" inspect "$OUT/x.safetensors" | grep GPTQ)"; fail=$((fail + 1)); }
    # GPTQ into compressed-tensors
    check ct-gptq-missing-layer 1 "layer 'model.layers.0.mlp.up_proj': the model has no tensor 'model.layers.0.mlp.up_proj.weight'" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-4b-g64 --calib "$IN/calib_missing.safetensors"
    check ct-gptq-nan 1 "$DOWN: activations: row 7, column 3 is NaN" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-4b-g64 --calib "$IN/calib_nan.safetensors"
    check ct-gptq-option 1 "unknown option '--act-order'" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-4b-g64 --calib "$IN/calib.safetensors" --act-order
    check ct-gptq-damp 1 "--damp: '2' is not a number in (0, 1)" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-4b-g64 --calib "$IN/calib.safetensors" --damp 2
    check ct-gptq-ok 0 "" -- quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-4b-g64-asym \
        --calib "$IN/calib.safetensors" --rules cpu --damp 0.05 --no-act-order
    "$LOWBIT" quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format ct-4b-g64 --calib "$IN/calib.safetensors" |
        grep -q "model.layers.0.mlp.down_proj .* 64 x 128 .* 256" ||
        { echo "FAIL  ct-gptq-report"; fail=$((fail + 1)); }
    # AWQ
    check awq-bad-format 1 "is not awq-4b-g<group>" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format awq-3b-g64 --calib "$IN/calib.safetensors"
    check awq-no-calib 1 "--calib ACTS.safetensors" -- quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format awq-4b-g64
    check awq-nan 1 "$DOWN: activations: row 7, column 3 is NaN" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format awq-4b-g64 --calib "$IN/calib_nan.safetensors"
    check awq-few-tokens 1 "$DOWN: 16 calibration tokens; at least 128 are needed" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format awq-4b-g64 --calib "$IN/calib_few.safetensors"
    check awq-group 1 "cannot take awq-4b-g96: its 128 input features are not a whole number of groups of 96" -- \
        quantize "$IN/model.safetensors" "$OUT/x.safetensors" --format awq-4b-g96 --calib "$IN/calib.safetensors"
    check awq-f16range 1 "overflows float16" -- \
        quantize "$IN/f16range.safetensors" "$OUT/x.safetensors" --format awq-4b-g64 --calib "$IN/calib.safetensors" --no-clip
    mkdir -p "$OUT/awqin" "$OUT/awq"
    cp "$IN/model.safetensors" "$OUT/awqin/model.safetensors"
    echo '{"architectures": ["LlamaForCausalLM"]}' > "$OUT/awqin/config.json"
    check awq-ok 0 "" -- quantize "$OUT/awqin/model.safetensors" "$OUT/awq/x.safetensors" --format awq-4b-g64 \
        --calib "$IN/calib.safetensors"
    grep -q '"quantization_config": {"quant_method": "awq", "zero_point": true, "group_size": 64, "bits": 4, "version": "gemm"' \
        "$OUT/awq/config.json" || { echo "FAIL  awq-ok: config.json: $(cat "$OUT/awq/config.json")"; fail=$((fail + 1)); }
    "$LOWBIT" inspect "$OUT/awq/x.safetensors" |
        grep -q "AWQ layer model.layers.0.mlp.down_proj: awq-4b-g64 (gemm), 64 x 128" ||
        { echo "FAIL  awq-inspect: $("$LOWBIT" inspect "$OUT/awq/x.safetensors" | grep AWQ)"; fail=$((fail + 1)); }
    rm -rf "$OUT/awqin" "$OUT/awq"
fi

# 3. Refuse what llama.cpp refuses.
check requantize-refused 1 "already quantized (q8_0)" -- quantize "$IN/q8.gguf" "$OUT/x.gguf" --type Q4_0
check requantize-allowed 0 "" -- quantize "$IN/q8.gguf" "$OUT/x.gguf" --type Q4_0 --allow-requantize

# 4. Every file a flag names is validated as that kind of file.
check imatrix-is-model 1 "not an importance matrix" -- quantize "$IN/model.gguf" "$OUT/x.gguf" --type Q4_K_M --imatrix "$IN/model.gguf"
mkdir -p "$OUT/imdir"
check imatrix-directory 1 "is a directory" -- quantize "$IN/model.gguf" "$OUT/x.gguf" --type Q4_K_M --imatrix "$OUT/imdir"
rmdir "$OUT/imdir"
check imatrix-safetensors 1 "a safetensors file, not an importance matrix" -- quantize "$IN/model.gguf" "$OUT/x.gguf" --type Q4_K_M --imatrix "$IN/model.safetensors"
printf 'junk' > "$OUT/junk.dat"
check imatrix-junk 1 "junk.dat: imatrix .dat: entry count" -- quantize "$IN/model.gguf" "$OUT/x.gguf" --type Q4_K_M --imatrix "$OUT/junk.dat"
cp "$IN/model.safetensors" "$OUT/renamed.gguf"
check gguf-is-safetensors 1 "this is a safetensors file" -- quantize "$OUT/renamed.gguf" "$OUT/x.gguf" --type Q4_0
rm -f "$OUT/junk.dat" "$OUT/renamed.gguf"
check imatrix-ok 0 "" -- quantize "$IN/model.gguf" "$OUT/x.gguf" --type Q4_K_M --imatrix "$IN/imatrix.gguf"
check compare-too-large 1 "out of memory: cannot allocate 40000000000 bytes (38147 MiB) for the gaussian data set, 100000 x 100000 floats" -- compare --rows 100000 --cols 100000 --data gaussian
check compare-overflow 1 "overflow" -- compare --rows 4294967296 --cols 4294967296

# 6. Resource limits are errors, not aborts.
check threads-range 1 "--threads: 99999 is outside 0..1024" -- quantize "$IN/model.gguf" "$OUT/x.gguf" --type Q4_0 --threads 99999
check threads-wrap 1 "is outside" -- quantize "$IN/model.gguf" "$OUT/x.gguf" --type Q4_0 --threads 18446744073709551617
check threads-negative 1 "is not a non-negative integer" -- compare --threads -1
# Threads the system will not create (a small address-space limit) fall back to fewer.
msg=$( (ulimit -v 1500000 && "$LOWBIT" quantize "$IN/large.gguf" "$OUT/x.gguf" --type Q8_0 --threads 600) 2>&1 >/dev/null)
st=$?
if [[ $st -eq 0 || ($st -eq 1 && $msg == "lowbit: "*) ]]; then
    pass=$((pass + 1)); echo "ok    threads-under-limit (exit $st)"
else
    fail=$((fail + 1)); echo "FAIL  threads-under-limit: exit $st: $msg"
fi

# 5. Interruption leaves nothing behind. The signal is sent once the temporary
# output exists, so it lands mid-write.
interrupt() {
    local name=$1 sig=$2 want=$3
    rm -f "$OUT"/big.gguf*
    "$LOWBIT" quantize "$IN/large.gguf" "$OUT/big.gguf" --type Q6_K >/dev/null 2>"$OUT/err.txt" &
    local pid=$! i
    for ((i = 0; i < 2000; ++i)); do
        compgen -G "$OUT/big.gguf.tmp.*" >/dev/null && break
        sleep 0.005
    done
    kill -s "$sig" $pid 2>/dev/null
    wait $pid
    local st=$?
    local left
    left=$(compgen -G "$OUT/big.gguf*" || true)
    if [[ $st -eq $want && -z $left ]]; then
        pass=$((pass + 1)); echo "ok    $name (exit $st)"
    else
        fail=$((fail + 1)); echo "FAIL  $name: exit $st (expected $want), left: $left"
    fi
}
interrupt sigint INT 130
interrupt sigterm TERM 143
interrupt sighup HUP 129

# An input truncated by another process while it is mapped: an error naming it.
cp "$IN/large.gguf" "$OUT/shrinking.gguf"
"$LOWBIT" quantize "$OUT/shrinking.gguf" "$OUT/big.gguf" --type Q6_K >/dev/null 2>"$OUT/err.txt" &
pid=$!
for ((i = 0; i < 2000; ++i)); do
    compgen -G "$OUT/big.gguf.tmp.*" >/dev/null && break
    sleep 0.005
done
truncate -s 4096 "$OUT/shrinking.gguf"
wait $pid
st=$?
left=$(compgen -G "$OUT/big.gguf*" || true)
if [[ $st -eq 1 && -z $left ]] && grep -q "input file '$OUT/shrinking.gguf' shrank" "$OUT/err.txt"; then
    pass=$((pass + 1)); echo "ok    truncated-while-mapped"
else
    fail=$((fail + 1)); echo "FAIL  truncated-while-mapped: exit $st, left: $left, said: $(cat "$OUT/err.txt")"
fi
rm -f "$OUT/shrinking.gguf" "$OUT/err.txt"

echo
echo "cli_cases: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
