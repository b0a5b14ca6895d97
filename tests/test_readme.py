"""README's Python example runs as it stands (so the documented API cannot drift from the code)."""

from __future__ import annotations

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_pipeline_in_readme_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, "README has one Python example; this test runs it"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(blocks[0], str(README), "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "'accuracy':" in printed and "iwae4_nll_per_token" in printed
    for name in ("warm", "em_1", "em_1-eval"):
        assert (tmp_path / "runs" / "python" / name / "manifest.json").is_file()
    assert (tmp_path / "runs" / "python" / "em_1.latents.jsonl").is_file()
