"""Paired MR/CT/mask phantoms that look like SynthRAD cases (brain, pelvis), and MR simulation from a real CT.

- :func:`generate_case` / :func:`generate_volumes`: one case (images, or arrays with the tissue label map);
- :func:`write_phantom_dataset`: a dataset in the SynthRAD 2023 layout;
- :mod:`synthct.phantom.from_ct`: paired cases from a real CT (tissue classes by HU, simulated MR).
"""

from synthct.phantom.generate import REGIONS, SIZE_NAMES, SIZES, PhantomVolumes, generate_case, generate_volumes
from synthct.phantom.writer import case_id, case_seed, write_phantom_dataset

__all__ = [
    "REGIONS",
    "SIZES",
    "SIZE_NAMES",
    "PhantomVolumes",
    "case_id",
    "case_seed",
    "generate_case",
    "generate_volumes",
    "write_phantom_dataset",
]
