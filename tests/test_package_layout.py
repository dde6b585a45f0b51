"""The ROS 2 package metadata: package.xml, setup.py data files and console scripts."""
import ast
import importlib
import xml.etree.ElementTree as ET
from pathlib import Path

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


def test_data_files_install_launch_and_config():
    source = ast.unparse(_setup_kwarg("data_files"))
    for needle in ("share/ament_index/resource_index/packages", "package.xml",
                   "launch/*.launch.py", "config/*.yaml", "config/*.xml", "models/*.pt"):
        assert needle in source, needle


def test_console_scripts_resolve_to_callables():
    scripts = ast.literal_eval(_setup_kwarg("entry_points"))["console_scripts"]
    for spec in scripts:
        name, target = (s.strip() for s in spec.split("="))
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
