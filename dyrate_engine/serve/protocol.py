"""The OpenAI chat-completions request, checked: every way a client can get it wrong becomes an
:class:`ApiError` with a 4xx status and a message that names the field, before any work.

Images come as ``image_url`` parts holding base64 ``data:`` URLs, or, only when the server was
started with an allowed directory, paths of files inside it. Remote URLs are never fetched. An
image is decoded only after its header passed the pixel limit.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import dataclass

from ..engine.sampling import SamplingParams
from ..models.images import MAX_IMAGE_PIXELS, open_image

ROLES = ("system", "user", "assistant")
SAMPLING_FIELDS = {"max_tokens": int, "max_completion_tokens": int, "temperature": (int, float),
                   "top_p": (int, float), "seed": int, "stream": bool, "n": int,
                   "ignore_eos": bool}


class ApiError(Exception):
    """An OpenAI-style error: ``status`` (4xx), ``message``, the offending ``param``."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": None}}


@dataclass
class ChatRequest:
    conversation: list[dict]  # messages with {"type": "text" | "image"} parts
    images: list  # PIL images, in order
    params: SamplingParams
    stop: list[str]
    stream: bool
    policy: str | None  # the ``dyrate_policy`` extension field


@dataclass
class ImageRules:
    max_images: int = 8
    max_pixels: int = MAX_IMAGE_PIXELS
    local_dir: str | None = None  # files under it may be named; None: no file is read


def parse_chat(body, rules: ImageRules, default_max_tokens: int) -> ChatRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    for name, kinds in SAMPLING_FIELDS.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)
                                  and kinds is not bool):
            raise ApiError(400, f"{name} must be of type {_kind_name(kinds)}", name)
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n = 1 is supported", "n")
    conversation, images = _messages(body.get("messages"), rules)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "stop must be a string or a list of non-empty strings", "stop")
    policy = body.get("dyrate_policy")
    if policy is not None and not isinstance(policy, str):
        raise ApiError(400, "dyrate_policy must be a policy spelling such as "
                            "'schedule:3:0.75'", "dyrate_policy")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", default_max_tokens))
    try:
        params = SamplingParams(
            temperature=float(body.get("temperature", 1.0)), top_p=body.get("top_p"),
            seed=body.get("seed"), max_new_tokens=max_tokens,
            ignore_eos=bool(body.get("ignore_eos", False)))
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    return ChatRequest(conversation, images, params, stop, bool(body.get("stream", False)),
                       policy)


def _kind_name(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join({int: "integer", float: "number", bool: "boolean"}[k] for k in kinds)


def _messages(messages, rules: ImageRules) -> tuple[list[dict], list]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    conversation, images = [], []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"{where} must be an object with a role in {', '.join(ROLES)}",
                           where)
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise ApiError(400, f"{where}.content must be a string or a list of parts",
                           f"{where}.content")
        parts = [_part(part, f"{where}.content[{j}]", rules, images)
                 for j, part in enumerate(content)]
        conversation.append({"role": message["role"], "content": parts})
    if len(images) > rules.max_images:
        raise ApiError(400, f"{len(images)} images is more than this server takes per request "
                            f"({rules.max_images})", "messages")
    return conversation, images


def _part(part, where: str, rules: ImageRules, images: list) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str):
            raise ApiError(400, f"{where}.image_url.url must be a string", where)
        images.append(_image(url, where, rules))
        return {"type": "image"}
    raise ApiError(400, f"{where} must be a text part or an image_url part", where)


def _image(url: str, where: str, rules: ImageRules):
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise ApiError(400, f"{where}: a data URL must be base64 (data:image/...;base64,...)",
                           where)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"{where}: the image's base64 is invalid", where) from None
        return _open(io.BytesIO(data), where, rules)
    if "://" in url:
        raise ApiError(400, f"{where}: remote image URLs are not fetched; send the image as a "
                            "base64 data URL", where)
    if rules.local_dir is None:
        raise ApiError(400, f"{where}: local image files are not allowed on this server (start "
                            "it with --allow-local-files DIR)", where)
    root = os.path.realpath(rules.local_dir)
    path = os.path.realpath(os.path.join(root, url))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        raise ApiError(400, f"{where}: no such image file under the allowed directory", where)
    return _open(path, where, rules)


def _open(source, where: str, rules: ImageRules):
    try:
        return open_image(source, rules.max_pixels)
    except ValueError as error:
        reason = str(error).split(": ", 1)[-1]
        raise ApiError(400, f"{where}: {reason}", where) from None
    except OSError as error:  # truncated or corrupt image data
        raise ApiError(400, f"{where}: the image could not be decoded ({error})", where) from None
