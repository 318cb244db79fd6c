"""Fixed against adaptive keyframes: accuracy, stability and cost on a VSPW-layout split.

Runs `tfcseg.evaluate.evaluate_model` once per setting (TFC with a fixed keyframe interval K,
or `keyframe_interval="auto"` with a `KeyframePolicy`), appends one JSON line per run to
`<out>/runs.jsonl`, writes the markdown table `<out>/table.md` and, with `--plot`, the
trade-off plot (needs matplotlib: `pip install -e ".[plot]"`).

Cost is reported two ways: frames/s as measured (the model's time inside `eval`: depends on
the machine and on what else runs on it) and MACs per frame relative to per-frame SegFormer,
counted from the keyframes each run made (load-independent):

    python scripts/keyframe_tradeoff.py --data-root ../shared/data/camvid --out runs/keyframes \
        --plot docs/keyframe_tradeoff.png

    # redraw the table and the plot from runs.jsonl without running anything
    python scripts/keyframe_tradeoff.py --out runs/keyframes --plot docs/keyframe_tradeoff.png --no-run

Settings (`--settings`, comma-separated): `K` for a fixed interval (`4`), or
`auto:SIMILARITY:SHARE[:MAX[:MIN]]` (`auto:0.5:0.1:16`); `auto` alone is the default policy.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

DEFAULT_SETTINGS = ("1,2,4,8,16,auto,auto:0.7:0.25:16,auto:0.7:0.4:16,auto:0.7:0.45:16,auto:0.75:0.35:16,"
                    "auto:0.75:0.45:16,auto:0.75:0.5:16,auto:0.8:0.5:16,auto:0.65:0.2:16,auto:0.65:0.3:16,"
                    "auto:0.6:0.2:16,auto:0.5:0.1:16,auto:0.7:0.35:16,auto:0.7:0.35:8")


def parse_setting(text: str) -> dict[str, Any]:
    """"4" -> {"keyframe_interval": 4}; "auto:0.5:0.1:16" -> the auto options."""
    parts = text.strip().split(":")
    if parts[0] != "auto":
        return {"keyframe_interval": int(parts[0])}
    names = ("keyframe_similarity", "keyframe_changed_share", "max_keyframe_interval", "min_keyframe_interval")
    kinds = (float, float, int, int)
    out: dict[str, Any] = {"keyframe_interval": "auto"}
    for name, kind, value in zip(names, kinds, parts[1:]):
        out[name] = kind(value)
    return out


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception:  # noqa: BLE001
        return platform.processor() or "unknown"


def count_pass_macs(model, root: str, split: str, short_side: int | None) -> dict[str, int]:
    """MACs of a keyframe, a non-keyframe and an auto keyframe chosen after its stages 1-2,
    on the split's first two frames at the inference size."""
    import torch

    from tfcseg.benchmark import count_macs
    from tfcseg.data.vspw import VSPWDataset
    from tfcseg.segmenter import inference_size, preprocess

    dataset = VSPWDataset(root, split)
    records = dataset.frames(dataset.videos[0])[:2]
    frames = [dataset.read_frame(r)[0] for r in records]
    side = model.config.inference_short_side if short_side is None else short_side
    size = inference_size(*frames[0].shape[:2], side)
    px0, px1 = (preprocess(f, size, model.device) for f in frames)
    with torch.inference_mode():
        _, state = model.keyframe(px0)

        def on_change() -> None:
            x1, x2 = model.low_level(px1)
            model.similarity(x1, x2, state)
            model.keyframe_from_low_level(size, x1, x2)

        return {"keyframe": count_macs(lambda: model.keyframe(px0)),
                "non_keyframe": count_macs(lambda: model.non_keyframe(px1, state)),
                "keyframe_on_change": count_macs(on_change), "size": list(size)}


