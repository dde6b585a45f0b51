"""The ROS 2 package metadata: package.xml, setup.py data files and console scripts."""
import ast
import importlib
import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]


def _setup_call() -> ast.Call:
    tree = ast.parse((REPO / "setup.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", None) == "setup"]
    assert len(calls) == 1
    return calls[0]


def _setup_kwarg(name: str):
    for keyword in _setup_call().keywords:
        if keyword.arg == name:
            return keyword.value
    raise AssertionError(f"setup() has no {name}=")


def test_package_xml_is_format3_ament_python_with_ros_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "nclr_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for dep in ("rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "diagnostic_msgs",
                "std_srvs", "python3-numpy", "python3-opencv", "python3-yaml"):
        assert dep in deps, dep


def test_resource_marker_and_setup_cfg_install_dirs():
    assert (REPO / "resource" / "nclr_ros").is_file()
    cfg = (REPO / "setup.cfg").read_text()
    assert "install_scripts=$base/lib/nclr_ros" in cfg


def _evaluated(name: str, monkeypatch):
    """The value of setup()'s `name=` argument, evaluated in the repository root as
    setup.py evaluates it (its module constants, glob, find_packages)."""
    monkeypatch.chdir(REPO)
    tree = ast.parse((REPO / "setup.py").read_text())
    constants = {target.id: ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) for target in node.targets}
    code = compile(ast.Expression(_setup_kwarg(name)), "setup.py", "eval")
    return eval(code, {"glob": glob, "find_packages": find_packages, **constants})


def test_data_files_install_the_marker_manifest_launch_config_and_models(monkeypatch):
    data_files = _evaluated("data_files", monkeypatch)
    installed = {dest: list(files) for dest, files in data_files}
    assert len(installed) == len(data_files)  # one entry per destination
    assert installed["share/ament_index/resource_index/packages"] == ["resource/nclr_ros"]
    assert installed["share/nclr_ros"] == ["package.xml"]
    expected = {
        "share/nclr_ros/launch": sorted((REPO / "launch").glob("*.launch.py")),
        "share/nclr_ros/config": sorted([*(REPO / "config").glob("*.yaml"),
                                         *(REPO / "config").glob("*.xml")]),
        "share/nclr_ros/models": sorted((REPO / "models").glob("*.pt")),
    }
    for dest, files in expected.items():
        assert sorted(REPO / f for f in installed[dest]) == files, dest
    # what the launch files and nodes name by default is among them
    for dest, name in (("share/nclr_ros/launch", "launch/calibrate.launch.py"),
                       ("share/nclr_ros/launch", "launch/segment.launch.py"),
                       ("share/nclr_ros/config", "config/calibrate.yaml"),
                       ("share/nclr_ros/config", "config/segment.yaml"),
                       ("share/nclr_ros/config", "config/fastdds_large_data.xml"),
                       ("share/nclr_ros/models", "models/nclr_synthetic.pt"),
                       ("share/nclr_ros/models", "models/nclr_synthetic_seg.pt")):
        assert name in installed[dest], name
    for files in installed.values():
        assert all((REPO / f).is_file() for f in files), files


def test_every_python_package_folder_is_installed(monkeypatch):
    packages = set(_evaluated("packages", monkeypatch))
    folders = {p.parent for top in ("nclr_core", "nclr_ros") for p in (REPO / top).rglob("*.py")}
    expected = {".".join(f.relative_to(REPO).parts) for f in folders}
    assert packages == expected
    assert all((REPO / name.replace(".", "/") / "__init__.py").is_file() for name in packages)


def test_console_scripts_resolve_to_callables():
    scripts = ast.literal_eval(_setup_kwarg("entry_points"))["console_scripts"]
    for spec in scripts:
        name, target = (s.strip() for s in spec.split("="))
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
