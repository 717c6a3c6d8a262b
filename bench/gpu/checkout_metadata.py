"""Make this checkout's entry points visible without installing it (the GPU machine has no package
index and no build backend): write a dist-info for `tokenyard` into a directory on sys.path, with
the entry points of pyproject.toml, so the registry discovers its backends (`tokenyard.backends`)
exactly as an installed copy would. Usage: python bench/gpu/checkout_metadata.py /tmp/site
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def main(target: str) -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    info = Path(target) / f"{project['name']}-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, points in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target_}" for name, target_ in points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
