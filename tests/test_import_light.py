"""Importing the package stays light: no Ray, no optional dependencies, a tidy ``__all__``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAVY = [
    "ray",
    "redis",
    "faiss",
    "qdrant_client",
    "prometheus_client",
    "opentelemetry",
    "numpy",
    "lz4",
    "torch",
    "langchain_core",
]


def _run(script: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_package_pulls_in_no_heavy_dependency() -> None:
    script = f"""
import json, sys
heavy = {HEAVY!r}
before = sorted(m for m in heavy if m in sys.modules)
import omnicache_cluster
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in heavy
)
print(json.dumps({{"before": before, "loaded": loaded, "file": omnicache_cluster.__file__}}))
"""
    out = _run(script)
    assert out["before"] == []  # the probe itself starts clean
    assert Path(out["file"]).resolve().is_relative_to(ROOT)
    assert out["loaded"] == [], f"import omnicache_cluster loaded {out['loaded']}"


def test_core_modules_do_not_import_ray() -> None:
    script = """
import importlib, json, pkgutil, sys
import omnicache_cluster.core as core
names = sorted(m.name for m in pkgutil.iter_modules(core.__path__, core.__name__ + "."))
for name in names:
    importlib.import_module(name)
ray = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print(json.dumps({"modules": names, "ray": ray}))
"""
    out = _run(script)
    expected = {"codec", "keys", "ring", "sentinel", "store"}
    assert expected <= {m.rsplit(".", 1)[1] for m in out["modules"]}
    assert out["ray"] == [], out["ray"]


def _isort_style_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        category = 0
    elif name[:1].isupper():
        category = 1
    else:
        category = 2
    return (category, name)


def test_all_is_sorted_and_every_name_resolves() -> None:
    script = """
import json
import omnicache_cluster
names = list(omnicache_cluster.__all__)
missing = {}
for name in names:
    try:
        getattr(omnicache_cluster, name)
    except Exception as exc:
        missing[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"all": names, "missing": missing, "dir": dir(omnicache_cluster)}))
"""
    out = _run(script)
    names = out["all"]
    assert names, "__all__ is empty"
    assert len(set(names)) == len(names), "duplicates in __all__"
    assert names == sorted(names, key=_isort_style_key)
    assert out["missing"] == {}
    assert set(names) <= set(out["dir"])


def test_isort_style_key_orders_categories() -> None:
    shuffled = ["__version__", "Zeta", "MISS", "Alpha", "CONST_B", "helper"]
    assert sorted(shuffled, key=_isort_style_key) == [
        "CONST_B",
        "MISS",
        "Alpha",
        "Zeta",
        "__version__",
        "helper",
    ]
