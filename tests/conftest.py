import sys
from pathlib import Path

# Shared curve helpers (tests/curves.py) importable under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))
