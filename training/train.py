"""Staged PHNet training (Sec. 5.1) on one CPU, one GPU or many GPUs.

One run executes the config's stages in order (by default the paper's three: the
encoder-decoder without the PFE; the PFE added with the encoder frozen; everything at
a low rate). Lion optimizer, mixed precision on CUDA, a checkpoint after every epoch
(``last.pt``, resumed automatically after a kill), the best weights by validation PSNR
(``best.safetensors``), a CSV log and a plot of loss and PSNR.

Several processes: launch with ``torchrun --nproc_per_node N`` (any number of nodes);
each process trains on its shard through DistributedDataParallel (NCCL on GPUs, gloo on
CPUs) and rank 0 validates and writes the files.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from vcam_harmonize.models import PHNet, load_model, save_weights
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.files import atomic_write
from vcam_harmonize.training.config import TrainConfig
from vcam_harmonize.training.datasets import build_splits, set_epoch
from vcam_harmonize.training.losses import HarmonizationLoss
from vcam_harmonize.training.metrics import MetricAccumulator, image_metrics

logger = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
BEST = "best.safetensors"
LOG = "log.csv"
PLOT = "training.png"


def stage_of(config: TrainConfig, epoch: int) -> int:
    """Index of the stage that global ``epoch`` (0-based) belongs to."""
    end = 0
    for index, stage in enumerate(config.stages):
        end += stage.epochs
        if epoch < end:
            return index
    return len(config.stages) - 1


def total_epochs(config: TrainConfig) -> int:
    return sum(stage.epochs for stage in config.stages)


def _remove_stale_temp_files(folder: Path) -> None:
    """Delete the temporary files of writes that a kill cut short (they end in .tmp)."""
    for name in (CHECKPOINT, BEST, LOG, PLOT):
        for stale in folder.glob(f"{name}*.tmp"):
            stale.unlink()


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


class Trainer:
    """Runs one training job in ``out_dir``; see the module docstring."""

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        device: str | None = None,
        resume: bool = True,
        progress: bool = True,
    ):
        self.config = config
        self.out = Path(out_dir)
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self._own_group = self.distributed and not dist.is_initialized()
        if self._own_group:
            backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
            dist.init_process_group(backend)
        try:
            self._setup(device, resume, progress)
        except BaseException:
            self.close()
            raise

    def _setup(self, device: str | None, resume: bool, progress: bool) -> None:
        config = self.config
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.main = self.rank == 0
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {device}: PyTorch sees no CUDA GPU; use --device cpu")
        if device.startswith("cuda") and self.distributed:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        self.device = torch.device(device)
        self.progress = progress and self.main
        self._seed(config.train.seed + self.rank)
        self.splits = build_splits(config)
        if config.model.init:
            self.model = load_model(config.model.init)
        else:
            self.model = PHNet.from_config(config.model.name)
        self.model.to(self.device)
        self.loss_fn = HarmonizationLoss(
            config.loss.variant, tuple(config.loss.weights), config.loss.min_area
        )
        self.epoch, self.step, self.best_score = 0, 0, -math.inf
        self.batch, self.epoch_loss = 0, [0.0, 0]  # batches done in the epoch; loss sum, count
        self.optimizer_state = None
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            _remove_stale_temp_files(self.out)
        if resume and (self.out / CHECKPOINT).is_file():
            self._load_checkpoint(self.out / CHECKPOINT)
        self.amp_dtype = None
        if config.train.amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def close(self) -> None:
        """Leave the process group that this trainer joined (``torchrun`` runs)."""
        if self._own_group and dist.is_initialized():
            dist.destroy_process_group()

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    # ------------------------------------------------------------------ checkpoints
    def _load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            self.model.use_pfe = bool(state.get("use_pfe", True))
        except Exception as err:  # a foreign or damaged file fails in many ways
            raise InputError(
                f"{path}: cannot resume from this checkpoint ({err}); "
                f"delete it or pick another --out folder"
            ) from None
        if state.get("config") != json.loads(json.dumps(self.config.to_dict())):
            logger.warning("%s was written with another config; resuming with the new one", path)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch = int(state.get("batch", 0))
        self.epoch_loss = [float(v) for v in state.get("epoch_loss", (0.0, 0))]
        self.best_score = float(state["best_score"])
        self.optimizer_state = state["optimizer"]
        if self.main:
            logger.info("resuming %s in epoch %d after step %d", self.out, self.epoch + 1,
                        self.step)

    def _save_checkpoint(self, optimizer) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "epoch_loss": self.epoch_loss,
            "best_score": self.best_score,
            "use_pfe": self.model.use_pfe,
            "stage": stage_of(self.config, self.epoch if self.batch else max(self.epoch - 1, 0)),
            "config": self.config.to_dict(),
        }
        _atomic_torch_save(state, self.out / CHECKPOINT)

    # ------------------------------------------------------------------ training
    def _optimizer(self, stage):
        from lion_pytorch import Lion

        for name, param in self.model.named_parameters():
            param.requires_grad_(not (stage.freeze_encoder and name.startswith("encoder.")))
        params = [p for p in self.model.parameters() if p.requires_grad]
        return Lion(
            params,
            lr=stage.lr,
            betas=tuple(self.config.train.betas),
            weight_decay=self.config.train.weight_decay,
        )

    def _loader(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        """This epoch's batches in their fixed order (a function of the seed and the
        epoch), without the first ``skip_batches``, which a resumed run has done already."""
        set_epoch(self.splits.train, epoch)
        seed = self.config.train.seed
        if self.distributed:
            shard = DistributedSampler(self.splits.train, self.world, self.rank, shuffle=True,
                                       seed=seed)
            shard.set_epoch(epoch)
            order = list(shard)
        else:
            gen = torch.Generator().manual_seed(seed + epoch)
            order = torch.randperm(len(self.splits.train), generator=gen).tolist()
        batch_size = self.config.train.batch_size
        return DataLoader(
            self.splits.train,
            batch_size=batch_size,
            sampler=order[skip_batches * batch_size :],
            num_workers=self.config.data.workers,
            drop_last=len(self.splits.train) > batch_size * self.world,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def fit(self) -> dict:
        """Train until the last stage ends (or ``max_minutes``); returns the last metrics."""
        config, start = self.config, time.monotonic()
        limit = config.train.max_minutes * 60
        last_metrics: dict = {}
        optimizer, stage_index, net = None, None, None
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        while self.epoch < total_epochs(config):
            index = stage_of(config, self.epoch)
            stage = config.stages[index]
            if index != stage_index:
                stage_index = index
                self.model.use_pfe = stage.pfe
                optimizer = self._optimizer(stage)
                if self.optimizer_state is not None:
                    try:
                        optimizer.load_state_dict(self.optimizer_state)
                    except ValueError:
                        logger.info(
                            "optimizer state does not fit stage %s; starting it fresh", stage.name
                        )
                    self.optimizer_state = None
                net = self.model
                if self.distributed:
                    net = DistributedDataParallel(
                        self.model,
                        device_ids=[self.device.index] if self.device.type == "cuda" else None,
                        find_unused_parameters=True,
                    )
            finished = self._train_epoch(net, optimizer, scaler, stage.name, start, limit)
            if not finished:  # out of time: the checkpoint holds the place in the epoch
                if self.main:
                    last_metrics = {"epoch": self.epoch, "stage": stage.name, "step": self.step,
                                    "minutes": (time.monotonic() - start) / 60}
                    last_metrics |= self._validate()
                    self._save_checkpoint(optimizer)
                if self.distributed:
                    dist.barrier()
                logger.info("max_minutes reached in epoch %d after step %d; checkpoint saved",
                            self.epoch + 1, self.step)
                break
            train_loss = self.epoch_loss[0] / max(self.epoch_loss[1], 1)
            self.epoch += 1
            self.batch, self.epoch_loss = 0, [0.0, 0]
            timed_out = self._out_of_time(start, limit)
            if self.main:
                last_metrics = {
                    "epoch": self.epoch,
                    "stage": stage.name,
                    "step": self.step,
                    "train_loss": train_loss,
                    "minutes": (time.monotonic() - start) / 60,
                }
                if (
                    self.epoch % config.train.val_every == 0
                    or timed_out
                    or self.epoch == total_epochs(config)
                ):
                    last_metrics |= self._validate()
                self._log(last_metrics)
                self._save_checkpoint(optimizer)
            if self.distributed:
                dist.barrier()
            if timed_out:
                logger.info("max_minutes reached after epoch %d; checkpoint saved", self.epoch)
                break
        return last_metrics

    def _batches(self) -> Iterator[dict]:
        loader = self._loader(self.epoch, self.batch)
        return tqdm(
            loader,
            desc=f"epoch {self.epoch + 1}/{total_epochs(self.config)}",
            initial=self.batch,
            total=self.batch + len(loader),
            disable=not self.progress,
            leave=False,
        )

    def _train_epoch(self, net, optimizer, scaler, stage_name, start, limit) -> bool:
        """Train the rest of the current epoch; False if ``max_minutes`` cut it short.
        Every ``train.checkpoint_every`` steps the checkpoint records the place."""
        self.model.train()
        every = self.config.train.checkpoint_every
        for batch in self._batches():
            comp = batch["comp"].to(self.device, non_blocking=True)
            real = batch["real"].to(self.device, non_blocking=True)
            mask = batch["mask"].to(self.device, non_blocking=True)
            with self._autocast():
                pred = net(comp, mask)
            loss, _ = self.loss_fn(pred.float(), real, comp, mask)
            if not torch.isfinite(loss):
                raise InputError(
                    f"loss became {loss.item()} at step {self.step}; "
                    f"lower the learning rate of stage {stage_name}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            self.step += 1
            self.batch += 1
            self.epoch_loss = [self.epoch_loss[0] + loss.item(), self.epoch_loss[1] + 1]
            if self.main and self.step % self.config.train.log_every == 0:
                logger.info("step %d loss %.5f", self.step, loss.item())
            if self._out_of_time(start, limit):
                return False
            if self.main and every and self.step % every == 0:
                self._save_checkpoint(optimizer)
        return True

    def _out_of_time(self, start: float, limit: float) -> bool:
        """Whether ``max_minutes`` is spent; every process acts on rank 0's clock, so all
        of them stop after the same step."""
        if not limit:
            return False
        late = time.monotonic() - start > limit
        if self.distributed:
            flag = torch.tensor([float(late)], device=self.device)
            dist.broadcast(flag, 0)
            late = bool(flag.item())
        return late

    @torch.no_grad()
    def _validate(self) -> dict:
        """Held-out metrics per set, with the composite's own scores for reference."""
        self.model.eval()
        acc, base = MetricAccumulator(), MetricAccumulator()
        for name, dataset in self.splits.val.items():
            loader = DataLoader(
                dataset,
                batch_size=self.config.train.batch_size,
                num_workers=self.config.data.workers,
            )
            for batch in loader:
                comp, real, mask = (batch[k].to(self.device) for k in ("comp", "real", "mask"))
                with self._autocast():
                    pred = self.model(comp, mask).float()
                acc.add(name, image_metrics(pred, real, comp, mask))
                base.add(name, image_metrics(comp, real, comp, mask))
        self.model.train()
        result = {}
        for name, means in acc.dataset_means().items():
            composite = base.dataset_means()[name]
            for key in ("mse", "fmse", "psnr", "fpsnr"):
                result[f"{name}/{key}"] = means[key]
                result[f"{name}/composite_{key}"] = composite[key]
        val_psnr = acc.overall_means()["psnr"]
        result["val_psnr"] = val_psnr
        result |= worst_group_scores(result, list(self.splits.val))
        score = self._score(result)
        if score > self.best_score:
            self.best_score = score
            save_weights(
                self.model,
                self.out / BEST,
                extra={"epoch": str(self.epoch), "val_psnr": f"{val_psnr:.4f}",
                       "best_metric": self.config.train.best_metric or "val_psnr"},
            )
        return result

    def _score(self, result: dict) -> float:
        """The selection score of best.safetensors (higher is better)."""
        name = self.config.train.best_metric or "val_psnr"
        if name not in result:
            raise InputError(f"config: train.best_metric {name!r} is not a logged metric "
                             f"(choose from {', '.join(sorted(result))})")
        return -result[name] if lower_is_better(name) else result[name]

    # ------------------------------------------------------------------ logs
    def _log(self, metrics: dict) -> None:
        path = self.out / LOG
        rows = []
        if path.is_file():
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
        rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in metrics.items()})
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        plot_log(path, self.out / PLOT)
        summary = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in metrics.items()
            if "/" not in k
        )
        logger.info("%s", summary)


