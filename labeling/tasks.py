"""Celery tasks of the labeling app. Thin wrappers: they take primary keys and call services.

Task names say their queue (`skyvote.default.*`, `skyvote.gpu.*`; see skyvote/celery.py).
Each feature keeps its tasks in its own module, imported here so autodiscovery finds them.
"""
