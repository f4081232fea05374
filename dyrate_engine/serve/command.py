"""``dyrate serve``: the OpenAI-compatible server on a model (the bundled demo by default)."""
from __future__ import annotations

import argparse

from ..models.images import MAX_IMAGE_PIXELS


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="demo", help="a checkpoint directory, or 'demo'")
    p.add_argument("--policy", default=None,
                   help="the requests' default policy, whose layer K every request's policy "
                        "must share (default: 'dyrate' for the demo model, else 'dense')")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="batch slots")
    p.add_argument("--batching", default="continuous", choices=["continuous", "static"],
                   help="static: a request waits for the whole running batch to end (the "
                        "baseline of continuous batching)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="waiting requests beyond which a request gets 429")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens when a request omits it")
    p.add_argument("--max-images", type=int, default=8, help="images per request")
    p.add_argument("--max-pixels", type=int, default=MAX_IMAGE_PIXELS, help="pixels per image")
    p.add_argument("--allow-local-files", default=None, metavar="DIR",
                   help="let image_url parts name image files under DIR (default: no file)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.set_defaults(run=cmd_serve)


def cmd_serve(args) -> int:
    import uvicorn
    import torch

    from ..engine import Engine
    from ..engine.host_memory import keep_freed_memory
    from .app import ChatServer, build_app
    from .protocol import ImageRules

    dtype = getattr(torch, args.dtype) if args.dtype else None
    engine = Engine.from_pretrained(args.model, dtype=dtype)
    if engine.device.type == "cpu":
        keep_freed_memory()  # a server keeps its heap: no page faults per prefill
    policy = args.policy or ("dyrate" if args.model == "demo" else "dense")
    rules = ImageRules(args.max_images, args.max_pixels, args.allow_local_files)
    server = ChatServer(engine, model_name=args.model, policy=policy, max_batch=args.max_batch,
                        max_queue=args.max_queue, rules=rules, default_max_tokens=args.max_tokens,
                        batching=args.batching)
    uvicorn.run(build_app(server), host=args.host, port=args.port, log_level="info")
    return 0
