"""``{image, prompt, answer}`` records from a JSONL file or from COCO-style caption annotations (as
COCO, Flickr30K and NoCaps ship them). Image paths come back as strings; nothing is opened here."""
from __future__ import annotations

import json
from pathlib import Path

DEFAULT_PROMPT = "Describe the image."


def load_jsonl(path) -> list[dict]:
    """Records ``{"image", "prompt", "answer"}``; ``image`` is a path relative to the file, or
    a list of them for several images shown in order."""
    path = Path(path)
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{n}: not JSON ({error})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{n}: a record must be a JSON object")
        missing = {"image", "prompt", "answer"} - record.keys()
        if missing:
            raise ValueError(f"{path}:{n}: record lacks {sorted(missing)}")
        image = record["image"]
        image = [str(path.parent / p) for p in image] if isinstance(image, list) \
            else str(path.parent / image)
        records.append({**record, "image": image})
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


def load_coco(annotations, image_dir, prompt: str = DEFAULT_PROMPT) -> list[dict]:
    """Records from COCO-style captions (``{"images": [{id, file_name}], "annotations":
    [{image_id, caption}]}``): one per caption, each asking ``prompt`` of its image."""
    data = json.loads(Path(annotations).read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    return [{"image": str(Path(image_dir) / files[a["image_id"]]), "prompt": prompt,
             "answer": a["caption"].strip(), "image_id": a["image_id"]}
            for a in data["annotations"]]
