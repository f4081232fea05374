"""A training run's state beside its checkpoint, so that a run cut short (a shared machine, a
killed process) resumes where it stopped and ends as the uninterrupted run would: the optimiser's
moments and step counts, the pruning-rate generator, the log and the run's own arguments. One
safetensors file holds it all, the weights included (the progress as its JSON metadata), written
under a temporary name and renamed into place: a process killed while saving leaves the previous
state whole, never new weights beside an old optimiser. Nothing is pickled."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.safetensors"
_MOMENTS = ("exp_avg", "exp_avg_sq", "step")


def save_state(out: Path, model, optimizer, generator, completed: int, log: list,
                run: dict) -> None:
    """Write the state after ``completed`` optimiser steps, atomically."""
    names = {id(p): name for name, p in model.named_parameters()}
    tensors = {f"{name}:weight": p.detach().clone() for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"{names[id(p)]}:{key}"] = value.detach().reshape(-1).clone()
    if generator is not None:
        tensors["generator"] = generator.get_state()
    progress = json.dumps({"completed_steps": completed, "log": log, "run": run})
    partial = out / (STATE_FILE + ".partial")
    save_file(tensors, str(partial), metadata={"progress": progress})
    os.replace(partial, out / STATE_FILE)


def read_progress(out: Path) -> dict:
    """The progress record of the run in ``out``; a clear error when there is none."""
    path = out / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out} holds no resumable run ({STATE_FILE} is written at each "
                                f"checkpoint of a run and removed when it ends)")
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["progress"])


def load_state(out: Path, model, optimizer, generator, run: dict) -> tuple[int, list]:
    """Restore the state saved in ``out`` into ``optimizer`` and ``generator``; returns the
    completed steps and the log. Refuses a state saved by a run with other arguments."""
    progress = read_progress(out)
    differ = sorted(k for k in run.keys() | progress["run"].keys()
                    if run.get(k) != progress["run"].get(k))
    if differ:
        raise ValueError(f"the run in {out} was started with other arguments: "
                         + ", ".join(f"{k} {progress['run'].get(k)!r} (now {run.get(k)!r})"
                                     for k in differ))
    tensors = load_file(str(out / STATE_FILE))
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        if key == "generator":
            continue
        name, part = key.rsplit(":", 1)
        if part not in (*_MOMENTS, "weight") or name not in params:
            raise ValueError(f"{out / STATE_FILE}: unexpected entry {key!r}")
        p = params[name]
        if part == "weight":  # the checkpoint's weights may be newer than its state
            with torch.no_grad():
                p.copy_(value)
        else:
            shape = () if part == "step" else p.shape
            optimizer.state[p][part] = value.reshape(shape).to(p.device)
    if generator is not None:
        generator.set_state(tensors["generator"])
    return progress["completed_steps"], progress["log"]


def clear_state(out: Path) -> None:
    """Remove the state of a finished run (the checkpoint alone is the model)."""
    for name in (STATE_FILE, STATE_FILE + ".partial"):
        (out / name).unlink(missing_ok=True)
