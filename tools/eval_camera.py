"""`vcam-harmonize-train evaluate`, with each weights file also scored as the camera shows
it: the composite rounded to 8 bits, PHNet at the camera's working
resolution (``--camera-res``, default 256), its prediction fitted as the camera's
colour transform (``--camera-transform``: ``global``, the camera's default, or
``local``; ``both`` scores each; rows ``NAME+camera-global`` and ``NAME+camera-local``) and
applied at the composite's own size by the camera's own
:class:`~vcam_harmonize.harmonizer.Harmonizer` (no temporal smoothing, the network on
every image, in the camera's arithmetic: ``--camera-precision``, logged). Training never
imports the camera, so this lives beside both:

    python tools/eval_camera.py --config lite_people \\
        --weights models/weights/phnet_lite.safetensors --weights composite \\
        --weights transfer --workers 1 --out docs/eval_lite_people

Every option of ``evaluate`` applies; the reports are the same files, with the
``+camera-...`` rows added.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch
from torch import Tensor

from vcam_harmonize.harmonizer import Harmonizer
from vcam_harmonize.models.errors import InputError, run_front_end
from vcam_harmonize.training import evaluate

log = logging.getLogger("eval_camera")


def camera_predictor(spec: str, device: torch.device, res: int = 256,
                     transform: str = "global", precision: str = "auto") -> evaluate.Predictor:
    """What the camera makes of each composite of a batch with the weights ``spec``."""
    harmonizer = Harmonizer(spec, str(device), res, transform=transform, precision=precision)
    log.info("the camera's %s network runs in %s", transform, harmonizer.network_precision)

    def predict(comp: Tensor, mask: Tensor) -> Tensor:
        out = torch.empty(comp.shape, dtype=torch.float32, device=comp.device)
        for i in range(comp.shape[0]):
            harmonizer.reset()
            shown = harmonizer.harmonize(evaluate.to_uint8(comp[i]),
                                         mask[i, 0].float().cpu().numpy())
            out[i] = torch.from_numpy(shown).to(comp.device).permute(2, 0, 1).float() / 255
        return out

    return predict


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tools/eval_camera.py", add_help=False)
    parser = evaluate.register(top.add_subparsers())
    parser.prog = "tools/eval_camera.py"
    parser.description = ("`evaluate` with each weights file also scored as the camera "
                          "shows it (NAME+camera).")
    parser.add_argument("--camera-res", type=int, default=256,
                        help="the camera's working resolution (default 256)")
    parser.add_argument("--camera-transform", choices=["local", "global", "both"],
                        default="global",
                        help="the camera's colour transform (default global; both: each)")
    parser.add_argument("--camera-precision", choices=["auto", "float32"], default="auto",
                        help="the camera's arithmetic (default auto: bfloat16 on a CPU that "
                             "computes it, as the camera does)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        if args.camera_res <= 0 or args.camera_res % 8:
            raise InputError(f"--camera-res must be a positive multiple of 8 (such as 256), "
                             f"got {args.camera_res}")
        kinds = {"global": ["global"], "local": ["local"],
                 "both": ["global", "local"]}[args.camera_transform]

        def also(spec: str, label: str, device: torch.device) -> dict:
            return {f"{label}+camera-{kind}":
                    camera_predictor(spec, device, args.camera_res, kind,
                                     args.camera_precision) for kind in kinds}

        return evaluate.run(args, also)

    return run_front_end(run, "interrupted")


if __name__ == "__main__":
    sys.exit(main())
