"""Helpers shared by the crowd management commands (import_votes, aggregate)."""

from django.core.management.base import CommandError

from core.models import Workflow


def find_workflow(slug: str, project_slug: str | None = None) -> Workflow:
    """A workflow by slug ("rb"), by "project/rb", or by slug plus --project; clear errors otherwise."""
    if "/" in slug and not project_slug:
        project_slug, slug = slug.split("/", 1)
    workflows = Workflow.objects.select_related("project").filter(slug=slug)
    if project_slug:
        workflows = workflows.filter(project__slug=project_slug)
    found = list(workflows[:3])
    if not found:
        where = f" in project '{project_slug}'" if project_slug else ""
        raise CommandError(f"No workflow '{slug}'{where}.")
    if len(found) > 1:
        projects = ", ".join(w.project.slug for w in found)
        raise CommandError(f"Several projects have a workflow '{slug}' ({projects}): add --project SLUG.")
    return found[0]
