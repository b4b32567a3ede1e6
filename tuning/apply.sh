#!/usr/bin/env bash
# Apply (or, with --report, only print) the host settings sluice's
# measurements depend on. Run as root on the appliance host.
#   tuning/apply.sh            apply and report
#   tuning/apply.sh --report   report only
set -euo pipefail

# Socket receive buffers: sluice asks for listen.read_buffer_size per socket
# (default 32 MiB); the kernel caps SO_RCVBUF at rmem_max unless the process
# has CAP_NET_ADMIN (the systemd unit does not grant it).
RMEM_MAX=${RMEM_MAX:-67108864}        # 64 MiB
RMEM_DEFAULT=${RMEM_DEFAULT:-8388608} # 8 MiB
# Packets queued per CPU between the NIC driver and the socket layer.
NETDEV_MAX_BACKLOG=${NETDEV_MAX_BACKLOG:-250000}
# Busy polling (µs): lower latency at the cost of CPU; 0 leaves it off.
BUSY_POLL=${BUSY_POLL:-0}
BUSY_READ=${BUSY_READ:-0}

settings=(
    "net.core.rmem_max=$RMEM_MAX"
    "net.core.rmem_default=$RMEM_DEFAULT"
    "net.core.netdev_max_backlog=$NETDEV_MAX_BACKLOG"
    "net.core.busy_poll=$BUSY_POLL"
    "net.core.busy_read=$BUSY_READ"
)

if [ "${1:-}" != "--report" ]; then
    for s in "${settings[@]}"; do
        sysctl -q -w "$s" || echo "could not set $s" >&2
    done
fi

echo "host settings in force:"
for s in "${settings[@]}"; do
    key=${s%%=*}
    printf '  %-32s %s\n' "$key" "$(sysctl -n "$key" 2>/dev/null || echo '?')"
done
printf '  %-32s %s\n' "kernel.io_uring_disabled" "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 'n/a')"
printf '  %-32s %s\n' "cpus (nproc)" "$(nproc)"
