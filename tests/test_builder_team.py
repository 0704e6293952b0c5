"""A project's team: the owner adds members by user name or e-mail, changes roles and removes them on
the team page and through the API; an address without an account gets an invitation link by e-mail,
and accepting it after signing up adds the membership. Scientists do everything but manage members."""

import re

import pytest
from django.core import mail
from django.urls import reverse

from core.authentication import create_token
from core.models import Invitation, ProjectMembership

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(django_user_model, project):
    make = django_user_model.objects.create_user
    users = {
        "bob": make("bob", email="bob@example.org", password="pw-bob-1234567"),
        "sci": make("sci", password="pw-sci-1234567"),
        "rival": make("rival", password="pw-rival-1234567"),
    }
    ProjectMembership.objects.create(project=project, user=users["sci"], role="scientist")
    return users


def team_url(project):
    return reverse("core:team", args=[project.slug])


def test_owner_adds_an_existing_account_by_name_or_email_at_once(client, owner, project, people):
    client.force_login(owner)
    assert client.get(team_url(project)).status_code == 200
    added = client.post(team_url(project), {"action": "invite", "who": "BOB", "role": "viewer"})
    assert added.status_code == 302
    assert ProjectMembership.objects.get(project=project, user=people["bob"]).role == "viewer"
    again = client.post(team_url(project), {"action": "invite", "who": "bob@example.org", "role": "expert"})
    assert again.status_code == 302 and ProjectMembership.objects.get(user=people["bob"]).role == "expert"
    assert not mail.outbox and not Invitation.objects.exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"who": "nobody-here", "role": "viewer"}, "no account named"),
        ({"who": "not@an@address", "role": "viewer"}, "not an e-mail address"),
        ({"who": "owner", "role": "viewer"}, "owns this project already"),
        ({"who": "bob", "role": "owner"}, "Enter a user name"),
        ({"who": "", "role": "viewer"}, "Enter a user name"),
    ],
)
def test_bad_invitations_are_refused_with_a_reason(client, owner, project, people, data, message):
    client.force_login(owner)
    response = client.post(team_url(project), {"action": "invite", **data})
    assert response.status_code == 400 and message.lower() in response.context["error"].lower()
    assert not ProjectMembership.objects.filter(user=people["bob"]).exists() and not mail.outbox


def test_an_address_without_an_account_gets_a_link_and_joins_after_signing_up(client, owner, project):
    client.force_login(owner)
    response = client.post(
        team_url(project), {"action": "invite", "who": "carol@example.org", "role": "expert"}
    )
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["carol@example.org"]
    link = re.search(r"https?://\S+/invitations/\S+/", mail.outbox[0].body).group(0)
    assert "carol@example.org" in client.get(team_url(project)).content.decode()  # an open invitation
    client.logout()

    path = link.split("testserver", 1)[1]
    landing = client.get(path)
    assert landing.status_code == 200 and "Sign up" in landing.content.decode()
    signup = client.post(
        reverse("core:signup") + f"?next={path}",
        {"username": "carol", "password1": "carol-pass-98765", "password2": "carol-pass-98765", "next": path},
    )
    assert signup.status_code == 302 and signup["Location"] == path
    accepted = client.post(path)
    assert accepted.status_code == 302
    membership = ProjectMembership.objects.get(project=project, user__username="carol")
    assert membership.role == "expert"
    assert Invitation.objects.get().accepted_by.username == "carol"
    # A link works once; a broken one says so.
    used = client.post(path)
    assert used.status_code == 400 and "used already" in used.content.decode()
    broken = client.get(reverse("core:invitation", args=["not-a-token"]))
    assert broken.status_code == 400 and "not valid" in broken.content.decode()


def test_a_withdrawn_invitation_no_longer_works(client, owner, project, django_user_model):
    client.force_login(owner)
    client.post(team_url(project), {"action": "invite", "who": "dan@example.org", "role": "viewer"})
    path = re.search(r"/invitations/\S+/", mail.outbox[0].body).group(0)
    invitation = Invitation.objects.get()
    client.post(team_url(project), {"action": "revoke", "invitation": invitation.pk})
    dan = django_user_model.objects.create_user("dan", password="pw-dan-1234567")
    client.force_login(dan)
    assert client.post(path).status_code == 400
    assert not ProjectMembership.objects.filter(user=dan).exists()


def test_owner_changes_roles_and_removes_members(client, owner, project, people):
    client.force_login(owner)
    membership = ProjectMembership.objects.get(user=people["sci"])
    changed = client.post(
        team_url(project), {"action": "role", "membership": membership.pk, "role": "viewer"}
    )
    assert changed.status_code == 302 and ProjectMembership.objects.get(pk=membership.pk).role == "viewer"
    bad = client.post(team_url(project), {"action": "role", "membership": membership.pk, "role": "owner"})
    assert bad.status_code == 400 and ProjectMembership.objects.get(pk=membership.pk).role == "viewer"
    removed = client.post(team_url(project), {"action": "remove", "membership": membership.pk})
    assert removed.status_code == 302 and not ProjectMembership.objects.filter(pk=membership.pk).exists()


