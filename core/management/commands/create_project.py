"""Create a project from the command line: `manage.py create_project SLUG --name ... [--private]
[--owner USER] [--licence SPDX] [--status STATE]`.

Idempotent: a project that already exists with what the command asks for is left alone and the
command says so (exit 0); one that exists with different settings is not changed either, and the
command says what differs (exit 1): it creates, it never edits behind the pages' back.
"""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.utils import timezone

from core.models import LICENCES, Project
from core.permissions import STATUS_CHOICES


class Command(BaseCommand):
    help = "Create a project (idempotent: running it again changes nothing)."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The project's address: /p/<slug>/.")
        parser.add_argument("--name", required=True)
        parser.add_argument("--description", default="", help="A short description.")
        parser.add_argument("--private", action="store_true", help="Only members may volunteer.")
        parser.add_argument("--owner", help="User name of the owner (default: the only superuser).")
        parser.add_argument(
            "--licence", default="CC-BY-4.0", choices=sorted(LICENCES), help="SPDX id of the labels' licence."
        )
        parser.add_argument(
            "--status",
            default=Project.DRAFT,
            choices=[s for s, _label in STATUS_CHOICES],
            help="Default: draft.",
        )
        parser.add_argument("--contact", default="")

    def handle(self, *args, slug, name, description, private, owner, licence, status, contact, **options):
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(f"'{slug}' is not a slug: use letters, digits, hyphens and underscores.")
        slug = slug.lower()
        user = self._owner(owner)
        wanted = {
            "name": name,
            "description": description,
            "is_public": not private,
            "owner": user,
            "licence": licence,
            "status": status,
            "contact": contact,
        }
        existing = Project.objects.filter(slug__iexact=slug).first()
        if existing is not None:
            differs = [
                f"{field} is {getattr(existing, field)!r}, not {value!r}"
                for field, value in wanted.items()
                if getattr(existing, field) != value
            ]
            if differs:
                raise CommandError(
                    f"Project '{existing.slug}' exists with other settings ({'; '.join(differs)}); nothing "
                    "changed. Edit it on its settings page or through the API."
                )
            self.stdout.write(
                f"Project '{existing.slug}' exists already with these settings: nothing changed."
            )
            return
        project = Project.objects.create(slug=slug, status_changed_at=timezone.now(), **wanted)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created project '{project.slug}' ({project.name}), {project.status}, "
                f"{'public' if project.is_public else 'private'}, owned by {user.get_username()}, "
                f"labels under {project.licence}."
            )
        )

    def _owner(self, username):
        users = get_user_model().objects
        if username:
            user = users.filter(username=username).first()
            if user is None:
                raise CommandError(
                    f"No user named '{username}'. Create one with `manage.py createsuperuser`."
                )
            return user
        superusers = list(users.filter(is_superuser=True)[:2])
        if len(superusers) != 1:
            raise CommandError("Name the owner with --owner USER (there is not exactly one superuser).")
        return superusers[0]
