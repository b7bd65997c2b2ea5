#!/usr/bin/env python3
"""Generate the byo example's corpus deterministically from a small grammar.

    python3 examples/byo/make_corpus.py

writes (overwriting, byte for byte the same on every run and Python 3 version):

    examples/byo/bundle/data/train.txt   seed 1, ~48 KB  (in the bundle: members train on it)
    examples/byo/bundle/data/val.txt     seed 2, ~24 KB  (in the bundle: the published val_bpb)
    examples/byo/holdout.txt             seed 3, ~24 KB  (owner only: never in the bundle)

The grammar and word lists below are written for btd; no third-party text is used. Only
`random.Random(seed)` with an integer seed, `randrange` and `choice` are used, whose outputs
Python keeps stable across versions.
"""

import os
import random

ANIMALS = ["fox", "owl", "hare", "crow", "mole", "newt", "wren", "stoat", "otter", "badger",
           "heron", "lynx", "vole", "toad", "finch"]
PLACES = ["the mill", "the ford", "the old wall", "the orchard", "the marsh", "the quarry",
          "the bridge", "the north field", "the barn", "the willow pond", "the chalk hill"]
THINGS = ["a lantern", "three acorns", "a copper key", "the red kite", "a bundle of reeds",
          "a small bell", "two pebbles", "a map", "the honey jar", "a loaf of bread"]
ADJS = ["quick", "sleepy", "clever", "muddy", "quiet", "hungry", "brave", "grey", "young",
        "patient", "restless", "careful"]
VERBS_PAST = ["carried", "found", "dropped", "hid", "counted", "traded", "mended", "buried",
              "weighed", "painted"]
MOVES = ["walked to", "ran past", "waited near", "climbed over", "swam across", "slept under",
         "looked for", "circled"]
TIMES = ["at dawn", "before noon", "in the rain", "after supper", "at dusk", "on market day",
         "when the frost came", "in the long summer"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve"]
SAID = ["said", "asked", "whispered", "answered", "called"]
QUOTES = ["the river is high", "we should count again", "the key is not mine",
          "the bell rang twice", "nobody crossed the ford", "the map is wrong"]


def cap(s):
    return s[0].upper() + s[1:]


def creature(r):
    if r.randrange(3) == 0:
        return "the " + r.choice(ADJS) + " " + r.choice(ANIMALS)
    return "the " + r.choice(ANIMALS)


def sentence(r):
    k = r.randrange(7)
    if k == 0:
        return cap(creature(r)) + " " + r.choice(MOVES) + " " + r.choice(PLACES) + " " + r.choice(TIMES) + "."
    if k == 1:
        return cap(creature(r)) + " " + r.choice(VERBS_PAST) + " " + r.choice(THINGS) + " near " + r.choice(PLACES) + "."
    if k == 2:
        q = r.choice(QUOTES)
        return '"' + cap(q) + '," ' + r.choice(SAID) + " " + creature(r) + "."
    if k == 3:
        n = r.randrange(len(NUMBERS))
        return cap(r.choice(TIMES)) + ", " + NUMBERS[n] + " " + r.choice(ANIMALS) + ("s" if n else "") + " " + r.choice(MOVES) + " " + r.choice(PLACES) + "."
    if k == 4:
        return "Day " + str(r.randrange(1, 400)) + ": " + creature(r) + " " + r.choice(VERBS_PAST) + " " + r.choice(THINGS) + "."
    if k == 5:
        return "Did " + creature(r) + " see " + r.choice(THINGS) + " at " + r.choice(PLACES) + "?"
    return cap(creature(r)) + " and " + creature(r) + " " + r.choice(MOVES) + " " + r.choice(PLACES) + " together."


def corpus(seed, nbytes):
    r = random.Random(seed)
    out = []
    size = 0
    while size < nbytes:
        para = " ".join(sentence(r) for _ in range(1 + r.randrange(5))) + "\n"
        out.append(para)
        size += len(para)
    return "".join(out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    targets = [
        (os.path.join(here, "bundle", "data", "train.txt"), 1, 48 * 1024),
        (os.path.join(here, "bundle", "data", "val.txt"), 2, 24 * 1024),
        (os.path.join(here, "holdout.txt"), 3, 24 * 1024),
    ]
    for path, seed, nbytes in targets:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = corpus(seed, nbytes)
        with open(path, "w", encoding="ascii", newline="\n") as f:
            f.write(text)
        print(f"{os.path.relpath(path, here)}: {len(text)} bytes (seed {seed})")


if __name__ == "__main__":
    main()
