#!/usr/bin/env python3
"""A scripted proposer for the byo example: one constant of train.py per round.

btd runs it with the workspace as its working directory: the parent tree (the champion's,
or the bundle before there is one) plus context/objective.json, context/champion.json and
context/ledger.json; BTD_ROUND and BTD_MEMBER in the environment. It

1. reads the constants at the top of train.py (ORDER, DISCOUNT, CONTINUATION, TRAIN_FRACTION);
2. walks a fixed list of candidate edits, skipping those that would change nothing and those
   the ledger shows someone already tried on the same parent (matched on the first line of
   the rationale, which this script writes as `NAME = VALUE ...`);
3. picks one of the first few left, rotating by round and member so members spread out;
4. rewrites exactly that one line of train.py and writes rationale.md.

Exit status: 0 proposed; 2 the workspace is not what the contract says; 3 nothing left to try.
It never touches any other file, and never sees raw run output (btd does not provide it).
"""

import ast
import hashlib
import json
import os
import re
import sys

TARGET = "train.py"
# Candidate edits in the order a careful researcher might try them.
CANDIDATES = [
    ("ORDER", 3), ("ORDER", 4), ("ORDER", 5), ("CONTINUATION", True), ("ORDER", 6),
    ("TRAIN_FRACTION", 1.0), ("ORDER", 7), ("ORDER", 8), ("DISCOUNT", 0.95),
    ("DISCOUNT", 0.75), ("DISCOUNT", 0.85), ("DISCOUNT", 0.6), ("ORDER", 10), ("ORDER", 12),
]
SPREAD = 3                 # choose among the first SPREAD untried candidates
MAX_RATIONALE = 1024


def die(code, why):
    print(f"propose.py: {why}", file=sys.stderr)
    sys.exit(code)


def read_json(path, default):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        die(2, f"cannot read {path}: {e}")


def line_re(name):
    # NAME = value   # comment
    return re.compile(r"^(" + name + r")[ \t]*=[ \t]*([^#\n]*?)([ \t]*#[^\n]*)?$", re.M)


def current_value(src, name):
    found = line_re(name).findall(src)
    if len(found) != 1:
        die(2, f"{TARGET} must define {name} on exactly one line, found {len(found)}")
    try:
        return ast.literal_eval(found[0][1].strip())
    except (ValueError, SyntaxError):
        die(2, f"{TARGET}: {name} is not a literal: {found[0][1]!r}")


def edit_line(src, name, value):
    """Replace the value on NAME's line, keeping its comment in the same column."""
    def repl(m):
        head = f"{name} = {value!r}"
        comment = m.group(3) or ""
        if not comment:
            return head
        text = comment.lstrip()
        column = len(m.group(0)) - len(text)
        return head.ljust(column - 1) + " " + text
    out, n = line_re(name).subn(repl, src, count=1)
    if n != 1:
        die(2, f"could not edit {name} in {TARGET}")
    return out


def tag(name, value):
    return f"{name} = {value!r}"


def main():
    objective = read_json(os.path.join("context", "objective.json"), None)
    if not isinstance(objective, dict):
        die(2, "context/objective.json is missing: run me in a btd proposer workspace")
    if TARGET not in objective.get("editable", []):
        die(2, f"{TARGET} is not editable in this program (editable: {objective.get('editable')})")
    champion = read_json(os.path.join("context", "champion.json"), None)
    ledger = read_json(os.path.join("context", "ledger.json"), [])
    if not isinstance(ledger, list):
        die(2, "context/ledger.json must be a list")
    try:
        with open(TARGET, encoding="utf-8") as f:
            src = f.read()
    except OSError as e:
        die(2, f"cannot read {TARGET}: {e}")

    parent = champion.get("seq") if isinstance(champion, dict) else None
    tried = set()
    for h in ledger:
        if not isinstance(h, dict) or str(h.get("parent")) != str(parent):
            continue
        first = str(h.get("rationale") or "").splitlines()[:1]
        if first:
            tried.add(first[0].split(" (", 1)[0].strip())

    untried = []
    for name, value in CANDIDATES:
        now = current_value(src, name)
        if now == value and type(now) is type(value):
            continue
        if tag(name, value) in tried:
            continue
        untried.append((name, value, now))
    if not untried:
        die(3, f"every candidate edit was already tried on parent {parent}: nothing left to try")

    try:
        round_no = int(os.environ.get("BTD_ROUND", "0"))
    except ValueError:
        round_no = 0
    member = os.environ.get("BTD_MEMBER", "")
    salt = int.from_bytes(hashlib.sha256(member.encode()).digest()[:4], "big")
    name, value, now = untried[(round_no + salt) % min(SPREAD, len(untried))]

    with open(TARGET, "w", encoding="utf-8") as f:
        f.write(edit_line(src, name, value))

    if isinstance(champion, dict):
        base = f"champion #{parent} ({objective.get('metric', 'metric')} {champion.get('value')})"
    else:
        base = "the bundle as published (no champion yet)"
    why = {
        "ORDER": "a longer context should predict the grammar's words better",
        "CONTINUATION": "Kneser-Ney continuation counts give better back-off estimates",
        "TRAIN_FRACTION": "more training text means fewer unseen contexts",
        "DISCOUNT": "retune the discount for the current order",
    }[name]
    text = (f"{tag(name, value)} (was {now!r}): {why}.\n"
            f"Built on {base}; round {round_no}, member {member or '?'}.\n")
    with open("rationale.md", "w", encoding="utf-8") as f:
        f.write(text.encode("utf-8")[:MAX_RATIONALE].decode("utf-8", "ignore"))
    print(text.splitlines()[0])


if __name__ == "__main__":
    main()
