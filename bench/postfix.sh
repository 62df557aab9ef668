#!/usr/bin/env bash
# Side by side with Postfix (issue 11): the same smtp-source load against a
# private Postfix 3.7 from Debian and against sluice built from this
# checkout, alternately, both relaying to the same counting sink on
# loopback (or both delivering into local files), fsync on.
#
#   bash bench/postfix.sh [-s SESSIONS] [-l SIZE] [-m COUNT] [-p PAIRS] [--mode smarthost|local]
#   bash bench/postfix.sh --matrix [-m COUNT] [-p PAIRS]   # 10/50/200 sessions x 1/10/100 KB x smarthost/local
#   bash bench/postfix.sh --dkim [-s ...]                   # sluice unsigned vs signed: signing's cost
#   bash bench/postfix.sh --against REV [-s ...]            # sluice at REV vs this checkout (A/B)
#     BASE_ENV=... NEW_ENV=...: environment of each side, e.g. NEW_ENV=GOMAXPROCS=1
#   --loopfs: run on a fresh ext4 of the run's own (mkfs.ext4 defaults, a
#   journal), on a loop device, instead of /tmp's file system
#
# Defaults: -s 50 -l 10240 -m 4000 -p 3 --mode smarthost; --matrix: -m 2000 -p 1.
# SLUICE_PROFILE=DIR saves a CPU profile of each measured sluice run (its
# first PROFILE_SECONDS, default 10), its heap once it is done, and the
# binary, for
#   go tool pprof -top DIR/sluice DIR/sluice-smarthost-s50-l10240-*.pprof
#
# Postfix: `apt-get download postfix` and `dpkg -x` into $SLUICE_BENCH_CACHE
# (default ~/.cache/sluice-bench); nothing is installed, no system file is
# touched. Its config, queue and data directories are under the run's work
# directory; master runs in the foreground (`master -c DIR -d`) as a child
# of this script. Postfix's master must start as root; its daemons then
# run as mail_owner = $PF_OWNER (default nobody), setgid_group = mail,
# default_privs = daemon (Postfix refuses root, or any two of these sharing
# a user or group id). No DNS (smtp_dns_support_level = disabled, relayhost
# an address literal), no local(8): mydestination is empty.
#   smarthost: relayhost = [127.0.0.1]:SINK; sluice delivery.mode smarthost
#              to the same sink, tls: none.
#   local:     Postfix's virtual(8) into a Maildir (tmp/ then new/, fsync:
#              the like of sluice's mail/RECIPIENT/ID.eml, written to a temp
#              name then renamed) vs sluice's delivery.mode local.
# sluice: the shipped rules.d copied with the rate limits raised for the
# load (hourly_sent, daily_sent, hourly_attempts), the client 127.0.0.1 in
# relay_networks (outbound), no DKIM key (except --dkim), no outbound_ips
# (spf_authorizes_relay looks nothing up), and dns.servers pointed at a
# silent loopback port so that a lookup, if a rule made one, would show as
# a stall instead of reaching the network.
#
# Per run: accepted msg/s (smtp-source's wall time), relayed msg/s (until
# the sink, or the mail directory, holds every message), CPU-seconds per
# 1,000 messages of the server's whole process tree (utime+stime+cutime+
# cstime of the server and all its live descendants, from /proc/PID/stat,
# before and after: for Postfix master and every daemon it ran, since
# master reaps its children and their time lands in its cutime/cstime),
# and received/unique counts (sent = received, no duplicate: the sink
# counts the relay's queue id of each message's top Received field).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

SESSIONS=50 SIZE=10240 COUNT="" PAIRS="" MODE=smarthost MODES="smarthost local" MATRIX=0 DKIM=0 LOOPFS=0 AGAINST=""
while [ $# -gt 0 ]; do
  case $1 in
    -s) SESSIONS=$2; shift 2 ;;
    -l) SIZE=$2; shift 2 ;;
    -m) COUNT=$2; shift 2 ;;
    -p) PAIRS=$2; shift 2 ;;
    --mode) MODE=$2 MODES=$2; shift 2 ;;
    --matrix) MATRIX=1; shift ;;
    --dkim) DKIM=1; shift ;;
    --against) AGAINST=$2; shift 2 ;;
    --loopfs) LOOPFS=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "postfix.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
  esac
