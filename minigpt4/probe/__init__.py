"""Which representation detects mind wandering: a fold-wise linear probe over a feature dump.

``python -m minigpt4.probe --cfg-path eval_configs/probe_mw.yaml`` reads a dump folder
(``eval_emotion.py --dataset hcmw_caption``) and the hcmw annotation, fits a standardised,
class-balanced logistic regression per feature set and held-out fold, and writes
``probe.json``, ``probe.csv``, ``probe.md`` and PNG plots (SPEC section 12, docs/probe.md).
"""
