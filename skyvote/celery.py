"""The Celery app. Settings come from Django settings under the CELERY_ namespace.

Queues: `default` (ingest, rendering, aggregation, exports) and `gpu` (training, scoring,
embedding). Task names say their queue: `skyvote.gpu.*` is routed to `gpu`, everything
else goes to `default`. With no CELERY_BROKER_URL the broker is kombu's filesystem
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
_exchange = Exchange("default", type="direct")
app.conf.task_queues = (
    Queue("default", _exchange, routing_key="default"),
    Queue("gpu", _exchange, routing_key="gpu"),
)
app.autodiscover_tasks()
