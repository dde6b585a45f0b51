"""ament_python package `nclr_ros`: installs nclr_core (PyTorch) and nclr_ros (ROS 2)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "nclr_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["nclr_core", "nclr_core.*", "nclr_ros", "nclr_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.pt")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="NCLR developers",
    maintainer_email="nclr@example.org",
    description="Self-supervised LiDAR learning by 2D-3D neural calibration, "
    "with online LiDAR-camera calibration nodes.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={"console_scripts": [
        "nclr-bag = nclr_ros.bag_cli:main",
        "calibration_node = nclr_ros.calibration_node:main",
        "segmentation_node = nclr_ros.segmentation_node:main",
    ]},
)
