"""Evaluation stage: SynthRAD metrics of synthetic CTs against CTs.

- ``synthct evaluate`` (:mod:`synthct.evaluation.cli`, :mod:`synthct.evaluation.local`): prediction folder vs
ground-truth folder →
  metrics.json, optional per-case pictures and a Markdown report.
- ``python -m synthct.evaluation`` (:mod:`synthct.evaluation.container`): the grand-challenge evaluation container
  (/input/predictions.json + baked-in ground truth → /output/metrics.json).

No torch here: the container stays small (numpy, scipy, SimpleITK, matplotlib).
"""
