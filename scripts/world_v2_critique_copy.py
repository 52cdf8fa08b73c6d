#!/usr/bin/env python
"""Issue 16: can a policy copy a number that only the critique holds? 200 held-out ``m0.n_critique_source`` examples
("far" operands) built on the first test problems: the problem's sentence and the draft carry a wrong operand, the
critique states the right expression. Greedy refinements; the share that write the critique's expression and the share
that are perfect.

    python scripts/world_v2_critique_copy.py data/tiny_world_v2/m0-phase8 data/tiny_world_v2/m0-phase10
"""

from __future__ import annotations

import random
import re
import sys

from rlrf_nb import generation
from rlrf_nb import tiny_world as tw
from rlrf_nb.config import load_recipe
from rlrf_nb.models import load_policy
from rlrf_nb.tasks import math

world = tw.build_world(load_recipe("recipes/tiny-v2.yaml").world)
rng, items = random.Random("heldout"), []
for ex in world.math["test"]:
    it = tw.critique_source_example(rng, ex, "far")
    if it:
        items.append((ex, it))
    if len(items) == 200:
        break
for path in sys.argv[1:]:
    model, tok = load_policy(path)
    outs = generation.generate(model, tok, [[it["messages"][0]] for _, it in items], max_new_tokens=400,
                               batch_size=50, progress=False)
    copied = sum(re.search(r"should be (\d+[-+]\d+)=", it["messages"][0]["content"]).group(1) in o[0]
                 for (_, it), o in zip(items, outs))
    perfect = sum(math.check_example(o[0], ex).perfect for (ex, _), o in zip(items, outs))
    n = len(items)
    print(f"{path}: of {n} held-out examples, the critique's expression written {100 * copied / n:.1f}%, perfect "
          f"{100 * perfect / n:.1f}%")
