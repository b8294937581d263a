"""The house rules of the code, checked on its source (issue 27): the layers import one way, no module
circles (counting imports inside functions, so none is there to break a circle), no private name used
across modules, and the base layer knows nothing of SUMO, torch or LangChain."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["core", "scenarios", "cosim", "agents", "llm", "evaluation"]  # each imports only those before it


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _is_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported module, names taken from it)], every import statement anywhere in the file."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            found = out.setdefault(_module_name(path), [])
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found += [(a.name, []) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [a.name for a in node.names]
                    subs = [n for n in names if _is_module(f"{node.module}.{n}")]
                    found += [(f"{node.module}.{n}", []) for n in subs]
                    if len(subs) < len(names):  # names defined in the module itself (or its __init__)
                        found.append((node.module, [n for n in names if n not in subs]))
    return out


def _ours(name: str) -> bool:
    return name.split(".")[0] in LAYERS


def test_layers_import_one_way():
    wrong = [
        f"{mod} imports {target}"
        for mod, targets in _imports().items()
        for target, _ in targets
        if _ours(target) and LAYERS.index(target.split(".")[0]) > LAYERS.index(mod.split(".")[0])
    ]
    assert wrong == []


def test_no_circle_among_modules():
    graph: dict[str, set[str]] = {}
    for mod, targets in _imports().items():
        graph[mod] = {t for t, _ in targets if _ours(t) and _is_module(t) and t != mod}
    # depth-first search for a back edge; the path to it is the circle
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert circles == []


def test_no_private_name_crosses_modules():
    crossing = [
        f"{mod} takes {name} from {target}"
        for mod, targets in _imports().items()
        for target, names in targets
        if _ours(target) and target != mod
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert crossing == []


def test_the_base_layer_knows_nothing_of_sumo_torch_or_langchain():
    heavy = ("traci", "libsumo", "sumolib", "sumo", "torch", "langchain", "langchain_core", "langchain_community")
    found = [
        f"{mod} imports {target}"
        for mod, targets in _imports().items()
        if mod.split(".")[0] == "core"
        for target, _ in targets
        if target.split(".")[0] in heavy or (_ours(target) and not target.startswith("core"))
    ]
    assert found == []


def test_the_console_script_lives_in_cosim_and_every_layer_plugs_in():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"cosim": "cosim.cli:main"}
    commands = project["entry-points"]["cosim.commands"]
    assert {v.split(".")[0] for v in commands.values()} == {"scenarios", "agents", "llm", "evaluation"}
    assert set(project["entry-points"]["cosim.configure"].values()) == {"evaluation.cli:configure"}


def test_a_package_of_ones_own_adds_a_command_through_the_entry_point(tmp_path):
    """What a researcher's package does: declare ``cosim.commands`` in its metadata; `cosim` finds it."""
    import os
    import subprocess
    import sys

    (tmp_path / "mycmds.py").write_text(
        "def register(app):\n"
        "    @app.command('hello')\n"
        "    def hello(name: str = 'city') -> None:\n"
        "        print(f'hello {name}')\n"
    )
    info = tmp_path / "mycmds-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mycmds\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cosim.commands]\nmycmds = mycmds:register\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    run = subprocess.run([sys.executable, "-m", "cosim", "hello", "--name", "Helsinki"], capture_output=True,
                         text=True, env=env, timeout=60)  # fmt: skip
    assert (run.returncode, run.stdout.strip()) == (0, "hello Helsinki"), run.stderr
    listed = subprocess.run([sys.executable, "-m", "cosim", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert all(c in listed.stdout for c in ("hello", "train", "compare", "demos", "scenario", "simulate", "demo"))
