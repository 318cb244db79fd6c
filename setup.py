"""Packaging hook (the project's metadata is in pyproject.toml): the default model goes into
the wheel.

`weights/` at the top of the repository is the one copy of the shipped model. Building a wheel
(or an sdist's wheel) copies its files into the package as `tfcseg/weights/`, where
`tfcseg.hub.refs` finds them in a normal install; an editable install reads `weights/` from
the clone instead, so nothing is copied then.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
WEIGHT_FILES = ("config.json", "model.safetensors", "README.md")  # what inference needs, and the card


class BuildPyWithWeights(build_py):
    """build_py, then weights/* -> <build_lib>/tfcseg/weights/ (not for editable installs)."""

    def _weight_targets(self) -> list[tuple[Path, Path]]:
        if getattr(self, "editable_mode", False):
            return []
        dest = Path(self.build_lib) / "tfcseg" / "weights"
        return [(ROOT / "weights" / name, dest / name) for name in WEIGHT_FILES
                if (ROOT / "weights" / name).is_file()]

    def run(self) -> None:
        super().run()
        targets = self._weight_targets()
        if targets:
            self.mkpath(str(targets[0][1].parent))
        for src, dest in targets:
            self.copy_file(str(src), str(dest))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return list(super().get_outputs(include_bytecode)) + [str(d) for _, d in self._weight_targets()]


setup(cmdclass={"build_py": BuildPyWithWeights})
