"""Celery tasks of the labeling app. Thin wrappers: they take primary keys and call services.

Task names say their queue (`skyvote.default.*`, `skyvote.gpu.*`; see skyvote/celery.py).
Each feature keeps its tasks in its own module, imported here so autodiscovery finds them.
"""

from .tasks_crowd import *  # noqa: F401,F403
from .tasks_export import *  # noqa: F401,F403
from .tasks_loop import *  # noqa: F401,F403
