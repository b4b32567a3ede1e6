#!/usr/bin/env bash
# The headline on a big host: 1 GiB/s of line protocol in, 4 GiB/s out to 4
# sinks, sluice measured beside the baseline relay in the same command.
#
#   tuning/headline.sh [OUT_DIR]
#
# Writes OUT_DIR (default ./headline): machine.txt (CPU, memory, kernel),
# tuning.txt (host settings in force), headline.txt (verify's report),
# headline.json and headline.svg. Knobs, from the environment:
#   SLUICE, LOADGEN   binaries (default: target/pgo/sluice when
#                     tuning/pgo.sh has built it, else target/release/sluice;
#                     target/release/sluice-loadgen; build with
#                     `cargo build --release --workspace`, or carry them)
#   RATE=1GiB/s DURATION=30s PAYLOAD=8192 THREADS=4 REPEAT=1 MAX_LOSS=0.001%
#   PIN=false         sluice's listen.pin (the sender shares the host's CPUs)
#   SOURCES=64        source ports per sender thread: THREADS × SOURCES flows
#                     over one shard per CPU. SO_REUSEPORT hashes each flow
#                     to one shard, so flows must far outnumber shards or some
#                     shards get twice their share (BENCHMARKS.md, tenth
#                     session: 16 flows over 2 shards split 75/25 and lost)
#   BALANCE=flow      `datagram` spreads each datagram instead (listen.balance,
#                     the baseline's --balance)
#   STEAL=off         `on`: sluice's listen.steal (caught-up shards take from a
#                     sibling whose socket is behind); measure it both ways
#                     with few SOURCES on a many-core host (fifteenth session)
#   MEMORY_DURATION=60s  then sluice alone at RATE for this long with the
#                     appliance's default sink settings (queue 256, 1 s),
#                     gated at 256 MiB peak RSS (loss is the first run's
#                     business): memory.txt, memory.json, memory.svg (RSS on
#                     the plot's right axis); 0 skips it
#   SUT_CPUS=0-3      then the first run again with the SUT (sluice, and the
#                     baseline) confined to these CPUs and the sender and the
#                     sinks on the rest (`verify --sut-cpus`): the issue's goal
#                     is 1 GiB/s in, 4 GiB/s out on at most 4 cores. cores.txt,
#                     cores.json, cores.svg. Default 0-3 on a host with 8 or
#                     more CPUs, else skipped; empty skips it
# THREADS is the sender's thread count: one moves ≈200k datagrams/s, so
# 1 GiB/s needs about 1 at 8 KiB and 4 at 1400 B; give it headroom.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-headline}
# The profile-guided build when there is one: what a production host runs.
default_sluice=target/release/sluice
[ -x target/pgo/sluice ] && default_sluice=target/pgo/sluice
sluice=${SLUICE:-$default_sluice}
loadgen=${LOADGEN:-target/release/sluice-loadgen}
for bin in "$sluice" "$loadgen"; do
    [ -x "$bin" ] || { echo "no $bin: cargo build --release --workspace (or set SLUICE/LOADGEN)" >&2; exit 2; }
done
mkdir -p "$out"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc)"
    grep -m1 'model name' /proc/cpuinfo || true
    grep MemTotal /proc/meminfo || true
    echo "sluice: $sluice ($("$sluice" --version 2>/dev/null || echo "no --version"))"
    git rev-parse --short HEAD 2>/dev/null | sed 's/^/tree: /' || true
} | tee "$out/machine.txt"

# Host settings the figures depend on; apply.sh needs root and says what it could not set.
bash tuning/apply.sh 2>&1 | tee "$out/tuning.txt" || true

# The same sluice, load and layout for both runs below.
load=(--sluice "$sluice" --rate "${RATE:-1GiB/s}" --payload "${PAYLOAD:-8192}"
    --threads "${THREADS:-4}" --sources "${SOURCES:-64}" --balance "${BALANCE:-flow}"
    --steal "${STEAL:-off}"
    --pin "${PIN:-false}" --no-progress)

status=0
"$loadgen" verify --compare-baseline "${load[@]}" \
    --duration "${DURATION:-30s}" --repeat "${REPEAT:-1}" --max-loss "${MAX_LOSS:-0.001%}" \
    --json "$out/headline.json" --plot "$out/headline.svg" \
    | tee "$out/headline.txt" || status=$?

# The memory target: peak RSS under full load at the default configuration.
if [ "${MEMORY_DURATION:-60s}" != 0 ]; then
    "$loadgen" verify "${load[@]}" \
        --duration "${MEMORY_DURATION:-60s}" \
        --queue-max-size 64MB --batch-max-age 1s --max-rss 256MiB --max-loss 100% \
        --json "$out/memory.json" --plot "$out/memory.svg" \
        | tee "$out/memory.txt" || status=$?
fi

# The core budget: the same load with the SUT on SUT_CPUS only.
default_cpus=""
[ "$(nproc)" -ge 8 ] && default_cpus=0-3
sut_cpus=${SUT_CPUS-$default_cpus}
if [ -n "$sut_cpus" ]; then
    "$loadgen" verify --compare-baseline "${load[@]}" --sut-cpus "$sut_cpus" \
        --duration "${DURATION:-30s}" --repeat "${REPEAT:-1}" --max-loss "${MAX_LOSS:-0.001%}" \
        --json "$out/cores.json" --plot "$out/cores.svg" \
        | tee "$out/cores.txt" || status=$?
fi
exit "$status"
