"""A training run's state beside its checkpoint, so that a run cut short (a shared machine, a
killed process) resumes where it stopped and ends as the uninterrupted run would: the optimiser's
moments and step counts, the pruning-rate generator, the log and the run's own arguments. Tensors
go to safetensors and the rest to JSON; nothing is pickled."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.safetensors"
PROGRESS_FILE = "progress.json"
_MOMENTS = ("exp_avg", "exp_avg_sq", "step")


def save_state(out: Path, model, optimizer, generator, completed: int, log: list,
               run: dict) -> None:
    """Write the state after ``completed`` optimiser steps (the checkpoint's weights are saved
    beside it by the caller)."""
    names = {id(p): name for name, p in model.named_parameters()}
    tensors = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"{names[id(p)]}:{key}"] = value.detach().reshape(-1).clone()
    if generator is not None:
        tensors["generator"] = generator.get_state()
    save_file(tensors, str(out / STATE_FILE))
    (out / PROGRESS_FILE).write_text(json.dumps({"completed_steps": completed, "log": log,
                                                 "run": run}, indent=1))


def read_progress(out: Path) -> dict:
    """The progress record of the run in ``out``; a clear error when there is none."""
    path = out / PROGRESS_FILE
    if not path.is_file() or not (out / STATE_FILE).is_file():
        raise FileNotFoundError(f"{out} holds no resumable run ({PROGRESS_FILE} and {STATE_FILE} "
                                f"are written at each checkpoint of a run)")
    return json.loads(path.read_text())


def load_state(out: Path, model, optimizer, generator, run: dict) -> tuple[int, list]:
    """Restore the state saved in ``out`` into ``optimizer`` and ``generator``; returns the
    completed steps and the log. Refuses a state saved by a run with other arguments."""
    progress = read_progress(out)
    if progress["run"] != run:
        raise ValueError(f"the run in {out} was started with other arguments: {progress['run']}")
    tensors = load_file(str(out / STATE_FILE))
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        if key == "generator":
            continue
        name, moment = key.rsplit(":", 1)
        if moment not in _MOMENTS or name not in params:
            raise ValueError(f"{out / STATE_FILE}: unexpected entry {key!r}")
        p = params[name]
        shape = () if moment == "step" else p.shape
        optimizer.state[p][moment] = value.reshape(shape).to(p.device)
    if generator is not None:
        generator.set_state(tensors["generator"])
    return progress["completed_steps"], progress["log"]


def clear_state(out: Path) -> None:
    """Remove the state of a finished run (the checkpoint alone is the model)."""
    for name in (STATE_FILE, PROGRESS_FILE):
        (out / name).unlink(missing_ok=True)
