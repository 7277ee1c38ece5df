"""The bundled training configurations (installed as ``synthct.configs``): ``synthct train --config paper`` names
``paper.yaml`` here; a path names any other file."""