done
if [ $MATRIX = 1 ]; then COUNT=${COUNT:-2000} PAIRS=${PAIRS:-1}; else COUNT=${COUNT:-4000} PAIRS=${PAIRS:-3}; fi
case $MODE in smarthost|local) ;; *) echo "postfix.sh: --mode is smarthost or local" >&2; exit 2 ;; esac
if [ "$(id -u)" != 0 ] && [ $DKIM = 0 ] && [ -z "$AGAINST" ]; then
  echo "postfix.sh: Postfix's master must be started as root (its daemons then drop to \$PF_OWNER); run as root" >&2
  exit 2
fi
PF_OWNER=${PF_OWNER:-nobody}
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

CACHE=${SLUICE_BENCH_CACHE:-$HOME/.cache/sluice-bench}
PF=$CACHE/postfix
if [ ! -x "$PF/usr/lib/postfix/sbin/master" ]; then
  mkdir -p "$CACHE/deb"
  (cd "$CACHE/deb" && apt-get download postfix >/dev/null)
  rm -rf "$PF.tmp" && dpkg -x "$CACHE"/deb/postfix_*.deb "$PF.tmp" && mv "$PF.tmp" "$PF"
fi
export LD_LIBRARY_PATH=$PF/usr/lib/postfix # the binaries' RUNPATH is /usr/lib/postfix
PFV=$("$PF/usr/sbin/postconf" -d -h mail_version 2>/dev/null || echo '?')

# The last invocation's files are deleted here, not when it ended, and the
# runs wait until ext4 stops passing over their freed inodes (see
# setaside): otherwise the relay measured first pays for them.
TRASH=$CACHE/trash
if [ -n "$(ls -A "$TRASH" 2>/dev/null)" ]; then
  echo "deleting the last run's files, then waiting ${SETTLE_SECONDS:-65} s for ext4 to stop skipping their inodes" >&2
  rm -rf "$TRASH" && sync && sleep "${SETTLE_SECONDS:-65}"
fi
mkdir -p "$TRASH"
BASE=/tmp
if [ $LOOPFS = 1 ]; then
  # A file system of the run's own: a fresh ext4 as mkfs.ext4 makes it
  # (with a journal, as Debian installs it), on a loop device backed by a
  # sparse file in the cache, unmounted and removed at the end.
  BASE=$(mktemp -d /tmp/sluice-bench-fs.XXXXXX) # Postfix's daemons cannot reach into $HOME
  truncate -s "${LOOPFS_SIZE:-8G}" "$CACHE/loopfs.img"
  mkfs.ext4 -q -F "$CACHE/loopfs.img" && mount -o loop "$CACHE/loopfs.img" "$BASE"
fi
work=$(mktemp -d "$BASE/sluice-bench.XXXXXX")
chmod 755 "$work"
# Each relay's directories in block groups of their own: ext4 puts a
# directory in its parent's group and a file's inode in its directory's,
# and a creation scans past the inodes freed in its group in the last
# 60-360 s (see setaside). Without this, Postfix deleting its queue files
# made sluice's next local run pay 430 us of CPU per mail file it created
# (32% of its CPU, in openat). With +T (the Orlov "top directory" hint)
# $work's subdirectories are spread over the groups like top-level ones.
chattr +T "$work" 2>/dev/null || echo "chattr +T failed: the relays' directories may share block groups" >&2
# Local mode's mail directories, each in a group of its own, apart from
# Postfix's queue (whose files it creates and deletes as it goes).
mkdir -p "$work/postfix-mail" "$work/sluice-mail" && chown "${PF_OWNER:-nobody}" "$work/postfix-mail"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ $LOOPFS = 1 ]; then
    umount "$BASE" && rmdir "$BASE" && rm -f "$CACHE/loopfs.img"
  else
    [ -n "${KEEP:-}" ] || mv "$work" "$TRASH/" 2>/dev/null || rm -rf "$work"
  fi
}
trap cleanup EXIT

