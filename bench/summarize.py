#!/usr/bin/env python3
"""One table line per JSON result from `trainer-bench --json` or `bench/torch_ref.py` (stdin)."""
import json
import sys

print(f"{'data':<8} {'impl':<12} {'preset':<6} {'thr':>3} {'steps':>6} {'secs':>7} {'tok/s':>8} {'tok/cpu-s':>9} {'loss':>7} {'val_bpb':>8}")
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("impl") == "candle":
        rep = r["report"]
        data = rep["data_sha256"][:8]
        row = ("candle", rep["spec"]["preset"], r["threads"], rep["steps"], rep["train_secs"],
               rep["tokens_per_sec"], r["tokens_per_cpu_sec"], rep["final_train_loss"], rep["val_bpb"])
    else:
        data = r["data_sha256"][:8]
        row = ("torch-eager", r["preset"], r["threads"], r["steps"], r["train_secs"],
               r["tokens_per_sec"], r["tokens_per_cpu_sec"], r["final_train_loss"], r["val_bpb"])
    print(f"{data:<8} {row[0]:<12} {row[1]:<6} {row[2]:>3} {row[3]:>6} {row[4]:>7.1f} {row[5]:>8.0f} {row[6]:>9.0f} {row[7]:>7.4f} {row[8]:>8.4f}")