def worst_group_scores(result: dict, sets: list[str]) -> dict:
    """The worst set's score against its composite: ``val_worst_fmse_ratio`` (the largest
    fMSE / composite fMSE, lower is better) and ``val_min_psnr_gain`` (the smallest PSNR
    gain in dB). Selecting by these keeps a small group from being made worse unseen."""
    ratios = [result[f"{n}/fmse"] / max(result[f"{n}/composite_fmse"], 1e-9) for n in sets]
    gains = [result[f"{n}/psnr"] - result[f"{n}/composite_psnr"] for n in sets]
    return {"val_worst_fmse_ratio": max(ratios), "val_min_psnr_gain": min(gains)}


def lower_is_better(metric: str) -> bool:
    """Whether a logged metric improves downwards (errors and ratios of errors)."""
    return metric.endswith(("mse", "ratio"))


def plot_log(csv_path: Path, png_path: Path) -> None:
    """Plot training loss and validation PSNR per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(epochs, [float(r["train_loss"]) for r in rows], marker=".")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    val = [(int(r["epoch"]), float(r["val_psnr"])) for r in rows if r.get("val_psnr")]
    if val:
        ax2.plot(*zip(*val, strict=True), marker=".", label="model")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation PSNR (dB)")
    fig.tight_layout()
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
