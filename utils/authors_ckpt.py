"""The authors' released weights (GANWANSHUI/GaussianOcc ckpts/) mapped by name onto this project's modules.

Their checkpoint is a folder of one ``<name>.pth`` state dict per network of their runner (``self.models``):
  stage 2, ckpts/nusc-sem-gs/: encoder.pth (Encoder_res101: ResNet-101 stem..layer3 + their upsampling neck; also
      two ints 'height', 'width'), depth.pth (VolumeDecoder: the S3DCNN as ``_3DCNN.*`` plus renderer buffers),
      pose_encoder.pth and pose.pth (their stage-1 pose net, copied along);
  stage 1, ckpts/stage1_pose_nusc/: pose_encoder.pth (ResNet-34 over 2 stacked images, with its unused ImageNet
      classifier ``fc``) and pose.pth (PoseDecoder). No stage-1 depth network is released.
``read_authors_folder`` flattens a folder to ``{"<name>.<key>": tensor}``; ``map_authors_state`` renames those keys
with the rules below and checks them against a model's state dict; the result says, by name, what was loaded,
what is missing in the model, what is unexpected, what was skipped on purpose (and why) and which shapes differ.

Stage 2 maps onto GSVModel with the authors' network options (``image_neck upconcat``, ``lift_visibility false``,
``occ_decoder hourglass``, ``encoder_layers 101``, 17 classes + free, as configs/nusc-gsv.txt). Stage 1 maps the
pose ResNet onto GSPModel's PoseNet encoder (``gsp_pose_layers 34``); their pose decoder (camera features averaged,
a 256-channel squeeze, 12 outputs x 0.01) differs from this project's, and the differing shapes are reported.
"""
import os
import re
from dataclasses import dataclass, field

import torch

HOURGLASS_PARTS = {"conv1.0": "down1", "conv2": "mid", "conv3.0": "down2", "conv4.0": "bottom", "conv5": "up1",
                   "conv6": "up2"}


def _pair_index(m):
    """Their Sequential(convbn, relu, convbn, ...) index 2k -> our k."""
    return int(m.group(1)) // 2


def _hourglass_key(m):
    """Their dres2..4 (hourglass 0..2) part names -> ours; None for a part that does not exist."""
    part = HOURGLASS_PARTS.get(m.group(2))
    return part and f"occ_net.decoder.glasses.{int(m.group(1)) - 2}.{part}.{m.group(3)}"


# (their key regex, our key template or a function of the match). Applied in order, first full match wins.
STAGE2_RULES = [
    (r"encoder\.backbone\.0\.(.+)", r"occ_net.encoder.net.conv1.\1"),
    (r"encoder\.backbone\.1\.(.+)", r"occ_net.encoder.net.bn1.\1"),
    (r"encoder\.backbone\.4\.(.+)", r"occ_net.encoder.net.layer1.\1"),
    (r"encoder\.backbone\.5\.(.+)", r"occ_net.encoder.net.layer2.\1"),
    (r"encoder\.layer3\.(.+)", r"occ_net.encoder.net.layer3.\1"),
    (r"encoder\.upsampling_layer\.conv\.(.+)", r"occ_net.neck.block8.\1"),
    (r"encoder\.Upsampling_4\.conv\.(.+)", r"occ_net.neck.block4.\1"),
    (r"encoder\.depth_layer\.(.+)", r"occ_net.neck.out.\1"),
    (r"depth\._3DCNN\.dres0\.(\d+)\.(.+)", lambda m: f"occ_net.decoder.stem.{_pair_index(m)}.{m.group(2)}"),
    (r"depth\._3DCNN\.dres1\.(\d+)\.(.+)", lambda m: f"occ_net.decoder.res.{_pair_index(m)}.{m.group(2)}"),
    (r"depth\._3DCNN\.dres([234])\.(conv\d(?:\.0)?)\.(\d\.[a-z_]+)", _hourglass_key),
    (r"depth\._3DCNN\.classif_semantic\.(\d+)\.(.+)", lambda m: f"occ_net.head.{_pair_index(m)}.{m.group(2)}"),
]
STAGE2_SKIP = [
    (r"encoder\.(height|width)", "input size recorded by their runner (not a weight)"),
    (r"depth\.(xyz_min|xyz_max|Zval|scene_centroid|vox_util\.posfreq|gs_vox_util\.posfreq)",
     "buffer of their renderer, recomputed here from the options"),
    (r"depth\._3DCNN\.classif3\..+", "their geometry head, unused with last_free = True (nusc-sem-gs)"),
    (r"pose_encoder\..+|pose\..+", "their stage-1 pose net, copied along: stage 2 here takes it from "
                                   "--stage1_ckpt (convert ckpts/stage1_pose_nusc with a stage-1 config)"),
]
STAGE1_RULES = [
    (r"pose_encoder\.encoder\.(.+)", r"pose.encoder.net.\1"),
    (r"pose\.net\.0\.(.+)", r"pose.squeeze.\1"),
    (r"pose\.net\.1\.(.+)", r"pose.fuse.0.\1"),
    (r"pose\.net\.2\.(.+)", r"pose.fuse.2.\1"),
    (r"pose\.net\.3\.(.+)", r"pose.out.\1"),
]
STAGE1_SKIP = [
    (r"pose_encoder\.encoder\.fc\..+", "ImageNet classifier of their ResNet, unused"),
    (r"pose\.(refine_mlp|finial_conv)\..+", "their coarse-pose refinement branch, only used with coarse_RT, "
                                            "which their runner never passes"),
]
RULES = {"gsv": (STAGE2_RULES, STAGE2_SKIP), "gsp": (STAGE1_RULES, STAGE1_SKIP)}


