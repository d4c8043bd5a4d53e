"""Staged training on a tiny folder of real scene crops: learning, stages, resume after a
kill, outputs, a 2-process DDP run on gloo, and the CLI's answers to bad input."""

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader

from vcam_harmonize.models import InputError, load_model
from vcam_harmonize.training import cli
from vcam_harmonize.training.config import load_config
from vcam_harmonize.training.train import BEST, CHECKPOINT, LOG, PLOT, Trainer

SCENES = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "scenes"
# eight photos of different kinds, 15-50 % foreground
NAMES = ["image_100030", "image_100305", "image_100601", "image_101385",
         "image_101516", "image_101550", "image_101579", "image_102103"]  # fmt: skip
STAGES = {
    "three": """
[[stages]]
name = "encoder-decoder"
epochs = 1
lr = 1e-3
pfe = false

[[stages]]
name = "pfe"
epochs = 1
lr = 5e-4
pfe = true
freeze_encoder = true

[[stages]]
name = "all"
epochs = 1
lr = 2e-4
pfe = true
""",
    "one": """
[[stages]]
name = "main"
epochs = {epochs}
lr = 1e-3
""",
}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """images/ and masks/ with 40x40 copies of eight real scene photos."""
    if not SCENES.is_dir():
        pytest.skip(f"no shared scenes at {SCENES}")
    root = tmp_path_factory.mktemp("tiny")
    for folder in ("images", "masks"):
        (root / folder).mkdir()
    for name in NAMES:
        image = cv2.imread(str(SCENES / "images" / f"{name}.jpg"))
        mask = cv2.imread(str(SCENES / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        small = cv2.resize(image, (40, 40), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "images" / f"{name}.png"), small)
        cv2.imwrite(str(root / "masks" / f"{name}.png"),
                    cv2.resize(mask, (40, 40), interpolation=cv2.INTER_NEAREST))
    return root


def write_config(path: Path, root: Path, stages: str = "three", epochs: int = 1,
                 repeat: int = 2, extra: str = "") -> Path:
    """A tiny config: the lite model at 32x32, 6 training and 2 held-out photos."""
    path.write_text(f"""
[model]
name = "lite"

[data]
size = 32
hflip = 0.0
workers = 0
{extra}

[[data.sets]]
kind = "folder"
root = "{root.as_posix()}"
name = "tiny"
val_count = 2
repeat = {repeat}

[loss]
variant = "blended"
weights = [0.0, 1.0, 0.0]

[train]
batch_size = 4
log_every = 1
""" + STAGES[stages].format(epochs=epochs))
    return path


def log_rows(out: Path) -> list[dict]:
    with open(out / LOG, newline="") as handle:
        return list(csv.DictReader(handle))


def cli_command() -> list[str]:
    """The installed ``vcam-harmonize-train`` script (or the module, if not installed)."""
    script = Path(sys.executable).with_name("vcam-harmonize-train")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "vcam_harmonize.training.cli"]


# ----------------------------------------------------------------------------- learning
def test_a_few_training_steps_lower_the_loss_on_a_tiny_set(tiny_folder, tmp_path):
    config = load_config(write_config(tmp_path / "tiny.toml", tiny_folder, "one", epochs=4,
                                      repeat=16))
    trainer = Trainer(config, tmp_path / "run", device="cpu", progress=False)
    batch = next(iter(DataLoader(trainer.splits.train, batch_size=6)))

    def loss() -> float:
        trainer.model.eval()
        with torch.no_grad():
            pred = trainer.model(batch["comp"], batch["mask"])
        return trainer.loss_fn(pred, batch["real"], batch["comp"], batch["mask"])[0].item()

    before = loss()
    metrics = trainer.fit()
    assert metrics["epoch"] == 4 and metrics["step"] == 4 * 24  # 96 samples, batch 4
    assert loss() < 0.8 * before


