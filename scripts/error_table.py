"""Rewrite README's error code table from ``wreg.core.errors.ErrorCode`` (``make docs``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from wreg.core.errors import markdown_table

BEGIN, END = "<!-- error-codes:begin -->", "<!-- error-codes:end -->"


def main(path: str = "README.md") -> int:
    readme = Path(path)
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?\n" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        print(f"{path}: no {BEGIN} … {END} block", file=sys.stderr)
        return 1
    readme.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{markdown_table()}\n{END}", text))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
