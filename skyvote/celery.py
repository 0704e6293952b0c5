"""The Celery app. Settings come from Django settings under the CELERY_ namespace.

Queues: `short` (ingest, exports, aggregation, retirement: seconds) and `gpu` (training,
scoring, embedding: minutes). Every job runs through one task, `skyvote.run_job`, sent to its
kind's queue (jobs.services); everything else goes to `short`. With no CELERY_BROKER_URL the broker is kombu's filesystem
transport under var/broker, so the demo needs no server (docs/architecture.md).
"""

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skyvote.settings")

app = Celery("skyvote")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Explicit routing keys: with bare Queue("gpu") both queues were bound to the default exchange
# under the same key, so a gpu task was not delivered (or went to both queues).
_exchange = Exchange("skyvote", type="direct")
app.conf.task_queues = (
    Queue("short", _exchange, routing_key="short"),
    Queue("gpu", _exchange, routing_key="gpu"),
)
app.conf.task_default_exchange = "skyvote"
app.conf.task_default_routing_key = "short"
app.autodiscover_tasks()


def declare_queues() -> None:
    """Declare both queues and their bindings on the broker; idempotent.

    Workers declare them when they start, but on the filesystem transport two workers starting at the
    same moment on a fresh broker folder race on the exchange's binding file (one reads it half
    written and dies), and a job published before any worker started finds no binding. `seed_demo`
    calls this before the demo's workers start.
    """
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            queue.bind(channel).declare()
