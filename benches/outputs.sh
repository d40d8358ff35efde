#!/usr/bin/env bash
# Output load harness (BENCHMARKS.md, "Outputs"): events through the spool to a real rsyslog
# over TCP and TLS and to osmem-server over _bulk, with elapsed time and peak RSS per step.
#
#   benches/outputs.sh [RECORDS_PER_FILE] [FILES]     (default 10000 x 100 = 1,000,000 records)
#
# Needs rsyslogd (+ rsyslog-gnutls), openssl, python3 and osmem-server (pip install
# osmem-server==0.1.6). Everything runs on loopback under a temporary directory; what it starts
# is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PER_FILE=${1:-10000}
FILES=${2:-100}
WORK=$(mktemp -d /tmp/dsm-outputs-XXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q
BIN=target/release/defender-dsm
python3 benches/make_stream.py "$WORK/in" "$FILES" "$PER_FILE"
TOTAL=$((PER_FILE * FILES))
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
measure() { # label, command...
    local label=$1; shift
    /usr/bin/time -f "$label: %e s elapsed, peak RSS %M KB" "$@" 2> "$WORK/err" >/dev/null || true
    grep -E "^$label:|^output " "$WORK/err"
}

TCP=$(port); TLS=$(port)
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" \
    -keyout "$WORK/ca-key.pem" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$WORK/key.pem" -out "$WORK/srv.csr" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$WORK/ext.cnf"
openssl x509 -req -days 1 -in "$WORK/srv.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca-key.pem" \
    -CAcreateserial -extfile "$WORK/ext.cnf" -out "$WORK/cert.pem" 2>/dev/null
mkdir -p "$WORK/rs"
cat > "$WORK/rsyslog.conf" <<EOF
global(workDirectory="$WORK/rs" maxMessageSize="64k"
       DefaultNetstreamDriverCAFile="$WORK/ca.pem" DefaultNetstreamDriverCertFile="$WORK/cert.pem"
       DefaultNetstreamDriverKeyFile="$WORK/key.pem")
module(load="imtcp" MaxSessions="10")
input(type="imtcp" address="127.0.0.1" port="$TCP" ruleset="q")
input(type="imtcp" address="127.0.0.1" port="$TLS" ruleset="q"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="q") { action(type="omfile" file="$WORK/received.log" template="raw") }
EOF

echo "== $TOTAL records; syslog spool while the receiver is down (memory while spooling)"
measure spool-leef "$BIN" translate --syslog "tcp://127.0.0.1:$TCP" --data-dir "$WORK/d1" "$WORK"/in/*.json
du -sh "$WORK/d1/spool" | sed 's/^/spool on disk: /'

rsyslogd -n -f "$WORK/rsyslog.conf" -i "$WORK/rs/pid" &
PIDS+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$TCP") 2>/dev/null; do sleep 0.1; done

echo "== drain of that spool to rsyslog over TCP"
measure drain-tcp "$BIN" translate --syslog "tcp://127.0.0.1:$TCP" --data-dir "$WORK/d1" /dev/null

echo "== translate + spool + send to rsyslog over TCP, receiver up"
measure send-tcp "$BIN" translate --syslog "tcp://127.0.0.1:$TCP" --data-dir "$WORK/d2" "$WORK"/in/*.json
echo "== the same over TLS"
measure send-tls "$BIN" translate --syslog "tls://127.0.0.1:$TLS" --tls-ca "$WORK/ca.pem" \
    --data-dir "$WORK/d3" "$WORK"/in/*.json
sleep 2
echo "lines received by rsyslog: $(wc -l < "$WORK/received.log") (expected $((TOTAL * 3)))"

OS=$(port)
BULK_FILES=$(( FILES < 10 ? FILES : 10 ))
BULK_IN=$(ls "$WORK"/in/*.json | head -n "$BULK_FILES")
echo "== $((PER_FILE * BULK_FILES)) records to _bulk: spooled while the cluster is down"
measure spool-bulk "$BIN" translate --bulk "http://127.0.0.1:$OS" --data-dir "$WORK/d4" \
    --spool-max-bytes 20000000000 $BULK_IN
du -sh "$WORK/d4/spool" | sed 's/^/spool on disk: /'
OSMEM=$(python3 -c 'import os, osmem_server; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))')
"$OSMEM" -addr "127.0.0.1:$OS" -no-stdin-watch >/dev/null 2>&1 &
PIDS+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$OS") 2>/dev/null; do sleep 0.1; done
echo "== drain to osmem-server"
measure drain-bulk "$BIN" translate --bulk "http://127.0.0.1:$OS" --data-dir "$WORK/d4" /dev/null
echo "documents stored: $(curl -s "http://127.0.0.1:$OS/logs-*/_count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')"
