"""Shared fixtures: media in a temporary folder, a demo-like project, and a real Chromium."""

import os
import shutil
from pathlib import Path

import pytest

ZTF_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ztf"
RUBIN_DIR = ZTF_DIR.parent / "rubin"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def pytest_configure(config):
    """With several test processes (make test runs two), each one's PyTorch would start a thread per core
    and the processes would fight over the cores: give each its share. Set before torch is imported (it
    reads the variable once); worker processes that tests start inherit it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config, items):
    """Tests marked `postgres` need real concurrent writers: skipped unless the suite runs on PostgreSQL.
    Tests marked `fuzz` run only when a -m expression names them (their own CI step)."""
    from django.conf import settings

    if "fuzz" not in (config.getoption("markexpr") or ""):
        skip_fuzz = pytest.mark.skip(reason="schemathesis fuzzing runs on its own: pytest -m fuzz")
        for item in items:
            if item.get_closest_marker("fuzz"):
                item.add_marker(skip_fuzz)
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" in engine:
        return
    skip = pytest.mark.skip(
        reason=f"needs PostgreSQL, the suite runs on {engine.rsplit('.', 1)[-1]}: "
        "set DATABASE_URL=postgres://... (.ci/run does)"
    )
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    """The production hasher's million PBKDF2 rounds cost about 0.3 s of CPU per password set or
    checked, and the suite makes hundreds of accounts; tests are not about the hash's cost
    (tests/test_settings.py checks production keeps Django's strong default)."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PRIVATE_ROOT = tmp_path / "private"
    settings.CELERY_TASK_ALWAYS_EAGER = True
    yield


@pytest.fixture(autouse=True)
def _no_anomaly_runs_after_rounds(settings):
    """An anomaly run follows every successful round (gems.services); tests of other things would each
    pay for one. tests/test_gems_queue.py turns it back on."""
    settings.SKYVOTE_GEMS = {"after_rounds": False}


@pytest.fixture(autouse=True)
def _small_heldout_sets_may_promote(settings):
    """Tests train on a few dozen subjects: a round may promote on 4 held-out items (the product
    needs 200, SKYVOTE_MIN_HELDOUT); tests/test_loop_promotion.py checks the default."""
    settings.SKYVOTE_LOOP = {**settings.SKYVOTE_LOOP, "min_heldout": 4, "promote_bootstrap": 200}


@pytest.fixture(autouse=True)
def _small_similarity_heldout_sets_may_promote(settings):
    """Embedding rounds in tests have a handful of held-out answers (the product needs 100,
    SKYVOTE_SIMILARITY_MIN_HELDOUT), and their tiny embeddings may be no better than random, which the
    product refuses; tests/test_similarity_promotion.py checks both rules."""
    configured = getattr(settings, "SKYVOTE_SIMILARITY", None) or {}
    settings.SKYVOTE_SIMILARITY = {
        **configured,
        "train": {**configured.get("train", {}), "min_heldout_answers": 0, "refuse_below_random": False},
    }


@pytest.fixture(autouse=True)
def _rate_limits_out_of_the_way(settings):
    """Every test client comes from 127.0.0.1, and the whole suite makes more requests a minute than
    the per-address default allows; tests of the limits (tests/test_security_votes.py) set their own."""
    settings.SKYVOTE_RATE_LIMITS = {
        action: {"participant": (1_000_000, 60), "address": (1_000_000, 60)} for action in ("serve", "vote")
    }


@pytest.fixture
def ztf_dir():
    if not ZTF_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{ZTF_DIR} is missing: CI needs the real ZTF alerts in ../shared/data/ztf")
        pytest.skip(f"real ZTF alerts not found at {ZTF_DIR} (../shared/data/ztf); skipping")
    return ZTF_DIR


@pytest.fixture
def rubin_dir():
    if not RUBIN_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{RUBIN_DIR} is missing: CI needs the real Rubin alerts in ../shared/data/rubin")
        pytest.skip(f"real Rubin alerts not found at {RUBIN_DIR} (../shared/data/rubin); skipping")
    return RUBIN_DIR


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner", password="owner-pass-123")


@pytest.fixture
def project(owner):
    from core.models import Project

    return Project.objects.create(slug="ztf", name="ZTF transients", owner=owner)


@pytest.fixture
def workflow(project):
    from core.models import Workflow

    return Workflow.objects.create(project=project, slug="rb", name="Real or bogus?", retirement_limit=3)


@pytest.fixture
def make_subjects(project, workflow):
    """Create n synthetic subjects with rendered PNGs through the real ingest service."""

    def make(n=5, seed=0, wf=None):
        from core.ingest import add_subject
        from mlcore.synth import generate_triplets

        batch = generate_triplets(n, seed=seed)
        subjects = []
        for i in range(n):
            subject, _ = add_subject(
                project=project,
                workflow=wf or workflow,
                subject_set=None,
                external_id=f"synth-{seed}-{i}",
                array=batch.images[i],
                metadata=batch.metadata[i],
                source="synthetic",
                truth_label="real" if batch.labels[i] else "bogus",
                truth_subtype=batch.subtypes[i],
            )
            subjects.append(subject)
        return subjects

    return make


def _chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (playwright install cannot download browsers here)."""
    if not _chromium_available():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; .ci/run installs it with apt")
        pytest.skip(f"Chromium not found at {CHROMIUM}; apt-get install chromium")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15000)
    yield pg
    context.close()
