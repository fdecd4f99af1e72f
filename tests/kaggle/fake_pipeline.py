"""Stand-in for ``python -m memposer.pipeline.cli`` in the runner tests: behaves by dataset name.

``good*``: poses every image; ``crash*``: exits 3; ``hang*``: sleeps (its pid goes to WORK/hang.pid);
``garbage*``: writes a malformed CSV; ``silent*``: exits 0 without writing. The argv is saved to WORK/argv.txt.
"""
import argparse
import os
import sys
import time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--out", required=True)
p.add_argument("--work", required=True)
args, _ = p.parse_known_args()
work = Path(args.work)
work.mkdir(parents=True, exist_ok=True)
(work / "argv.txt").write_text("\n".join(sys.argv[1:]))
rows = ["image_id,dataset,scene,image,rotation_matrix,translation_vector"]
for ds in sorted(Path(args.data).iterdir()):
    print(f"fake pipeline: {ds.name}", flush=True)
    if ds.name.startswith("crash"):
        sys.exit("fake pipeline: simulated crash")
    if ds.name.startswith("hang"):
        (work / "hang.pid").write_text(str(os.getpid()))
        time.sleep(300)
    if ds.name.startswith("silent"):
        sys.exit(0)
    for i, im in enumerate(sorted(f.name for f in ds.iterdir())):
        pose = "1;0;0;0;1;0;0;0;1" if not ds.name.startswith("garbage") else "1;2"
        rows.append(f"{ds.name}_{im},{ds.name},scene{i % 2},{im},{pose},{i};0;0")
    rows.append(f"{ds.name}_extra.png,{ds.name},scene0,not_in_folder.png,1;0;0;0;1;0;0;0;1,0;0;0")
Path(args.out).write_text("\n".join(rows) + "\n")
