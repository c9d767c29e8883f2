import sys
from pathlib import Path

# Test helpers (tests/harness.py, tests/backends.py, tests/clients.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))
