"""``python -m mlcore train|score|evaluate|simulate`` — see mlcore.cli."""

from mlcore.cli import main

raise SystemExit(main())
