"""The benchmarks' one convention: every script runs by its path from any folder, importing what
it shares as ``benchmarks.<module>`` (nothing named like the top-level ``sweeps/`` folder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.rglob("*.py")
                 if "sys.exit(main())" in p.read_text(encoding="utf-8"))


def test_the_scripts_are_the_ones_the_docs_name() -> None:
    assert [p.relative_to(BENCHMARKS).as_posix() for p in SCRIPTS] == [
        "eval_cost.py", "gpu/first_contact.py", "gpu/validate.py", "overhead.py",
        "point_overhead.py", "quickstart_runtime.py", "report_scale.py", "test_suite.py"]
    assert not (BENCHMARKS / "sweeps.py").exists()  # it shadowed the sweeps/ folder


def test_every_script_loads_by_its_path_from_another_folder(tmp_path: Path) -> None:
    """Each script's module code (imports, settings) runs as ``python <path>`` would run it,
    from a folder outside the checkout, with nothing on PYTHONPATH; ``main`` is not called."""
    code = ("import runpy, sys\n"
            "for path in sys.argv[1:]:\n"
            "    runpy.run_path(path, run_name='loaded')\n"
            "print('loaded', len(sys.argv) - 1)\n")
    done = subprocess.run([sys.executable, "-c", code, *map(str, SCRIPTS)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"loaded {len(SCRIPTS)}"