def run(args) -> None:
    from tfcseg.benchmark import tfc_macs_per_frame
    from tfcseg.evaluate import evaluate_model
    from tfcseg.hub.resolve import load_model
    from tfcseg.runtime import resolve_device

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, device=resolve_device(args.device))
    macs = count_pass_macs(model, args.data_root, args.split, args.short_side)
    for text in args.settings.split(","):
        setting = parse_setting(text)
        print(f"{text}: evaluating", file=sys.stderr, flush=True)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            r = evaluate_model(model, args.data_root, split=args.split, mode="tfc", short_side=args.short_side,
                               progress=False, **setting)
        rel = tfc_macs_per_frame(macs, r["frames"], r["keyframes"], r["keyframes_on_change"] or 0) / macs["keyframe"]
        row = {
            "setting": text, **setting, "keyframe_policy": r["keyframe_policy"],
            "fps": r["fps"], "miou": r["miou"], "mvc8": r["mvc8"], "mvc16": r["mvc16"],
            "flicker": r["flicker"], "keyframe_share": r["keyframe_share"], "keyframes": r["keyframes"],
            "keyframes_on_change": r["keyframes_on_change"], "mean_keyframe_interval": r["mean_keyframe_interval"],
            "relative_macs": rel, "macs": macs, "frames": r["frames"], "dataset": r["dataset"],
            "split": r["split"], "short_side": r["short_side"], "model": args.model or "default",
            "cpu": cpu_name(), "note": args.note, "wall_s": time.perf_counter() - start,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with open(out / "runs.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{text}: mIoU {_pct(r['miou'])} mVC8 {_pct(r['mvc8'])} keyframes "
              f"{_pct(r['keyframe_share'])}% fps {r['fps']:.2f}", file=sys.stderr, flush=True)


def load_rows(out: Path) -> list[dict[str, Any]]:
    """The latest run of each setting (`auto` and the same options spelt out are one),
    fixed intervals first (by K), then auto by falling cost; `default` marks the rows of
    the current `KeyframePolicy()` defaults."""
    from tfcseg.segmenter import KeyframePolicy

    default = KeyframePolicy().as_dict()
    rows: dict[str, dict[str, Any]] = {}
    for line in (out / "runs.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            row["default"] = row["keyframe_policy"] == default
            rows[json.dumps([row["keyframe_interval"], row["keyframe_policy"]], sort_keys=True)] = row
    return sorted(rows.values(), key=lambda r: (r["keyframe_interval"] == "auto",
                                                r["keyframe_interval"] if r["keyframe_interval"] != "auto"
                                                else -r["relative_macs"]))


def label(row: dict[str, Any]) -> str:
    if row["keyframe_interval"] != "auto":
        k = row["keyframe_interval"]
        return "K = 1 (SegFormer)" if k == 1 else f"K = {k}"
    p = row["keyframe_policy"]
    text = (f"auto: similarity < {p['keyframe_similarity']:g} on > {p['keyframe_changed_share']:.0%}, "
            f"max {p['max_keyframe_interval']}")
    if p["min_keyframe_interval"] != 1:
        text += f", min {p['min_keyframe_interval']}"
    return text


def command(row: dict[str, Any]) -> str:
    parts = [f"-k {row['keyframe_interval']}"]
    if row["keyframe_interval"] == "auto" and not row.get("default"):
        p = row["keyframe_policy"]
        parts += [f"--keyframe-similarity {p['keyframe_similarity']:g}",
                  f"--keyframe-changed-share {p['keyframe_changed_share']:g}",
                  f"--max-keyframe-interval {p['max_keyframe_interval']}"]
        if p["min_keyframe_interval"] != 1:
            parts.append(f"--min-keyframe-interval {p['min_keyframe_interval']}")
    return "`" + " ".join(parts) + "`"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    pct = _pct
    lines = ["| keyframes | frames/s | mIoU | mVC8 | mVC16 | keyframe share | on a change | mean interval "
             "| MACs vs SegFormer | options |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        name = label(r) + (" **(default)**" if r.get("default") else "")
        mean = "-" if r["mean_keyframe_interval"] is None else f"{r['mean_keyframe_interval']:.1f}"
        change = "-" if r["keyframes_on_change"] is None else str(r["keyframes_on_change"])
        lines.append(f"| {name} | {r['fps']:.2f} | {pct(r['miou'])} | {pct(r['mvc8'])} | {pct(r['mvc16'])} | "
                     f"{pct(r['keyframe_share'])}% | {change} | {mean} | {r['relative_macs']:.2f} | {command(r)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install -e \".[plot]\" (or pip install matplotlib)")
    fixed_all = [r for r in rows if r["keyframe_interval"] != "auto"]
    auto_all = [r for r in rows if r["keyframe_interval"] == "auto"]
    metrics = [("miou", "mIoU (%)"), ("mvc8", "mVC8 (%)"), ("mvc16", "mVC16 (%)")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), constrained_layout=True)
    for ax, (key, name) in zip(axes, metrics):
        fixed = [r for r in fixed_all if r[key] is not None]
        auto = [r for r in auto_all if r[key] is not None]
        xs = [r["relative_macs"] for r in fixed]
        ax.plot(xs, [100 * r[key] for r in fixed], "o-", color="tab:blue", label="fixed K")
        for r, x in zip(fixed, xs):
            ax.annotate(f"K={r['keyframe_interval']}", (x, 100 * r[key]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8, color="tab:blue")
        plain = [r for r in auto if not r.get("default")]
        ax.plot([r["relative_macs"] for r in plain], [100 * r[key] for r in plain], "s", color="tab:orange",
                label="auto")
        for r in [r for r in auto if r.get("default")]:
            ax.plot(r["relative_macs"], 100 * r[key], "*", color="tab:red", markersize=14, label="auto (default)")
        ax.set_xlabel("MACs per frame, relative to SegFormer")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", help="a VSPW-layout dataset (needed unless --no-run)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--model", default=None, help="default: the model in weights/")
    ap.add_argument("--short-side", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS)
    ap.add_argument("--out", default="runs/keyframes")
    ap.add_argument("--note", default="", help="kept with each run, e.g. 'CPU shared with a training run'")
    ap.add_argument("--plot", type=Path, default=None, help="write the trade-off plot (PNG) here")
    ap.add_argument("--title", default=None)
    ap.add_argument("--no-run", action="store_true", help="only redraw the table/plot from runs.jsonl")
    args = ap.parse_args()
    out = Path(args.out)
    if not args.no_run:
        if not args.data_root:
            ap.error("--data-root is needed to run the evaluations")
        run(args)
    rows = load_rows(out)
    (out / "table.md").write_text(table(rows))
    print(table(rows))
    if args.plot:
        first = rows[0]
        title = args.title or (f"TFC, fixed vs adaptive keyframes: {Path(first['dataset']).name} {first['split']}, "
                               f"{first['frames']} frames, model {first['model']}")
        plot(rows, args.plot, title)


if __name__ == "__main__":
    main()
