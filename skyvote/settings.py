"""Skyvote settings. Everything that differs between machines comes from environment variables.

| variable | default |
| --- | --- |
| DATABASE_URL | sqlite file var/skyvote.sqlite3 (WAL, IMMEDIATE transactions) |
| SECRET_KEY | generated once into var/secret_key |
| DEBUG | off ("1", "true", "yes" turn it on) |
| ALLOWED_HOSTS | localhost,127.0.0.1,[::1] (comma-separated) |
| CSRF_TRUSTED_ORIGINS | empty (comma-separated origins) |
| MEDIA_ROOT | var/media |
| CELERY_BROKER_URL | embedded filesystem transport under var/broker |
| CACHE_URL | per-process memory cache (set redis://... with several web processes) |
| SKYVOTE_TRAIN_*, SKYVOTE_HEARTBEAT_STALE_S, SKYVOTE_CACHE_DIR ... | learning loop, see SKYVOTE_LOOP below |
| SKYVOTE_MIN_HELDOUT, SKYVOTE_PROMOTE_TOLERANCE, SKYVOTE_PROMOTE_BOOTSTRAP | 200, 0.01, 1000: a round promotes on at least 200 held-out items, unless its AUC is worse than the active model's by more than 0.01 at the lower bound of a paired-bootstrap 95 % interval |
| SKYVOTE_SIMILARITY_MIN_HELDOUT, SKYVOTE_SIMILARITY_PROMOTE_TOLERANCE | 100, 0.02: an embedding round promotes on at least 100 scored held-out answers, unless its agreement could be worse than the active embedding's by more than 0.02 (lower bound of a paired-bootstrap 95 % interval); see SKYVOTE_SIMILARITY below |
| SKYVOTE_SIMILARITY_APPROX_MIN | 20000: from this many subjects on, similarity search uses an approximate index (faiss IVF, exact re-rank) built by a job after each promotion |
| SECURE | off; on in production: HTTPS-only cookies, HSTS, SSL redirect |
| SKYVOTE_LOGIN_FAILURE_LIMIT, SKYVOTE_LOGIN_COOLOFF_MINUTES | 10 wrong passwords lock a username from one address for 15 minutes |
| SKYVOTE_TRUSTED_PROXIES | 0: reverse proxies whose X-Forwarded-For gives the client address for the login lockout |
| SKYVOTE_TICKET_MAX_AGE_S | 3600: a vote brings the ticket of its served subject within this many seconds |
| SKYVOTE_RATE_PER_PARTICIPANT, SKYVOTE_RATE_PER_ADDRESS | 120, 600 per minute: subjects served and votes |
| SKYVOTE_UNDO_WINDOW_S, SKYVOTE_SKIP_RETURN_AFTER, SKYVOTE_GOLD_FEEDBACK_MS | 30 s to undo an answer; a skip comes back after 10 other answers; gold feedback shows for 2500 ms |
| SKYVOTE_PRIVATE_ROOT | var/private: files served only through views that check access |
| SKYVOTE_SENDFILE_HEADER | empty: files are streamed by Django; "X-Accel-Redirect" / "X-Sendfile" hand them to the web server |
| SKYVOTE_STAFF_SEE_ALL_PROJECTS | off: staff are owners only of projects they own |
| SKYVOTE_WATCH_FOLDERS, SKYVOTE_WATCH_INTERVAL_S | none, 60: folders of alert files ingested by a periodic job (JSON list) |
| EMAIL_BACKEND, DEFAULT_FROM_EMAIL, EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS | console backend: invitation e-mails are printed; set the SMTP backend and server in production |
| SKYVOTE_SITE_URL | http://127.0.0.1:8000: the site's address in citations of exports and in invitations sent from the command line |
"""

import json
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SKYVOTE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    # Never a key in the repository: generate one per checkout, kept in var/.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "jobs",
    "core",
    "labeling",
    "loop",
    "panels",
    "similarity",
    "gems",
    "skyvote",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads a request body: size limits, NUL bytes, a missing API content type.
    "core.middleware.RequestLimitsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a refused login into the locked-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "skyvote.urls"
WSGI_APPLICATION = "skyvote.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'skyvote.sqlite3'}",
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # Concurrent writers wait for the lock (IMMEDIATE + busy timeout) instead of
        # failing with "database is locked"; WAL lets readers go on while one writes.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("SQLITE_TEST_NAME") or None}