def test_stages_run_in_order_with_the_pfe_and_the_frozen_encoder(tiny_folder, tmp_path):
    config = load_config(write_config(tmp_path / "tiny.toml", tiny_folder))
    trainer = Trainer(config, tmp_path / "run", device="cpu", progress=False)
    model, train_epoch = trainer.model, trainer._train_epoch
    pfe_calls, seen = [], []
    model.pfe.register_forward_hook(lambda *_: pfe_calls.append(model.training))

    def params(prefix: str) -> dict:
        return {k: v.detach().clone() for k, v in model.named_parameters()
                if k.startswith(prefix)}

    def spy(net, optimizer, *args):
        before = {part: params(part) for part in ("encoder.", "decoder.", "pfe.")}
        steps, pfe_calls[:] = trainer.step, []
        result = train_epoch(net, optimizer, *args)
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        seen.append({
            "use_pfe": model.use_pfe,
            "lr": optimizer.param_groups[0]["lr"],
            "pfe_calls": sum(pfe_calls),  # training forwards only
            "steps": trainer.step - steps,
            "encoder_in_optimizer": any(id(p) in optimized for p in model.encoder.parameters()),
            **{f"{part}changed": any(not torch.equal(v, params(part)[k])
                                     for k, v in before[part].items())
               for part in before},
        })
        return result

    trainer._train_epoch = spy
    trainer.fit()
    encoder_decoder, pfe, everything = seen
    assert [s["lr"] for s in seen] == [1e-3, 5e-4, 2e-4]
    assert all(s["steps"] == 3 for s in seen)  # 12 samples, batch 4
    # stage 1: no PFE; encoder and decoder learn
    assert not encoder_decoder["use_pfe"] and encoder_decoder["pfe_calls"] == 0
    assert encoder_decoder["encoder.changed"] and encoder_decoder["decoder.changed"]
    assert not encoder_decoder["pfe.changed"]
    # stage 2: the PFE gates every step; the encoder stays as it was
    assert pfe["use_pfe"] and pfe["pfe_calls"] == pfe["steps"]
    assert not pfe["encoder_in_optimizer"] and not pfe["encoder.changed"]
    assert pfe["decoder.changed"] and pfe["pfe.changed"]
    # stage 3: everything learns, with the PFE
    assert everything["use_pfe"] and everything["encoder_in_optimizer"]
    assert everything["encoder.changed"] and everything["pfe_calls"] == everything["steps"]

    out = tmp_path / "run"
    rows = log_rows(out)
    assert [(r["epoch"], r["stage"], r["step"]) for r in rows] == [
        ("1", "encoder-decoder", "3"), ("2", "pfe", "6"), ("3", "all", "9")]
    assert all(float(r["val_psnr"]) > 10 for r in rows)
    # the best weights load as a PHNet and are those of the best validated epoch
    best_epoch = max(rows, key=lambda r: float(r["val_psnr"]))["epoch"]
    with safe_open(str(out / BEST), framework="pt") as handle:
        assert handle.metadata()["epoch"] == best_epoch
    best = load_model(out / BEST)
    assert best.config == model.config
    assert (out / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 3 and state["stage"] == 2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state["model"].items())


# ----------------------------------------------------------------------------- resume
def test_resume_continues_the_same_run(tiny_folder, tmp_path):
    straight = tmp_path / "straight"
    config2 = load_config(write_config(tmp_path / "two.toml", tiny_folder, "one", epochs=2))
    Trainer(config2, straight, device="cpu", progress=False).fit()

    resumed = tmp_path / "resumed"
    config1 = load_config(write_config(tmp_path / "one.toml", tiny_folder, "one", epochs=1))
    Trainer(config1, resumed, device="cpu", progress=False).fit()
    saved = torch.load(resumed / CHECKPOINT, weights_only=True)
    trainer = Trainer(config2, resumed, device="cpu", progress=False)
    assert (trainer.epoch, trainer.step) == (1, 3)
    current = trainer.model.state_dict()
    assert all(torch.equal(v, current[k]) for k, v in saved["model"].items())
    trainer.fit()
    assert [(r["epoch"], r["step"]) for r in log_rows(resumed)] == [("1", "3"), ("2", "6")]
    # the resumed run ends exactly where the uninterrupted one does
    end = torch.load(straight / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in end.items())
    # --fresh starts over
    fresh = Trainer(config2, resumed, device="cpu", resume=False, progress=False)
    assert (fresh.epoch, fresh.step) == (0, 0)


def test_max_minutes_stops_with_a_checkpoint_and_the_run_goes_on_later(tiny_folder, tmp_path):
    path = write_config(tmp_path / "tiny.toml", tiny_folder, "one", epochs=2)
    out = tmp_path / "run"
    metrics = Trainer(load_config(path, ["train.max_minutes=1e-9"]), out, device="cpu",
                      progress=False).fit()
    # stopped after its first step, inside epoch 1, which is not counted as done
    assert (metrics["epoch"], metrics["step"]) == (0, 1)
    assert "val_psnr" in metrics and (out / BEST).is_file()
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert (state["epoch"], state["step"], state["batch"]) == (0, 1, 1)
    Trainer(load_config(path), out, device="cpu", progress=False).fit()
    # the resumed run finishes epoch 1 with its two remaining steps: none is repeated
    assert [(r["epoch"], r["step"]) for r in log_rows(out)] == [("1", "3"), ("2", "6")]


