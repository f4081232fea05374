"""The demo VLM's training resumes where it was cut short and ends as the uninterrupted run:
the same weights, the same log; the run's state leaves the checkpoint when the run ends."""
import json

import pytest
import torch
from safetensors.torch import load_file

from dyrate_engine.demo import train_vlm
from dyrate_engine.demo.train_state import STATE_FILE, read_progress

RUN = dict(steps=4, batch_size=2, text_layers=2, text_width=64, prune_layer=1,
           drop_rates=(0.0, 0.5, 0.9), detail_share=0.5, save_every=2)


def interrupted_at(call: int, real):
    """``_step`` that raises at its ``call``-th call (a kill after the checkpoint before it)."""
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args)

    return failing


def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    train_vlm.train(whole, **RUN)

    real = train_vlm._step
    monkeypatch.setattr(train_vlm, "_step", interrupted_at(3, real))  # after step 2's checkpoint
    with pytest.raises(KeyboardInterrupt):
        train_vlm.train(cut, **RUN)
    assert read_progress(cut)["completed_steps"] == 2
    monkeypatch.setattr(train_vlm, "_step", real)
    with pytest.raises(ValueError, match=r"other arguments: lr 0.0015 \(now 0.001\)"):
        train_vlm.train(cut, **{**RUN, "lr": 1e-3}, resume=True)
    resumed = []
    monkeypatch.setattr(train_vlm, "_step", lambda *args: resumed.append(1) or real(*args))
    train_vlm.train(cut, **RUN, resume=True)
    assert len(resumed) == 2  # steps 3 and 4 only: not a rerun from the start

    a, b = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    logs = [json.loads((d / "training.json").read_text())["stages"][0]["log"] for d in (whole, cut)]
    assert [(e["step"], e["train_loss"], e["val_loss"]) for e in logs[0]] == \
        [(e["step"], e["train_loss"], e["val_loss"]) for e in logs[1]]
    for d in (whole, cut):
        assert not (d / STATE_FILE).exists()


def test_the_state_holds_the_weights_so_newer_weights_beside_it_do_not_matter(tmp_path,
                                                                             monkeypatch):
    """A process killed after writing the weights but before the state: the resumed run starts
    from the state's own weights and still ends as the uninterrupted run."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    run = {**RUN, "steps": 3, "save_every": 1}
    train_vlm.train(whole, **run)
    real = train_vlm._step
    monkeypatch.setattr(train_vlm, "_step", interrupted_at(2, real))
    with pytest.raises(KeyboardInterrupt):
        train_vlm.train(cut, **run)
    monkeypatch.setattr(train_vlm, "_step", real)
    weights = load_file(cut / "model.safetensors")  # as if step 2's weights had been written
    from safetensors.torch import save_file
    save_file({k: v + 1.0 for k, v in weights.items()}, cut / "model.safetensors",
              metadata={"format": "pt"})
    train_vlm.train(cut, **run, resume=True)
    a, b = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_resume_without_a_saved_run_or_with_other_flags_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no resumable run"):
        train_vlm.main(["--out", str(tmp_path), "--resume"])
    cut = tmp_path / "cut"
    cut.mkdir()
    real = train_vlm._step
    train_vlm._step = interrupted_at(3, real)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_vlm.train(cut, **RUN)
    finally:
        train_vlm._step = real
    with pytest.raises(SystemExit):
        train_vlm.main(["--out", str(cut), "--resume", "--steps", "9", "--lr", "0.1"])
    assert "differ from it: lr, steps" in capsys.readouterr().err
    train_vlm.main(["--out", str(cut), "--resume", "--steps", "4"])  # the saved value: fine
    assert json.loads((cut / "training.json").read_text())["stages"][0]["log"][-1]["step"] == 4
