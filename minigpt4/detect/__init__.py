"""The mind-wandering detector applied to recordings (SPEC section 15).

``python -m minigpt4.detect --cfg-path eval_configs/detect_mw.yaml`` reads a detector exported
by the probe (``probe.export``), builds only the encoders and model parts its feature set
needs, checks that they make the features it was fitted on, and turns recordings (files, a
folder, a segments CSV, or a live source) into P(MW) timelines: windows -> prepare's face
pipeline -> the features -> the detector (docs/detect.md).
"""
