#!/usr/bin/env bash
# The soak: the demo fleet at full speed (an hour a second, 75 simulated days, so it never
# catches up with now) for SOAK_MINUTES (default 30), the RSS of forewarn and forewarn-sim
# sampled every 10 s, then plotted (docs/soak/rss.png). Runs in a scratch directory of its
# own (its own private PostgreSQL cluster) on HTTP port SOAK_PORT (default 18090).
#
#   docs/soak/run.sh            # after cargo build --release --workspace
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release/forewarn"
minutes="${SOAK_MINUTES:-30}"
work="$(mktemp -d /tmp/forewarn-soak.XXXXXX)"
chmod 755 "$work"  # the private cluster runs as postgres, under it
cp -r "$root/models" "$work/"
cd "$work"
FOREWARN_HTTP_ADDR="127.0.0.1:${SOAK_PORT:-18090}" \
    "$bin" demo --sim-days 75 --speed 3600 --duration "${minutes}m" > demo.log 2>&1 &
demo=$!
sleep 5
echo "seconds,forewarn_kib,sim_kib" > rss.csv
start=$(date +%s)
while kill -0 "$demo" 2>/dev/null; do
    sim=$(pgrep -f "forewarn-sim live" | head -1 || true)
    fw_kib=$(ps -o rss= -p "$demo" 2>/dev/null | tr -d ' ' || true)
    sim_kib=$(ps -o rss= -p "${sim:-0}" 2>/dev/null | tr -d ' ' || true)
    echo "$(( $(date +%s) - start )),${fw_kib:-0},${sim_kib:-0}" >> rss.csv
    sleep 10
done
grep "^kpi:" demo.log | tail -1
venv=/var/tmp/forewarn-plot-venv
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib; }
cp rss.csv "$root/docs/soak/rss.csv"
"$venv/bin/python" "$root/docs/soak/plot.py" rss.csv "$root/docs/soak/rss.png" \
    "forewarn demo, ${minutes} min at an hour a second: RSS" ${SOAK_BEFORE:+"$SOAK_BEFORE"}
# SOAK_BEFORE=docs/soak/rss-before.csv draws the run before the broker bound beside it.
echo "soak: $work (demo.log, rss.csv); plot in docs/soak/rss.png"
