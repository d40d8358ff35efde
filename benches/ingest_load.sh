#!/usr/bin/env bash
# Load harness for `serve` (BENCHMARKS.md, "HTTP ingest"): wrk posts Event Hubs bodies of
# RECORDS records over CONNECTIONS connections for SECONDS; the service sends LEEF to a real
# rsyslog over TCP and writes a LEEF file. Reports accepted records/s and the latency of the
# 202 (p50/p90/p99), then checks that the file and rsyslog hold every accepted record.
#
#   benches/ingest_load.sh [RECORDS] [CONNECTIONS] [SECONDS]     (default 100 8 20)
#
# Needs wrk, rsyslogd, python3 (Debian: wrk rsyslog). What it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-100}
CONNS=${2:-8}
SECONDS_=${3:-20}
WORK=$(mktemp -d /tmp/dsm-ingest-XXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -q
BIN=$PWD/target/release/defender-dsm
python3 benches/make_stream.py "$WORK/body" 1 "$RECORDS" >/dev/null
BODY=$WORK/body/stream-0000.json

TCP=$(port); HTTP=$(port)
mkdir -p "$WORK/rs"
cat > "$WORK/rsyslog.conf" <<CONF
global(workDirectory="$WORK/rs" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="$TCP" ruleset="q")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="q") { action(type="omfile" file="$WORK/received.log" template="raw") }
CONF
rsyslogd -n -f "$WORK/rsyslog.conf" -i "$WORK/rs/pid" &
PIDS+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$TCP") 2>/dev/null; do sleep 0.1; done

cat > "$WORK/serve.toml" <<CONF
data_dir = "$WORK/data"
[http]
listen = "127.0.0.1:$HTTP"
[logging]
level = "warn"
[[outputs]]
name = "qradar"
type = "syslog"
url = "tcp://127.0.0.1:$TCP"
[[outputs]]
name = "file"
type = "file"
path = "$WORK/out.leef"
format = "leef"
rotate_bytes = 0
CONF
"$BIN" serve --config "$WORK/serve.toml" 2> "$WORK/serve.log" &
SERVE=$!
PIDS+=($SERVE)
until (exec 3<>"/dev/tcp/127.0.0.1/$HTTP") 2>/dev/null; do sleep 0.1; done

cat > "$WORK/post.lua" <<LUA
local f = assert(io.open("$BODY", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("requests %d, errors %d, %.1f s\n", summary.requests, bad, summary.duration / 1e6))
  io.write(string.format("records/s %.0f\n", summary.requests * $RECORDS / (summary.duration / 1e6)))
  for _, p in pairs({50, 90, 99, 99.9}) do
    io.write(string.format("p%s %.1f ms\n", p, latency:percentile(p) / 1000))
  end
end
LUA
echo "== $CONNS connections, $RECORDS records per request ($(wc -c < "$BODY") bytes), ${SECONDS_}s"
wrk -t2 -c"$CONNS" -d"${SECONDS_}s" -s "$WORK/post.lua" "http://127.0.0.1:$HTTP/v1/ingest" | tail -n 7
kill -TERM "$SERVE"; wait "$SERVE" || true
sleep 1
echo "file lines: $(wc -l < "$WORK/out.leef"), rsyslog lines: $(wc -l < "$WORK/received.log")"
