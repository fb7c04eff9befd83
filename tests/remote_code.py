"""Run a Python script in a fresh process that cannot import neds_hf: the check behind every
`trust_remote_code` test (a checkpoint must load from its own files on a machine without the
package)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_without_neds_hf(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `script` offline from an empty folder with neds_hf removed from the import path and
    blocked by a meta-path finder; returns the finished process (stdout/stderr as text)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.path[:] = [p for p in sys.path if 'neds_hf' not in p and "
        f"not p.endswith('src') and p != {str(REPO_ROOT)!r}]\n"
        "import importlib.abc\n"
        "class _Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'neds_hf' or name.startswith('neds_hf.'):\n"
        "            raise ImportError('neds_hf is blocked in this process')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env["PYTHONPATH"] = str(blocker)
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=blocker,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