else:
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_skyvote")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login lockout (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username from one
# address, that pair is refused for AXES_COOLOFF_TIME, the right password included. Attempts are kept
# in the database, so every web process sees them. Locking the pair (not the address alone) keeps
# volunteers behind one school or observatory NAT from locking each other out; API tokens never go
# through login and are not affected.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = int(os.environ.get("SKYVOTE_LOGIN_FAILURE_LIMIT", 10))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("SKYVOTE_LOGIN_COOLOFF_MINUTES", 15)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "core.lockout.lockout_response"  # templates/registration/locked_out.html
AXES_CLIENT_IP_CALLABLE = "core.lockout.client_ip"
# How many reverse proxies in front of the web processes append to X-Forwarded-For. 0: the header is
# ignored (a client could write any address there and dodge the lockout).
SKYVOTE_TRUSTED_PROXIES = int(os.environ.get("SKYVOTE_TRUSTED_PROXIES", 0))
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "core:home_page"
LOGOUT_REDIRECT_URL = "core:home_page"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- files ----------------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing folder
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
# Files that are never served as they are: uploads waiting to be ingested (core.storage).
PRIVATE_ROOT = Path(os.environ.get("SKYVOTE_PRIVATE_ROOT", VAR_DIR / "private"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Uploads above this stay on disk rather than in memory; ingestion caps single files too.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024
SKYVOTE_MAX_UPLOAD_BYTES = int(os.environ.get("SKYVOTE_MAX_UPLOAD_BYTES", 512 * 1024 * 1024))
# The largest request body anywhere else (core.middleware refuses more with 413, DRF's JSON parser
# included): room for a 50 MB search-by-image file or a DATA_UPLOAD_MAX_MEMORY_SIZE form. Multipart
# posts to the ingestion upload endpoints may carry SKYVOTE_MAX_UPLOAD_BYTES instead.
SKYVOTE_MAX_REQUEST_BYTES = int(os.environ.get("SKYVOTE_MAX_REQUEST_BYTES", 64 * 1024 * 1024))
# The most a gzipped file (or an .npz's arrays together, by their declared sizes) may expand to, for
# ingestion and search-by-image uploads alike: more is refused as a decompression bomb, never decoded
# whole into memory.
SKYVOTE_MAX_DECOMPRESSED_BYTES = int(os.environ.get("SKYVOTE_MAX_DECOMPRESSED_BYTES", 256 * 1024 * 1024))
# Serve media from Django itself (demo / single machine). Production puts media behind
# the web server or object storage and turns this off. Only public projects' subject PNGs and the
# field guide are served from media (core.views_files.public_media); everything else a project owns
# is in PRIVATE_ROOT and goes through views that check who asks (core.storage.file_response).
SERVE_MEDIA = env_bool("SERVE_MEDIA", True)
# Set to "X-Accel-Redirect" (nginx) or "X-Sendfile" (Apache, lighttpd) to let the web server send
# files the views have authorised instead of streaming them through Django (docs/deploy.md). With
# X-Accel-Redirect the header names these internal locations plus the stored name.
SKYVOTE_SENDFILE_HEADER = os.environ.get("SKYVOTE_SENDFILE_HEADER", "")
SKYVOTE_SENDFILE_PRIVATE_PREFIX = os.environ.get("SKYVOTE_SENDFILE_PRIVATE_PREFIX", "/_protected/private/")
SKYVOTE_SENDFILE_MEDIA_PREFIX = os.environ.get("SKYVOTE_SENDFILE_MEDIA_PREFIX", "/_protected/media/")
# How long a signed subject-image URL works (it is stable for this long, so browsers can cache it).
SKYVOTE_IMAGE_URL_MAX_AGE_S = int(os.environ.get("SKYVOTE_IMAGE_URL_MAX_AGE_S", 3600))
# Staff and superusers have no role in projects they are not members of (they have the admin).
# Set to 1 to make them owners of every project, as an explicit choice of the deployment.
SKYVOTE_STAFF_SEE_ALL_PROJECTS = env_bool("SKYVOTE_STAFF_SEE_ALL_PROJECTS", False)

# --- e-mail (project invitations) and the site's address ----------------------------------------
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Skyvote <skyvote@localhost>")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
# Exports cite the project by its address; pages know it from the request, jobs and commands do not.
SKYVOTE_SITE_URL = os.environ.get("SKYVOTE_SITE_URL", "http://127.0.0.1:8000")

# --- security (on with SECURE=1, which `check --deploy` expects) -----------------------------
SECURE = env_bool("SECURE")
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts and styles only from our own static files, so an
# injected <script>, on...= handler or style attribute does nothing. Templates keep no inline code
# (tests/test_security_accounts.py checks); htmx is told not to inject its indicator <style>
# (templates/base.html). The API docs pages relax it for their own bundles (skyvote/api_urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- Celery (see skyvote/celery.py and docs/architecture.md) ---------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # Remote-control (pidbox) fanout state; kombu's default is ./control in the working directory.
        "control_folder": str(BROKER_DIR / "control"),
        # An idle worker lists the folder this often (kombu's default is 1 s). Throughput is set by
        # the worker pool, not by this (CELERY_WORKER_POOL below; per-vote work never uses the broker).
        "polling_interval": 0.1,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {
        # Longer than any training round's time budget, so a long task is not re-delivered.
        "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", 3 * 3600)),
        # Publishing gives up within a second when the broker is down (kombu would otherwise retry
        # for broker_connection_timeout): requests never hang on it, and the outbox sweep re-sends.
        "max_retries": 2,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    }
)
if CELERY_BROKER_URL.startswith("filesystem"):
    for sub in ("out", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    # The filesystem transport has no event loop, and Celery's fallback loop then sees a prefork or
    # threads pool finish a task only every 2 s (0.5 tasks/s, bench/broker.py). The solo pool runs
    # each task in the consumer itself: ~50 ms from publish to start. `-P prefork` still overrides.
    CELERY_WORKER_POOL = "solo"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER")
CELERY_RESULT_BACKEND = None  # job state and progress live in our own tables
CELERY_TASK_IGNORE_RESULT = True
# Two queues by the length of the work (jobs.services): "short" (seconds: ingest, exports,
# aggregation, retirement, the sweep) and "gpu" (minutes: training, scoring, embedding). A job is
# sent to its kind's queue; anything else goes to "short".
CELERY_TASK_DEFAULT_QUEUE = "short"
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", 1))
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "sweep-jobs": {"task": "skyvote.sweep_jobs", "schedule": 30.0},
    "recompute-aggregation": {"task": "skyvote.recompute_all_aggregations", "schedule": 3600.0},
    # Watched folders (core.watch): an ingest job for each folder with new alert files.
    "watch-folders": {
        "task": "skyvote.watch_folders",
        "schedule": float(os.environ.get("SKYVOTE_WATCH_INTERVAL_S", 60)),
    },
}
# Folders whose new alert files are ingested into a workflow, each by a periodic job (core.watch,
# docs/ingestion.md): a JSON list of {"folder", "project", "workflow"} (slugs) with optional
# "subject_set", "filters" (e.g. ["reliability>0.5", "no-ssobject"]), "settle_s" and "state".
SKYVOTE_WATCH_FOLDERS = json.loads(os.environ.get("SKYVOTE_WATCH_FOLDERS") or "[]")

