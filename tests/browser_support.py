"""What the browser tests share: where their screenshots go.

var/ is ignored by git; SKYVOTE_SCREENSHOT_DIR puts the screenshots elsewhere (a CI artefact folder)."""

import os
from pathlib import Path

SCREENSHOTS = Path(
    os.environ.get("SKYVOTE_SCREENSHOT_DIR") or Path(__file__).resolve().parent.parent / "var" / "screenshots"
)
