#!/usr/bin/env bash
# Candle vs PyTorch-eager training benchmark (docs/benchmarks.md, "Training").
#
#   TORCH_PY=/work/venv-torch/bin/python bench/run.sh > results.jsonl
#   python3 bench/summarize.py < results.jsonl
#
# Runs each configuration with both implementations back to back at the same step budget and
# thread count, on btd's synthetic corpus (dumped to a file so torch reads the same bytes) and on
# Tiny Shakespeare when present. Each pair's load average goes to stderr: run it on a quiet machine
# (other processes slow PyTorch's threads more than candle's, which once gave a false ~1.0x). Needs a release build of trainer-bench and a Python with torch
# (keep torch out of CI: this script is never run by tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TORCH_PY:-python3}
SHAKESPEARE=${SHAKESPEARE:-../shared/data/tinyshakespeare.txt}
BIN=target/release/trainer-bench
cargo build --release -q -p btd-trainer --bin trainer-bench
SYNTH=$(mktemp --suffix=.txt)
trap 'rm -f "$SYNTH"' EXIT
"$BIN" --dump-corpus "$SYNTH" >&2

pair() { # preset steps threads data
  echo "# load $(cut -d' ' -f1-3 /proc/loadavg) $1 $2 steps, $3 thread(s), $(basename "$4")" >&2
  "$BIN" --preset "$1" --steps "$2" --threads "$3" --data "$4" --json
  "$PY" bench/torch_ref.py --preset "$1" --steps "$2" --threads "$3" --data "$4"
  echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

# The issue's target: tiny and small, one thread and two, on the same data. Then Tiny Shakespeare
# (when present) for tiny, and base only with BASE=1 (slow).
TINY_STEPS=${TINY_STEPS:-600}
SMALL_STEPS=${SMALL_STEPS:-80}
for threads in 1 2; do
  pair tiny "$TINY_STEPS" "$threads" "$SYNTH"
  pair small "$SMALL_STEPS" "$threads" "$SYNTH"
done
[ -f "$SHAKESPEARE" ] && pair tiny "$TINY_STEPS" 1 "$SHAKESPEARE"
[ "${BASE:-0}" = 1 ] && pair base 8 2 "$SYNTH"
true
