"""The grand-challenge algorithm: MR + body mask → synthetic CT with an exported model package (no torch).

``python -m synthct.algorithm`` is the container entry point (:mod:`synthct.algorithm.container`); ``synthct predict``
runs the
same code on local files (:mod:`synthct.algorithm.cli`).
"""
