"""The demo VLM's training resumes where it was cut short and ends as the uninterrupted run:
the same weights, the same log; the run's state leaves the checkpoint when the run ends."""
import json

import pytest
import torch
from safetensors.torch import load_file

from dyrate_engine.demo import train_vlm
from dyrate_engine.demo.train_state import PROGRESS_FILE, STATE_FILE

RUN = dict(steps=4, batch_size=2, text_layers=2, text_width=64, prune_layer=1,
           drop_rates=(0.0, 0.5, 0.9), detail_share=0.5, save_every=2)


def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    train_vlm.train(whole, **RUN)

    real, calls = train_vlm._step, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:  # after the checkpoint of step 2
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_vlm, "_step", failing)
    with pytest.raises(KeyboardInterrupt):
        train_vlm.train(cut, **RUN)
    assert (cut / STATE_FILE).is_file()
    assert json.loads((cut / PROGRESS_FILE).read_text())["completed_steps"] == 2
    monkeypatch.setattr(train_vlm, "_step", real)
    with pytest.raises(ValueError, match="other arguments"):
        train_vlm.train(cut, **{**RUN, "lr": 1e-3}, resume=True)
    train_vlm.train(cut, **RUN, resume=True)

    a, b = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    logs = [json.loads((d / "training.json").read_text())["stages"][0]["log"] for d in (whole, cut)]
    assert [(e["step"], e["train_loss"], e["val_loss"]) for e in logs[0]] == \
        [(e["step"], e["train_loss"], e["val_loss"]) for e in logs[1]]
    for d in (whole, cut):
        assert not (d / STATE_FILE).exists() and not (d / PROGRESS_FILE).exists()


def test_resume_without_a_saved_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no resumable run"):
        train_vlm.main(["--out", str(tmp_path), "--resume"])
