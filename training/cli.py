"""``vcam-harmonize-train``: make-ffhqh | train | evaluate."""

from __future__ import annotations

import argparse
import logging
import sys

from vcam_harmonize.models.errors import run_front_end
from vcam_harmonize.training import evaluate, make_ffhqh


def _train(args: argparse.Namespace) -> int:
    from vcam_harmonize.training.config import load_config
    from vcam_harmonize.training.train import Trainer

    config = load_config(args.config, args.set)
    trainer = Trainer(
        config, args.out, device=args.device, resume=not args.fresh, progress=not args.no_progress
    )
    try:
        metrics = trainer.fit()
    finally:
        trainer.close()
    if trainer.main and metrics:
        print(f"finished at epoch {metrics['epoch']}: weights in {trainer.out}")
    return 0


def _register_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train PHNet from a TOML config (resumes an interrupted run)",
        description="Train PHNet in stages from a TOML config. Run under "
        "`torchrun --nproc_per_node N` for several GPUs or nodes.",
    )
    parser.add_argument(
        "--config",
        required=True,
        help="a TOML file or the name of a shipped config (lite, ffhqh256, ...)",
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, weights)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.batch_size=8 (repeatable)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--fresh", action="store_true", help="ignore a checkpoint in --out instead of resuming it"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcam-harmonize-train", description="PHNet training pipeline (FFHQH, iHarmony4)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    make_ffhqh.register(subparsers)
    _register_train(subparsers)
    evaluate.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    args = build_parser().parse_args(argv)
    return run_front_end(lambda: args.func(args),
                         "interrupted; run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
