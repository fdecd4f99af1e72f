"""Count image decodes of one pipeline run: how many times PIL opens each input file.

    python benchmarks/decodes.py --data demo/data/test --out bench/decodes [--retrieval dinov2|vlad] [--config cpu]
                                 [section.key=value ...]

``dinov2`` retrieval runs a DINOv2 ViT-S with random weights (saved once under ``--out``): the
descriptors are meaningless, but the stage decodes and runs exactly as with real weights. Overrides
such as ``features.max_num_keypoints=256 retrieval.resize=224`` make the run cheaper without
changing what is decoded. Uses only ``load_infer_config`` and ``run_pipeline`` (both as old as the
pipeline), so the same script measures any revision (``PYTHONPATH=<checkout>``).
"""
from __future__ import annotations

import argparse
import shutil
from collections import Counter
from pathlib import Path

import torch
from PIL import Image


def random_weights(out: Path) -> Path:
    path = out / "dinov2-vits14-random.pth"
    if not path.is_file():
        import timm  # noqa: PLC0415
        torch.manual_seed(0)
        vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=518)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(vit.state_dict(), path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a competition split: one folder per dataset")
    p.add_argument("--out", type=Path, default=Path("bench/decodes"))
    p.add_argument("--retrieval", default="dinov2", choices=("dinov2", "vlad"))
    p.add_argument("--config", default="cpu")
    a, overrides = p.parse_known_args()
    from memposer.pipeline.cli import load_infer_config  # noqa: PLC0415
    from memposer.pipeline.run import run_pipeline  # noqa: PLC0415

    conf = load_infer_config(a.config, overrides)
    conf["retrieval"].update(method=a.retrieval, weights=str(random_weights(a.out)) if a.retrieval == "dinov2" else None)
    conf["reconstruction"]["num_threads"] = 1
    opened, real = Counter(), Image.open
    Image.open = lambda fp, *args, **kw: opened.update([str(fp)]) or real(fp, *args, **kw)
    work = a.out / "work"
    shutil.rmtree(work, ignore_errors=True)  # a cold run: nothing cached
    res = run_pipeline(a.data, a.out / "submission.csv", conf, work, progress=False)
    inputs = [k for k in opened if Path(k).resolve().parent.parent == a.data.resolve()]
    print(f"retrieval {a.retrieval}: {len(res.records)} images, {sum(opened[k] for k in inputs)} decodes "
          f"({sum(opened[k] for k in inputs) / max(1, len(res.records)):.2f} per image); "
          f"features {res.timings['features']:.1f} s, retrieval {res.timings['retrieval']:.1f} s")


if __name__ == "__main__":
    main()
