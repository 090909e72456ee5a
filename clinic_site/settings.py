"""Settings for Respaldo, read from the environment.

``RESPALDO_ENV`` is ``development`` (the default: embedded database, generated secrets,
``.localhost`` hosts) or ``production`` (every secret and host must come from the
environment; start-up refuses the development defaults).
"""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path

import dj_database_url
from django.utils.translation import gettext_lazy as _

from clinic_site import embedded_db
from clinic_site.env import ConfigurationError, env_bool, env_choice, env_int, env_list, env_str, local_secret

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = Path(env_str("RESPALDO_LOCAL_DIR", str(BASE_DIR / ".local")))

RESPALDO_ENV = env_choice("RESPALDO_ENV", "development", ["development", "production"])
PRODUCTION = RESPALDO_ENV == "production"

if PRODUCTION:
    _missing = [name for name in ("SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS") if not env_str(name)]
    if _missing:
        raise ConfigurationError(
            "Production needs these environment variables: " + ", ".join(_missing) + " (see README.md)."
        )

SECRET_KEY = env_str("SECRET_KEY") or local_secret(LOCAL_DIR / "secret_key")
if PRODUCTION and (len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure")):
    raise ConfigurationError("SECRET_KEY is too weak for production: use 50 or more random characters.")

DEBUG = env_bool("DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ConfigurationError("DEBUG must be off in production.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", ".localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- Applications -------------------------------------------------------------------
SHARED_APPS = [
    "django_tenants",
    "clinics",
    "backups",
    "django_q",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "clinic_site.admin_apps.LazyAdminConfig",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "import_export",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "clinic_site.admin_apps.LazyAdminConfig",
    "dental",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "clinics.Clinic"
# A new clinic's schema is a copy of a migrated template, not every migration run (issue 28)
CLINICS_SCHEMA_MAKER = "backups.services.clinic_template.make_clinic_schema"
CLINICS_TEMPLATE_SCHEMA = "clinic_template"  # that template: no clinic may be given its name
# A release's `migrate_schemas --tenant --executor=multiprocessing` (the Procfile's) migrates this
# many clinics at once: 200 clinics in 15 s instead of 34-36 s on 2 cores (issue 28)
TENANT_MULTIPROCESSING_MAX_PROCESSES = env_int("MIGRATE_PROCESSES", os.cpu_count() or 2, minimum=1)
TENANT_DOMAIN_MODEL = "clinics.Domain"
PUBLIC_SCHEMA_NAME = "public"

MIDDLEWARE = [
    "django_tenants.middleware.main.TenantMainMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "clinics.middleware.ClinicTimezoneMiddleware",
    "backups.middleware.RestoreInProgressMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "clinic_site.urls_tenant"
PUBLIC_SCHEMA_URLCONF = "clinic_site.urls_public"

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
                "backups.context_processors.restore_in_progress",
            ],
        },
    },
]

WSGI_APPLICATION = "clinic_site.wsgi.application"

# --- Database -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0, minimum=0))}
    EMBEDDED_DATABASE = None
else:
    EMBEDDED_DATABASE = embedded_db.start(LOCAL_DIR)
    DATABASES = {
        "default": {
            "NAME": embedded_db.DATABASE_NAME,
            "USER": EMBEDDED_DATABASE.user,
            "HOST": str(EMBEDDED_DATABASE.socket_dir),
            "PORT": str(EMBEDDED_DATABASE.port),
        }
    }
DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"
# PostgreSQL's JIT compiles the platform pages' aggregate queries for seconds at scale (1,000
# clinics and 100,000 backups: 3.6 s with it, 0.09 s without); these are short queries.
_options = DATABASES["default"].setdefault("OPTIONS", {})
_options["options"] = f"{_options.get('options', '')} -c jit=off".strip()
if env_str("TEST_DATABASE_NAME"):  # lets several test runs share one server
    DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME")}
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Client binaries (pg_dump, pg_restore, psql) must match the server; see backups/pg_binaries.py.
BACKUPS_PG_BIN_DIR = env_str("BACKUPS_PG_BIN_DIR") or (str(EMBEDDED_DATABASE.bin_dir) if EMBEDDED_DATABASE else None)

# --- Auth -----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# --- Languages ------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("es", _("Spanish"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ConfigurationError(f"TIME_ZONE={TIME_ZONE!r} is not a time zone (use a name like Europe/Madrid).") from None
USE_I18N = True
USE_TZ = True

# --- Files ----------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(LOCAL_DIR / "media")))
BACKUPS_LOCAL_DIR = Path(env_str("BACKUPS_LOCAL_DIR", str(LOCAL_DIR / "backups")))

