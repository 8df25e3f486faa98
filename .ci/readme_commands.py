"""Print the README's two commands (the fenced block of "Install and run the main job"), one a line.

.ci/run runs exactly these lines, and tests/test_readme.py reads them through this same function,
so what CI runs and what the README tells a newcomer to type cannot drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import List

SECTION = "## Install and run the main job"


def readme_commands(readme: str) -> List[str]:
    """The non-empty lines of the first fenced block after the install section's heading."""
    if f"\n{SECTION}\n" not in readme:
        raise ValueError(f"README.md has no section {SECTION!r}")
    section = readme.split(f"\n{SECTION}\n", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    if block is None:
        raise ValueError(f"README.md: no command block under {SECTION!r}")
    return [line for line in block.group(1).splitlines() if line.strip()]


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    commands = readme_commands((root / "README.md").read_text())
    if len(commands) != 2:
        sys.exit(f"README.md: {SECTION!r} must show two commands (install, then test), found {len(commands)}")
    print("\n".join(commands))
