"""The shape of the house: imports run one way (no cycle, lazy imports included), `import
tfcseg` stays light, and shared constants are defined once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tfcseg

PACKAGE = Path(tfcseg.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the tfcseg modules it imports anywhere in its body (function-level too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    root = ".".join(base + ([node.module] if node.module else []))
                else:
                    root = node.module or ""
                targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in modules else root for a in node.names]
            for t in targets:
                while t and t not in modules:  # `import tfcseg.x.y` names a module; strip attributes
                    t = t.rpartition(".")[0]
                if t.startswith("tfcseg") and t != name and t != "tfcseg":
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_point_down():
    """Lower layers never import higher ones."""
    order = ["errors", "runtime", "metrics", "postprocess", "io", "ops", "models", "data", "hub",
             "backends", "segmenter", "evaluate", "training", "segment", "benchmark", "cli"]
    rank = {f"tfcseg.{n}": i for i, n in enumerate(order)}

    def layer(module: str) -> int | None:
        parts = module.split(".")
        return rank.get(".".join(parts[:2]))

    for module, targets in import_graph().items():
        for t in targets:
            if layer(module) is not None and layer(t) is not None:
                assert layer(t) <= layer(module), f"{module} imports {t} (a higher layer)"


def test_import_tfcseg_is_light():
    code = ("import sys, tfcseg; print(sorted(m for m in ('torch', 'cv2', 'huggingface_hub', 'rich', 'onnx', "
            "'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_reachable():
    for name in tfcseg.__all__:
        assert getattr(tfcseg, name) is not None, name


def test_shared_constants_defined_once():
    names = {"MODES", "PRECISIONS", "IGNORE_INDEX", "IMAGE_SUFFIXES", "CONFIG_NAME", "WEIGHTS_NAME",
             "IMAGENET_MEAN", "IMAGENET_STD", "MAX_CLASSES"}
    where: dict[str, list[str]] = {n: [] for n in names}
    for module, path in _modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(t, ast.Name) and t.id in names:
                        where[t.id].append(module)
    assert {n: m for n, m in where.items() if len(m) != 1} == {}


def test_cli_names_flags_where_the_library_names_parameters(capsys):
    from tfcseg.cli import main
    from tfcseg.errors import as_flags

    assert as_flags("keyframe_interval must be 1 or more (use overwrite=True)", ("keyframe_interval", "overwrite")) \
        == "--keyframe-interval must be 1 or more (use --overwrite)"
    assert as_flags("end (1 s) must be after start (2 s)", ("end", "start")) == "--end (1 s) must be after --start (2 s)"
    assert main(["segment", "nothing.mp4", "--keyframe-interval", "0"]) == 2
    err = capsys.readouterr().err
    assert "--keyframe-interval must be 1 or more" in " ".join(err.split())
