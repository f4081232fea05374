"""The bundled demo: a small LLaVA trained by the project on synthetic shape captions (issue 6),
its DyRate predictor, and the data set that made them. ``"demo"`` names them in the API and CLI:
``Engine.from_pretrained("demo")``, ``DyRate.from_pretrained("demo")``."""
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_MODEL = DEMO_DIR / "model"
DEMO_PREDICTOR = DEMO_DIR / "predictor"


def resolve(path, default: Path, marker: str) -> Path:
    """``default`` for the name ``"demo"`` (which must hold ``marker``), else the path itself."""
    if str(path) == "demo":
        if not (default / marker).is_file():
            raise FileNotFoundError(f"the bundled demo files are missing from {default}")
        return default
    return Path(path)
