"""docs/MODULES.md stays true: every module it names exists, every module is named."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules(package: str) -> set[str]:
    root = REPO / package
    return {".".join(p.relative_to(root).with_suffix("").parts)
            for p in root.rglob("*.py") if p.name != "__init__.py"}


def _expand(text: str, section: str) -> set[str]:
    """Names of the section's first column, with `pkg.*` rows expanded by their list."""
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for first, second in re.findall(r"^\| (.+?) \| (.+?) \|$", body, re.M):
        for name in re.findall(r"`([\w.]+)`", first):
            names.add(name)
        for star in re.findall(r"`([\w.]+)\.\*`", first):
            names.update(f"{star}.{n}" for n in re.findall(r"`(\w+)`", second))
    return names


def test_the_module_map_names_every_module_and_only_real_ones():
    text = (REPO / "docs" / "MODULES.md").read_text()
    for package in ("nclr_core", "nclr_ros"):
        named = _expand(text, package)
        modules = _modules(package)
        assert modules - named == set(), f"{package} modules missing from docs/MODULES.md"
        stars = {n for n in named if n not in modules and not any(
            m.startswith(n + ".") for m in modules)}
        assert stars == set(), f"docs/MODULES.md names modules that do not exist: {stars}"
