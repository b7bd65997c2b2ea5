#!/usr/bin/env bash
# A btd proposer that hands the round to an agent CLI (Claude Code by default).
#
# btd runs it in the proposer workspace: the parent tree (the champion's train.py, prepare.py,
# program.md, ...) plus context/objective.json, context/champion.json, context/ledger.json, with
# BTD_ROUND and BTD_MEMBER set. The agent edits train.py in place and writes rationale.md; this
# wrapper then puts back anything else the agent touched (btd would refuse the whole round), caps
# rationale.md at 1 KiB, and fails if train.py did not change.
#
#   BTD_AGENT=claude (default) runs: claude -p PROMPT with file tools only (no shell, no web)
#   BTD_AGENT="mycli --flag"   runs: mycli --flag PROMPT (any CLI that takes the prompt last)
#
# Exit status: 0 proposed; 2 not a proposer workspace; 3 the agent made no edit; else the agent's.
set -euo pipefail

if [[ ! -f context/objective.json || ! -f train.py ]]; then
  echo "propose_agent.sh: run me in a btd proposer workspace (context/objective.json, train.py)" >&2
  exit 2
fi

backup=$(mktemp -d)
trap 'rm -rf "$backup"' EXIT
cp -a . "$backup/tree"

prompt="You are one proposer in a btd research swarm, round ${BTD_ROUND:-?}, member ${BTD_MEMBER:-?}.
Read program.md for the research goal and rules: what you may and may not change in train.py,
the fixed 5-minute budget, the val_bpb metric (lower is better), the simplicity criterion. IGNORE
its setup, git, results.tsv and experiment-loop instructions: here you make exactly ONE change
per round and you cannot run anything; btd trains and scores your change after you finish.

Read context/objective.json (the program), context/champion.json (the current best: its
val_bpb, metrics and rationale; null before the first champion) and context/ledger.json (recent
attempts by every member, newest first: value, whether the owner's check passed, whether it was
accepted, its rationale). The train.py in this directory IS the champion's: build on it. Do not
repeat an idea the ledger shows was already tried on this champion unless you change it materially.

Then:
1. Edit train.py (and no other file) to try one idea you expect to lower val_bpb.
   Keep it runnable on one GPU within the time budget; add no dependency.
2. Write rationale.md: first line a one-line summary of the change (under 100 characters),
   then at most a few lines on why. Under 1 KiB in all.
Do not create, edit or delete any other file. Do not touch context/."

agent=${BTD_AGENT:-claude}
if [[ "$agent" == "claude" ]]; then
  claude -p "$prompt" --permission-mode acceptEdits \
    --allowedTools "Read,Edit,Write,Glob,Grep" --disallowedTools "Bash,WebFetch,WebSearch" \
    --max-turns 40 >/dev/null
else
  # shellcheck disable=SC2086  # BTD_AGENT is a command line on purpose
  $agent "$prompt" >/dev/null
fi

# Put back every file the agent changed or deleted, other than train.py and rationale.md ...
while IFS= read -r -d '' f; do
  case "$f" in ./train.py | ./rationale.md) continue ;; esac
  if ! cmp -s "$backup/tree/$f" "$f"; then
    echo "propose_agent.sh: the agent changed $f (not editable): restored" >&2
    mkdir -p "$(dirname "$f")"
    cp -a "$backup/tree/$f" "$f"
  fi
done < <(cd "$backup/tree" && find . -type f -print0)
# ... and remove the files it created.
while IFS= read -r -d '' f; do
  case "$f" in ./train.py | ./rationale.md) continue ;; esac
  if [[ ! -e "$backup/tree/$f" ]]; then
    echo "propose_agent.sh: the agent created $f: removed" >&2
    rm -f -- "$f"
  fi
done < <(find . -type f -print0)
while IFS= read -r -d '' d; do
  [[ -d "$backup/tree/$d" ]] || rmdir -- "$d"
done < <(find . -mindepth 1 -depth -type d -empty -print0)

if [[ ! -f train.py ]]; then
  echo "propose_agent.sh: the agent deleted train.py" >&2
  exit 3
fi
if cmp -s "$backup/tree/train.py" train.py; then
  echo "propose_agent.sh: the agent did not change train.py" >&2
  exit 3
fi
if [[ -f rationale.md ]]; then
  head -c 1024 rationale.md > "$backup/rationale" && cp "$backup/rationale" rationale.md
else
  echo "agent edit of train.py (no rationale given)" > rationale.md
fi
head -n 1 rationale.md
