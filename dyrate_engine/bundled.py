"""Names of the files that ship inside the package: ``"demo"`` is the bundled demo model (for
``Engine.from_pretrained``) and its trained predictor (for ``DyRate.from_pretrained``).

A leaf module: it imports nothing of the package, so every layer may resolve a name through it.
A name is a bundled name or a local directory; nothing is ever fetched from a URL.
"""
from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_MODEL = DEMO_DIR / "model"
DEMO_PREDICTOR = DEMO_DIR / "predictor"
EXAMPLE_IMAGE = DEMO_DIR / "example.png"


def _resolve(path, bundled: Path, marker: str, what: str) -> Path:
    text = str(path)
    if text == "demo":
        if not (bundled / marker).is_file():
            raise FileNotFoundError(f"the bundled demo {what} is missing from {bundled} "
                                    f"(no {marker}): the installation is incomplete")
        return bundled
    if "://" in text:
        raise ValueError(f"{text!r} looks like a URL: a {what} is a local directory or 'demo'; "
                         f"nothing is downloaded at run time")
    return Path(path)


def resolve_model(path) -> Path:
    """The directory of a model: the bundled demo model for ``"demo"``, else ``path`` itself."""
    return _resolve(path, DEMO_MODEL, "config.json", "model")


def resolve_predictor(path) -> Path:
    """The directory of a predictor artifact: the demo's for ``"demo"``, else ``path`` itself."""
    return _resolve(path, DEMO_PREDICTOR, "predictor.json", "predictor")
