"""The bundled demo: a small LLaVA trained by the project on synthetic shape captions, its DyRate
predictor, the script that trains the model (``train_vlm``) and ``python -m dyrate_engine.demo``.
The files are named ``"demo"`` in the API and CLI (see ``dyrate_engine.bundled``)."""
