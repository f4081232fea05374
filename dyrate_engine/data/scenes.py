"""Synthetic scenes for the demo model: a few coloured shapes on a plain background, and two tasks.

- ``caption``: a short caption (13-32 words) naming each shape's size, colour, kind and place.
- ``detail``: a long answer (102-127 words) that starts with the caption, then walks the nine cells,
  counts the shapes per row and in total. Only the caption part needs the image: everything after
  it follows from the words already written, so the image matters less as the answer goes on,
  the situation in which a per-step pruning rate should beat a fixed one (DyRate, arXiv
  2501.14204, Sec. 1).

Scenes are a pure function of ``(split, index)``, so every split is reproducible from its seed and
the test split never meets training. A caption can only be right if the model looks at the image:
the prompt carries no information about it. Objects sit in distinct cells of a 3 x 3 grid and are
listed in reading order, so each scene has exactly one correct caption.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

IMAGE_SIZE = 96
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 200, 30), "purple": (150, 60, 190)}
# Radii in pixels: a small shape spans about 2.5 patches of 8 px, a large one about 4.
SIZES = {"small": 10, "large": 15}
PLACES = ("top left", "top", "top right", "left", "center", "right",
          "bottom left", "bottom", "bottom right")
COUNTS = ("one", "two", "three")
PROMPTS = ("Describe the image.", "What shapes are in the picture?", "Caption this image.")
DETAIL_PROMPT = "Describe every part of the image in detail."
ROWS = ("top", "middle", "bottom")
TASKS = ("caption", "detail")
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    cell: int  # 0..8, reading order

    def described(self) -> str:
        return f"a {self.size} {self.colour} {self.kind}"

    def phrase(self) -> str:
        where = "in the center" if PLACES[self.cell] == "center" else f"at the {PLACES[self.cell]}"
        return f"{self.described()} {where}"


def _counted(k: int, noun: str) -> str:
    return f"no {noun}s" if k == 0 else f"{COUNTS[k - 1]} {noun}{'' if k == 1 else 's'}"


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: tuple[int, int, int]
    jitter: tuple[tuple[int, int], ...]  # pixel offset of each shape inside its cell
    prompt: str
    task: str = "caption"

    def answer(self) -> str:
        """The one correct answer of the scene's task."""
        return self.caption() if self.task == "caption" else self.detail()

    def _head(self) -> str:
        n = len(self.shapes)
        return f"there {'is' if n == 1 else 'are'} {_counted(n, 'shape')}"

    def caption(self) -> str:
        return " . ".join([self._head()] + [s.phrase() for s in self.shapes]) + " ."

    def detail(self) -> str:
        """The caption, then every cell in reading order, the count per row and the totals."""
        by_cell = {s.cell: s for s in self.shapes}
        parts = [self.caption()]
        for cell, place in enumerate(PLACES):
            shape = by_cell.get(cell)
            parts.append(f"the {place} has {shape.described()} ." if shape
                         else f"the {place} is empty .")
        for row, name in enumerate(ROWS):
            k = sum(s.cell // 3 == row for s in self.shapes)
            parts.append(f"the {name} row has {_counted(k, 'shape')} .")
        kinds = " , ".join(_counted(sum(s.kind == kind for s in self.shapes), kind)
                           for kind in SHAPES)
        parts.append(f"in total {self._head()} : {kinds} .")
        return " ".join(parts)

    def render(self) -> Image.Image:
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), self.background)
        draw = ImageDraw.Draw(image)
        cell = IMAGE_SIZE // 3
        for shape, (dx, dy) in zip(self.shapes, self.jitter):
            cx = (shape.cell % 3) * cell + cell // 2 + dx
            cy = (shape.cell // 3) * cell + cell // 2 + dy
            r = SIZES[shape.size]
            fill = COLOURS[shape.colour]
            if shape.kind == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
            elif shape.kind == "square":
                s = int(r * 0.85)  # about the circle's area
                draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)],
                             fill=fill)
        return image


def make_scene(split: str, index: int, task: str = "caption") -> Scene:
    """Scene ``index`` of ``split`` ('train', 'val' or 'test') for ``task``; deterministic. The
    two tasks draw their scenes from separate streams."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    stream = "dyrate-demo" if task == "caption" else f"dyrate-demo-{task}"
    rng = random.Random(f"{stream}/{SPLIT_SEEDS[split]}/{index}")
    n = rng.randint(1, 3)
    cells = sorted(rng.sample(range(9), n))
    shapes = tuple(Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)), c)
                   for c in cells)
    grey = rng.randint(200, 245)
    background = (grey, grey - rng.randint(0, 10), grey - rng.randint(0, 10))
    jitter = tuple((rng.randint(-3, 3), rng.randint(-3, 3)) for _ in cells)
    prompt = rng.choice(PROMPTS) if task == "caption" else DETAIL_PROMPT
    return Scene(shapes, background, jitter, prompt, task)


def caption_words() -> list[str]:
    """Every word a caption or prompt can use (the demo tokenizer's vocabulary)."""
    words = {"there", "is", "are", "shape", "a", "at", "the", "in", ".", ",", ":", "no", "has",
             "empty", "row", "total", *COUNTS, *SIZES, *COLOURS, *ROWS}
    for noun in (*SHAPES, "shape"):
        words.update((noun, noun + "s"))
    for place in PLACES:
        words.update(place.split())
    for prompt in (*PROMPTS, DETAIL_PROMPT):
        words.update(prompt.split())
    return sorted(words)


def write_split(directory, split: str, count: int, task: str = "caption") -> Path:
    """Render ``count`` scenes of ``split`` as PNGs plus ``{name}.jsonl`` records
    ``{"image", "prompt", "answer"}`` (image paths relative to the JSONL file); ``name`` is the
    split for captions, ``{task}-{split}`` otherwise."""
    directory = Path(directory)
    name = split if task == "caption" else f"{task}-{split}"
    (directory / name).mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.jsonl"
    with open(path, "w") as f:
        for i in range(count):
            scene = make_scene(split, i, task)
            image = f"{name}/{i:05d}.png"
            scene.render().save(directory / image)
            f.write(json.dumps({"image": image, "prompt": scene.prompt,
                                "answer": scene.answer()}) + "\n")
    return path
