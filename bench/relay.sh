#!/usr/bin/env bash
# The relay benchmark of issue 3, on loopback: `sluice serve` with the
# default rules (rules.d) and fsync on, 50 concurrent clients sending 10 KB
# messages (throughput, p50/p99 latency of the final 250; each client
# connects and authenticates before the clock starts, and moves to a new
# SMTP user every 280 messages to stay under the default 300/hour limit),
# and RSS with 1,000 idle sessions. Usage: bash bench/relay.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
ulimit -n 16384 2>/dev/null || true
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/sluice" ./cmd/sluice
go build -o "$work/smtpload" ./bench/smtpload
hash=$(echo bench | "$work/sluice" passwd)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  echo "hostname: bench.local"
  echo "listen: [{addr: \"127.0.0.1:$port\", mode: plain}]"
  echo "allow_insecure_auth: true   # AUTH without TLS on loopback: local benchmarking only"
  echo "state_dir: $work/state"
  echo "rules_dir: $PWD/rules.d"
  echo "limits: {max_connections: 5000, max_connections_per_ip: 5000}"
  echo "delivery: {mode: local}"
  echo "accounts:"
  echo "  - name: bench"
  echo "    domains: [bench.test]"
  echo "    users:"
  for i in $(seq 1 100); do
    printf '      - {name: bench-%02d, password_hash: "%s"}\n' "$i" "$hash"
  done
} > "$work/sluice.yaml"
"$work/sluice" serve --config "$work/sluice.yaml" > "$work/out.txt" 2> "$work/log.json" &
pid=$!
for _ in $(seq 100); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "== memory: 1,000 idle sessions on the freshly started relay"
"$work/smtpload" -addr "127.0.0.1:$port" -idle 1000 -pid $pid
echo "== throughput: 50 clients, 10 KB messages, default rules, fsync on, $DUR"
"$work/smtpload" -addr "127.0.0.1:$port" -c 50 -size 10240 -duration "$DUR" -users 100 -per-conn 280
delivered=$(find "$work/state/mail" -name '*.eml' | wc -l)
echo "delivered into the local folder so far: $delivered"