# --- background jobs (jobs/services.py, docs/architecture.md) --------------------------------
SKYVOTE_JOBS = {
    # A running job whose heartbeat is older than this is presumed dead (worker killed) by the sweep.
    "heartbeat_stale_s": float(os.environ.get("SKYVOTE_HEARTBEAT_STALE_S", 120)),
    "max_attempts": int(os.environ.get("SKYVOTE_JOB_MAX_ATTEMPTS", 2)),
    "progress_interval_s": 1.0,
}

# --- learning loop (loop/services.py, docs/architecture.md) ----------------------------------
# Similarity embedding rounds (similarity.training.TRAIN_DEFAULTS has every setting; docs/similarity.md):
# never promoted on fewer scored held-out answers than this, nor when a paired bootstrap on the same
# answers says it could be worse than the active embedding by more than the tolerance.
SKYVOTE_SIMILARITY = {
    "train": {
        "min_heldout_answers": int(os.environ.get("SKYVOTE_SIMILARITY_MIN_HELDOUT", 100)),
        "promote_tolerance": float(os.environ.get("SKYVOTE_SIMILARITY_PROMOTE_TOLERANCE", 0.02)),
    },
    # From this many subjects on, an approximate (faiss IVF) index is built after each promotion and search
    # uses it; below, exact search is as fast (docs/similarity.md, bench/search.py).
    "index": {"approx_min_subjects": int(os.environ.get("SKYVOTE_SIMILARITY_APPROX_MIN", 20_000))},
}

