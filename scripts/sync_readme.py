"""Regenerate the README's config reference from flexunet.config.loader.reference().

Run from the repository root: ``python scripts/sync_readme.py`` (tests/config/test_loader.py checks it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from flexunet.config.loader import reference  # noqa: E402


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("#### [model]")
    end = re.compile(r"^## ", re.M).search(text, start).start()
    new = text[:start] + reference() + "\n" + text[end:]
    if new != text:
        readme.write_text(new, encoding="utf-8")
        print("README.md: config reference updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
