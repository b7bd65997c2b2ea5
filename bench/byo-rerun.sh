#!/usr/bin/env bash
# The cost of re-run verification against the round it checks (docs/benchmarks.md, "Re-run
# verification cost"): runs `btd demo --byo` and, for every claim the owner re-ran, prints the
# worker's own run of the command and the owner's whole re-run (tree rebuilt from the bundle and
# patch chain, sandbox start, the run with the holdout scored).
#   bench/byo-rerun.sh [ROUNDS]      (quick mode: ROUNDS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
btd="${BTD:-target/release/btd}"
[ -x "$btd" ] || btd=target/debug/btd
[ -x "$btd" ] || { cargo build -q --locked -p btd; btd=target/debug/btd; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$btd" demo --byo --rounds "$rounds" --dir "$dir/demo" > "$dir/demo.txt"
python3 - "$dir/demo" <<'PY'
import glob, json, re, statistics, sys
d = sys.argv[1]
rerun = {}
for line in open(f"{d}/owner.log", encoding="utf-8", errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.search(r"re-ran a claim .*seq=(\d+) runs=(\d+) secs=([0-9.]+)", line)
    if m:
        rerun[int(m.group(1))] = float(m.group(3))
rounds = {}
for path in glob.glob(f"{d}/worker-*/runs/*/round-*/run.json"):
    r = json.load(open(path))
    v = r.get("verdict") or {}
    ms = ((r.get("bundle") or {}).get("metrics") or {}).get("duration_ms")
    if v.get("seq") is not None and ms is not None:
        rounds[v["seq"]] = ms / 1000
rows = [(s, rounds[s], rerun[s]) for s in sorted(rerun) if s in rounds]
if not rows:
    sys.exit("no re-run claim matched a worker round")
print(f"{'seq':>4} {'round run (s)':>14} {'owner re-run (s)':>17} {'ratio':>6}")
for s, a, b in rows:
    print(f"{s:>4} {a:>14.3f} {b:>17.3f} {b / a:>6.2f}")
ratios = [b / a for _, a, b in rows]
print(f"claims re-run: {len(rows)}; ratio median {statistics.median(ratios):.2f}, "
      f"min {min(ratios):.2f}, max {max(ratios):.2f}")
PY
