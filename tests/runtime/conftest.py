"""Runtime tests: the helper modules next to this file (``kdrt_models``, ``kdrt_ops``) are what the
specs' ``method "..."`` and ``function "..."`` references import, so this folder goes on sys.path."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
