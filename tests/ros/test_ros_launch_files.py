"""Every launch/*.launch.py compiles and names only what the package installs.

`launch` and `launch_ros` are not installed here, so the files are read with `ast`: each
`Node(...)` must name package `nclr_ros`, an executable that setup.py installs as a console
script and a node name whose parameter YAML in config/ exists and is installed; every
parameter the launch file passes must be declared in that YAML (or be `use_sim_time`), and
every remapped name must be a topic the node's module subscribes to.
"""
from __future__ import annotations

import ast
import fnmatch
import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
# what a ROS distribution provides to launch files (and the standard library's os)
LAUNCH_MODULES = ("launch", "launch_ros", "ament_index_python", "os")
BUILTIN_PARAMETERS = {"use_sim_time"}


def _setup_keyword(name: str) -> ast.expr:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == name:
                    return keyword.value
    raise AssertionError(f"setup.py has no setup({name}=...)")


def _console_scripts() -> dict[str, str]:
    scripts = ast.literal_eval(_setup_keyword("entry_points"))["console_scripts"]
    return dict((part.strip() for part in spec.split("=", 1)) for spec in scripts)


def _installed_config_patterns() -> list[str]:
    """Glob patterns of the files setup.py installs under share/<package>/config."""
    data_files = _setup_keyword("data_files")
    return [c.value for c in ast.walk(data_files)
            if isinstance(c, ast.Constant) and isinstance(c.value, str)
            and c.value.startswith("config/")]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords if k.arg}


def _constant(node: ast.expr | None, names: dict[str, str] | None = None) -> str | None:
    """A string literal, or a module-level string constant named by `node`."""
    if isinstance(node, ast.Name) and names:
        return names.get(node.id)
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """`NAME = "text"` assignments at module level."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name) and _constant(node.value) is not None:
            out[node.targets[0].id] = node.value.value
    return out


def _node_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == "Node"]


def _passed_parameter_names(tree: ast.AST) -> set[str]:
    """String keys of dict literals and of `d["key"] = ...` assignments in the file."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            names.update(k.value for k in node.keys if isinstance(k, ast.Constant))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            if _constant(node.slice) is not None:
                names.add(node.slice.value)
    return names


def _subscribed_topics(module: str) -> set[str]:
    """Topic-name constants of create_subscription / create_publisher calls in `module`."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"module {module} not found"
    tree = ast.parse(Path(spec.origin).read_text())
    topics = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == \
                "create_subscription" and len(node.args) >= 2:
            if _constant(node.args[1]) is not None:
                topics.add(node.args[1].value)
    return topics


def test_there_are_launch_files():
    for name in ("calibrate.launch.py", "segment.launch.py"):
        assert (REPO / "launch" / name) in LAUNCH_FILES, name


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_only_installed_things(path: Path):
    source = path.read_text()
    compile(source, str(path), "exec")
    tree = ast.parse(source)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module]
            for module in modules:
                assert module.split(".")[0] in LAUNCH_MODULES, f"{path.name} imports {module}"

    config_names = {c.value for c in ast.walk(tree) if isinstance(c, ast.Constant)
                    and isinstance(c.value, str) and c.value.endswith((".yaml", ".xml"))}
    patterns = _installed_config_patterns()
    for name in config_names:
        assert (REPO / "config" / name).is_file(), f"{path.name} names config/{name}"
        assert any(fnmatch.fnmatch(f"config/{name}", p) for p in patterns), \
            f"config/{name} is not installed by setup.py data_files ({patterns})"

    names = _module_constants(tree)
    scripts = _console_scripts()
    calls = _node_calls(tree)
    assert calls, f"{path.name} starts no Node"
    declared: set[str] = set()
    for call in calls:
        kw = _keywords(call)
        assert _constant(kw.get("package"), names) == "nclr_ros"
        executable = _constant(kw.get("executable"), names)
        assert executable in scripts, f"{executable!r} is not a console script of setup.py"
        node_name = _constant(kw.get("name"), names)
        assert node_name, f"{path.name}: Node(...) needs a literal name= (its YAML key)"
        yamls = [name for name in config_names if name.endswith(".yaml")]
        sections = {}
        for name in yamls:
            sections.update(yaml.safe_load((REPO / "config" / name).read_text()))
        assert node_name in sections, f"no config YAML in {yamls} has a {node_name} section"
        declared |= set(sections[node_name]["ros__parameters"])

        module = scripts[executable].split(":")[0]
        topics = _subscribed_topics(module)
        remaps = kw.get("remappings")
        if remaps is not None:
            for pair in remaps.elts:
                source_name = _constant(pair.elts[0], names)
                assert source_name in topics, \
                    f"{path.name} remaps {source_name!r}; {module} subscribes to {topics}"

    passed = _passed_parameter_names(tree)
    unknown = passed - declared - BUILTIN_PARAMETERS
    assert not unknown, f"{path.name} passes parameters no node declares: {unknown}"