BACKUPS_STORAGE = env_choice("BACKUPS_STORAGE", "local", ["local", "s3"])
if BACKUPS_STORAGE == "local":
    _backups_storage = {
        "BACKEND": "backups.storage.local.BackupLocalStorage",
        "OPTIONS": {
            "location": str(BACKUPS_LOCAL_DIR),
            "base_url": None,
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    }
elif BACKUPS_STORAGE == "s3":
    _bucket = env_str("BACKUPS_S3_BUCKET")
    if not _bucket:
        raise ConfigurationError("BACKUPS_STORAGE=s3 needs BACKUPS_S3_BUCKET.")
    _sse = env_str("BACKUPS_S3_SSE", "AES256")  # "none" for stores without server-side encryption
    _backups_storage = {
        "BACKEND": "backups.storage_backends.BackupS3Storage",
        "OPTIONS": {
            "bucket_name": _bucket,
            "endpoint_url": env_str("BACKUPS_S3_ENDPOINT_URL"),
            "region_name": env_str("BACKUPS_S3_REGION"),
            "location": env_str("BACKUPS_S3_PREFIX", ""),
            "access_key": env_str("BACKUPS_S3_ACCESS_KEY_ID"),
            "secret_key": env_str("BACKUPS_S3_SECRET_ACCESS_KEY"),
            "signature_version": "s3v4",
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
            "object_parameters": {} if _sse.lower() == "none" else {"ServerSideEncryption": _sse},
            "multipart_chunksize": env_int("BACKUPS_S3_PART_SIZE_MB", 8, minimum=5) * 1024 * 1024,
            "max_concurrency": 2,
            "max_in_memory_upload_chunks": 2,
            "connect_timeout": env_int("BACKUPS_S3_CONNECT_TIMEOUT", 10, minimum=1),
            "read_timeout": env_int("BACKUPS_S3_READ_TIMEOUT", 120, minimum=1),
            "max_attempts": env_int("BACKUPS_S3_MAX_ATTEMPTS", 5, minimum=1),
        },
    }
else:
    raise ConfigurationError(f"BACKUPS_STORAGE={BACKUPS_STORAGE!r}: use local or s3.")

# Archive keys (age identities), see backups/keys/deployment.py. One key encrypts and authenticates new
# archives: BACKUPS_AGE_IDENTITY or the one key in BACKUPS_AGE_IDENTITY_FILE, never both. Old
# keys only open older archives. Development generates a key file into the local folder (when
# no key is set); production must set one (`manage.py check --deploy` says so: backups.E001).
BACKUPS_AGE_IDENTITY = env_str("BACKUPS_AGE_IDENTITY")
BACKUPS_AGE_IDENTITY_FILE = env_str("BACKUPS_AGE_IDENTITY_FILE") or (
    None if PRODUCTION or BACKUPS_AGE_IDENTITY else str(LOCAL_DIR / "backup-keys.txt")
)
BACKUPS_AGE_OLD_IDENTITIES = env_list("BACKUPS_AGE_OLD_IDENTITIES", [])
BACKUPS_GENERATE_DEV_KEY = not PRODUCTION
# Replaced by the two above; still read so that backups and the deploy check refuse it
# rather than ignore a key an operator set.
BACKUPS_AGE_IDENTITIES = env_list("BACKUPS_AGE_IDENTITIES", [])
BACKUPS_ZSTD_LEVEL = env_int("BACKUPS_ZSTD_LEVEL", 1, minimum=1, maximum=19)
BACKUPS_ZSTD_THREADS = env_int("BACKUPS_ZSTD_THREADS", 2, minimum=0)
# The night: scheduled backups handed out at once over all clusters (default: twice this machine's
# workers, so that each finds its next clinic waiting), and how long a handed-out backup may wait
# before it is taken for lost and handed again.
BACKUPS_NIGHT_CONCURRENCY = env_int("BACKUPS_NIGHT_CONCURRENCY", 2 * env_int("Q_WORKERS", 2, minimum=1), minimum=1)
BACKUPS_LOST_AFTER_SECONDS = env_int("BACKUPS_LOST_AFTER_SECONDS", 900, minimum=1)
BACKUPS_PG_PAYLOAD = env_choice("BACKUPS_PG_PAYLOAD", "sql", ("sql", "custom"))
BACKUPS_LOCK_WAIT_TIMEOUT_MS = env_int("BACKUPS_LOCK_WAIT_TIMEOUT_MS", 120_000, minimum=1)
BACKUPS_MAX_ATTEMPTS = env_int("BACKUPS_MAX_ATTEMPTS", 2, minimum=1)
BACKUPS_STALE_AFTER_SECONDS = env_int("BACKUPS_STALE_AFTER_SECONDS", 120, minimum=1)
BACKUPS_MAX_UPLOAD_BYTES = env_int("BACKUPS_MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=1)
BACKUPS_MAX_PAYLOAD_BYTES = env_int("BACKUPS_MAX_PAYLOAD_BYTES", 20 * 1024**3, minimum=1)
BACKUPS_UPLOAD_TMP_DIR = env_str("BACKUPS_UPLOAD_TMP_DIR")
BACKUPS_RESTORE_LOCK_TIMEOUT_MS = env_int("BACKUPS_RESTORE_LOCK_TIMEOUT_MS", 10_000, minimum=1)
# Fair use, per clinic over the last 24 hours (the admin is told when a limit is reached).
BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY = env_int("BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY", 20, minimum=1)
BACKUPS_MAX_DOWNLOADS_PER_DAY = env_int("BACKUPS_MAX_DOWNLOADS_PER_DAY", 20, minimum=1)
# The JSON API: requests per minute of one user (any credential) and of one clinic (then 429 api_rate_limited).
BACKUPS_API_REQUESTS_PER_MINUTE = env_int("BACKUPS_API_REQUESTS_PER_MINUTE", 120, minimum=1)
BACKUPS_API_CLINIC_REQUESTS_PER_MINUTE = env_int("BACKUPS_API_CLINIC_REQUESTS_PER_MINUTE", 600, minimum=1)
# Days an offboarded clinic's backups (and its archive key) are kept before they are erased.
BACKUPS_OFFBOARD_KEEP_DAYS = env_int("BACKUPS_OFFBOARD_KEEP_DAYS", 90, minimum=1)
# The portable json format holds these apps' rows (the clinic's records; accounts stay as they are).
BACKUPS_JSON_APPS = ["dental"]

# Uploaded files (X-rays), per clinic. MEDIA_STORAGE=local (default): MEDIA_ROOT/<schema>/...,
# readable by the server's account only (not FILE_UPLOAD_PERMISSIONS: that would reach static
# files). MEDIA_STORAGE=s3: clinics.media_storage.TenantS3MediaStorage, objects
# <MEDIA_S3_PREFIX>/<schema>/<generation>/<name> in a private bucket (generation: the clinic's
# media_generation, which a restore switches together with the data; empty at first, and then
# no segment), served through the clinic's permission-checked /media/ view, never by a bucket URL.
MEDIA_STORAGE = env_choice("MEDIA_STORAGE", "local", ["local", "s3"])
if MEDIA_STORAGE == "local":
    _media_storage = {
        "BACKEND": "django_tenants.files.storage.TenantFileSystemStorage",
        "OPTIONS": {"file_permissions_mode": 0o600, "directory_permissions_mode": 0o700},
    }
elif MEDIA_STORAGE == "s3":
    _media_bucket = env_str("MEDIA_S3_BUCKET")
    if not _media_bucket:
        raise ConfigurationError("MEDIA_STORAGE=s3 needs MEDIA_S3_BUCKET.")
    _media_sse = env_str("MEDIA_S3_SSE", "AES256")  # "none" for stores without server-side encryption
    _media_storage = {
        "BACKEND": "clinics.media_storage.TenantS3MediaStorage",
        "OPTIONS": {
            "bucket_name": _media_bucket,
            "endpoint_url": env_str("MEDIA_S3_ENDPOINT_URL"),
            "region_name": env_str("MEDIA_S3_REGION"),
            "location": env_str("MEDIA_S3_PREFIX", "media"),
            "access_key": env_str("MEDIA_S3_ACCESS_KEY_ID"),
            "secret_key": env_str("MEDIA_S3_SECRET_ACCESS_KEY"),
            "object_parameters": {} if _media_sse.lower() == "none" else {"ServerSideEncryption": _media_sse},
        },
    }
else:
    raise ConfigurationError(f"MEDIA_STORAGE={MEDIA_STORAGE!r}: use local or s3.")

STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
    "backups": _backups_storage,
}
MULTITENANT_RELATIVE_MEDIA_ROOT = "%s"

# --- Jobs (django-q2) -----------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER = {
    "name": "respaldo",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "timeout": env_int("Q_TIMEOUT", 3600, minimum=1),  # must stay below retry
    "retry": env_int("Q_RETRY", env_int("Q_TIMEOUT", 3600, minimum=1) + 600, minimum=1),
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Email ----------------------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
else:
    # Development: mail is printed by the process that sends it.
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Respaldo <respaldo@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Links in notification emails: <scheme>://<clinic's primary domain>[:<port>]/admin/...
BACKUPS_CONSOLE_SCHEME = env_choice("BACKUPS_CONSOLE_SCHEME", "https" if PRODUCTION else "http", ["http", "https"])
BACKUPS_CONSOLE_PORT = str(env_int("BACKUPS_CONSOLE_PORT", 0, minimum=1, maximum=65535) or "")
# Webhooks: plain http:// only to localhost, and only when this is on (tests); https otherwise.
BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = env_bool("BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST", False)

# --- Security (production) ------------------------------------------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_insensitive=True)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "clinic_site.log_redaction.RedactSecrets"}},
    "formatters": {
        "django.server": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}", "style": "{"}
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact_secrets"]},
        # runserver's request lines, as Django's default, with download-link signatures cut out
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "pgserver": {"level": "WARNING"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    },
}
