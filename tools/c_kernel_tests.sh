#!/usr/bin/env bash
# Build and run tests/c/test_direct_conv.c (every kernel of every ISA copy of
# csrc/direct_conv.h, float and double, bit for bit against a scalar reference) three ways:
#   1. native gcc -O2 -std=c99 -Wall -Wextra -Werror: every copy this CPU runs
#      (x86-64: avx512 where the CPU has it, avx2, baseline = SSE2, portable);
#   2. tcc: the portable C copy only, built by a compiler without GCC's vector extensions
#      (the nearest stand-in here for MSVC; gcc -std=c99 -pedantic is not one: it accepts
#      vector attributes);
#   3. aarch64-linux-gnu-gcc -O2 -static, run under qemu-aarch64: the baseline (NEON) and
#      portable copies.
# The first two also run the header's test-only copies (the avx512 and avx2 geometries in
# portable C), so the avx512 tiling is exercised on CPUs without AVX-512.
# Then, for information only (never a failure), the stack references (spills and reloads)
# inside each kernel's innermost multiply-add loops, from objdump of -O3 objects of the
# native and aarch64 compilers (FASTCNN_SPILL_REPORT=0 skips those two builds;
# FASTCNN_SPILL_DEBUG=1 prints each reference counted).
#
# -ffp-contract=fast is added to the gcc builds: in ISO C mode (-std=c99) gcc does not
# contract a*b + c into a fused multiply-add, but the extension modules are built in GNU C
# mode, where it does; without it the avx2 copy would be tested without its FMAs.
#
# Missing tools come from Debian packages (tcc, gcc-aarch64-linux-gnu with
# libc6-dev-arm64-cross for -static, qemu-user; gcc and binutils if even those are
# missing), installed when running as root (apt-get update once, then apt-get install
# --no-install-recommends; no stdin needed). A run whose tools are missing is skipped with
# a message, except in CI (CI=true) or with FASTCNN_C_TESTS_REQUIRE_ALL=1, where it is an
# error. Takes about a minute on two cores (most of it the builds). Exits non-zero if a run
# fails or a required run could not run. The last line is the total over the runs:
# "N passed, M failed".
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
src=$repo/tests/c/test_direct_conv.c
spills=${FASTCNN_SPILL_REPORT:-1}
require_all=0
if [[ ${CI:-} == true || ${FASTCNN_C_TESTS_REQUIRE_ALL:-0} == 1 ]]; then require_all=1; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fastcnn-ctests.XXXXXX")
trap 'rm -rf "$work"' EXIT

gcc_flags=(-O2 -std=c99 -ffp-contract=fast -Wall -Wextra -Werror -I"$repo/csrc")

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '\n=== %s\n' "$*"; }

# ---------------------------------------------------------------- tools and packages

