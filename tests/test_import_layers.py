"""The layers of the code, read from the source (ast; every import statement, also those
inside functions): the core imports nothing above it, the ROS side no training code."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The training side of nclr_core.engine (loops, their configs, run folders, DDP) and the
# library only training needs. Evaluation modules of engine/ are not training code.
TRAINING_MODULES = {f"nclr_core.engine.{name}" for name in
                    ("trainer", "finetune", "pretrain_config", "finetune_config",
                     "distributed", "run_dir", "training_loop")}
TRAINING_LIBRARIES = ("torch.utils.tensorboard",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((REPO / package).rglob("*.py"))}


ALL = {**_modules("nclr_core"), **_modules("nclr_ros")}


def _is_within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports_of(module: str) -> set[str]:
    """Every module named by an import statement of `module` (absolute names; for
    `from package import name`, the submodule package.name when it is one)."""
    path = ALL[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in ALL)
    return found


def reachable_from(module: str) -> set[str]:
    """The project modules `module` imports, directly or through other project modules
    (a package's import also runs its __init__)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        for name in imports_of(current):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in ALL and prefix not in seen:
                    seen.add(prefix)
                    todo.append(prefix)
    return seen


def test_the_walker_sees_imports_inside_functions_and_packages():
    assert "matplotlib" in imports_of("nclr_core.engine.calibration_eval")  # in a function
    assert "nclr_core.models.calibration_net" in imports_of("nclr_core.engine.trainer")
    assert "nclr_core.engine.distributed" in reachable_from("nclr_core.engine.trainer")
    assert "nclr_core.inference" in reachable_from("nclr_ros.calibration_node")


def _libraries_reached(module: str, libraries: tuple[str, ...]) -> list[tuple[str, str]]:
    """(importing module, library) for each import of `libraries` that `module` reaches."""
    return sorted((m, n) for m in reachable_from(module) | {module} for n in imports_of(m)
                  if any(_is_within(n, lib) for lib in libraries))


def test_what_the_nodes_run_reaches_no_training_loop_nor_its_tools():
    for module in ("nclr_core.segmenter", "nclr_core.inference"):
        reached = sorted(reachable_from(module) & TRAINING_MODULES)
        assert not reached, f"{module} reaches {reached}"
        tools = _libraries_reached(module, TRAINING_LIBRARIES + ("tqdm",))
        assert not tools, f"{module} reaches {tools}"


def test_the_core_outside_engine_imports_no_engine_module():
    upward = {m: sorted(n for n in imports_of(m) if _is_within(n, "nclr_core.engine"))
              for m in ALL if _is_within(m, "nclr_core") and not _is_within(m, "nclr_core.engine")}
    assert not {m: names for m, names in upward.items() if names}


def test_the_core_imports_neither_ros_nor_the_ros_package():
    ros = {m: sorted(n for n in imports_of(m)
                     if any(_is_within(n, top) for top in ("nclr_ros", "rclpy", "rosbag2_py")))
           for m in ALL if _is_within(m, "nclr_core")}
    assert not {m: names for m, names in ros.items() if names}


def test_the_ros_package_reaches_no_training_code():
    for module in (m for m in ALL if _is_within(m, "nclr_ros")):
        training = sorted(reachable_from(module) & TRAINING_MODULES)
        assert not training, f"{module} reaches {training}"
        libraries = _libraries_reached(module, TRAINING_LIBRARIES)
        assert not libraries, f"{module} reaches training libraries: {libraries}"
