"""Import rules between segclass's parts (docs/architecture.md), read from the source with `ast`.

Ray's and MLflow's APIs change every few releases; keeping each in one place
only lasts while something fails when a module elsewhere starts importing it.
Imports are collected without importing anything, split by when they run:
at module level (on `import`), inside a function (when called) and under
`if TYPE_CHECKING:` (never at run time). Imports by computed name
(`importlib.import_module`) are not seen; rule (f) catches their effect on
`ray` and `mlflow` by importing the library in a fresh interpreter.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "segclass"

MODULE, FUNCTION, TYPING = "module level", "in a function", "type checking only"
ANYWHERE = (MODULE, FUNCTION, TYPING)
CORE_EXEMPT = ("segclass.ray_sweep", "segclass.analysis", "segclass.schema")


@dataclass(frozen=True)
class Rule:
    """Modules under `importer` (minus `exempt`) must not import `forbidden` in any of `scope`."""

    name: str
    importer: str
    forbidden: tuple[str, ...]
    scope: tuple[str, ...]
    exempt: tuple[str, ...] = ()


RULES = (
    Rule("(a) Ray lives in segclass/ray_sweep/ only", "segclass", ("ray",), ANYWHERE, ("segclass.ray_sweep",)),
    Rule("(b) the library core imports mlflow only inside functions", "segclass", ("mlflow",), (MODULE,),
         CORE_EXEMPT),
    Rule("(c) analysis reads MLflow, never the sweep", "segclass.analysis", ("segclass.ray_sweep",), ANYWHERE),
    Rule("(d) the model knows no data, sweep, analysis or predict", "segclass.model",
         ("segclass.data", "segclass.ray_sweep", "segclass.analysis", "segclass.predict"), ANYWHERE),
    Rule("(e) the library never imports the repo-root CLIs", "segclass", ("sweeps", "analysis"), ANYWHERE),
    Rule("(g) only predict imports predict: training, evaluation, the data build use inference", "segclass",
         ("segclass.predict",), ANYWHERE, ("segclass.predict",)),
    Rule("(h) inference knows no model, training, data, predict, sweep or analysis", "segclass.inference",
         ("segclass.model", "segclass.training_loop", "segclass.train", "segclass.evaluation", "segclass.data",
          "segclass.predict", "segclass.ray_sweep", "segclass.analysis", "segclass.model_file"), ANYWHERE),
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    path: str  # its file, relative to the repository
    line: int
    target: str  # the imported module; `m.x` for `from m import x` (x a module or a name in m)
    when: str  # MODULE, FUNCTION or TYPING


@dataclass(frozen=True)
class Violation:
    rule: Rule
    where: Import

    def __str__(self) -> str:
        return (f"{self.where.path}:{self.where.line}: imports {self.where.target} ({self.where.when}), "
                f"breaking rule {self.rule.name}")


def module_name(path: Path) -> str:
    """`segclass/data/__init__.py` -> `segclass.data`; `segclass/x.py` -> `segclass.x`."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of `from [.]*x import ...` in `module` (so `from . import analysis` is not the CLI)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def collect_imports(source: str, path: str) -> list[Import]:
    """Every import statement of one module's source, with the line and when it runs."""
    module = module_name(Path(path))
    is_package = Path(path).name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, when: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = when
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and when == MODULE:
                inner = FUNCTION
            if isinstance(child, ast.Import):
                found.extend(Import(module, path, child.lineno, alias.name, when) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                # `m.x` is under every prefix `m` is, and also catches `from segclass import ray_sweep`
                base = _resolve(child, module, is_package)
                found.extend(Import(module, path, child.lineno,
                                    base if alias.name == "*" else f"{base}.{alias.name}", when)
                             for alias in child.names)
            if isinstance(child, ast.If) and _is_type_checking(child.test):  # the body never runs, the else does
                for statement in child.body:
                    visit(ast.Module(body=[statement], type_ignores=[]), TYPING)
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), inner)
                continue
            visit(child, inner)

    visit(ast.parse(source, filename=path), MODULE)
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(imports: list[Import], rules: tuple[Rule, ...] = RULES) -> Iterator[Violation]:
    """The imports that break a rule, one per (rule, import)."""
    for rule in rules:
        for item in imports:
            if not _under(item.module, rule.importer) or any(_under(item.module, e) for e in rule.exempt):
                continue
            if item.when in rule.scope and any(_under(item.target, f) for f in rule.forbidden):
                yield Violation(rule, item)


def library_imports() -> list[Import]:
    """The imports of every module under segclass/, read from source."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        found += collect_imports(path.read_text(encoding="utf-8"), relative)
    return found


def test_every_part_imports_only_what_it_may():
    imports = library_imports()
    assert len({i.module for i in imports}) > 50  # the walk found the package
    broken = sorted({str(v) for v in violations(imports)})
    assert not broken, "import rules of docs/architecture.md broken:\n" + "\n".join(broken)


def test_the_checker_reports_a_forbidden_import_with_file_line_and_rule():
    source = "import numpy\n\n\ndef f():\n    from segclass.ray_sweep import driver\n"
    found = [str(v) for v in violations(collect_imports(source, "segclass/analysis/x.py"))]
    assert found == ["segclass/analysis/x.py:5: imports segclass.ray_sweep.driver (in a function), breaking rule "
                     "(c) analysis reads MLflow, never the sweep"]
    assert [v.rule.name[:3] for v in violations(collect_imports("from segclass import ray_sweep\n",
                                                                "segclass/analysis/y.py"))] == ["(c)"]


def test_the_checker_tells_when_an_import_runs():
    source = ("from typing import TYPE_CHECKING\nimport mlflow\nif TYPE_CHECKING:\n    import ray\n"
              "class A:\n    import torch\n    def m(self):\n        from . import analysis\n")
    when = {(i.target, i.when) for i in collect_imports(source, "segclass/predict/x.py")}
    assert {("mlflow", MODULE), ("ray", TYPING), ("torch", MODULE), ("segclass.predict.analysis", FUNCTION)} <= when
    rules = {v.rule.name[:3] for v in violations(collect_imports(source, "segclass/predict/x.py"))}
    assert rules == {"(a)", "(b)"}  # ray even for typing; mlflow at module level; the relative import is no CLI
    assert not list(violations(collect_imports("def f():\n    import mlflow\n", "segclass/predict/y.py")))
    assert not list(violations(collect_imports("import ray, mlflow\n", "segclass/ray_sweep/z.py")))


def test_importing_the_library_loads_neither_ray_nor_mlflow():
    """(f) Every module outside segclass/ray_sweep/, and the sweep package itself, import without Ray or MLflow.

    Only the Tune callbacks (`ray_sweep/callback.py`, `ray_sweep/progress.py`) import Ray at module level.
    """
    modules = sorted(module_name(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__main__.py" and not _under(module_name(p.relative_to(ROOT)), "segclass.ray_sweep"))
    code = (f"import sys\nfor name in {modules + ['segclass.ray_sweep']!r}:\n    __import__(name)\n"
            "print('ray' in sys.modules, 'mlflow' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"], f"(ray, mlflow) loaded: {result.stdout}"


def test_importing_predict_loads_neither_torch_nor_the_model():
    """(i) `import segclass.predict` is cheap: its names load `segclass.predict.run` (and torch) on first use."""
    code = ("import sys\nimport segclass.predict\n"
            "print('torch' in sys.modules, 'segclass.model' in sys.modules)\n"
            "segclass.predict.PredictOptions\nprint('segclass.model_file' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True"], result.stdout