qemu=
find_qemu() {
    qemu=
    local q
    for q in qemu-aarch64 qemu-aarch64-static; do
        if command -v "$q" >/dev/null 2>&1; then
            qemu=$q
            return 0
        fi
    done
    return 1
}
have_tcc() { command -v tcc >/dev/null 2>&1; }
have_cross() {
    command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 &&
        [[ -e /usr/aarch64-linux-gnu/lib/libc.a ]]
}

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v objdump >/dev/null 2>&1 || missing+=(binutils)
have_tcc || missing+=(tcc)
have_cross || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
find_qemu || missing+=(qemu-user)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${missing[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq </dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
    else
        echo "c_kernel_tests.sh: not installed: ${missing[*]} (not root, or no apt-get:" \
            "the runs that need them are skipped)"
    fi
fi
find_qemu || true

# ---------------------------------------------------------------- runs

declare -a summary=()
total_passed=0
total_failed=0
problems=0

# run_test LABEL BINARY BUILD_SECONDS [RUNNER...]: run it (under RUNNER, e.g. qemu), show
# its output, and take the counts from its last line
run_test() {
    local label=$1 binary=$2 build_s=$3
    shift 3
    local log=$work/$label.log rc=0 t0 t1
    t0=$(now)
    "$@" "$binary" >"$log" 2>&1 || rc=$?
    t1=$(now)
    sed 's/^/    /' "$log"
    local last
    last=$(tail -n 1 "$log")
    if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        local p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
        total_passed=$((total_passed + p))
        total_failed=$((total_failed + f))
        summary+=("$label: RAN, $p passed, $f failed, exit $rc (build ${build_s}s, run $(elapsed "$t0" "$t1")s)")
        if ((rc != 0 || f != 0)); then problems=$((problems + 1)); fi
    else
        local how="exit $rc"
        if ((rc > 128)); then how="killed by signal $((rc - 128)), after the copies listed above"; fi
        summary+=("$label: RAN but CRASHED or gave no count line ($how)")
        total_failed=$((total_failed + 1))
        problems=$((problems + 1))
    fi
}

# build LABEL COMPILER ARGS...: compile the test; on failure show why and count a problem
build() {
    local label=$1
    shift
    local t0 t1
    t0=$(now)
    if ! "$@" >"$work/$label.build.log" 2>&1; then
        cat "$work/$label.build.log"
        summary+=("$label: BUILD FAILED ($*)")
        total_failed=$((total_failed + 1))
        problems=$((problems + 1))
        return 1
    fi
    t1=$(now)
    build_seconds=$(elapsed "$t0" "$t1")
}

skip() {
    local label=$1 why=$2
    echo "    SKIPPED: $why"
    summary+=("$label: SKIPPED ($why)")
    if ((require_all)); then problems=$((problems + 1)); fi
}

# ---------------------------------------------------------------- inner-loop spills

# The stack references inside each kernel's innermost multiply-add loops: a loop is a
# backward branch within a function, and a multiply-add loop one whose body (branch target
# to branch) holds an FMA (vfmadd/vfnmadd on x86, fmla/fmadd on aarch64), or, in a copy
# without FMA, a vector multiply (mulps/mulpd) and add; innermost: no other such loop
# inside it. The stack references are (%rsp) operands (and (%rbp) where the function sets
# up a frame pointer) on x86, [sp and [x29 on aarch64. Informative: a count of 0 says the
# tiles' accumulators stayed in registers; a reload of a loop bound counts too.
spill_report() {
    local objdump=$1 binary=$2
    "$objdump" -d --no-show-raw-insn "$binary" | awk -v debug="${FASTCNN_SPILL_DEBUG:-0}" '
    function hex(s,   i, n) {
        n = 0
        s = tolower(s)
        for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
        return n
    }
    function finish(   i, j, inner, refs, nloops, mark) {
        if (fn == "") return
        nloops = 0; refs = 0; vrefs = 0
        for (i = 1; i <= nl; i++) {
            inner = 1
            for (j = 1; j <= nl && inner; j++)
                if (j != i && lo[j] >= lo[i] && hi[j] <= hi[i] && (lo[j] > lo[i] || hi[j] < hi[i]))
                    inner = 0
            if (!inner) continue
            nloops++
            for (j = lo_idx[i]; j <= hi_idx[i]; j++)
                if (stack[j]) {
                    if (stack[j] == 2) vrefs++; else refs++
                    if (debug) printf "      %s loop %x-%x: %s\n", fn, lo[i], hi[i], text[j]
                }
        }
        kern = fn; sub(/^fastcnn_/, "", kern)
        copy = kern; sub(/.*_f(32|64)_/, "", copy)
        sub(/_(avx512|avx2|baseline|portable)$/, "", kern)
        if (nloops) {
            line[copy] = line[copy] sprintf("%s%s %d/%d", (line[copy] == "" ? "" : ", "), kern, vrefs, refs)
            loops[copy] += nloops; total[copy] += refs; vtotal[copy] += vrefs
        }
        if (!(copy in seen)) { seen[copy] = 1; order[++ncopies] = copy }
        fn = ""
    }
    /^[0-9a-f]+ <[^>]+>:$/ {
        finish()
        name = $2; gsub(/[<>:]/, "", name)
        fn = (name ~ /^fastcnn_(row|filter)_.*_f(32|64)_(avx512|avx2|baseline|portable)$/) ? name : ""
        n = 0; nl = 0; fp = 0
        next
    }
    fn != "" && /^ *[0-9a-f]+:\t/ {
        line_text = $0
        sub(/^ *[0-9a-f]+:\t/, "", line_text)
        addr = $1; sub(/:$/, "", addr)
        n++
        text[n] = line_text
        a[n] = hex(addr)
        split(line_text, w, /[ \t]+/)
        op = w[1]
        fmaop[n] = (op ~ /^vfn?m(add|sub)/ || op ~ /^fml[as]$/ || op ~ /^fn?m(add|sub)$/) ? 1 : 0
        if (op ~ /^v?mulp[sd]$/) mul[n] = 1; else mul[n] = 0
        if (line_text ~ /mov +%rsp,%rbp/) fp = 1
        stack[n] = (line_text ~ /\(%rsp[,)]/ || (fp && line_text ~ /\(%rbp[,)]/) ||
                    line_text ~ /\[sp[],]/ || line_text ~ /\[x29[],]/) ? 1 : 0
        # a vector (or FP) register to or from the stack: a spilled accumulator or operand
        if (stack[n] && (line_text ~ /%[xyz]mm/ || line_text ~ /[ \t{]([qdsv])[0-9]+[,.}]/)) stack[n] = 2
        isjump = (op ~ /^j/ || op ~ /^b(\.[a-z]+)?$/ || op ~ /^(cbn?z|tbn?z)$/)
        if (isjump && match(line_text, /[0-9a-f]+ </)) {
            t = hex(substr(line_text, RSTART, RLENGTH - 2))
            if (t <= a[n]) {
                for (s = n; s > 1 && a[s] > t; s--) ;
                has = 0
                for (j = s; j <= n; j++) if (fmaop[j] || mul[j]) has = 1
                if (has) { nl++; lo[nl] = t; hi[nl] = a[n]; lo_idx[nl] = s; hi_idx[nl] = n }
            }
        }
    }
    END {
        finish()
        for (c = 1; c <= ncopies; c++) {
            copy = order[c]
            if (loops[copy] == "") { printf "    %-9s no multiply-add loops found\n", copy; continue }
            printf "    %-9s %d vector / %d scalar stack refs in %d innermost multiply-add loops: %s\n", copy, vtotal[copy], total[copy], loops[copy], line[copy]
        }
    }'
}

# spill_build CC OBJDUMP NAME: the report, on an object built as setup.py builds the
# extensions (-O3, GNU C: contraction on): -O2 spills where -O3 does not (avx512's
# row_weight_grad_f32 with gcc 12), so the test binaries' own code would mislead
spill_build() {
    local cc=$1 objdump=$2 name=$3 t0 t1
    t0=$(now)
    if "$cc" -O3 -std=gnu99 -DFASTCNN_NO_EMULATED_COPIES -I"$repo/csrc" -c "$src" \
        -o "$work/$name-O3.o" 2>"$work/$name-O3.log"; then
        t1=$(now)
        echo "    inner-loop stack references of an -O3 -std=gnu99 build ($(elapsed "$t0" "$t1")s;" \
            "informative; per kernel: vector/scalar):"
        spill_report "$objdump" "$work/$name-O3.o"
    else
        echo "    (the -O3 build for the spill report failed:" "$(head -n 3 "$work/$name-O3.log")" ")"
    fi
}

# ---------------------------------------------------------------- 1. native gcc

say "1. native gcc $(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion) ($(uname -m)): every copy this CPU runs"
if build "native-gcc" gcc "${gcc_flags[@]}" "$src" -o "$work/native"; then
    run_test "native-gcc" "$work/native" "$build_seconds"
    if ((spills)) && command -v objdump >/dev/null 2>&1; then
        spill_build gcc objdump native
    fi
fi

# ---------------------------------------------------------------- 2. tcc

say "2. tcc: the portable C copy (no vector extensions)"
if have_tcc; then
    if build "tcc" tcc -std=c99 -Wall -Werror -I"$repo/csrc" "$src" -o "$work/tcc"; then
        run_test "tcc" "$work/tcc" "$build_seconds"
    fi
else
    skip "tcc" "tcc not installed (Debian: apt-get install tcc)"
fi

# ---------------------------------------------------------------- 3. aarch64 under qemu

say "3. aarch64-linux-gnu-gcc -static under qemu: the baseline (NEON) and portable copies"
if have_cross && [[ -n $qemu ]]; then
    # without the emulated copies: portable C, run by the two builds above; under qemu's
    # software floating point they would take four times the rest
    if build "aarch64-qemu" aarch64-linux-gnu-gcc "${gcc_flags[@]}" -static \
        -DFASTCNN_NO_EMULATED_COPIES "$src" -o "$work/aarch64"; then
        run_test "aarch64-qemu" "$work/aarch64" "$build_seconds" "$qemu"
        if ((spills)) && command -v aarch64-linux-gnu-objdump >/dev/null 2>&1; then
            spill_build aarch64-linux-gnu-gcc aarch64-linux-gnu-objdump aarch64
        fi
    fi
else
    skip "aarch64-qemu" "needs aarch64-linux-gnu-gcc with libc6-dev-arm64-cross, and qemu-user"
fi

# ---------------------------------------------------------------- summary

say "summary"
for s in "${summary[@]}"; do echo "    $s"; done
echo "$total_passed passed, $total_failed failed"
if ((problems)); then exit 1; fi
