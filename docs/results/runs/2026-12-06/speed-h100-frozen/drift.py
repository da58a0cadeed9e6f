"""The step time along 60 training steps on the benchmark's one batch, from the same weights three times: with the
trainer's learning rate, with learning rate 0 (frozen), and with the learning rate again (paper sizes, the option
defaults). Run from the repository root on a GPU:

    python3 docs/results/runs/2026-12-06/speed-h100-frozen/drift.py project drift_project.json
    python3 docs/results/runs/2026-12-06/speed-h100-frozen/drift.py authors drift_authors.json

Each row: (step, seconds, loss, mean opacity, mean rendered alpha, faint-alpha share)."""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
from tools.bench.harness import make_train_step, sync  # noqa: E402
from tools.bench.scene import train_batch  # noqa: E402
from tools.bench.speed_compare import DEFAULTS, build_model, step_options  # noqa: E402
from utils.speed import prepare_model  # noqa: E402

dev = torch.device("cuda")
net, out = sys.argv[1], sys.argv[2]
res = {}
for tag, frozen in (("lr", False), ("lr0", True), ("lr_again", False)):
    opt = step_options(net, DEFAULTS, dev, 0)
    model = build_model(opt, dev, 0, None)
    prepare_model(model, opt, dev)
    step = make_train_step(model, opt, dev, frozen=frozen)
    batch = train_batch(opt, dev, 0)
    rows = []
    for i in range(60):
        sync(dev)
        t = time.perf_counter()
        loss, logs = step(batch)
        sync(dev)
        rows.append((i, round(time.perf_counter() - t, 4), round(loss, 5),
                     *(round(float(logs.get(k, -1)), 4) for k in ("mean_opacity", "mean_alpha", "faint_alpha_share"))))
    res[tag] = rows
    for r in rows[::4]:
        print(tag, r, flush=True)
    del model, step
    torch.cuda.empty_cache()
json.dump(res, open(out, "w"))