def test_only_the_owner_manages_the_team(client, project, people):
    client.force_login(people["sci"])
    assert client.get(team_url(project)).status_code == 403
    post = client.post(team_url(project), {"action": "invite", "who": "bob", "role": "scientist"})
    assert post.status_code == 403
    client.force_login(people["rival"])
    assert client.get(team_url(project)).status_code == 404
    client.logout()
    assert client.get(team_url(project)).status_code == 302
    assert not ProjectMembership.objects.filter(user=people["bob"]).exists()


def _auth(user):
    return {"Authorization": f"Bearer {create_token(user, 'test')[1]}"}


def test_members_api_follows_the_same_rules(client, owner, project, people):
    url = reverse("api_members", args=[project.slug])
    for user, code in ((people["sci"], 403), (people["rival"], 404)):
        assert client.get(url, headers=_auth(user)).status_code == code
        assert client.post(url, {"who": "bob", "role": "viewer"}, headers=_auth(user)).status_code == code
    assert client.get(url).status_code in (401, 403)
    assert [m["username"] for m in client.get(url, headers=_auth(owner)).json()["results"]] == ["sci"]

    added = client.post(
        url, {"who": "bob", "role": "viewer"}, content_type="application/json", headers=_auth(owner)
    )
    assert added.status_code == 201 and added.json()["result"] == "added"
    invited = client.post(
        url,
        {"who": "erin@example.org", "role": "scientist"},
        content_type="application/json",
        headers=_auth(owner),
    )
    assert invited.status_code == 201 and invited.json()["invited_email"] == "erin@example.org"
    assert len(mail.outbox) == 1
    bad = client.post(
        url, {"who": "ghost", "role": "viewer"}, content_type="application/json", headers=_auth(owner)
    )
    assert bad.status_code == 400 and "no account named" in bad.json()["detail"].lower()
    wrong_role = client.post(
        url, {"who": "bob", "role": "owner"}, content_type="application/json", headers=_auth(owner)
    )
    assert wrong_role.status_code == 400 and "role" in wrong_role.json()

    bob = ProjectMembership.objects.get(user=people["bob"])
    detail = reverse("api_member", args=[project.slug, bob.pk])
    patch = client.patch(detail, {"role": "expert"}, content_type="application/json", headers=_auth(owner))
    assert patch.status_code == 200 and patch.json()["role"] == "expert"
    assert (
        client.patch(
            detail, {"role": "viewer"}, content_type="application/json", headers=_auth(people["sci"])
        ).status_code
        == 403
    )
    assert client.delete(detail, headers=_auth(people["sci"])).status_code == 403
    assert client.delete(detail, headers=_auth(owner)).status_code == 204
    assert not ProjectMembership.objects.filter(pk=bob.pk).exists()


def test_scientist_uses_owner_pages_but_not_panels_and_sees_no_worker_ids(client, project, people, workflow):
    client.force_login(people["sci"])
    assert client.get(reverse("core:project_settings", args=[project.slug])).status_code == 200
    assert (
        client.get(reverse("labeling:crowd_retirement", args=[project.slug, workflow.slug])).status_code
        == 200
    )
    assert client.get(reverse("panels:batches", args=[project.slug])).status_code == 403
    assert client.get(reverse("core:project_delete", args=[project.slug])).status_code == 403


def test_the_migration_renames_collaborators_to_scientists(project, people):
    """The data step of 0005 (the whole chain runs in tests/test_migrations.py, on a database of its own)."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("core.migrations.0005_project_builder")
    ProjectMembership.objects.filter(user=people["sci"]).update(role="collaborator")
    migration.rename_role("collaborator", "scientist")(apps, None)
    assert ProjectMembership.objects.get(user=people["sci"]).role == "scientist"
    migration.rename_role("scientist", "collaborator")(apps, None)  # and back, when unapplied
    assert ProjectMembership.objects.get(user=people["sci"]).role == "collaborator"


def test_an_expert_finds_the_gold_pages_on_the_project_page(client, owner, project, people, workflow):
    """Experts have no dashboard: the project's page links them to each real/bogus workflow's gold
    page and review queue, drafts included; nobody else gets those links there."""
    ProjectMembership.objects.create(project=project, user=people["bob"], role="expert")
    project.is_public = False
    project.save(update_fields=["is_public"])
    workflow.is_active = False  # a draft: gold is labelled before launch
    workflow.save(update_fields=["is_active"])
    about = reverse("core:project_about", args=[project.slug])
    gold = reverse("labeling:crowd_gold", args=[project.slug, workflow.slug])
    client.force_login(people["bob"])
    page = client.get(about).content.decode()
    assert f'href="{gold}"' in page
    assert client.get(gold).status_code == 200
    for who in (owner, people["sci"]):
        client.force_login(who)
        assert gold not in client.get(about).content.decode()  # they have the dashboard's tools
    client.force_login(people["rival"])
    assert client.get(about).status_code == 404
    client.logout()
    assert client.get(about).status_code == 404
