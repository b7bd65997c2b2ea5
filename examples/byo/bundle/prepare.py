"""Fixed harness for the byo example: data, seed, evaluation, summary. Do not edit.

Like karpathy/autoresearch's prepare.py, this file is not editable in the research program:
proposers change `train.py` only (the manifest's `editable = ["train.py"]`). It holds

- `seed()`: the run's seed from BTD_SEED (btd sets it; 0 when run by hand);
- `load(name)`: the bytes of data/<name>.txt;
- `evaluate_bpb(prob, order, data)`: bits per byte of `data` under the model, after checking
  that the model's next-byte probabilities sum to 1;
- `report(...)`: the autoresearch-style summary (`---`, `val_bpb: ...`), plus
  `holdout_val_bpb: ...` when the owner re-runs with BTD_HOLDOUT set;
- `fail(why)`: print FAIL and exit 1.

Everything printed is a deterministic function of the code and the seed, except
`training_seconds`.
"""

import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 256            # byte-level: every byte value is a symbol
NORM_CHECKS = 32       # positions at which the distribution must sum to 1
NORM_TOLERANCE = 1e-9


def fail(why):
    """Print the failure marker btd looks for, with the reason on stderr, and exit 1."""
    sys.stdout.write("\n")
    print(f"error: {why}", file=sys.stderr)
    print("FAIL")
    sys.stdout.flush()
    sys.exit(1)


def seed():
    """The run's seed: BTD_SEED (a decimal u64), or 0 when unset."""
    raw = os.environ.get("BTD_SEED", "0")
    try:
        value = int(raw, 10)
    except ValueError:
        fail(f"BTD_SEED must be a decimal integer, got {raw!r}")
    if not 0 <= value < 2**64:
        fail(f"BTD_SEED must fit in 64 bits, got {raw!r}")
    return value


def load(name):
    """The bytes of data/<name>.txt in the bundle."""
    path = os.path.join(HERE, "data", name + ".txt")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e}")


def evaluate_bpb(prob, order, data, label="val"):
    """Bits per byte of `data`: the mean of -log2 prob(context, byte) over every byte.

    `prob(context, byte)` is the model's probability of `byte` (0..255) after `context` (the up
    to `order - 1` bytes before it). The distribution is checked to sum to 1 at a few positions,
    and every probability must be finite and positive.
    """
    n = len(data)
    if n == 0:
        fail(f"{label} data is empty")
    k = max(0, int(order) - 1)
    step = max(1, n // NORM_CHECKS)
    for i in range(0, n, step):
        ctx = data[max(0, i - k):i]
        total = math.fsum(prob(ctx, b) for b in range(VOCAB))
        if not abs(total - 1.0) <= NORM_TOLERANCE:
            fail(f"the model's probabilities sum to {total!r}, not 1, after {ctx!r}")
    bits = 0.0
    tick = max(1, n // 10)
    for i in range(n):
        p = prob(data[max(0, i - k):i], data[i])
        if not (p > 0.0 and math.isfinite(p)):
            fail(f"probability {p!r} for byte {i} of {label} data: loss is not finite")
        bits -= math.log2(p)
        if (i + 1) % tick == 0 or i + 1 == n:
            sys.stdout.write(f"\reval {label}: {100 * (i + 1) // n:3d}% | bpb so far: {bits / (i + 1):.4f}")
            sys.stdout.flush()
    sys.stdout.write("\n")
    bpb = bits / n
    if not math.isfinite(bpb):
        fail(f"{label} bits per byte is not finite")
    return bpb


def holdout_path():
    """The owner-only holdout file (BTD_HOLDOUT), or None on an ordinary run."""
    path = os.environ.get("BTD_HOLDOUT")
    return path if path else None


def report(prob, order, training_seconds, num_params, extra=()):
    """Evaluate on val (and the holdout when BTD_HOLDOUT is set) and print the summary."""
    val_bpb = evaluate_bpb(prob, order, load("val"), "val")
    holdout = None
    path = holdout_path()
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            fail(f"cannot read BTD_HOLDOUT {path}: {e}")
        holdout = evaluate_bpb(prob, order, data, "holdout")
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    if holdout is not None:
        print(f"holdout_val_bpb:  {holdout:.6f}")
    print(f"training_seconds: {training_seconds:.1f}")
    print(f"num_params_M:     {num_params / 1e6:.6f}")
    for key, value in extra:
        print(f"{key + ':':<17} {value}")
    sys.stdout.flush()
