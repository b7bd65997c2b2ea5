#!/usr/bin/env bash
# Re-measures everything docs/benchmarks.md reports, section by section, in the profile the doc
# names (release for `cargo bench`, netsim's scenarios, `btd demo`, `btd train`; debug where the
# doc says debug: the long fuzz run, netsim's hostile scenario, the byo re-run, the Slurm and
# dashboard benches).
#
#   bench/run-all.sh [--quick] [RESULTS_DIR]      (default RESULTS_DIR: bench/results-YYYY-MM-DD)
#
# Each section writes its output to RESULTS_DIR/NAME.txt (netsim also NAME.json); SUMMARY.txt lists
# every section with its exit status and wall time. A failed section does not stop the others; the
# script exits non-zero if any failed. Full mode takes hours on a 2-core machine (scale-500 alone
# about 2 min, the verify bench about 4 min, the noise seeds 3-10 min, the fuzz run 150 s).
#
# --quick runs every bench's quick mode only (what `cargo test --workspace` runs in CI: shapes
# checked, never timings), in minutes, to show that the benches still work; its numbers are not
# measurements.
#
# Training against PyTorch (bench/run.sh) runs only when TORCH_PY names a Python with torch.
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
out=""
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "run-all.sh: unknown option $arg" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "run-all.sh: one results directory only" >&2; exit 2; }; out="$arg" ;;
  esac
done
out="${out:-bench/results-$(date +%F)}"
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
summary="$out/SUMMARY.txt"
failed=0

