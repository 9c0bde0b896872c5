"""The benchmarks find the shared data with the workspace helper of scripts/ (not part of the package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
