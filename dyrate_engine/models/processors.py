"""A checkpoint's processor, as transformers saved it beside the weights.

transformers' processors of the video-capable families (LLaVA-OneVision, Qwen-VL) import a video
processor that needs torchvision; without torchvision ``AutoProcessor`` fails even for images.
Then the processor is assembled from its parts without the video processor: the same tokenizer,
image processor (its PIL implementation) and chat template, and the same settings from
``processor_config.json``. With torchvision installed, transformers' own processor is used.
"""
from __future__ import annotations

import json
from pathlib import Path

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer.json")


def load_processor(path: Path):
    """The processor of the checkpoint in ``path``, or None when it has no processor files."""
    from transformers import AutoProcessor

    if not any((path / name).is_file() for name in PROCESSOR_FILES):
        return None
    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, OSError) as error:
        # No torchvision, or no video processor saved: build the rest; anything else is real.
        message = str(error).lower()
        if "torchvision" not in message and "video" not in message:
            raise
        return _without_video(path)


def without_video(processor_class, **parts):
    """A ``processor_class`` (a transformers processor with a video processor) built from
    ``parts`` with no video processor. transformers checks and saves every part its ``__init__``
    names, and the video processor's class cannot even be looked up without torchvision, so the
    processor's parts leave the video processor out."""
    def attributes(cls):
        return [name for name in processor_class.get_attributes() if "video" not in name]

    patched = type(processor_class.__name__, (processor_class,),
                   {"get_attributes": classmethod(attributes)})
    processor = patched(**parts)
    processor.video_processor = None
    return processor


def _without_video(path: Path):
    """The processor class of ``path`` built from its tokenizer and image processor, with no
    video processor (so video inputs are refused; images work as with the full processor)."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    config_file = path / "processor_config.json"
    settings = json.loads(config_file.read_text()) if config_file.is_file() else {}
    name = settings.get("processor_class")
    if not name or not hasattr(transformers, name):
        raise ValueError(f"{path}: cannot build the processor without torchvision "
                         f"(processor_class {name!r} unknown)")
    skip = {"processor_class", "image_processor", "video_processor", "feature_extractor"}
    kwargs = {k: v for k, v in settings.items() if k not in skip}
    template = path / "chat_template.jinja"
    if "chat_template" not in kwargs and template.is_file():
        kwargs["chat_template"] = template.read_text()
    return without_video(getattr(transformers, name),
                         image_processor=AutoImageProcessor.from_pretrained(path),
                         tokenizer=AutoTokenizer.from_pretrained(path), **kwargs)