SKYVOTE_LOOP = {
    # Training: the round stops at this many seconds (keep it below the broker visibility timeout).
    "train_time_budget_s": float(os.environ.get("SKYVOTE_TRAIN_TIME_BUDGET_S", 900)),
    "train_max_epochs": int(os.environ.get("SKYVOTE_TRAIN_MAX_EPOCHS", 30)),
    # Warm-start from the active model's weights (fewer epochs needed each round).
    "warm_start": env_bool("SKYVOTE_TRAIN_WARM_START", True),
    "min_train_labels": int(os.environ.get("SKYVOTE_MIN_TRAIN_LABELS", 20)),
    # Promotion (docs/mlcore.md): never on fewer held-out items than this; a candidate replaces the
    # active model unless the paired-bootstrap 95 % interval of its AUC difference falls below
    # -tolerance (both measured on the same held-out set, with this many resamples).
    "min_heldout": int(os.environ.get("SKYVOTE_MIN_HELDOUT", 200)),
    "promote_tolerance": float(os.environ.get("SKYVOTE_PROMOTE_TOLERANCE", 0.01)),
    "promote_bootstrap": int(os.environ.get("SKYVOTE_PROMOTE_BOOTSTRAP", 1000)),
    # MC-dropout passes for BALD (only the dense head is sampled, so this is cheap).
    "mc_samples": int(os.environ.get("SKYVOTE_MC_SAMPLES", 20)),
    # "auto": bfloat16 on CPUs that compute it natively (~2x faster, P(real) within a few 1e-2), else float32.
    "score_precision": os.environ.get("SKYVOTE_SCORE_PRECISION", "auto"),
    # Local cache of preprocessed triplets on each worker machine (rebuilt from media when missing).
    "cache_dir": os.environ.get("SKYVOTE_CACHE_DIR") or str(VAR_DIR / "cache"),
}

# Reservations of served subjects, vote counters of the learning loop and the rate limits live in the
# cache: per process by default; set CACHE_URL=redis://... when several web processes serve volunteers
# (otherwise each process allows the full rate).
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["CACHE_URL"]}
        if os.environ.get("CACHE_URL")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "skyvote"}
    )
}

# --- votes: served-subject tickets and rate limits (core/tickets.py, core/ratelimit.py) ---------
# A vote must bring the ticket its subject was served with; after this many seconds it is refused.
SKYVOTE_TICKET_MAX_AGE_S = int(os.environ.get("SKYVOTE_TICKET_MAX_AGE_S", 3600))
# Requests per minute, per participant and per client address, for serving subjects (page loads,
# GET .../next/) and for votes. A volunteer answering flat out does about one a second.
_PER_PARTICIPANT = int(os.environ.get("SKYVOTE_RATE_PER_PARTICIPANT", 120))
_PER_ADDRESS = int(os.environ.get("SKYVOTE_RATE_PER_ADDRESS", 600))
SKYVOTE_RATE_LIMITS = {
    action: {"participant": (_PER_PARTICIPANT, 60), "address": (_PER_ADDRESS, 60)}
    for action in ("serve", "vote")
}
# The classify page (labeling.services, labeling.selection): a volunteer may take back their last answer
# for this many seconds (while its subject is active); a skipped subject comes back after this many
# answers to others (or when nothing else is left); gold feedback stays this long over the answered
# images unless a key or "Next" dismisses it first.
SKYVOTE_UNDO_WINDOW_S = int(os.environ.get("SKYVOTE_UNDO_WINDOW_S", 30))
SKYVOTE_SKIP_RETURN_AFTER = int(os.environ.get("SKYVOTE_SKIP_RETURN_AFTER", 10))
SKYVOTE_GOLD_FEEDBACK_MS = int(os.environ.get("SKYVOTE_GOLD_FEEDBACK_MS", 2500))

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Views that set their own permission classes keep TokenScopeAllows (read-only tokens only read).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "core.permissions.TokenScopeAllows",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "jobs.models.Job.STATUSES",
        "ProjectStatusEnum": "core.permissions.STATUS_CHOICES",
        "MemberRoleEnum": "core.permissions.MEMBERSHIP_ROLE_CHOICES",
        "ProjectRoleEnum": ["owner", "scientist", "viewer"],
    },
    "TITLE": "Skyvote API",
    "DESCRIPTION": "Projects, subjects, votes, labels, models and exports of a Skyvote server.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Path parameters as Django's converters match them (anything else is a 404).
    "PATH_CONVERTER_OVERRIDES": {
        "slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
        "int": {"type": "integer", "minimum": 0},
    },
    # The errors each operation can answer, with shared bodies (core/schema.py), after the default
    # hook that names enums.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.document_errors",
    ],
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files: works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- logging ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}

# Serve static files straight from the app folders too, so a demo needs no collectstatic.
WHITENOISE_USE_FINDERS = True