def test_a_resumed_epoch_trains_on_the_batches_not_yet_seen(tiny_folder, tmp_path):
    path = write_config(tmp_path / "tiny.toml", tiny_folder, "one", epochs=1, repeat=4)
    trainer = Trainer(load_config(path), tmp_path / "run", device="cpu", progress=False)
    full = [name for batch in trainer._loader(0) for name in batch["name"]]
    rest = [name for batch in trainer._loader(0, skip_batches=2) for name in batch["name"]]
    batch_size = trainer.config.train.batch_size
    assert rest == full[2 * batch_size :] and len(rest) < len(full)
    again = [name for batch in trainer._loader(0) for name in batch["name"]]
    assert again == full  # the order is a function of the seed and the epoch
    assert [n for b in trainer._loader(1) for n in b["name"]] != full


def test_a_kill_mid_epoch_leaves_a_valid_checkpoint_and_the_run_resumes(tiny_folder, tmp_path):
    config = write_config(tmp_path / "tiny.toml", tiny_folder, "one", epochs=3, repeat=8)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*cli_command(), "train", "--config", str(config), "--out", str(out), "--device", "cpu",
         "--no-progress"],
        stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # 12 steps per epoch; stop in the middle of epoch 2
            if line.rstrip().split(" loss ")[0].endswith("step 17"):
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # the kill may land inside a write: its half-written temp file may stay, but the
    # checkpoint itself is whole (it is replaced only by a finished file)
    assert all(p.name.endswith(".tmp") for p in out.iterdir()
               if p.name not in (BEST, CHECKPOINT, LOG, PLOT))
    state = torch.load(out / CHECKPOINT, weights_only=True)
    # a checkpoint after every step: the kill loses at most the step it interrupted (on a
    # busy machine the run may be a few steps past the line read when the kill lands)
    assert state["step"] >= 16
    assert state["batch"] == state["step"] - 12 * state["epoch"]
    assert len(log_rows(out)) == state["epoch"] >= 1

    assert cli.main(["train", "--config", str(config), "--out", str(out), "--device", "cpu",
                     "--no-progress"]) == 0
    assert [(r["epoch"], r["step"]) for r in log_rows(out)] == [("1", "12"), ("2", "24"),
                                                                ("3", "36")]
    # the resumed run removed any temp file the kill left
    assert sorted(p.name for p in out.iterdir()) == sorted([BEST, CHECKPOINT, LOG, PLOT])


