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
| SECURE | off; on in production: HTTPS-only cookies, HSTS, SSL redirect |
"""

import os
import secrets
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
    "jobs",
    "core",
    "labeling",
    "loop",
    "panels",
    "similarity",
    "skyvote",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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
]
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
# The most a gzipped file may expand to, for ingestion and search-by-image uploads alike: more is
# refused as a decompression bomb after reading one byte past it, never decoded whole into memory.
SKYVOTE_MAX_DECOMPRESSED_BYTES = int(os.environ.get("SKYVOTE_MAX_DECOMPRESSED_BYTES", 256 * 1024 * 1024))
# Serve media from Django itself (demo / single machine). Production puts media behind
# the web server or object storage and turns this off.
SERVE_MEDIA = env_bool("SERVE_MEDIA", True)

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
}

# --- background jobs (jobs/services.py, docs/architecture.md) --------------------------------
SKYVOTE_JOBS = {
    # A running job whose heartbeat is older than this is presumed dead (worker killed) by the sweep.
    "heartbeat_stale_s": float(os.environ.get("SKYVOTE_HEARTBEAT_STALE_S", 120)),
    "max_attempts": int(os.environ.get("SKYVOTE_JOB_MAX_ATTEMPTS", 2)),
    "progress_interval_s": 1.0,
}

# --- learning loop (loop/services.py, docs/architecture.md) ----------------------------------
SKYVOTE_LOOP = {
    # Training: the round stops at this many seconds (keep it below the broker visibility timeout).
    "train_time_budget_s": float(os.environ.get("SKYVOTE_TRAIN_TIME_BUDGET_S", 900)),
    "train_max_epochs": int(os.environ.get("SKYVOTE_TRAIN_MAX_EPOCHS", 30)),
    # Warm-start from the active model's weights (fewer epochs needed each round).
    "warm_start": env_bool("SKYVOTE_TRAIN_WARM_START", True),
    "min_train_labels": int(os.environ.get("SKYVOTE_MIN_TRAIN_LABELS", 20)),
    # MC-dropout passes for BALD (only the dense head is sampled, so this is cheap).
    "mc_samples": int(os.environ.get("SKYVOTE_MC_SAMPLES", 20)),
    # "auto": bfloat16 on CPUs that compute it natively (~2x faster, P(real) within a few 1e-2), else float32.
    "score_precision": os.environ.get("SKYVOTE_SCORE_PRECISION", "auto"),
    # Local cache of preprocessed triplets on each worker machine (rebuilt from media when missing).
    "cache_dir": os.environ.get("SKYVOTE_CACHE_DIR") or str(VAR_DIR / "cache"),
}

# Reservations of served subjects and vote counters of the learning loop live in the cache:
# per process by default; set CACHE_URL=redis://... when several web processes serve volunteers.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["CACHE_URL"]}
        if os.environ.get("CACHE_URL")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "skyvote"}
    )
}

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "ENUM_NAME_OVERRIDES": {"JobStatusEnum": "jobs.models.Job.STATUSES"},
    "TITLE": "Skyvote API",
    "DESCRIPTION": "Projects, subjects, votes, labels, models and exports of a Skyvote server.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
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
