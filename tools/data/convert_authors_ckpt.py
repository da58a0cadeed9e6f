"""Convert one of the authors' released checkpoint folders into a checkpoint of this project.

    python -m tools.data.convert_authors_ckpt --src ckpts/nusc-sem-gs --config configs/nusc-gsv.txt \
        --out ckpts/nusc-sem-gs.pt
    python eval.py --config configs/nusc-gsv.txt --ckpt ckpts/nusc-sem-gs.pt

    python -m tools.data.convert_authors_ckpt --src ckpts/stage1_pose_nusc --config configs/nusc-gsp.txt \
        --gsp_pose_layers 34 --out ckpts/stage1_pose_nusc.pt --allow_partial

The model is built from ``--config`` (+ any further options) with random initialisation, their tensors are
renamed onto it (utils/authors_ckpt.py) and the report lists, by name, the loaded, missing, unexpected and
deliberately skipped tensors and every shape mismatch. The output is written only when every tensor of the model
is covered and every one of theirs is accounted for, or with ``--allow_partial`` (then the uncovered ones keep
their random initialisation: the report says which). The output holds the resolved options, so eval.py, vis and
``--load_weights`` rebuild the same model.
"""
import argparse
import os

from networks import build_model
from options import parse_args
from utils.authors_ckpt import map_authors_state, read_authors_folder
from utils.checkpoint import save_checkpoint


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True, help="the authors' checkpoint folder (e.g. ckpts/nusc-sem-gs)")
    p.add_argument("--config", required=True, help="config of the target model (e.g. configs/nusc-gsv.txt); its "
                   "stage (gsv / gsp) picks the name mapping")
    p.add_argument("--out", default=None, help="checkpoint to write (default: report only)")
    p.add_argument("--allow_partial", action="store_true",
                   help="write even when tensors are missing, unexpected or of another shape")
    p.add_argument("--limit", type=int, default=20, help="names shown per list of the report (0: all)")
    return p


def convert(src, model_argv, out=None, allow_partial=False, limit=20):
    """Map the folder ``src`` onto the model of ``model_argv``. Returns (report, opt); writes ``out`` when allowed."""
    opt = parse_args(model_argv + ["--encoder_weights", "none", "--gsp_pretrained", "false"])
    model = build_model(opt)
    report = map_authors_state(read_authors_folder(src), model.state_dict(), opt.stage)
    print(f"{src} -> {opt.stage} model of {model_argv}\n{report.text(limit or None)}")
    if out:
        if not (report.complete or allow_partial):
            raise SystemExit(f"not written: the mapping is incomplete (see above); fix the options "
                             f"or pass --allow_partial to write {out} anyway")
        model.load_state_dict(report.state, strict=False)
        save_checkpoint({"model": model.state_dict(), "opt": vars(opt), "step": 0, "epoch": 0,
                         "source": os.path.abspath(src), "conversion": report.text(None)}, out)
        print(f"written to {out}")
    return report, opt


def main(argv=None):
    args, rest = build_parser().parse_known_args(argv)
    convert(args.src, ["--config", args.config, *rest], args.out, args.allow_partial, args.limit)


if __name__ == "__main__":
    main()
