"""Train the model fercli ships (`fer predict builtin ...`) and write it into the package.

    python bench/builtin_model.py                 # train (100 minutes on a 2-core CPU), then export
    python bench/builtin_model.py --time 20m      # any further option goes to `fer train`
    python bench/builtin_model.py --from RUN_DIR  # export a run's best.safetensors only
    python bench/builtin_model.py --recipe bench/recipes/builtin-distilled.json --teachers-from 5e1f89d 8355b44

Training is bench/accuracy.py's: bench/recipes/builtin.json (the `cpu` recipe given 100 minutes, with
the default augmentation and classifier dropout 0.2 for its longer run) on FER2013 with the FER+ crowd
votes as probability targets (../shared's fer2013.csv.gz and fer2013new.csv; val carved from Training,
the best epoch chosen on val), scored on PublicTest against the crowd majority. The export keeps the
weights and what eval/predict need, adds the model card's figures, and leaves out the training faces'
thumbnails (data, not model). The card is docs/builtin-model.md; the JSON row this prints goes there.

`--teachers-from COMMIT ...` distils (fer train --teacher): the built-in models those commits shipped are
written to .data/teachers/ and taught the run; the 100-minute builtin-distilled.json recipe is
builtin.json with their averaged predictions as half of each target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEEP = ROOT / ".data" / "builtin"
RECIPE = ROOT / "bench" / "recipes" / "builtin.json"


def export(run_dir: Path, result: dict | None) -> Path:
    from fercli.builtin import BUILTIN_PATH
    from fercli.files.checkpoint import META_KEY, load_tensors, read_checked, save_checkpoint
    from fercli.files.safefile import read_header

    ckpt = run_dir / "best.safetensors"
    read_checked(ckpt)
    _, raw, _ = read_header(ckpt)
    meta = json.loads(raw[META_KEY])
    for key in ("format", "format_version", "fercli_version"):  # save_checkpoint writes its own
        meta.pop(key, None)
    meta["data"] = {"path": "fer2013.csv.gz + fer2013new.csv (FER+ votes)", "hash": meta["data"]["hash"]}
    if meta.get("teachers"):  # file names, not this machine's paths: builtin-<commit>.safetensors
        meta["teachers"] = [{"path": Path(t["path"]).name, "sha256": t["sha256"]} for t in meta["teachers"]]
        meta["recipe"]["teachers"] = [Path(t).name for t in meta["recipe"]["teachers"]]
    if result is not None:
        meta["card"] = {k: result[k] for k in ("test_acc", "test_macro_f1", "test_faces", "test_scored_against",
                                               "train_command_s", "cpu", "torch", "commit", "date")}  # fmt: skip
    save_checkpoint(BUILTIN_PATH, load_tensors(ckpt), meta)  # no train-faces thumbnails
    return BUILTIN_PATH


def teachers_from(commits: list[str]) -> list[str]:
    """`fer train --teacher` options for the built-in model each commit shipped, written to .data/teachers/."""
    inside = "src/fercli/builtin/ferplus-vgg4s.safetensors"
    options = []
    for commit in commits:
        out = ROOT / ".data" / "teachers" / f"builtin-{commit}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        blob = subprocess.run(["git", "show", f"{commit}:{inside}"], cwd=ROOT, capture_output=True, check=True).stdout
        out.write_bytes(blob)
        options += ["--teacher", str(out)]
    return options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="run_dir", type=Path, help="export this run's best.safetensors, no training")
    ap.add_argument("--recipe", default=str(RECIPE), help="a preset or recipe file (default: %(default)s)")
    ap.add_argument("--teachers-from", nargs="+", default=[], metavar="COMMIT",
                    help="distil from the built-in models these commits shipped")  # fmt: skip
    args, overrides = ap.parse_known_args()
    overrides += teachers_from(args.teachers_from)
    result = None
    run_dir = args.run_dir
    if run_dir is None:
        cmd = [sys.executable, str(ROOT / "bench" / "accuracy.py"), "--recipe", args.recipe, "--ferplus",
               "--labels", "probability", "--keep", str(KEEP), *overrides]  # fmt: skip
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(result))
        run_dir = Path(result["run_dir"])
    path = export(run_dir, result)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
