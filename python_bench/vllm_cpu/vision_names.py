"""Rename the checkpoint's CLIP tower weights to the names vLLM 0.32 loads, in place (run by
setup.sh with either venv; idempotent).

Why: ``save-preset`` (transformers 5) writes the tower as ``vision_tower.embeddings...``; vLLM's
LLaVA builds a ``CLIPVisionModel`` whose parameters are ``vision_tower.vision_model.embeddings...``
and fails with "There is no module or parameter named 'vision_tower.embeddings'". Only the key
names change (``vision_tower.`` -> ``vision_tower.vision_model.``); the tensors are the same.
transformers and the engine read both names (checked by check_tokens.py, which loads the renamed
checkpoint in the project's venv).

    python vision_names.py CKPT_DIR
"""
import os
import sys

from safetensors.torch import load_file, save_file

OLD, NEW = "vision_tower.", "vision_tower.vision_model."

path = os.path.join(sys.argv[1], "model.safetensors")
weights = load_file(path)
renamed = {(NEW + k[len(OLD):] if k.startswith(OLD) and not k.startswith(NEW) else k): v
           for k, v in weights.items()}
changed = sum(a != b for a, b in zip(weights, renamed))
if changed:
    save_file(renamed, path + ".tmp", metadata={"format": "pt"})
    os.replace(path + ".tmp", path)
print(f"# {path}: {changed} vision tower weights renamed to {NEW}*")
