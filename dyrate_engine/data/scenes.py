"""Synthetic captioning scenes for the demo model: a few coloured shapes on a plain background, and a
caption that names each shape's size, colour, kind and place.

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
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    cell: int  # 0..8, reading order

    def phrase(self) -> str:
        where = "in the center" if PLACES[self.cell] == "center" else f"at the {PLACES[self.cell]}"
        return f"a {self.size} {self.colour} {self.kind} {where}"


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: tuple[int, int, int]
    jitter: tuple[tuple[int, int], ...]  # pixel offset of each shape inside its cell
    prompt: str

    def caption(self) -> str:
        n = len(self.shapes)
        head = f"there {'is' if n == 1 else 'are'} {COUNTS[n - 1]} shape{'' if n == 1 else 's'}"
        return " . ".join([head] + [s.phrase() for s in self.shapes]) + " ."

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


def make_scene(split: str, index: int) -> Scene:
    """Scene ``index`` of ``split`` ('train', 'val' or 'test'); deterministic."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    rng = random.Random(f"dyrate-demo/{SPLIT_SEEDS[split]}/{index}")
    n = rng.randint(1, 3)
    cells = sorted(rng.sample(range(9), n))
    shapes = tuple(Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)), c)
                   for c in cells)
    grey = rng.randint(200, 245)
    background = (grey, grey - rng.randint(0, 10), grey - rng.randint(0, 10))
    jitter = tuple((rng.randint(-3, 3), rng.randint(-3, 3)) for _ in cells)
    return Scene(shapes, background, jitter, rng.choice(PROMPTS))


def caption_words() -> list[str]:
    """Every word a caption or prompt can use (the demo tokenizer's vocabulary)."""
    words = {"there", "is", "are", "shape", "shapes", "a", "at", "the", "in", ".", *COUNTS,
             *SHAPES, *COLOURS, *SIZES}
    for place in PLACES:
        words.update(place.split())
    for prompt in PROMPTS:
        words.update(prompt.split())
    return sorted(words)


def write_split(directory, split: str, count: int) -> Path:
    """Render ``count`` scenes of ``split`` as PNGs plus ``{split}.jsonl`` records
    ``{"image", "prompt", "answer"}`` (image paths relative to the JSONL file)."""
    directory = Path(directory)
    (directory / split).mkdir(parents=True, exist_ok=True)
    path = directory / f"{split}.jsonl"
    with open(path, "w") as f:
        for i in range(count):
            scene = make_scene(split, i)
            name = f"{split}/{i:05d}.png"
            scene.render().save(directory / name)
            f.write(json.dumps({"image": name, "prompt": scene.prompt,
                                "answer": scene.caption()}) + "\n")
    return path