go build -o "$work/sluice" ./cmd/sluice
if [ -n "$AGAINST" ]; then
  mkdir -p "$work/base-src"
  git archive "$AGAINST" | tar -x -C "$work/base-src"
  (cd "$work/base-src" && go build -o "$work/sluice-base" ./cmd/sluice)
fi
go build -o "$work/countsink" ./bench/countsink

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
SINK=$(freeport) SINKSTATS=$(freeport) PFPORT=$(freeport) SLPORT=$(freeport) SILENT=$(freeport)
"$work/countsink" -addr "127.0.0.1:$SINK" -stats "127.0.0.1:$SINKSTATS" 2> "$work/countsink.log" &
pids+=($!)
waitport "$SINK"

# The process tree's CPU in clock ticks: utime+stime+cutime+cstime of PID
# and all its live descendants.
cputicks() {
  python3 - "$1" <<'EOF'
import os, sys
root = int(sys.argv[1]); kids = {}; cpu = {}
for p in os.listdir('/proc'):
    if not p.isdigit(): continue
    try: s = open('/proc/%s/stat' % p).read()
    except OSError: continue
    f = s[s.rindex(')') + 2:].split()
    kids.setdefault(int(f[1]), []).append(int(p))
    cpu[int(p)] = sum(int(x) for x in f[11:15])
tot, todo = 0, [root]
while todo:
    p = todo.pop(); tot += cpu.get(p, 0); todo += kids.get(p, [])
print(tot)
EOF
}
TCK=$(getconf CLK_TCK)

# discard DIR...: out of the way, deleted when the next invocation starts
# (see setaside).
discard() {
  local p to
  for p in "$@"; do
    [ -e "$p" ] || continue
    mkdir -p "$work/old" && to=$(mktemp -d "$work/old/XXXXXX") && mv "$p" "$to/"
  done
  return 0
}

# --- Postfix ---------------------------------------------------------------
pf_start() { # MODE
  local d=$work/postfix
  discard "$d" && mkdir -p "$d/conf" "$d/queue" "$d/data"
  chown "$PF_OWNER" "$d/data"
  {
    echo "compatibility_level = 3.6"
    echo "queue_directory = $d/queue"
    echo "data_directory = $d/data"
    echo "daemon_directory = $PF/usr/lib/postfix/sbin"
    echo "command_directory = $PF/usr/sbin"
    echo "shlib_directory = $PF/usr/lib/postfix"
    echo "meta_directory = $PF/etc/postfix"
    echo "mail_owner = $PF_OWNER"
    echo "setgid_group = mail"
    echo "default_privs = daemon"
    echo "import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH=$PF/usr/lib/postfix"
    echo "maillog_file = $d/maillog"
    echo "maillog_file_prefixes = $d"
    echo "myhostname = postfix.bench.test"
    echo "mydomain = bench.test"
    echo "myorigin = bench.test"
    echo "mydestination ="
    echo "local_recipient_maps ="
    echo "alias_maps ="
    echo "alias_database ="
    echo "mynetworks = 127.0.0.0/8"
    echo "inet_interfaces = 127.0.0.1"
    echo "inet_protocols = ipv4"
    echo "smtp_dns_support_level = disabled"
    echo "smtp_host_lookup = native"
    echo "enable_long_queue_ids = yes"
    echo "biff = no"
    # 200 sessions need 200 smtpd processes (the default limit is 100).
    echo "default_process_limit = 250"
    if [ "$1" = smarthost ]; then
      echo "relayhost = [127.0.0.1]:$SINK"
    else
      echo "virtual_mailbox_domains = dest.test"
      echo "virtual_mailbox_base = $work/postfix-mail"
      echo "virtual_mailbox_maps = static:dest.test/"
      echo "virtual_uid_maps = static:$(id -u "$PF_OWNER")"
      echo "virtual_gid_maps = static:$(id -g "$PF_OWNER")"
    fi
  } > "$d/conf/main.cf"
  cat > "$d/conf/master.cf" <<EOF
127.0.0.1:$PFPORT inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
virtual   unix  - n n - - virtual
EOF
  # check creates the queue's directories with their owners and modes; its
  # warnings about postdrop/postqueue not being set-gid do not matter here
  # (nothing is submitted through them).
  "$PF/usr/sbin/postfix" -c "$d/conf" check 2>/dev/null || { echo "postfix check failed:"; tail -5 "$d/maillog"; exit 1; } >&2
  # setsid: master signals its own process group when it stops.
  setsid "$PF/usr/lib/postfix/sbin/master" -c "$d/conf" -d > "$d/master.out" 2>&1 &
  PFPID=$!
  pids+=($PFPID)
  waitport "$PFPORT"
}
pf_stop() { kill "$PFPID" 2>/dev/null || true; wait "$PFPID" 2>/dev/null || true; }

