#!/usr/bin/env bash
# Delivery under sustained load (issue 11): `sluice serve` with the
# default rules and fsync on takes CONC clients sending SIZE-byte messages
# for DURATION (bench/smtpload), and delivers them to a go-smtp sink
# (bench/smtpsink, mode smarthost) or into its local folder (mode local).
# It prints the acceptance rate, what was delivered meanwhile, the backlog
# when the load stops, the time to drain it, the relayed rate end to end,
# the sink's connection count and the relay's CPU-seconds per 1,000
# messages. SRC builds sluice from another tree (e.g. an older commit,
# unpacked with git archive) to compare; CONNS sets
# delivery.connections_per_destination (smarthost mode).
# Usage: [SRC=dir] [CONNS=n] bash bench/delivery.sh [smarthost|local] [DURATION] [CONC] [SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-smarthost}
DUR=${2:-10s}
CONC=${3:-50}
SIZE=${4:-10240}
SRC=${SRC:-$PWD}
ulimit -n 16384 2>/dev/null || true
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$SRC" && go build -o "$work/sluice" ./cmd/sluice)
go build -o "$work/smtpload" ./bench/smtpload
go build -o "$work/smtpsink" ./bench/smtpsink
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport)
sinkport=$(freeport)
hash=$(echo bench | "$work/sluice" passwd)
{
  echo "hostname: bench.local"
  echo "listen: [{addr: \"127.0.0.1:$port\", mode: plain}]"
  echo "allow_insecure_auth: true   # AUTH without TLS on loopback: local benchmarking only"
  echo "state_dir: $work/state"
  echo "rules_dir: $PWD/rules.d"
  echo "limits: {max_connections: 5000, max_connections_per_ip: 5000}"
  if [ "$MODE" = local ]; then
    echo "delivery: {mode: local}"
  else
    echo "delivery: {mode: smarthost, smarthost: {addr: \"127.0.0.1:$sinkport\", tls: none}${CONNS:+, connections_per_destination: $CONNS}}"
  fi
  echo "accounts:"
  echo "  - name: bench"
  echo "    domains: [bench.test]"
  echo "    users:"
  for i in $(seq 1 100); do
    printf '      - {name: bench-%02d, password_hash: "%s"}\n' "$i" "$hash"
  done
} > "$work/sluice.yaml"
"$work/smtpsink" -addr "127.0.0.1:$sinkport" -every 100ms > "$work/sink.txt" &
pids+=($!)
"$work/sluice" serve --config "$work/sluice.yaml" > "$work/out.txt" 2> "$work/log.json" &
pid=$!
pids+=($pid)
for _ in $(seq 100); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
delivered() {
  if [ "$MODE" = local ]; then
    find "$work/state/mail" -name '*.eml' 2>/dev/null | wc -l
  else
    n=$(tail -1 "$work/sink.txt" | sed 's/.*messages=\([0-9]*\).*/\1/')
    echo "${n:-0}"
  fi
}
cpu() { awk '{print $14+$15}' "/proc/$pid/stat"; }
tck=$(getconf CLK_TCK)
# The clock and the CPU count start at the first delivered message: the
# clients' connections and AUTH (bcrypt) before it are not delivery's.
(
  while [ "$(delivered)" -eq 0 ]; do sleep 0.05; done
  echo "$(cpu) $(date +%s.%N)" > "$work/start.txt"
) &
"$work/smtpload" -addr "127.0.0.1:$port" -c "$CONC" -size "$SIZE" -duration "$DUR" -users 100 -per-conn 280 | tee "$work/load.txt"
t1=$(date +%s.%N)
accepted=$(sed -n 's/.*: \([0-9]*\) messages accepted.*/\1/p' "$work/load.txt")
read -r c0 t0 < "$work/start.txt"
sleep 0.2
atload=$(delivered)
for _ in $(seq 1200); do
  [ "$(delivered)" -ge "$accepted" ] && break
  sleep 0.1
done
t2=$(date +%s.%N)
c1=$(cpu)
final=$(delivered)
sleep 1
final=$(delivered)
python3 - "$accepted" "$atload" "$final" "$t0" "$t1" "$t2" "$c0" "$c1" "$tck" <<'PY'
import sys
acc, atload, final = map(int, sys.argv[1:4])
t0, t1, t2 = map(float, sys.argv[4:7])
c0, c1, tck = map(int, sys.argv[7:10])
load, total = t1 - t0, t2 - t0
print(f"accepted {acc}; delivered during the load {atload} ({atload/load:.0f}/s over {load:.1f}s); backlog when the load stopped {acc-atload}")
print(f"drained in {t2-t1:.1f}s more; relayed end to end {final/total:.0f}/s; delivered {final} of {acc} accepted")
print(f"relay CPU {(c1-c0)/tck:.1f}s: {(c1-c0)/tck/max(final,1)*1000:.2f} CPU-seconds per 1,000 messages")
PY
if [ "$MODE" != local ]; then tail -1 "$work/sink.txt"; fi