@dataclass
class MappingReport:
    """What ``map_authors_state`` did, every entry by name."""
    state: dict = field(default_factory=dict)        # our key -> tensor, ready for load_state_dict(strict=False)
    loaded: list = field(default_factory=list)       # (their key, our key)
    missing: list = field(default_factory=list)      # our keys nothing was mapped to
    unexpected: list = field(default_factory=list)   # their keys no rule maps, or mapped to a key we lack
    skipped: list = field(default_factory=list)      # (their key, reason): known and deliberately left out
    mismatched: list = field(default_factory=list)   # (their key, our key, their shape, our shape)

    @property
    def complete(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def text(self, limit=None):
        """A readable report; ``limit`` caps each list (None: everything)."""
        def block(title, rows, count=None):
            shown = rows if limit is None else rows[:limit]
            more = [f"    ... and {len(rows) - len(shown)} more"] if len(shown) < len(rows) else []
            return [f"{title}: {len(rows) if count is None else count}"] + [f"    {r}" for r in shown] + more
        mism = [f"{a} -> {b}: theirs {tuple(sa)} vs ours {tuple(sb)}" for a, b, sa, sb in self.mismatched]
        skip = _group_skipped(self.skipped)
        return "\n".join([f"loaded: {len(self.loaded)} tensors"] + block("shape mismatches", mism)
                         + block("missing in their checkpoint (ours keep their initialisation)", self.missing)
                         + block("unexpected (theirs, no counterpart here)", self.unexpected)
                         + block("skipped on purpose", skip, len(self.skipped)))


def _group_skipped(skipped):
    by_reason = {}
    for key, reason in skipped:
        by_reason.setdefault(reason, []).append(key)
    return [f"{len(keys)} x {keys[0]}{', ...' if len(keys) > 1 else ''}: {reason}"
            for reason, keys in by_reason.items()]


def read_authors_folder(folder, names=None):
    """{"<file stem>.<key>": value} over the ``*.pth`` files of one of their checkpoint folders (``names``: which
    stems, default all but their optimiser state adam.pth). A missing folder or file is a clear error."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"authors' checkpoint folder not found: {folder} (expected e.g. ckpts/nusc-sem-gs "
                                f"with encoder.pth and depth.pth, from the links in their README)")
    stems = names or sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".pth") and f != "adam.pth")
    flat = {}
    for stem in stems:
        path = os.path.join(folder, f"{stem}.pth")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: an authors' checkpoint folder holds {', '.join(stems)}.pth")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict):
            raise RuntimeError(f"{path} is not a state dict (got {type(state).__name__})")
        for k, v in state.items():
            flat[f"{stem}.{k[7:] if k.startswith('module.') else k}"] = v
    return flat


def _rename(key, rules):
    for pattern, target in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return target(m) if callable(target) else m.expand(target)
    return None


def map_authors_state(theirs, ours, stage="gsv"):
    """Rename ``theirs`` (flat, from ``read_authors_folder``) onto ``ours`` (a model's state_dict) for ``stage``.

    Returns a MappingReport whose ``state`` holds the tensors that map to a key of ours with the same shape.
    """
    rules, skips = RULES[stage]
    rep = MappingReport()
    taken = set()
    for key, value in theirs.items():
        reason = next((r for p, r in skips if re.fullmatch(p, key)), None)
        if reason is not None:
            rep.skipped.append((key, reason))
            continue
        target = _rename(key, rules)
        if target is None or target not in ours or not torch.is_tensor(value):
            rep.unexpected.append(key if target is None else f"{key} -> {target} (no such key here)")
            continue
        if tuple(value.shape) != tuple(ours[target].shape):
            rep.mismatched.append((key, target, tuple(value.shape), tuple(ours[target].shape)))
            continue
        rep.state[target] = value.to(ours[target].dtype)
        rep.loaded.append((key, target))
        taken.add(target)
    taken |= {m[1] for m in rep.mismatched}
    rep.missing = [k for k in ours if k not in taken]
    return rep
