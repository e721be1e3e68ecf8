"""The product's text: no project history in the shipped code and configs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

# "issue 13", "Issue #7", "issue-13b": our tracker's numbers mean nothing to a user of the package
ISSUE = re.compile(r"\bissue[\s#-]*\d+", re.IGNORECASE)


def _shipped_text_files() -> list[Path]:
    files = [p for top in ("src", "configs") for p in sorted((ROOT / top).rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".png")]
    return files


def test_the_issue_pattern_finds_tracker_numbers() -> None:
    for text in ("stops learning (issue 13)", "see Issue #7", "branch issue-13b", "ISSUE 25, item 4"):
        assert ISSUE.search(text), text
    for text in ("an issue with the masks", "tissue 13 HU", "issues: none"):
        assert not ISSUE.search(text), text


def test_no_issue_numbers_in_src_or_shipped_configs() -> None:
    files = _shipped_text_files()
    names = {p.relative_to(ROOT).as_posix() for p in files}
    # the scan reaches the code, the package's demo config and the shipped stroke config
    assert {"src/flexunet/planning/plan.py", "src/flexunet/configs/demo.config",
            "configs/stroke-ct/train_eval_infer.config"} <= names
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
             for p in files for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if ISSUE.search(line)]
    assert found == [], "tracker issue numbers in shipped text:\n" + "\n".join(found)
