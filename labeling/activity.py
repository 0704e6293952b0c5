"""What the project dashboard counts: real/bogus votes split into answers and skips, in total and
per hour over the last day.

One definition for every number on the page: an *answer* is a vote that is not a skip; a *skip*
is one. The headline and the per-hour table count both the same way, so the table's totals for the
last 24 hours and the headline agree whenever every vote is that recent (and the table says which
period it covers when not).
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from core.models import Participant, Project
from labeling.models import Vote

WINDOW = timedelta(hours=24)
SKIPS = Q(answer=Vote.SKIP)


@dataclass
class HourRow:
    hour: datetime
    answers: int
    skips: int


@dataclass
class VoteActivity:
    answers: int  # all time, skips not counted
    skips: int  # all time
    people: int  # participants with at least one vote (an answer or a skip)
    per_hour: list[HourRow] = field(default_factory=list)  # the last 24 hours, oldest first
    window_answers: int = 0  # the per-hour table's totals
    window_skips: int = 0
    since: datetime | None = None


def vote_activity(project: Project, now: datetime | None = None) -> VoteActivity:
    votes = Vote.objects.filter(workflow__project=project, retracted=False)  # undone votes are not counted
    totals = votes.aggregate(answers=Count("pk", filter=~SKIPS), skips=Count("pk", filter=SKIPS))
    since = (now or timezone.now()) - WINDOW
    rows = [
        HourRow(row["hour"], row["answers"], row["skips"])
        for row in votes.filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(answers=Count("pk", filter=~SKIPS), skips=Count("pk", filter=SKIPS))
        .order_by("hour")
    ]
    return VoteActivity(
        answers=totals["answers"],
        skips=totals["skips"],
        people=Participant.objects.filter(votes__workflow__project=project).distinct().count(),
        per_hour=rows,
        window_answers=sum(r.answers for r in rows),
        window_skips=sum(r.skips for r in rows),
        since=since,
    )
