"""Why does a stage-2 run collapse? Trains a GSV model for a few steps and records, per step, what each loss term
does to the occupancy: the gradient norm each term sends to the free logits (all voxels, and those within
``--near`` metres of the ego origin), the share of pixels with a valid warp, the auto-mask, and the rendered-depth
histogram. Run it once per variant (``--w_entropy 0``, ``--entropy_on alpha``, ...) and compare.

  python -m tools.diagnostics.gsv_diagnose --config configs/fixture-gsv.txt --steps 60 --out logs/diag/default \\
      [any train.py option, e.g. --input_size 96 160 --render_size 48 80 --grid_size 100 100 16]

Writes <out>/diagnose.jsonl (one row per step) and prints a table every ``--print_every`` steps.
"""
import argparse
import json
import os
import time

import numpy as np
import torch


from datasets import build_dataset, collate
from networks import build_model
from options import parse_args
from rebuild import load_stage1
from trainer import param_groups
from utils.batch import to_device

DEPTH_BINS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 1e9)


def free_logit_grad(term, logits, near_mask):
    """Gradient norms of ``term`` w.r.t. the free logits: (all voxels, voxels in near_mask), and the mean signed
    gradient of the near voxels (> 0: the term makes them more opaque, since opacity falls with the free logit)."""
    g = torch.autograd.grad(term, logits, retain_graph=True, allow_unused=True)[0]
    if g is None:
        return 0.0, 0.0, 0.0
    gf = g[:, -1]
    return float(gf.norm()), float(gf[:, near_mask].norm()), float(gf[:, near_mask].mean() * 1e6)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", default="logs/diag")
    p.add_argument("--near", type=float, default=6.0, help="radius (metres, horizontal) of the 'near' voxels")
    p.add_argument("--print_every", type=int, default=10)
    a, rest = p.parse_known_args(argv)
    opt = parse_args(rest)
    torch.manual_seed(opt.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and opt.device != "cpu" else "cpu")
    model = build_model(opt, load_stage1).to(device).train()
    optim = torch.optim.AdamW(param_groups(model.trainable_parameters()), lr=opt.lr)
    data = build_dataset(opt, "train")
    near_mask = model.occ_net.centres[..., :2].norm(dim=-1) < a.near  # (X, Y, Z)
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(opt.seed)
    rows, t0 = [], time.time()
    with open(os.path.join(a.out, "diagnose.jsonl"), "w") as f:
        for step in range(a.steps):
            batch = to_device(collate([data[int(rng.integers(len(data)))]]), device)
            r = model.render(batch)
            terms, logs = model.criterion.terms(r, batch, model.pose_source(batch))
            row = {"step": step, **{k: float(v) for k, v in logs.items()}}
            for k, v in terms.items():
                row[f"grad_{k}"], row[f"grad_{k}_near"], row[f"push_{k}_near"] = \
                    free_logit_grad(v, r["logits"], near_mask)
            d = r["depth"].detach().clamp(opt.min_depth, opt.max_depth).flatten().cpu().numpy()
            row["depth_hist"] = (np.histogram(d, DEPTH_BINS)[0] / d.size).round(4).tolist()
            warm = min(1.0, (step + 1) / opt.lr_warmup) if opt.lr_warmup > 0 else 1.0
            for g in optim.param_groups:
                g["lr"] = opt.lr * g["lr_scale"] * warm  # the trainer's schedule before its milestones
            optim.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            if opt.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
            optim.step()
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
            if step % a.print_every == 0 or step == a.steps - 1:
                grads = " ".join(f"{k}={row[f'grad_{k}']:.2e}/{row[f'push_{k}_near']:+.1f}" for k in terms)
                print(f"step {step:4d} {time.time() - t0:6.0f}s depth p10/50/90 {row['depth_p10']:.2f}/"
                      f"{row['depth_p50']:.2f}/{row['depth_p90']:.2f} alpha {row['mean_alpha']:.3f} "
                      f"opacity {row['mean_opacity']:.3f} valid {row['warp_valid']:.3f} kept "
                      f"{row['automask_kept']:.3f} | grad (all / near push x1e6) {grads}", flush=True)
    print(f"wrote {os.path.join(a.out, 'diagnose.jsonl')}")


if __name__ == "__main__":
    main()
