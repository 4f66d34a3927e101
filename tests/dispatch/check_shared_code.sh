#!/bin/sh
# check_shared_code.sh PROGRAM...
#
# Fails when a linked x86-64 program holds a function that any caller may
# reach without passing lowbit's run-time dispatch, yet contains AVX or
# AVX-512 instructions.
#
# Each dispatch TU (lowbit_add_dispatch) is compiled with its own -m flags
# and emits, beside its per-instruction-set kernels, every inline function
# and template instantiation those kernels use that is not specialised per
# instruction set (lowbit helpers, std::string members, ...). The linker
# keeps one copy of each for the whole program; if it keeps an -mavx2 or
# -mavx512bw one, every caller runs it, on machines without those
# instructions too (an ASan build once died of SIGILL this way on an AVX2
# machine). Functions that may hold such code are the kernels themselves,
# whose names carry their instruction set (a template argument
# xsimd::avx2, xsimd::fma3<...>, xsimd::avx512bw, ...; or "avx2"/"avx512"
# in the function's own name), and are only called through the dispatcher.
# Every other function must run on the least capable target: no VEX or EVEX
# encoded instruction, no ymm, zmm or mask register.
set -eu
if [ "$#" -eq 0 ]; then
    echo "usage: $0 PROGRAM..." >&2
    exit 2
fi
# Several programs: one process each, as many at a time as there are cores.
if [ "$#" -gt 1 ]; then
    printf '%s\0' "$@" | xargs -0 -n 1 -P "$(nproc 2>/dev/null || echo 2)" "$0"
    exit $?
fi
status=0
for prog in "$@"; do
    if [ ! -f "$prog" ]; then
        echo "$prog: no such file" >&2
        status=1
        continue
    fi
    report=$("${OBJDUMP:-objdump}" -d --no-show-raw-insn -C "$prog" | awk '
        /^[0-9a-f]+ <.*>:$/ {
            fn = $0
            sub(/^[0-9a-f]+ </, "", fn)
            sub(/>:$/, "", fn)
            per_isa = (fn ~ /xsimd::(avx|fma3|fma4)/ || fn ~ /avx2|avx512/)
            next
        }
        !per_isa && /^ +[0-9a-f]+:\t/ {
            n = split($0, part, "\t")
            insn = part[n]
            if (insn ~ /^v[a-z]/ || insn ~ /%[yz]mm[0-9]|%k[0-7]/) {
                if (!(fn in count)) { first[fn] = insn; order[++nfn] = fn }
                count[fn]++
            }
        }
        END {
            for (i = 1; i <= nfn; ++i)
                printf "  %s: %d AVX/AVX-512 instructions, first: %s\n", order[i], count[order[i]], first[order[i]]
        }')
    if [ -n "$report" ]; then
        echo "$prog: functions reachable without dispatch hold instructions beyond the least capable target:"
        echo "$report"
        status=1
    else
        echo "$prog: shared code is baseline"
    fi
done
exit $status
