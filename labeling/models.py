"""Real/bogus volunteering: votes, their retractions and what we believe about each volunteer."""

import uuid

from django.db import models
from django.utils import timezone

from core.models import Participant, Subject, Workflow


class Vote(models.Model):
    SKIP = "skip"
    # Votes cast on a served ticket (core.tickets): the page and the API. Imports and task links
    # ("import", "panel") bring their own provenance and do not move a volunteer's gold schedule.
    SERVED_SOURCES = ("web", "api")

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="votes")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="votes")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="votes")
    answer = models.CharField(max_length=30)
    # The answer to the follow-up question (core.followups): a type key, "not_sure", or "" (none asked,
    # or passed).
    followup = models.CharField(max_length=30, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    idempotency_key = models.UUIDField(unique=True, default=uuid.uuid4)
    # Client metadata, in columns of their own.
    user_agent = models.CharField(max_length=400, blank=True)
    viewport = models.CharField(max_length=40, blank=True)
    subject_was_retired = models.BooleanField(
        default=False, help_text="Late: subject retired before this vote."
    )
    was_gold = models.BooleanField(default=False)
    gold_correct = models.BooleanField(null=True, blank=True)
    assignment = models.ForeignKey(
        "panels.Assignment", null=True, blank=True, on_delete=models.SET_NULL, related_name="votes"
    )
    source = models.CharField(max_length=20, default="web", help_text="web, api, import, panel")
    # The volunteer's SWAP skill this vote was weighed with (null when it moved nothing: a skip, "not
    # sure"), kept so that undoing the vote removes exactly its step and restores a gold vote's skill.
    swap_p_l = models.FloatField(null=True, blank=True)
    swap_p_d = models.FloatField(null=True, blank=True)
    # Mirrors the vote's VoteRetraction (set in the same transaction): a column of the vote itself, so
    # that "one standing vote per participant and subject" is a partial unique constraint and every
    # count filters on it without a join. The row stays, for the record.
    retracted = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "subject", "participant"],
                condition=models.Q(retracted=False),
                name="vote_unique_per_participant",
            )
        ]
        indexes = [
            models.Index(fields=["participant", "workflow"], name="vote_participant_workflow"),
            # The selector's probe for a volunteer's oldest open skip (labeling.selection).
            models.Index(
                fields=["participant", "workflow", "created_at"],
                condition=models.Q(answer="skip", retracted=False),
                name="vote_open_skips",
            ),
        ]

    def __str__(self):
        return f"{self.participant_id} → {self.subject_id}: {self.answer}"


class VoteRetraction(models.Model):
    """A vote taken back: undone by its volunteer (labeling.services.undo_vote), or a skip replaced by
    the answer the volunteer gave when the skipped subject came back. The vote row stays, marked
    `retracted`; counts, P(real), skill and every aggregation leave it out."""

    UNDO = "undo"
    REPLACED = "replaced"
    REASONS = [(UNDO, "undone by the volunteer"), (REPLACED, "skip replaced by a later answer")]

    vote = models.OneToOneField(Vote, on_delete=models.CASCADE, related_name="retraction")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="retractions")
    reason = models.CharField(max_length=20, choices=REASONS)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"vote {self.vote_id} retracted ({self.reason})"


class ParticipantSkill(models.Model):
    """What we believe about one volunteer in one workflow."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="skills")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="skills")
    n_votes = models.PositiveIntegerField(default=0)
    n_gold = models.PositiveIntegerField(default=0)
    n_gold_correct = models.PositiveIntegerField(default=0)
    # SWAP: P_L = Pr(says real | real), P_D = Pr(says bogus | bogus).
    # A new volunteer starts at 0.7 (labeling.aggregation.NEW_VOLUNTEER_PSEUDO_COUNTS).
    p_l = models.FloatField(default=0.7)
    p_d = models.FloatField(default=0.7)
    # Gold pseudo-count tallies behind p_l and p_d.
    real_seen = models.FloatField(default=0.0)
    real_said_real = models.FloatField(default=0.0)
    bogus_seen = models.FloatField(default=0.0)
    bogus_said_bogus = models.FloatField(default=0.0)
    confusion = models.JSONField(default=list, blank=True, help_text="Dawid–Skene confusion matrix")
    # Dawid–Skene on the types (K classes): {"classes": [type keys], "matrix": K×K rows (true type) of
    # P(says column | true row), "seen": [subjects of each true type typed, by the posterior]}; {} until a
    # recompute has seen this volunteer name a type.
    type_confusion = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "participant"], name="skill_unique_participant")
        ]

    def __str__(self):
        return f"skill of {self.participant} in {self.workflow}"
