"""The product's text: the README a newcomer reads, docs/ for the rest, no project history in the code.

- src/ and the shipped configs carry no tracker issue numbers;
- README.md stays a page (at most 250 lines) that opens with the two Quickstart commands, and every
  command its table or code names is one ``flexunet --help`` lists;
- every relative link of README.md and docs/*.md reaches a file (and heading) that exists;
- scripts/sync_docs.py writes the config reference into docs/config.md.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from flexunet.cli.main import main
from flexunet.config.loader import reference

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

# the project's set-up contract: these two lines, exactly, first in the README
QUICKSTART = ('python3 -m venv .venv && .venv/bin/pip install -e ".[cpu]" && '
              '.venv/bin/flexunet demo --out flexunet-demo',
              'python3 -m venv .venv && .venv/bin/pip install -e ".[cpu,test,onnx]" && '
              '.venv/bin/python -m pytest -q')

# "issue 13", "Issue #7", "issue-13b": our tracker's numbers mean nothing to a user of the package
ISSUE = re.compile(r"\bissue[\s#-]*\d+", re.IGNORECASE)


# --------------------------------------------------------------------------- no history in the product


def _shipped_text_files() -> list[Path]:
    return [p for top in ("src", "configs") for p in sorted((ROOT / top).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".png")]


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


# --------------------------------------------------------------------------- the README


def _fenced_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^ *```[a-z]*\n(.*?)^ *```", text, re.M | re.S)]


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def _help_commands(capsys: pytest.CaptureFixture[str]) -> set[str]:
    """The command names ``flexunet --help`` lists under <command>."""
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    block = text[text.index("<command>"):text.index("options:")]
    return {m.group(1) for m in re.finditer(r"^ {4}([a-z][\w-]*)", block, re.M)}


def test_readme_is_one_page_that_opens_with_the_quickstart() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250, "README.md is the newcomer's page: move details into docs/"
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[0] == "Quickstart"
    # the first two code blocks of the page are the two set-up commands, exactly as promised
    assert _fenced_blocks(text)[:2] == list(QUICKSTART)


def test_readme_points_to_every_page_of_docs() -> None:
    text = README.read_text(encoding="utf-8")
    assert {p.name for p in DOCS} >= {"config.md", "safety.md", "speed.md", "metrics.md", "training.md",
                                       "report.md", "architecture.md"}
    missing = [p.name for p in DOCS if f"(docs/{p.name})" not in _section(text, "Read more")]
    assert missing == []


def test_readme_command_table_lists_exactly_the_cli_commands(capsys: pytest.CaptureFixture[str]) -> None:
    listed = _help_commands(capsys)
    assert {"demo", "plan", "train", "evaluate", "infer", "report"} <= listed
    rows = re.findall(r"^\| `flexunet ([a-z][\w-]*)\b[^`]*` \|", _section(README.read_text(encoding="utf-8"),
                                                                          "Commands"), re.M)
    assert rows, "the README's command table has no rows"
    assert sorted(set(rows) - listed) == [], "commands in the README's table that flexunet --help does not list"
    assert sorted(listed - set(rows)) == [], "commands flexunet --help lists that the README's table lacks"


def test_every_command_the_docs_show_exists(capsys: pytest.CaptureFixture[str]) -> None:
    listed = _help_commands(capsys)
    unknown = []
    for page in [README, *DOCS]:
        text = page.read_text(encoding="utf-8")
        code = re.findall(r"`([^`\n]+)`", text) + _fenced_blocks(text)
        for snippet in code:
            for name in re.findall(r"(?:^|[\s/(])flexunet (?:-[-\w]+ )*([a-z][\w-]*)", snippet):
                if name not in listed:
                    unknown.append(f"{page.relative_to(ROOT)}: flexunet {name}")
    assert unknown == []


# --------------------------------------------------------------------------- links


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_slug_follows_github() -> None:
    assert _slug("Your files: one rule for every command that writes") == \
        "your-files-one-rule-for-every-command-that-writes"
    assert _slug("`dice_coef_multiclass`, and the honest figures") == "dice_coef_multiclass-and-the-honest-figures"


def test_every_relative_link_reaches_a_file_and_heading() -> None:
    broken = []
    for page in [README, *DOCS]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)}
                if anchor not in anchors:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


# --------------------------------------------------------------------------- the config reference


def test_sync_docs_writes_the_reference_into_docs_config(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("sync_docs", ROOT / "scripts" / "sync_docs.py")
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert sync.PAGE == ROOT / "docs" / "config.md"
    page = tmp_path / "config.md"
    stale = "# The config file\n\nintro\n\n## Config reference\n\n#### [model]\n\n| old table |\n"
    page.write_text(stale + "\n## After\n\nkept\n", encoding="utf-8")
    sync.PAGE = page
    assert sync.main() == 0
    text = page.read_text(encoding="utf-8")
    assert text == "# The config file\n\nintro\n\n## Config reference\n\n" + reference() + "\n## After\n\nkept\n"
    page.write_text(stale, encoding="utf-8")          # the reference last on the page
    sync.main()
    assert page.read_text(encoding="utf-8") == "# The config file\n\nintro\n\n## Config reference\n\n" + reference()