def test_stale_temp_files_of_an_earlier_kill_are_removed(tiny_folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / "last.ptq1w2e3.tmp", out / "log.csvabc.tmp", out / "training.pngx.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    keep = out / "notes.tmp"  # not a file of ours
    keep.write_text("mine")
    config = load_config(write_config(tmp_path / "tiny.toml", tiny_folder))
    Trainer(config, out, device="cpu", progress=False)
    assert not any(path.exists() for path in stale) and keep.exists()


# ----------------------------------------------------------------------------- DDP
def test_two_process_ddp_run_on_gloo(tiny_folder, tmp_path):
    config = write_config(tmp_path / "tiny.toml", tiny_folder, "three", repeat=4)
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "vcam_harmonize.training.cli", "train", "--config", str(config), "--out",
         str(out), "--device", "cpu", "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([BEST, CHECKPOINT, LOG, PLOT])
    rows = log_rows(out)
    # 24 samples shared by two processes, batch 4: 3 steps per epoch each, logged once
    assert [(r["epoch"], r["stage"], r["step"]) for r in rows] == [
        ("1", "encoder-decoder", "3"), ("2", "pfe", "6"), ("3", "all", "9")]
    assert all(np.isfinite(float(r["train_loss"])) and float(r["val_psnr"]) > 10 for r in rows)
    assert result.stdout.count("finished at epoch 3") == 1
    assert "destroy_process_group" not in result.stderr
    load_model(out / BEST)


# ----------------------------------------------------------------------------- bad input
def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_missing_config_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(
        [*cli_command(), "train", "--config", str(tmp_path / "missing.toml"), "--out",
         str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "missing.toml: config not found" in lines[0] and "lite" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("extra", "override", "message"), [
    ("bogus = 1", None, "unknown key 'data.bogus'"),
    ("", "train.batch_size=\"eight\"", "train.batch_size must be int, got 'eight'"),
    ("", "train.betas=0.9", "train.betas must be a list"),
    ("", "train.nope.deeper=1", "unknown key 'train.nope'"),
])
def test_bad_config_is_one_line_and_exit_code_2(tiny_folder, tmp_path, capsys, extra,
                                                override, message):
    config = write_config(tmp_path / "tiny.toml", tiny_folder, extra=extra)
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    if override:
        args += ["--set", override]
    assert cli.main(args) == 2
    assert message in _one_error_line(capsys)


def test_a_data_folder_without_images_is_one_line_and_exit_code_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    for folder in ("images", "masks"):
        (empty / folder).mkdir(parents=True)
    config = write_config(tmp_path / "tiny.toml", empty)
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "names no images" in _one_error_line(capsys)


def test_masks_of_the_wrong_size_are_one_line_and_exit_code_2(tiny_folder, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_folder, bad)
    mask = bad / "masks" / f"{NAMES[3]}.png"
    cv2.imwrite(str(mask), np.zeros((20, 30), np.uint8))
    config = write_config(tmp_path / "tiny.toml", bad, extra='on_error = "stop"')
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert f"{NAMES[3]}.png: image is (40, 40) (w, h) but mask" in _one_error_line(capsys)


def test_a_missing_list_file_is_one_line_and_exit_code_2(tmp_path, capsys):
    for folder in ("composite_images", "masks", "real_images"):
        (tmp_path / "iHarmony4" / "HFlickr" / folder).mkdir(parents=True)
    args = ["evaluate", "--iharmony4", str(tmp_path / "iHarmony4"), "--weights", "composite",
            "--out", str(tmp_path / "eval")]
    assert cli.main(args) == 2
    assert "HFlickr_test.txt is missing" in _one_error_line(capsys)


def test_evaluate_with_nothing_to_evaluate_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert cli.main(["evaluate", "--weights", "composite", "--out", str(tmp_path)]) == 2
    assert "nothing to evaluate" in _one_error_line(capsys)


def test_a_diverging_loss_is_an_input_error_naming_the_stage(tiny_folder, tmp_path):
    config = load_config(write_config(tmp_path / "tiny.toml", tiny_folder, "one"))
    trainer = Trainer(config, tmp_path / "run", device="cpu", progress=False)
    loss_fn = trainer.loss_fn

    def diverging(*args):  # what too high a learning rate does, without waiting for it
        loss, parts = loss_fn(*args)
        return loss * float("nan"), parts

    trainer.loss_fn = diverging
    with pytest.raises(InputError, match="loss became nan at step 0; lower the learning rate "
                                         "of stage main"):
        trainer.fit()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_a_gpu_is_one_line_and_exit_code_2(tiny_folder, tmp_path, capsys):
    config = load_config(write_config(tmp_path / "tiny.toml", tiny_folder))
    with pytest.raises(InputError, match="PyTorch sees no CUDA GPU; use --device cpu"):
        Trainer(config, tmp_path / "run", device="cuda", progress=False)
    args = ["train", "--config", str(write_config(tmp_path / "tiny.toml", tiny_folder)),
            "--out", str(tmp_path / "run"), "--device", "cuda:0"]
    assert cli.main(args) == 2
    assert "PyTorch sees no CUDA GPU; use --device cpu" in _one_error_line(capsys)


def test_best_weights_follow_the_chosen_metric(tiny_folder, tmp_path):
    config = load_config(write_config(tmp_path / "tiny.toml", tiny_folder, "one", epochs=2),
                         ["train.best_metric=tiny/fmse"])
    Trainer(config, tmp_path / "run", device="cpu", progress=False).fit()
    rows = log_rows(tmp_path / "run")
    best_epoch = min(rows, key=lambda r: float(r["tiny/fmse"]))["epoch"]
    with safe_open(str(tmp_path / "run" / "best.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert meta["best_metric"] == "tiny/fmse" and meta["epoch"] == best_epoch

    with pytest.raises(InputError, match="not a logged metric"):  # before any training
        load_config(write_config(tmp_path / "bad.toml", tiny_folder, "one"),
                    ["train.best_metric=tiny/nothing"])
