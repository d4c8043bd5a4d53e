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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from vcam_harmonize.models import PHNet, load_model, save_weights
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.files import atomic_write
from vcam_harmonize.training.config import TrainConfig, set_name
from vcam_harmonize.training.datasets import (
    FFHQHDataset,
    FolderDataset,
    IHarmony4Dataset,
    folder_names,
    portrait_splits,
    scene_splits,
)
from vcam_harmonize.training.losses import HarmonizationLoss
from vcam_harmonize.training.metrics import MetricAccumulator, image_metrics

logger = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
BEST = "best.safetensors"
LOG = "log.csv"
PLOT = "training.png"


@dataclass
class Splits:
    """Training data (one dataset) and the held-out sets by name."""

    train: Dataset
    val: dict[str, Dataset]


def build_splits(config: TrainConfig) -> Splits:
    """The training dataset (every set's training part, repeated) and the held-out sets."""
    data = config.data
    train_parts: list[Dataset] = []
    val: dict[str, Dataset] = {}
    for ds in data.sets:
        if ds.kind == "folder":
            if ds.split == "portraits":
                train_names, val_names = portrait_splits(ds.root, ds.val_fraction, data.seed)
            elif ds.split == "scenes":
                train_names, val_names = scene_splits(ds.root, ds.val_count, data.seed)
            else:
                names = folder_names(ds.root)
                train_names, val_names = scene_splits(
                    ds.root, min(ds.val_count, len(names) - 1), data.seed
                )
            # each repeat recolours its photos differently
            repeats = [
                FolderDataset(
                    ds.root,
                    train_names,
                    data.size,
                    data.hflip,
                    data.seed + 1000 * r,
                    ds.transfer_prob,
                    data.on_error,
                    crop_scale=ds.crop_scale,
                    global_colour=ds.global_colour,
                    identity_prob=ds.identity_prob,
                )
                for r in range(ds.repeat)
            ]
            held = FolderDataset(
                ds.root, val_names, data.size, 0.0, data.seed + 1, ds.transfer_prob, data.on_error
            )
        elif ds.kind == "iharmony4":
            train = IHarmony4Dataset(ds.root, "train", ds.subsets, data.size, data.hflip)
            held = IHarmony4Dataset(ds.root, "test", ds.subsets, data.size, 0.0)
            repeats = [train] * ds.repeat
        else:
            train = FFHQHDataset(ds.root, ds.real_root, "train", data.size, data.hflip)
            held = FFHQHDataset(ds.root, ds.real_root, "val", data.size, 0.0)
            repeats = [train] * ds.repeat
        train_parts.extend(repeats)
        if config.train.val_limit and len(held) > config.train.val_limit:
            held = Subset(held, range(config.train.val_limit))
        val[set_name(ds)] = held
    return Splits(ConcatDataset(train_parts), val)


def _set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell every on-the-fly dataset inside ``dataset`` which epoch it is."""
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            _set_epoch(part, epoch)
    elif isinstance(dataset, Subset):
        _set_epoch(dataset.dataset, epoch)
    elif hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


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
        except Exception as err:  # a foreign or damaged file fails in many ways
            raise InputError(
                f"{path}: cannot resume from this checkpoint ({err}); "
                f"delete it or pick another --out folder"
            ) from None
        if state.get("config") != json.loads(json.dumps(self.config.to_dict())):
            logger.warning("%s was written with another config; resuming with the new one", path)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_score = float(state["best_score"])
        self.optimizer_state = state["optimizer"]
        if self.main:
            logger.info("resuming %s at epoch %d (step %d)", self.out, self.epoch, self.step)

    def _save_checkpoint(self, optimizer) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_score": self.best_score,
            "stage": stage_of(self.config, max(self.epoch - 1, 0)),
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

    def _loader(self, epoch: int) -> DataLoader:
        _set_epoch(self.splits.train, epoch)
        sampler = None
        if self.distributed:
            sampler = DistributedSampler(
                self.splits.train, self.world, self.rank, shuffle=True, seed=self.config.train.seed
            )
            sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(self.config.train.seed + epoch)
        workers = self.config.data.workers
        return DataLoader(
            self.splits.train,
            batch_size=self.config.train.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=gen,
            num_workers=workers,
            drop_last=len(self.splits.train) > self.config.train.batch_size * self.world,
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
            train_loss = self._train_epoch(net, optimizer, scaler, stage.name, start, limit)
            self.epoch += 1
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

    def _batches(self, epoch: int) -> Iterator[dict]:
        loader = self._loader(epoch)
        return tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{total_epochs(self.config)}",
            disable=not self.progress,
            leave=False,
        )

    def _train_epoch(self, net, optimizer, scaler, stage_name, start, limit) -> float:
        self.model.train()
        total, count = 0.0, 0
        for batch in self._batches(self.epoch):
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
            total += loss.item()
            count += 1
            if self.main and self.step % self.config.train.log_every == 0:
                logger.info("step %d loss %.5f", self.step, loss.item())
            if self._out_of_time(start, limit):
                break
        return total / max(count, 1)

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
        return -result[name] if name.endswith("mse") else result[name]

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
