"""A character (byte) n-gram language model with interpolated absolute discounting.

The one file a proposer edits (`editable = ["train.py"]`). The hyper-parameters are the
constants just below, one per line; better values lower val_bpb. The fixed harness
(data, seed, evaluation, summary) is prepare.py.

Run: BTD_SEED=1 python3 train.py
"""

import os
import random
import sys
import time

sys.dont_write_bytecode = True  # keep the round's tree (and the bundle) free of __pycache__

import prepare  # noqa: E402  (the fixed harness)

# --- hyper-parameters (edit these) -------------------------------------------------------
ORDER = 2              # n-gram order: 1 = unigram, 2 = one byte of context, 3 = two, ...
DISCOUNT = 0.9         # absolute discount taken from every seen count, 0 < DISCOUNT < 1
CONTINUATION = False   # True: lower orders use Kneser-Ney continuation counts
TRAIN_FRACTION = 0.9   # share of training lines used: a subsample drawn with the run's seed
# ------------------------------------------------------------------------------------------

# A [task.search] program may pass numeric values as BTD_PARAM_<NAME>; they override the above.
for _name in ("ORDER", "DISCOUNT", "TRAIN_FRACTION"):
    _raw = os.environ.get("BTD_PARAM_" + _name)
    if _raw:
        try:
            _value = float(_raw)
        except ValueError:
            prepare.fail(f"BTD_PARAM_{_name} must be a number, got {_raw!r}")
        globals()[_name] = int(round(_value)) if _name == "ORDER" else _value


def subsample(data, fraction, seed):
    """A seeded subsample of whole lines: shuffled, then the first `fraction` of them kept."""
    lines = data.split(b"\n")
    rng = random.Random(seed)
    rng.shuffle(lines)
    keep = max(1, int(round(fraction * len(lines))))
    return b"\n".join(lines[:keep])


def count(data, order):
    """tables[n][context of n bytes] = [total, distinct followers, {next byte: count}]."""
    tables = [dict() for _ in range(order)]
    n = len(data)
    tick = max(1, n // 10)
    for i in range(n):
        b = data[i]
        for m in range(min(order, i + 1)):
            ctx = data[i - m:i]
            entry = tables[m].get(ctx)
            if entry is None:
                entry = tables[m][ctx] = [0, 0, {}]
            follow = entry[2]
            c = follow.get(b, 0)
            if c == 0:
                entry[1] += 1
            follow[b] = c + 1
            entry[0] += 1
        if (i + 1) % tick == 0 or i + 1 == n:
            sys.stdout.write(f"\rcounting: {100 * (i + 1) // n:3d}% ({i + 1}/{n} bytes)")
            sys.stdout.flush()
    sys.stdout.write("\n")
    return tables


def continuation(tables):
    """Replace the counts of every order but the highest with Kneser-Ney continuation counts:
    how many distinct bytes precede (context, next byte) in the next order up."""
    out = []
    for m in range(len(tables) - 1):
        cont = {}
        for ctx, (_, _, follow) in tables[m + 1].items():
            short = ctx[1:]
            entry = cont.get(short)
            if entry is None:
                entry = cont[short] = [0, 0, {}]
            for b in follow:
                c = entry[2].get(b, 0)
                if c == 0:
                    entry[1] += 1
                entry[2][b] = c + 1
                entry[0] += 1
        out.append(cont)
    out.append(tables[-1])
    return out


def make_model(tables, discount):
    """prob(context, byte): interpolated absolute discounting down to a uniform byte."""
    order = len(tables)
    uniform = 1.0 / prepare.VOCAB

    def prob(context, b):
        p = uniform
        for m in range(min(order, len(context) + 1)):
            entry = tables[m].get(context[len(context) - m:])
            if entry is None:
                break
            total, distinct, follow = entry
            c = follow.get(b, 0)
            p = max(c - discount, 0.0) / total + discount * distinct / total * p
        return p

    return prob


def main():
    if not (isinstance(ORDER, int) and 1 <= ORDER <= 12):
        prepare.fail(f"ORDER must be an integer from 1 to 12, got {ORDER!r}")
    if not 0.0 < TRAIN_FRACTION <= 1.0:
        prepare.fail(f"TRAIN_FRACTION must be in (0, 1], got {TRAIN_FRACTION!r}")
    seed = prepare.seed()
    t0 = time.perf_counter()
    data = subsample(prepare.load("train"), TRAIN_FRACTION, seed)
    tables = count(data, ORDER)
    if CONTINUATION:
        tables = continuation(tables)
    prob = make_model(tables, DISCOUNT)
    training_seconds = time.perf_counter() - t0
    num_params = sum(len(e[2]) for t in tables for e in t.values())
    prepare.report(prob, ORDER, training_seconds, num_params,
                   extra=[("order", ORDER), ("train_bytes", len(data)), ("seed", seed)])


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # any bug in an edit: report a failed run, not just a traceback
        prepare.fail(f"{type(e).__name__}: {e}")
