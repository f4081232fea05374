"""Files and inputs from outside are untrusted: images (bombs, damaged data, unusual modes,
EXIF orientation), checkpoints and predictor artifacts (damaged, misshapen, mistyped) get a clear
error naming the file and the field, or the right pixels; nothing is unpickled or fetched."""
import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dyrate_engine.bundled import DEMO_PREDICTOR
from dyrate_engine.models import load_model
from dyrate_engine.models.images import open_image, to_pil, to_rgb
from dyrate_engine.policies import DyRate
from dyrate_engine.predictor import load_predictor
from tiny_models import build_tiny_llava

PACKAGE = Path(__file__).resolve().parents[1] / "dyrate_engine"


def _png_header_only(width, height):
    """A PNG whose header declares ``width x height`` pixels and which holds no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0,
                                                              0, 0)) + chunk(b"IEND", b""))


def _save(tmp_path, image, name, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_image_bombs_are_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(50_000, 50_000))  # 2.5 G pixels, PIL's own limit too
    with pytest.raises(ValueError, match="bomb.png"):
        open_image(bomb)
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(9000, 9000))  # under PIL's limit, over ours
    with pytest.raises(ValueError, match=r"big.png: 9000x9000 pixels is over the limit"):
        open_image(big)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_damaged_and_non_image_files_are_clear_errors(tmp_path, fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = io.BytesIO()
    Image.fromarray(noise).save(whole, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(ValueError, match=f"cut.{fmt.lower()}: "):
        open_image(cut)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image" * 10)
    with pytest.raises(ValueError, match="junk.png: not an image"):
        open_image(junk)
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "absent.png")


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896], [60000, 65535, 128]], dtype=np.uint16)
    path = _save(tmp_path, Image.fromarray(values), "deep.png")
    assert Image.open(path).mode.startswith("I")  # PIL keeps the 16 bits
    got = np.asarray(open_image(path))
    assert got.shape == (2, 3, 3) and (got == got[..., :1]).all()
    assert got[..., 0].tolist() == [[0, 1, 128], [233, 255, 0]]


def test_transparency_is_composited_onto_white_like_transformers(tmp_path):
    from transformers.image_transforms import convert_to_rgb

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 10, 10, 255)  # opaque red stays red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent becomes white, not black
    rgba[1, 0] = (0, 0, 200, 128)  # half transparent blends with white
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.putdata([0, 1])
    palette.info["transparency"] = 0  # colour 0 (black) is see-through
    cases = [Image.fromarray(rgba, "RGBA"), palette, Image.fromarray(rgba[..., [0, 3]], "LA")]
    for image in cases:
        want = np.asarray(convert_to_rgb(image, return_numpy=True))
        assert np.array_equal(np.asarray(to_rgb(image)), want), image.mode
        saved = _save(tmp_path, image, f"{image.mode}.png",
                      **({"transparency": 0} if image.mode == "P" else {}))
        assert np.array_equal(np.asarray(open_image(saved)), want), image.mode
    assert np.asarray(to_rgb(cases[0]))[0].tolist() == [[200, 10, 10], [255, 255, 255]]
    assert np.asarray(to_rgb(cases[1])).tolist() == [[[255, 255, 255], [10, 200, 10]]]
    assert np.array_equal(np.asarray(to_pil(rgba)), np.asarray(to_rgb(cases[0])))


def test_exif_orientation_turns_the_image_upright(tmp_path):
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)  # 3 wide, 2 high; a red top-left pixel
    pixels[0, 0] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    path = _save(tmp_path, image, "turned.png", exif=exif.tobytes())
    upright = np.asarray(open_image(path))
    assert upright.shape == (3, 2, 3)
    assert upright[0, 1].tolist() == [255, 0, 0] and upright.sum() == 255  # now top right


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    build_tiny_llava(directory)
    return directory


def _copy(checkpoint, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(checkpoint, target)
    return target, target / "model.safetensors"


def test_damaged_checkpoints_are_refused_by_name(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt, weights = _copy(checkpoint, tmp_path)
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors: not a readable safetensors"):
        load_model(ckpt)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"model.safetensors: not a readable safetensors"):
        load_model(ckpt)
    state = load_file(checkpoint / "model.safetensors")
    name = next(k for k in state if k.endswith("q_proj.weight"))
    wrong = dict(state, **{name: torch.zeros(state[name].shape[0] + 1, state[name].shape[1])})
    save_file(wrong, weights, metadata={"format": "pt"})
    tensor = "tensor '[a-z_.]*" + re.escape(name[name.index("layers."):])  # transformers renames
    with pytest.raises(ValueError, match=tensor + r"' is \[65, 64\] in the checkpoint"):
        load_model(ckpt)
    save_file({k: v for k, v in state.items() if k != name}, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=tensor + "' is missing"):
        load_model(ckpt)
    weights.rename(ckpt / "pytorch_model.bin")  # a pickle path is never taken
    with pytest.raises(ValueError, match="no \\*.safetensors weight files"):
        load_model(ckpt)


def _artifact(tmp_path):
    target = tmp_path / "predictor"
    shutil.copytree(DEMO_PREDICTOR, target)
    return target, target / "predictor.json", json.loads((target / "predictor.json").read_text())


@pytest.mark.parametrize("edit, field", [
    (lambda m: m.pop("rates"), "'rates' is missing"),
    (lambda m: m.update(rates="0.5"), "'rates' must be list"),
    (lambda m: m.update(rates=[0.0, "a"]), r"'rates\[1\]' must be a number"),
    (lambda m: m.update(n_heads=6.0), "'n_heads' must be int"),
    (lambda m: m.update(prune_layer=True), "'prune_layer' must be int"),
    (lambda m: m["features"].pop("step_scale"), "'features.step_scale' is missing"),
    (lambda m: m.update(features=[]), "'features' must be dict"),
    (lambda m: m.update(family=3), "'family' must be str or null"),
    (lambda m: m.update(monitor_layer=7), "'prune_layer' must be >= 1 with 'monitor_layer'"),
    (lambda m: m.update(format_version=99), "predictor format 99 is not supported"),
    (lambda m: m.update(rates=[0.5, 0.25]), "rates must be distinct, ascending"),
])
def test_bad_predictor_json_names_the_file_and_field(tmp_path, edit, field):
    directory, meta_file, meta = _artifact(tmp_path)
    edit(meta)
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"predictor.json: .*{field}"):
        load_predictor(directory)


def test_damaged_predictor_files_are_clear_errors(tmp_path):
    directory, meta_file, _ = _artifact(tmp_path)
    weights = directory / "predictor.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(ValueError, match="predictor.safetensors: not a readable safetensors"):
        load_predictor(directory)
    meta_file.write_text('{"format_version": 1, "rates": [')
    with pytest.raises(ValueError, match="predictor.json: not valid JSON"):
        load_predictor(directory)
    meta_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="predictor.json: must hold a JSON object"):
        load_predictor(directory)


def test_nothing_is_unpickled_or_fetched():
    sources = {p: p.read_text() for p in PACKAGE.rglob("*.py")}
    banned = re.compile(r"torch\.load\(|import pickle|pickle\.load|allow_pickle=True|"
                        r"import dill|joblib|weights_only=False|trust_remote_code=True")
    assert not [str(p) for p, text in sources.items() if banned.search(text)]
    for name in ("https://example.com/predictor", "http://127.0.0.1/p", "hf://a/b"):
        with pytest.raises(ValueError, match="looks like a URL"):
            DyRate.from_pretrained(name)
