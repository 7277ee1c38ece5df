"""Evaluation stage: SynthRAD metrics of synthetic CTs against CTs.

- ``synthct evaluate`` (:mod:`evaluation.cli`, :mod:`evaluation.local`): prediction folder vs ground-truth folder →
  metrics.json, optional per-case pictures and a Markdown report.
- ``python -m evaluation`` (:mod:`evaluation.container`): the grand-challenge evaluation container
  (/input/predictions.json + baked-in ground truth → /output/metrics.json).

No torch here: the container stays small (numpy, scipy, SimpleITK, matplotlib).
"""
