"""Evaluation sets for the quality harness: the synthetic demo split generated in memory, a JSONL
file of ``{image, prompt, answer}`` records, or COCO-style caption annotations with an image folder
(COCO, Flickr30K, NoCaps). Records are grouped by image so that each image is captioned once and
scored against all of its reference captions."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.records import load_coco, load_jsonl
from ..data.scenes import SPLIT_SEEDS, TASKS, make_scene
from ..models.images import open_image

# LLaVA-1.5's caption prompt for COCO / Flickr30K / NoCaps (as lmms-eval asks it).
COCO_PROMPT = "Provide a one-sentence caption for the provided image."
DEMO_DEFAULT_COUNT = 200


@dataclass
class EvalItem:
    """One request to answer: ``image`` is a file path or an in-memory PIL image, or a list of
    them; ``references`` are every reference answer; ``key`` identifies it in the outputs."""

    key: str
    image: object
    prompt: str
    references: list[str] = field(default_factory=list)

    def load_image(self):
        """The image as an RGB PIL image (opened from disk when ``image`` is a path), or the
        list of them."""
        if isinstance(self.image, (list, tuple)):
            return [_load(image) for image in self.image]
        return _load(self.image)


def _load(image):
    return open_image(image) if isinstance(image, (str, Path)) else image


def parse_demo_spec(spec: str) -> tuple[str, int, str] | None:
    """``(split, count, task)`` for ``demo-[TASK-]SPLIT[:N]`` (e.g. ``demo-test:50``, the
    captions, or ``demo-detail-test:50``, the long answers), or None when ``spec`` does not name
    the synthetic set. ``count`` defaults to 200."""
    if not spec.startswith("demo-"):
        return None
    name, _, count = spec[len("demo-"):].partition(":")
    task, _, split = name.rpartition("-")
    task = task or "caption"
    if split not in SPLIT_SEEDS or task not in TASKS:
        raise ValueError(f"bad data {spec!r}: expected demo-[TASK-]SPLIT[:N] with SPLIT one of "
                         f"{', '.join(sorted(SPLIT_SEEDS))} and TASK one of "
                         f"{', '.join(t for t in TASKS if t != 'caption')} (captions without)")
    try:
        n = int(count) if count else DEMO_DEFAULT_COUNT
    except ValueError:
        n = -1
    if n < 1:
        raise ValueError(f"bad data {spec!r}: the count after ':' must be a positive integer")
    return split, n, task


def synthetic_items(split: str, count: int, task: str = "caption") -> list[EvalItem]:
    """Scenes ``0 .. count-1`` of the synthetic ``split`` for ``task``, rendered in memory; one
    reference each (the scene's answer, the only correct one)."""
    items = []
    for i in range(count):
        scene = make_scene(split, i, task)
        key = f"{split}/{i}" if task == "caption" else f"{task}-{split}/{i}"
        items.append(EvalItem(key, scene.render(), scene.prompt, [scene.answer()]))
    return items


def group_records(records: list[dict]) -> list[EvalItem]:
    """One item per (image, prompt) in first-seen order, holding every answer of that pair as a
    reference. The key is the record's ``image_id`` when it has one, else the image path
    (suffixed ``#2``, ``#3``, ... when the same image comes with other prompts)."""
    items: dict[tuple, EvalItem] = {}
    prompts_per_image: dict[str, int] = {}
    for r in records:
        key = (str(r.get("image_id", r["image"])), r["prompt"])
        if key not in items:
            seen = prompts_per_image[key[0]] = prompts_per_image.get(key[0], 0) + 1
            name = key[0] if seen == 1 else f"{key[0]}#{seen}"  # same image, another prompt
            items[key] = EvalItem(name, r["image"], r["prompt"])
        items[key].references.append(r["answer"])
    return list(items.values())


def _check_images(items: list[EvalItem]) -> None:
    paths = [p for it in items for p in (it.image if isinstance(it.image, (list, tuple))
                                         else [it.image])]
    missing = [p for p in paths if isinstance(p, (str, Path)) and not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image file(s) missing, e.g. {missing[0]}")


def load_eval_set(data: str | None = None, *, coco: str | None = None, images: str | None = None,
                  prompt: str = COCO_PROMPT, limit: int | None = None) -> list[EvalItem]:
    """The items of an evaluation set, checked before any model work.

    ``data``: ``demo-[TASK-]SPLIT[:N]`` (the synthetic split, default N = 200) or a JSONL file of
    ``{image, prompt, answer}`` records (image paths relative to the file). ``coco``: COCO-style
    caption annotations, with ``images`` the image folder and ``prompt`` the question asked of
    every image. ``limit`` keeps the first ``limit`` images. Raises ValueError or
    FileNotFoundError with a clear message for a bad set."""
    if (data is None) == (coco is None):
        raise ValueError("give exactly one of --data (demo-SPLIT[:N] or a JSONL file) and --coco")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if coco is not None:
        if not images:
            raise ValueError("--coco needs --images (the image folder)")
        if not Path(coco).is_file():
            raise FileNotFoundError(f"no annotations file {coco}")
        try:
            items = group_records(load_coco(coco, images, prompt))
        except (KeyError, TypeError) as error:
            raise ValueError(f"{coco} is not COCO-style caption annotations "
                             f"(missing {error})") from None
    else:
        demo = parse_demo_spec(data)
        if demo is not None:
            split, count, task = demo
            return synthetic_items(split, min(count, limit or count), task)
        if not Path(data).is_file():
            raise FileNotFoundError(f"bad data {data!r}: no such file, and not demo-SPLIT[:N]")
        items = group_records(load_jsonl(data))
    if not items:
        raise ValueError(f"{data or coco} holds no captions")
    items = items[:limit] if limit else items
    _check_images(items)
    return items
