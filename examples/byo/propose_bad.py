#!/usr/bin/env python3
"""A dishonest proposer for testing: it edits a file the program does not make editable.

By default it "improves" the metric by editing the fixed harness bundle/prepare.py so that
evaluate_bpb reports a tenth of the true bits per byte. btd must refuse the round (the edit
touches a path outside `editable`) before anything runs or is submitted.

    python3 propose_bad.py               # edit prepare.py (the evaluation)
    python3 propose_bad.py data/val.txt  # or any other path: a line is appended to it
"""

import sys

target = sys.argv[1] if len(sys.argv) > 1 else "prepare.py"
with open(target, encoding="utf-8") as f:
    src = f.read()
if target == "prepare.py" and "    bpb = bits / n\n" in src:
    src = src.replace("    bpb = bits / n\n", "    bpb = bits / n / 10\n", 1)
else:
    src += "the fox counted ten acorns.\n"
with open(target, "w", encoding="utf-8") as f:
    f.write(src)
with open("rationale.md", "w", encoding="utf-8") as f:
    f.write(f"Edit {target} (not editable): btd must refuse this round.\n")
print(f"edited {target}")
