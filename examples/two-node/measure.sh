#!/usr/bin/env bash
# Measures the two-process link against `qkd link` on the same machine, in one run:
#   examples/two-node/measure.sh SECONDS [CHANNEL_RTT_MS]
# Copies this example to a temporary directory, runs the bench and both nodes (optionally with a
# delay on the classical channel), lets them warm up for 10 s, then counts Bob's secret bits over
# SECONDS of wall time, and prints one JSON object: Bob's status at the end, the secret bits per
# wall second, and `qkd link`'s secret key rate (per second of link time) for the same preset and
# distance. Expects `qkd` on PATH (e.g. target/release).
set -euo pipefail
seconds=${1:?usage: measure.sh SECONDS [CHANNEL_RTT_MS]}
rtt=${2:-0}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
cp -r "$here"/. "$dir"
cd "$dir"
if [ "$rtt" != 0 ]; then
    sed -i "s/^\[network\]$/[network]\nchannel_rtt_ms = $rtt/" alice.toml bob.toml
fi
qkd auth init --dir secrets >/dev/null
qkd pki init --dir pki --kme alice --kme bob --sae sae-a --sae sae-b >/dev/null
qkd sim serve --config bench.toml >bench.log 2>&1 &
while [ ! -f bench/bench.json ]; do sleep 0.1; done
qkd node --config alice.toml >alice.log 2>&1 &
qkd node --config bob.toml >bob.log 2>&1 &
sleep 10
before=$(qkd node status --config bob.toml --json)
sleep "$seconds"
status=$(qkd node status --config bob.toml --json)
distance=$(sed -n 's/^distance_km = //p' bench.toml)
preset=$(sed -n 's/^preset = "\(.*\)"/\1/p' bench.toml)
reference=$(qkd link --preset "$preset" --distance-km "$distance" --seconds 2 --json)
python3 - "$before" "$status" "$reference" "$seconds" "$rtt" <<'EOF'
import json, sys
before, status, reference = (json.loads(a) for a in sys.argv[1:4])
seconds, rtt = float(sys.argv[4]), float(sys.argv[5])
print(json.dumps({
    "wall_s": seconds,
    "channel_rtt_ms": rtt,
    "bob": status,
    "two_node_secret_bps_wall": (status["secret_bits"] - before["secret_bits"]) / seconds,
    "link_secret_key_rate_bps": reference["secret_key_rate_bps"],
    "link_wall_s": reference["wall_s"],
    "link_seconds": reference["seconds"],
}, indent=2))
EOF
