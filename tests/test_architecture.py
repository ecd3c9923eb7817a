"""The package's shape: one subpackage per stage, imports one way, no module-level state."""

import ast
import importlib
import pathlib
import pkgutil
import re

import numpy as np
import pytest

import astro_offsets

ROOT = pathlib.Path(astro_offsets.__file__).parent
# The source tree of these tests (the package may be installed elsewhere).
TREE = pathlib.Path(__file__).resolve().parents[1]

# Which stages each stage may import (all may import _utils). The top-level
# modules (the flat API, the command line, the demo) may import anything.
ALLOWED = {
    "_utils": set(),
    "frames": {"_utils"},
    "stars": {"_utils", "frames"},
    "maps": {"_utils"},
    "field": {"_utils", "stars", "maps"},
    "stack": {"_utils", "frames", "maps"},
    "pipeline": {"_utils", "frames", "stars", "maps", "field", "stack"},
    "datasets": {"_utils"},
}
# setup_package: the build file of the compiled kernels (extension-helpers);
# version: the version, which setuptools_scm writes into _version.py at build
# time (absent from a source tree that was never built).
TOP_LEVEL = {"__init__", "_cli", "_demo", "version", "setup_package"}
GENERATED = {"_version"}


def modules():
    """Every module of the package: (dotted name, path), sources only."""
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imported(name, path):
    """The modules of the package that module ``name`` imports, as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    known = {module for module, _ in modules()}
    return {target for target in found if target in known and target != name}


def stage(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_stages_are_the_layout():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top - GENERATED == TOP_LEVEL


def violations(name, path):
    """The imports of module ``name`` against the flow of the pipeline."""
    here = stage(name)
    if here in TOP_LEVEL:
        return []
    return [
        f"{name} imports {target}"
        for target in imported(name, path)
        if stage(target) not in {here, "version", *ALLOWED[here]}
    ]


def cycles(graph):
    """The import cycles of a graph ``{module: imported modules}``."""
    state, found = {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in graph.get(node, ()):
            if state.get(target) == "open":
                found.append([*trail, node, target])
            elif target not in state:
                visit(target, [*trail, node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])
    return found


def test_imports_run_one_way():
    wrong = [line for name, path in modules() for line in violations(name, path)]
    assert not wrong, wrong


def test_no_import_cycles():
    # A module importing its own package's __init__ makes a cycle too.
    assert not cycles({name: imported(name, path) for name, path in modules()})


def test_the_checks_can_fail(tmp_path):
    source = tmp_path / "_x.py"
    source.write_text("import numpy\nfrom ..stack import Stacker\nfrom ..maps import OffsetMap\n")
    assert violations("astro_offsets.field._x", source) == [
        "astro_offsets.field._x imports astro_offsets.stack"
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert not cycles({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}})


def test_the_cluster_is_given_not_sniffed():
    # A dask cluster comes as client= (workers.Tasks), not from joblib's
    # private active backend; only the tiles of OffsetModel.to_map honour
    # whatever joblib backend is active (docs/field.rst, :ref:`determinism`).
    users = [name for name, path in modules() if "get_active_backend" in path.read_text()]
    assert users == ["astro_offsets.field._tiling"]


def attributes_set(path, name):
    """The attributes of the variable ``name`` that the module at ``path`` assigns to."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        else:
            continue
        found += [
            ast.unparse(target)
            for target in targets
            if isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == name
        ]
    return found


def test_a_run_is_changed_through_its_methods(tmp_path):
    # The cluster's code stacks into a stack's run (its stacker, its notes,
    # its scratch) by the run's methods, not by setting its attributes.
    wrong = [
        f"{name}: {target}"
        for name, path in modules()
        if name.startswith("astro_offsets.stack.") and name != "astro_offsets.stack._run"
        for target in attributes_set(path, "run")
    ]
    assert not wrong, wrong
    source = tmp_path / "_x.py"
    source.write_text("def f(run, notes):\n    run.notes += notes\n    run.x = 1\n")
    assert attributes_set(source, "run") == ["run.notes", "run.x"]


# Names every module of a kind defines, by design: each field method's module its METHOD.
PROTOCOL = {"METHOD"}


def defined(path):
    """The public names a module defines at its top level: classes, functions, constants."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return {name for name in names if not name.startswith("_")}


def test_no_name_means_two_things():
    # Two unrelated Normalisation classes, or KERNELS for drizzle's kernels and for the
    # Cython modules, read as one thing where both are imported.
    where = {}
    for name, path in modules():
        for defined_name in defined(path) - PROTOCOL:
            where.setdefault(defined_name, []).append(name)
    twice = {name: found for name, found in where.items() if len(found) > 1}
    assert not twice, twice


MUTABLE = (dict, list, set, bytearray)


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for _, name, _ in pkgutil.walk_packages(astro_offsets.__path__, "astro_offsets.")
        if not name.endswith("setup_package")
    ),
)
def test_no_module_level_mutable_state(name):
    module = importlib.import_module(name)
    state = []
    for attribute, value in vars(module).items():
        if attribute.startswith("__"):
            continue
        if isinstance(value, MUTABLE) or (isinstance(value, np.ndarray) and value.flags.writeable):
            state.append(attribute)
    assert not state, f"{name}: {state}"


def loaded_after(module, candidates, directory):
    """Return which of ``candidates`` a fresh Python process has loaded after importing ``module``.

    It runs in ``directory``, not in the source tree, which has no compiled
    extensions when the package is installed rather than edited in place.
    """
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in {candidates!r} if m in sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=directory, check=False
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_the_command_line_starts_without_what_it_does_not_use(tmp_path):
    # Every command, and every worker process it starts, imports the
    # package: the synthetic data (scipy.special) and astropy.nddata (which
    # brings astropy.wcs and coordinates) load only where they are used.
    unused = ("astro_offsets.datasets", "astropy.nddata")
    assert loaded_after("astro_offsets._cli", unused, tmp_path) == "[]"
    # A stack's worker imports what drizzles a band: numpy and drizzle.
    heavy = ("astropy", "scipy", "astro_offsets.frames")
    assert loaded_after("astro_offsets.stack._bands", heavy, tmp_path) == "[]"
    assert astro_offsets.datasets.__name__ == "astro_offsets.datasets"  # still there when asked


def test_the_code_cites_the_docs_not_files_outside_the_repository():
    # The field's definition and the table schema are in the docs: the code cites their
    # pages and labels, which must exist.
    sources = [
        *ROOT.rglob("*.py"),
        *ROOT.rglob("*.pyx"),
        *TREE.joinpath("tests").rglob("*.py"),
    ]
    here = pathlib.Path(__file__).resolve()
    citing = [path for path in sources if path.resolve() != here and "DESIGN" in path.read_text()]
    assert not citing, citing
    docs = TREE / "docs"
    if not docs.is_dir():
        pytest.skip("no docs beside the package")
    labels = set()
    for page in docs.rglob("*.rst"):
        labels.update(re.findall(r"^\.\. _([\w-]+):$", page.read_text(), re.MULTILINE))
    cited = {
        label
        for path in ROOT.rglob("*.py*")
        if path.suffix in (".py", ".pyx")
        for label in re.findall(r":ref:`(?:[^`<]*<)?([\w-]+)>?`", path.read_text())
    }
    assert cited, "no :ref: found: the pattern is wrong"
    assert cited <= labels, sorted(cited - labels)
