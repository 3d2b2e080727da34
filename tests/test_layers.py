"""Imports go only downward: the package's layers, declared here, and no import cycle between
modules or between folders.

Every ``import`` of a chef_genius module counts, a lazy one inside a function too (it is the same
dependency, only paid later). A *unit* is a top-level module (``recipe.py``) or a folder
(``training/``); each has a layer in `LAYERS`, from the bottom up. A unit may import units of its
own layer or below, never above, and no unit may reach itself through others. A new module or
folder needs its place here.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "chef_genius"

LAYERS: list[set[str]] = [
    # Records and pure functions, no chef_genius imports of note.
    {"chef_genius", "errors", "recipe", "sample", "schedule", "losses", "tokenizer"},
    # The domain: settings, recipe checks and metrics, data sources, prepare, output folders, sinks.
    {"config_schema", "config", "config_help", "metrics", "usability", "foods", "findings", "judge", "cookable",
     "quality", "augment", "curriculum", "encoding", "reference_metrics", "grounding", "sources", "prepare_chunks",
     "prepare", "outputs", "tracking", "report", "preference"},
    # Model families; models: loading and placement; the generation engine.
    {"families", "model", "generation"},
    # What training reads and writes: its data, checkpoints, gradient noise.
    {"dataset", "checkpoints", "noise", "retrieval"},
    # Loading a trained run, and generating with it.
    {"inference"},
    # Samples and their scores, best-of-N, the LM judge (it loads a model), `evaluate`.
    {"best_of", "sampling", "evaluation", "preference_pairs", "lm_judge"},
    # `train`: the loop.
    {"training"},
    # Export and serving.
    {"export", "gguf_file", "modelfile", "serve"},
    # The command line.
    {"cli", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each chef_genius module -> the chef_genius modules it imports (anywhere in its file)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                # ``from package import module`` imports the module; ``from module import name`` the module.
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(name: str) -> int:
    for number, layer in enumerate(LAYERS):
        if name in layer:
            return number
    raise KeyError(name)


def test_every_module_and_folder_has_a_layer():
    units = {unit(m) for m in imports()}
    assert not units - set().union(*LAYERS), "give these a place in LAYERS"
    assert not set().union(*LAYERS) - units, "LAYERS names units that are gone"


def test_no_import_cycle_between_modules():
    graphlib.TopologicalSorter(imports()).prepare()  # raises CycleError, naming the cycle


def test_no_import_cycle_between_folders():
    graph: dict[str, set[str]] = {}
    for module, imported in imports().items():
        graph.setdefault(unit(module), set()).update(unit(m) for m in imported if unit(m) != unit(module))
    graphlib.TopologicalSorter(graph).prepare()


def test_imports_go_only_downward():
    upward = sorted(f"{module} -> {other}" for module, imported in imports().items() for other in imported
                    if layer_of(unit(other)) > layer_of(unit(module)))
    assert not upward


def test_lazy_and_relative_imports_are_seen():
    """What the checks read: an import inside a function counts (serve imports torch only when it
    serves), as does ``from package import module``."""
    graph = imports()
    assert "chef_genius.inference" in graph["chef_genius.serve.server"]  # inside a function
    assert "chef_genius.checkpoints.folder" in graph["chef_genius.training.trainer"]  # import folder as ckpt


def test_every_device_script_uses_the_shared_set_up():
    """benchmarks/gpu_*.sh set the device machine up through benchmarks/device_common.sh only."""
    scripts = sorted((PACKAGE.parents[1] / "benchmarks").glob("gpu_*.sh"))
    assert scripts
    assert [s.name for s in scripts if 'source "$(dirname "$0")/device_common.sh"' not in s.read_text()] == []