# --- sluice ----------------------------------------------------------------
mkdir -p "$work/rules.d"
cp rules.d/*.yaml "$work/rules.d/"
sed -i -E 's/(hourly_attempts|hourly_sent|daily_sent) > [0-9]+/\1 > 1000000000/' "$work/rules.d/20-limits.yaml"
"$work/sluice" check "$work/rules.d" > /dev/null
if [ $DKIM = 1 ]; then
  "$work/sluice" dkim keygen --out "$work/dkim.pem" bench.test bench > /dev/null
fi

sl_start() { # MODE SIGN
  local d=$work/sluice-state
  discard "$d"
  {
    echo "hostname: sluice.bench.test"
    echo "listen: [{addr: \"127.0.0.1:$SLPORT\", mode: plain}]"
    echo "state_dir: $d"
    echo "rules_dir: $work/rules.d"
    echo "relay_networks: [127.0.0.0/8]"
    echo "limits: {max_connections: 5000, max_connections_per_ip: 5000}"
    echo "dns: {servers: [\"127.0.0.1:$SILENT\"], timeout: 2s}"
    if [ "$1" = smarthost ]; then
      echo "delivery: {mode: smarthost, smarthost: {addr: \"127.0.0.1:$SINK\", tls: none}}"
    else
      echo "delivery: {mode: local, local_dir: $work/sluice-mail}"
    fi
    if [ "${2:-0}" = 1 ]; then
      echo "dkim_sign: [{domain: bench.test, selector: bench, key: $work/dkim.pem}]"
    fi
  } > "$work/sluice.yaml"
  env ${SLENV:-} "${SLBIN:-$work/sluice}" serve --config "$work/sluice.yaml" > "$work/sluice.out" 2> "$work/sluice.log" &
  SLPID=$!
  pids+=($SLPID)
  waitport "$SLPORT"
}
sl_stop() { kill "$SLPID" 2>/dev/null || true; wait "$SLPID" 2>/dev/null || true; }

# Local mode: the files in a mail directory, and their relay ids.
localcount() { # DIR -> "received unique newest-mtime"
  python3 - "$1" <<'EOF'
import os, re, sys
n, ids, newest = 0, set(), 0.0
rx = re.compile(rb'^Received:.*?\bid\s+([^\s;]+)', re.I | re.M | re.S)
for root, dirs, files in os.walk(sys.argv[1]):
    if os.path.basename(root) == 'tmp': continue
    for f in files:
        p = os.path.join(root, f)
        if root.endswith('tmp') or f.startswith('.') or '.tmp' in f: continue
        n += 1
        st = os.stat(p); newest = max(newest, st.st_mtime)
        with open(p, 'rb') as fh: head = fh.read(4096)
        m = rx.search(head)
        if m: ids.add(m.group(1))
print(n, len(ids), newest)
EOF
}

RESULTS=$work/results.tsv
: > "$RESULTS"

# setaside DIR: empties a mail directory for the next run by moving what
# is in it aside (into $work/old, deleted when the next invocation starts)
# and making its folders again, owners and modes kept (a relay may remember
# that they exist). Deleting the files instead would cost the next run
# dearly: ext4 passes over every inode freed in the last 60 s (360 s while
# its inode table block is dirty) when it allocates one in that block
# group, and on a file system without a journal, like this machine's,
# every allocation checks; with the last run's thousands of files just
# deleted in the same folder, each new file cost 0.5-1 ms of system CPU
# instead of ~75 us (perf: recently_deleted, find_inode_bit), charged to
# whichever relay ran next. The mail directories themselves stay, made
# once in block groups of their own (see chattr +T above), so that the
# folders made again here land where nothing was deleted.
setaside() {
  [ -d "$1" ] || return 0
  local to
  mkdir -p "$work/old" && to=$(mktemp -d "$work/old/XXXXXX")
  python3 - "$1" "$to" <<'EOF'
import os, sys
src, to = sys.argv[1:]
for name in os.listdir(src):
    os.rename(os.path.join(src, name), os.path.join(to, name))
    for root, dirs, files in os.walk(os.path.join(to, name)):
        d = os.path.normpath(os.path.join(src, os.path.relpath(root, to)))
        st = os.stat(root)
        os.makedirs(d, exist_ok=True)
        os.chown(d, st.st_uid, st.st_gid)
        os.chmod(d, st.st_mode & 0o7777)
EOF
}

# run NAME PORT PID MODE SESSIONS SIZE: one load, one line of figures.
run() {
  local name=$1 port=$2 pid=$3 mode=$4 s=$5 l=$6 maildir
  if [ "$mode" = local ]; then
    [ "$name" = postfix ] && maildir=$work/postfix-mail || maildir=$work/sluice-mail
    setaside "$maildir"
  fi
  curl -s -X POST "http://127.0.0.1:$SINKSTATS/reset" > /dev/null
  local c0 t0 t1 c1 rc=0
  local prof=""
  if [ -n "${SLUICE_PROFILE:-}" ] && [ "$name" != postfix ] && [ -z "${WARM:-}" ]; then
    # A CPU profile of the run's first PROFILE_SECONDS, from the admin socket.
    mkdir -p "$SLUICE_PROFILE" && cp "$work/sluice" "$SLUICE_PROFILE/sluice"
    curl -s --unix-socket "$work/sluice-state/admin.sock" "http://sluice/debug/pprof/profile?seconds=${PROFILE_SECONDS:-10}" \
      > "$SLUICE_PROFILE/$name-$mode-s$s-l$l-$(date +%H%M%S).pprof" &
    prof=$!
  fi
  c0=$(cputicks "$pid")
  t0=$(date +%s.%N)
  "$PF/usr/sbin/smtp-source" -s "$s" -m "$COUNT" -l "$l" -f from@bench.test -t to@dest.test "127.0.0.1:$port" > "$work/source.out" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  if [ $rc != 0 ] || [ -s "$work/source.out" ]; then
    echo "smtp-source against $name: exit $rc" >&2; head -5 "$work/source.out" >&2
  fi
  local got=0 uniq=0 last=0 deadline=$((SECONDS + 120 + COUNT / 20))
  while :; do
    if [ "$mode" = smarthost ]; then
      read -r got uniq last < <(curl -s "http://127.0.0.1:$SINKSTATS/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["received"], d["unique"], d["last"])') || true
    else
      read -r got uniq last < <(localcount "$maildir") || true
    fi
    [ "$got" -ge "$COUNT" ] && break
    [ $SECONDS -ge $deadline ] && { echo "$name: only $got of $COUNT arrived in time" >&2; break; }
    sleep 0.2
  done
  [ -z "$prof" ] || wait "$prof" || true
  if [ -n "$prof" ]; then # and what is live on the heap once the run is done
    curl -s --unix-socket "$work/sluice-state/admin.sock" "http://sluice/debug/pprof/heap?gc=1" \
      > "$SLUICE_PROFILE/$name-$mode-s$s-l$l-$(date +%H%M%S).heap" || true
  fi
  sleep 0.5 # let the relay finish removing what it delivered
  c1=$(cputicks "$pid")
  if [ "$mode" = local ]; then read -r got uniq last < <(localcount "$maildir") || true; fi
  python3 - "$name" "$COUNT" "$t0" "$t1" "$last" "$c0" "$c1" "$TCK" "$got" "$uniq" >> "$RESULTS" <<'EOF'
import sys
name, n, t0, t1, last, c0, c1, tck, got, uniq = sys.argv[1:]
n, t0, t1, last = int(n), float(t0), float(t1), float(last)
cpu = (int(c1) - int(c0)) / int(tck)
acc = n / (t1 - t0)
rel = n / (last - t0) if last > t0 else 0
print("%s\t%.1f\t%.1f\t%.2f\t%s\t%s" % (name, acc, rel, cpu * 1000 / n, got, uniq))
EOF
  tail -1 "$RESULTS" | awk -F'\t' -v n="$COUNT" '{printf "  %-13s accepted %7s msg/s  relayed %7s msg/s  CPU %6s s/1000 msg  sink %s/%s unique %s%s\n", $1, $2, $3, $4, $5, n, $6, ($5==n && $6==n) ? "" : "  <-- LOSS OR DUPLICATE"}'
}

# summarize A B TITLE: per pair ratios of B over A and their medians.
summarize() {
  python3 - "$RESULTS" "$1" "$2" "$3" <<'EOF'
import sys, statistics as st
path, a, b, title = sys.argv[1:]
rows = [l.rstrip('\n').split('\t') for l in open(path) if l.strip()]
A = [r for r in rows if r[0] == a]; B = [r for r in rows if r[0] == b]
ra, rr, rc = [], [], []
for i, (x, y) in enumerate(zip(A, B), 1):
    r1 = float(y[1]) / float(x[1]); r2 = float(y[2]) / float(x[2]) if float(x[2]) else 0
    r3 = float(y[3]) / float(x[3]) if float(x[3]) else 0
    ra.append(r1); rr.append(r2); rc.append(r3)
    print("  pair %d: %s/%s accepted %.2fx  relayed %.2fx  CPU/msg %.2fx" % (i, b, a, r1, r2, r3))
ok = all(r[4] == r[5] and int(r[4]) > 0 for r in A + B)
if ra:
    print("%s median of %d pairs: accepted %.2fx (%.2f-%.2f)  relayed %.2fx (%.2f-%.2f)  CPU/msg %.2fx (%.2f-%.2f)  sent=received, no duplicate: %s" % (
        title, len(ra), st.median(ra), min(ra), max(ra), st.median(rr), min(rr), max(rr), st.median(rc), min(rc), max(rc), "yes" if ok else "NO"))
    print("MEDIAN\t%s\t%.2f\t%.2f\t%.2f\t%s\t%.1f\t%.1f\t%.2f\t%.1f\t%.1f\t%.2f" % (title, st.median(ra), st.median(rr), st.median(rc), "ok" if ok else "LOSS",
        st.median(float(r[1]) for r in A), st.median(float(r[2]) for r in A), st.median(float(r[3]) for r in A),
        st.median(float(r[1]) for r in B), st.median(float(r[2]) for r in B), st.median(float(r[3]) for r in B)))
EOF
}

# pairs MODE SESSIONS SIZE
pairs() {
  local mode=$1 s=$2 l=$3
  : > "$RESULTS"
  echo "== $mode, $s sessions, $l-byte messages, $COUNT messages, $PAIRS pairs (Postfix $PFV vs sluice $(git describe --always --dirty 2>/dev/null))"
  pf_start "$mode"
  sl_start "$mode" 0
  # Warm-up, not counted: each server starts its processes (Postfix's
  # smtpd, cleanup, smtp...) and caches before the first measured run.
  local keep=$COUNT
  COUNT=$((keep / 10 < 50 ? 50 : keep / 10))
  WARM=1 run postfix "$PFPORT" "$PFPID" "$mode" "$s" "$l" > /dev/null
  WARM=1 run sluice "$SLPORT" "$SLPID" "$mode" "$s" "$l" > /dev/null
  COUNT=$keep
  : > "$RESULTS"
  for i in $(seq "$PAIRS"); do
    run postfix "$PFPORT" "$PFPID" "$mode" "$s" "$l"
    run sluice "$SLPORT" "$SLPID" "$mode" "$s" "$l"
  done
  pf_stop
  sl_stop
  summarize postfix sluice "$mode s=$s l=$l" | tee -a "$work/medians" | grep -v '^MEDIAN'
}

if [ $DKIM = 1 ]; then
  # Signing's cost: the same sluice without and with a DKIM key for the
  # sender's domain, alternately (a restart between, to swap the config).
  : > "$RESULTS"
  echo "== DKIM signing (RSA 2048, relaxed/relaxed): $MODE, $SESSIONS sessions, $SIZE-byte messages, $COUNT messages, $PAIRS pairs"
  for i in $(seq "$PAIRS"); do
    sl_start "$MODE" 0; run unsigned "$SLPORT" "$SLPID" "$MODE" "$SESSIONS" "$SIZE"; sl_stop
    sl_start "$MODE" 1; run signed "$SLPORT" "$SLPID" "$MODE" "$SESSIONS" "$SIZE"; sl_stop
  done
  summarize unsigned signed "dkim" | grep -v '^MEDIAN'
  python3 - "$RESULTS" <<'EOF'
import sys, statistics as st
rows = [l.split('\t') for l in open(sys.argv[1]) if l.strip()]
u = [float(r[3]) for r in rows if r[0] == 'unsigned']; s = [float(r[3]) for r in rows if r[0] == 'signed']
d = [b - a for a, b in zip(u, s)]
print("signing costs %.2f CPU-ms per message (median of %d pairs; %.2f to %.2f)" % (st.median(d), len(d), min(d), max(d)))
EOF
  exit 0
fi

if [ -n "$AGAINST" ]; then
  # A change's effect: sluice built at REV and this checkout, alternately,
  # each started afresh and warmed up before its measured run, so that
  # neither inherits the other's state or the machine's drift in one
  # direction.
  : > "$RESULTS"
  echo "== $(git rev-parse --short "$AGAINST") vs $(git describe --always --dirty): $MODE, $SESSIONS sessions, $SIZE-byte messages, $COUNT messages, $PAIRS pairs"
  keep=$COUNT
  for i in $(seq "$PAIRS"); do
    for side in base new; do
      if [ $side = base ]; then SLBIN=$work/sluice-base SLENV=${BASE_ENV:-}; else SLBIN=$work/sluice SLENV=${NEW_ENV:-}; fi
      sl_start "$MODE" 0
      COUNT=$((keep / 10 < 50 ? 50 : keep / 10)) WARM=1 run "$side" "$SLPORT" "$SLPID" "$MODE" "$SESSIONS" "$SIZE" > /dev/null
      sed -i '$d' "$RESULTS" # the warm-up's line
      COUNT=$keep run "$side" "$SLPORT" "$SLPID" "$MODE" "$SESSIONS" "$SIZE"
      sl_stop
    done
  done
  summarize base new "$MODE s=$SESSIONS l=$SIZE" | grep -v '^MEDIAN'
  exit 0
fi

if [ $MATRIX = 0 ]; then
  pairs "$MODE" "$SESSIONS" "$SIZE"
  exit 0
fi
for mode in $MODES; do # --mode with --matrix: that mode's half only
  for s in 10 50 200; do
    for l in 1024 10240 102400; do
      pairs "$mode" "$s" "$l"
    done
  done
done
echo
echo "== matrix: sluice/Postfix, medians over $PAIRS pair(s) of $COUNT messages (Postfix | sluice: accepted msg/s, relayed msg/s, CPU-s/1000)"
printf '%-26s %9s %9s %9s  %-24s %-24s %s\n' run accepted relayed CPU/msg Postfix sluice "sent=received"
grep '^MEDIAN' "$work/medians" | while IFS=$'\t' read -r _ t a r c ok pa pr pc sa sr sc; do
  printf '%-26s %8sx %8sx %8sx  %-24s %-24s %s\n' "$t" "$a" "$r" "$c" "$pa/$pr/$pc" "$sa/$sr/$sc" "$ok"
done
