"""Recompute a workflow's aggregation from all its votes, store it and print a summary."""

from django.core.management.base import BaseCommand, CommandError

from labeling.management.commands._crowd_common import find_workflow
from labeling.recompute import METHODS, recompute_workflow


def _volunteer_line(row) -> str:
    return f"    {row.pseudonym}  votes={row.n_votes:<5d} P_L={row.p_l:.3f}  P_D={row.p_d:.3f}  P_L+P_D-1={row.informativeness:+.3f}"


class Command(BaseCommand):
    help = "Recompute P(real) of every subject and the skill of every volunteer of a workflow."

    def add_arguments(self, parser):
        parser.add_argument("--workflow", required=True, help="workflow slug, or project/workflow")
        parser.add_argument("--project", help="project slug, if several projects have this workflow slug")
        parser.add_argument("--method", choices=METHODS, default="dawid_skene")
        parser.add_argument(
            "--no-retire",
            action="store_true",
            help="store the result without re-applying the retirement rule",
        )

    def handle(self, *args, **options):
        workflow = find_workflow(options["workflow"], options.get("project"))
        if options["method"] not in METHODS:
            raise CommandError(f"Unknown method '{options['method']}'; choose one of {', '.join(METHODS)}.")
        summary = recompute_workflow(
            workflow.pk, method=options["method"], reevaluate=not options["no_retire"]
        )
        out = self.stdout
        out.write(f"{workflow}: {summary.method}")
        out.write(f"  subjects with votes: {summary.n_subjects}")
        out.write(f"  votes: {summary.n_votes} from {summary.n_participants} volunteers")
        if summary.mean_p_real is None:
            out.write("  no real/bogus votes yet: nothing to aggregate")
            return
        if summary.n_iter:
            out.write(f"  EM iterations: {summary.n_iter} (converged: {summary.converged})")
        out.write(f"  mean P(real): {summary.mean_p_real:.4f}")
        out.write(
            f"  decided real (P ≥ {workflow.swap_p_high:g}): {summary.n_decided_real}; "
            f"decided bogus (P ≤ {workflow.swap_p_low:g}): {summary.n_decided_bogus}"
        )
        if summary.n_kept_newer:
            out.write(f"  kept newer incremental state of {summary.n_kept_newer} subjects voted on meanwhile")
        if summary.n_typed_votes:
            out.write(f"  typed votes (follow-up types): {summary.n_typed_votes}")
        if summary.retirement:
            r = summary.retirement
            out.write(f"  retirement: {r['retired']} retired, {r['sent_to_review']} sent to expert review")
        out.write("  top volunteers:")
        for row in summary.top:
            out.write(_volunteer_line(row))
        out.write("  bottom volunteers:")
        for row in summary.bottom:
            out.write(_volunteer_line(row))
