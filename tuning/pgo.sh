#!/usr/bin/env bash
# Build sluice with profile-guided optimisation (PGO) for a production host.
#
#   tuning/pgo.sh [--skip-if-no-tools]      # → target/pgo/sluice
#
# Three steps: an instrumented sluice runs the load generator's workload
# (`sluice-loadgen verify`, telegraf-shaped lines) and records which branches
# and calls the per-line path takes; `llvm-profdata` merges the counts; the
# optimised build uses them for inlining, block layout and branch weights.
# It changes no behaviour — the same source, laid out for the traffic it
# sees. On the dev host it cut the shards' user time by 11–14 % and sluice's
# CPU per GiB by ≈5 % (BENCHMARKS.md, "Seventh session").
#
# Needs a rustc with LLVM's profiler runtime (rustup's toolchains have it)
# and `llvm-profdata` from the same LLVM as rustc: the `llvm-tools` rustup
# component (installed here if missing), else a Debian `llvm-<major>`.
# With --skip-if-no-tools, a host without them exits 0 with a notice
# instead of failing (CI uses this).
#
# Knobs (environment):
#   TRAIN_RATE=100MB/s TRAIN_DURATION=5s TRAIN_PAYLOADS="1400 8192"
#   TRAIN_RULES="none mixed"   `verify --rules` tables to train with: without
#                   rules the routing code is never run and stays unoptimised
#   TRAIN_ARGS=""   more `verify` options for the training runs, e.g. the
#                   shape of your fleet's lines: "--fields 12 --precision ms"
# Then run it like any sluice (the systemd unit expects /usr/local/bin/sluice),
# or measure it:  target/release/sluice-loadgen verify --sluice target/pgo/sluice
set -euo pipefail
cd "$(dirname "$0")/.."

skip_if_no_tools=false
[ "${1:-}" = "--skip-if-no-tools" ] && skip_if_no_tools=true

target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
out="$target/pgo"
host=$(rustc -vV | sed -n 's/^host: //p')
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')

no_tools() {
    echo "pgo: $1" >&2
    if $skip_if_no_tools; then
        echo "pgo: skipped (the tools for a profile-guided build are not here)"
        exit 0
    fi
    exit 2
}

# The instrumented build links LLVM's profiler runtime, which rustup's
# toolchains ship and some distribution builds of rustc do not.
if ! ls "$(rustc --print sysroot)/lib/rustlib/$host/lib/"libprofiler_builtins-*.rlib >/dev/null 2>&1; then
    no_tools "this rustc has no profiler runtime (profiler_builtins); a rustup toolchain has it"
fi

# llvm-profdata of rustc's own LLVM: its raw profile format is what the
# instrumented binary writes.
find_profdata() {
    local sysroot_tool
    sysroot_tool="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
    for tool in "$sysroot_tool" "llvm-profdata-$llvm_major" "/usr/lib/llvm-$llvm_major/bin/llvm-profdata"; do
        if command -v "$tool" >/dev/null 2>&1; then
            echo "$tool"
            return 0
        fi
    done
    return 1
}
profdata=$(find_profdata || true)
if [ -z "$profdata" ]; then
    rustup component add llvm-tools >&2 || true
    profdata=$(find_profdata || true)
fi
if [ -z "$profdata" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -q && apt-get install -y -q "llvm-$llvm_major"; } >&2 || true
    profdata=$(find_profdata || true)
fi
[ -n "$profdata" ] || no_tools "no llvm-profdata for rustc's LLVM $llvm_major (rustup component add llvm-tools, or apt-get install llvm-$llvm_major)"
echo "pgo: $("$profdata" --version | grep -m1 -i 'llvm version' | sed 's/^ *//') at $profdata"

# `--target` keeps RUSTFLAGS off build scripts and proc macros: only the
# code that ships is instrumented, and only its profile is written.
raw="$out/raw"
rm -rf "$raw" "$out/sluice"
mkdir -p "$out"
echo "pgo: 1/3 instrumented build"
RUSTFLAGS="-Cprofile-generate=$raw" CARGO_TARGET_DIR="$target/pgo-gen" \
    cargo build --release -p sluice --target "$host"
cargo build --release -p sluice-loadgen

echo "pgo: 2/3 training"
for payload in ${TRAIN_PAYLOADS:-1400 8192}; do
    for rules in ${TRAIN_RULES:-none mixed}; do
        # shellcheck disable=SC2086 # TRAIN_ARGS is a list of options
        "$target/release/sluice-loadgen" verify \
            --sluice "$target/pgo-gen/$host/release/sluice" \
            --rate "${TRAIN_RATE:-100MB/s}" --duration "${TRAIN_DURATION:-5s}" \
            --payload "$payload" --rules "$rules" --no-progress ${TRAIN_ARGS:-} |
            grep -E '^ *(offered|result|SUT cpu )' || true
    done
done
# verify stops sluice with SIGTERM; sluice exits normally and writes its profile then.
ls "$raw"/*.profraw >/dev/null 2>&1 || { echo "pgo: the training wrote no profile" >&2; exit 1; }
"$profdata" merge -o "$out/sluice.profdata" "$raw"/*.profraw

echo "pgo: 3/3 optimised build"
RUSTFLAGS="-Cprofile-use=$out/sluice.profdata" CARGO_TARGET_DIR="$target/pgo-use" \
    cargo build --release -p sluice --target "$host"
cp "$target/pgo-use/$host/release/sluice" "$out/sluice"
echo "pgo: built $out/sluice"
