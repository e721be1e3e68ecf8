"""Regenerate the config reference in docs/config.md from flexunet.config.loader.reference().

Run from the repository root: ``python scripts/sync_docs.py`` (tests/config/test_loader.py checks it).
The reference runs from its first section table (``#### [model]``) to the next ``## `` heading or
the end of the page.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from flexunet.config.loader import reference  # noqa: E402

PAGE = ROOT / "docs" / "config.md"


def main() -> int:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("#### [model]")
    following = re.compile(r"^## ", re.M).search(text, start)
    new = text[:start] + reference() + ("\n" + text[following.start():] if following else "")
    if new != text:
        PAGE.write_text(new, encoding="utf-8")
        print(f"{PAGE.relative_to(ROOT) if PAGE.is_relative_to(ROOT) else PAGE}: config reference updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
