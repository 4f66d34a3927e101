#!/bin/sh
# check_shared_code.sh ARCHIVE PROGRAM...
#
# Fails when a linked x86-64 program holds a function whose callers may run
# on a machine without the instructions it contains.
#
# Each dispatch TU of ARCHIVE (the static library lowbit_add_dispatch builds:
# one member per instruction set, "..._sse4_1.cpp.o", "..._avx2.cpp.o",
# "..._avx512bw.cpp.o") is compiled with its own -m flags and emits, beside
# its per-instruction-set kernels, every inline function and template
# instantiation those kernels use that is not specialised per instruction
# set (lowbit helpers, std::string members, ...). The linker keeps one copy
# of each for the whole program. So, for each function in PROGRAM:
#   - kernels for one instruction set (a template argument xsimd::avx2,
#     xsimd::fma3<...>, xsimd::avx512bw, ..., or "avx2"/"avx512" in their own
#     name) are only called through the dispatcher: anything goes;
#   - a function that only the AVX-512 member defines is only called from
#     AVX-512 kernels: anything goes;
#   - one that the AVX2 member defines (and not the SSE4.1 member or any
#     other object) is called from AVX2 kernels: no AVX-512 (EVEX: zmm or
#     mask registers, or the ymm/xmm16-31 only EVEX reaches);
#   - every other function may be called without dispatch: no VEX or EVEX
#     encoded instruction at all, no ymm, zmm or mask register.
# (An ASan build once kept an -mavx512bw copy of a plain inline function
# that every caller used, and died of SIGILL on an AVX2 machine.)
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: $0 ARCHIVE PROGRAM..." >&2
    exit 2
fi
archive=$1
shift
objdump=${OBJDUMP:-objdump}
nm=${NM:-nm}
# Several programs: one process each, as many at a time as there are cores.
if [ "$#" -gt 1 ]; then
    printf '%s\0' "$@" | xargs -0 -n 1 -P "$(nproc 2>/dev/null || echo 2)" "$0" "$archive"
    exit $?
fi
prog=$1
if [ ! -f "$prog" ] || [ ! -f "$archive" ]; then
    echo "$prog or $archive: no such file" >&2
    exit 1
fi
# Which dispatch members define each symbol: "symbol sse4_1 avx2 ..." lines.
defs=$(mktemp)
trap 'rm -f "$defs"' EXIT
"$nm" -A --defined-only "$archive" 2>/dev/null | awk '
    NF >= 3 && $(NF - 1) ~ /^[TtWwVvu]$/ {
        member = $1
        isa = "other"
        if (member ~ /_avx512bw\.cpp\.o:/) isa = "avx512bw"
        else if (member ~ /_avx2\.cpp\.o:/) isa = "avx2"
        else if (member ~ /_sse4_1\.cpp\.o:/) isa = "sse4_1"
        where[$NF] = where[$NF] " " isa
    }
    END { for (s in where) print s where[s] }' >"$defs"
report=$("$objdump" -d --no-show-raw-insn "$prog" | awk -v defs="$defs" '
    BEGIN { while ((getline line < defs) > 0) { n = split(line, f, " "); m = ""; for (i = 2; i <= n; ++i) m = m " " f[i]; members[f[1]] = m } }
    /^[0-9a-f]+ <.*>:$/ {
        fn = $0
        sub(/^[0-9a-f]+ </, "", fn)
        sub(/>:$/, "", fn)
        base = fn
        while (sub(/\.(cold|part\.[0-9]+|constprop\.[0-9]+|isra\.[0-9]+)$/, "", base)) continue
        m = (base in members) ? members[base] : ""
        # What a copy kept from these members may hold.
        if (m ~ /sse4_1|other/ || m == "") allow = "baseline"
        else if (m ~ /avx2/) allow = "avx2"
        else allow = "any"
        per_isa = (fn ~ /xsimd[0-9]*(avx|fma3|fma4)/ || fn ~ /avx2|avx512/)
        next
    }
    !per_isa && allow != "any" && /^ +[0-9a-f]+:\t/ {
        n = split($0, part, "\t")
        insn = part[n]
        bad = 0
        if (allow == "baseline") bad = (insn ~ /^v[a-z]/ || insn ~ /%[yz]mm[0-9]|%k[0-7]/)
        else bad = (insn ~ /%zmm[0-9]|%k[0-7]|%[xy]mm(1[6-9]|2[0-9]|3[01])/)
        if (bad) {
            if (!(fn in count)) { first[fn] = insn; level[fn] = allow; order[++nfn] = fn }
            count[fn]++
        }
    }
    END {
        for (i = 1; i <= nfn; ++i)
            printf "  %s (%s): %d instructions beyond it, first: %s\n", order[i], level[order[i]], count[order[i]], first[order[i]]
    }')
if [ -n "$report" ]; then
    echo "$prog: functions hold instructions their callers may not have:"
    echo "$report" | c++filt
    exit 1
fi
echo "$prog: shared code runs where its callers run"