{
  echo "# bench/run-all.sh $([ $quick = 1 ] && echo --quick) — $(date -u +%FT%TZ)"
  echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$summary"

# section NAME COMMAND...: runs COMMAND with its output in NAME.txt, and records the outcome.
section() {
  local name="$1"
  shift
  local log="$out/$name.txt" start end rc
  echo "=== $name: $*"
  start=$(date +%s)
  {
    echo "\$ $*"
    echo "# load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
  } > "$log"
  "$@" >> "$log" 2>&1
  rc=$?
  end=$(date +%s)
  if [ $rc -eq 0 ]; then
    printf '%-28s ok      %5d s\n' "$name" $((end - start)) | tee -a "$summary"
  else
    failed=1
    printf '%-28s FAILED  %5d s  (exit %d; see %s)\n' "$name" $((end - start)) $rc "$log" | tee -a "$summary"
    tail -n 20 "$log" | sed 's/^/    /'
  fi
}

# skip NAME WHY: a section that does not run here, and why.
skip() {
  printf '%-28s skipped: %s\n' "$1" "$2" | tee -a "$summary"
}

# /usr/bin/time -v where it exists (peak RSS, CPU time), plain otherwise.
timed() {
  if [ -x /usr/bin/time ]; then /usr/bin/time -v "$@"; else time "$@"; fi
}

if [ $quick = 1 ]; then
  # The quick modes, as CI runs them (debug builds).
  section protocol-core cargo test -q --locked -p btd-protocol --bench core
  section fuzz cargo test -q --locked -p btd-protocol --test fuzz
  section mesh cargo test -q --locked -p btd --bench mesh
  section store cargo test -q --locked -p btd --bench store
  section netsim-smoke cargo run -q --locked -p btd-netsim -- run smoke --json "$out/netsim-smoke.json"
  section verify cargo test -q --locked -p btd --bench verify
  section trainer-bench cargo test -q --locked -p btd-trainer --test trainer_bench
  section byo-rerun env BTD=target/debug/btd bench/byo-rerun.sh 1
  section slurm-round cargo test -q --locked -p btd-tests --bench slurm_round
  section dashboard-cost cargo test -q --locked -p btd-tests --bench dashboard_cost
  section kb-scale cargo test -q --locked -p btd-tests --bench kb_scale
  skip training "bench/run.sh has no quick mode (trainer-bench's quick test ran above)"
else
  # "Protocol core" (release: the bench profile).
  section protocol-core cargo bench -q --locked -p btd-protocol --bench core
  # "Fuzzing the wire decoder and the manifest parser": the long mode, dev profile, the doc's seed.
  section fuzz env BTD_FUZZ_SECS=150 BTD_FUZZ_SEED=2026 \
    cargo test -q --locked -p btd-protocol --test fuzz -- --ignored --nocapture
  # "Mesh" (release).
  section mesh cargo bench -q --locked -p btd --bench mesh
  # "The log without its nonce index" (release).
  section store cargo bench -q --locked -p btd --bench store
  # "netsim": release, seeds as shipped, one scenario at a time; hostile in a debug build as the
  # doc measured it.
  section build-release cargo build -q --locked --release -p btd-netsim -p btd -p btd-trainer
  for s in smoke owner-crash partition-heal kb-gating conn-bound mesh-100 scale-200 scale-500 \
    scale-1000 adversaries adversaries-owner-crash; do
    section "netsim-$s" timed target/release/btd-netsim run "$s" --json "$out/netsim-$s.json"
  done
  section netsim-hostile cargo run -q --locked -p btd-netsim -- run hostile --json "$out/netsim-hostile.json"
  section netsim-ci-scenarios cargo test -q --locked -p btd-netsim --test scenarios -- --test-threads=1
  # `btd demo` (release) under /usr/bin/time -v.
  section demo timed target/release/btd demo --dir "$out/demo"
  # "Verification" (release).
  section verify cargo bench -q --locked -p btd --bench verify
  # "Run-to-run noise": ten seeds of tiny at 400 steps, one of small at 100 (the doc's command).
  noise() {
    for s in 0 1 2 3 4 5 6 7 8 9; do
      cargo run -q --locked -p btd-trainer --bin trainer-bench -- --preset tiny --steps 400 --seed "$s" --threads 1 --json || return
    done
    cargo run -q --locked -p btd-trainer --bin trainer-bench -- --preset small --steps 100 --seed 0 --threads 1 --json
  }
  section noise noise
  # "Re-run verification cost": the doc measured a debug build.
  section build-debug cargo build -q --locked -p btd
  section byo-rerun env BTD=target/debug/btd bench/byo-rerun.sh 5
  # "Slurm round cost" and "Dashboard cost": the full benches in the debug build the doc measured
  # (`cargo test ... -- --bench` passes --bench to a harness = false bench). Slurm needs a cluster
  # (.ci/slurm-up.sh): without one the bench prints NOT RUN.
  section slurm-round cargo test -q --locked -p btd-tests --bench slurm_round -- --bench
  section dashboard-cost cargo test -q --locked -p btd-tests --bench dashboard_cost -- --bench
  # The KB at scale (debug, as the doc's table): 650 000 results; BTD_OLD_BIN adds an older btd.
  section kb-scale cargo test -q --locked -p btd-tests --bench kb_scale -- --bench 650000
  # "Training": candle against PyTorch eager, only with a torch Python.
  if [ -n "${TORCH_PY:-}" ]; then
    training() {
      bench/run.sh > "$out/training.jsonl" && python3 bench/summarize.py < "$out/training.jsonl"
    }
    section training training
  else
    skip training "TORCH_PY is not set (bench/run.sh needs a Python with torch)"
  fi
  # "`btd train` with the default budget (30 s, tiny, one thread)" (release).
  section train-synthetic target/release/btd train --out "$out/train-synthetic"
  shakespeare="${SHAKESPEARE:-../shared/data/tinyshakespeare.txt}"
  if [ -f "$shakespeare" ]; then
    section train-shakespeare target/release/btd train --data "$shakespeare" --out "$out/train-shakespeare"
  else
    skip train-shakespeare "$shakespeare not found (SHAKESPEARE=FILE)"
  fi
  # "Tests": the trainer's test times.
  section trainer-tests cargo test --locked -p btd-trainer
  if command -v nvidia-smi >/dev/null 2>&1; then
    skip gpu "a GPU is present: see docs/training.md#gpus for the cuda build and record base here"
  else
    skip gpu "no GPU"
  fi
fi

echo "results in $out (summary: $summary)"
exit $failed
