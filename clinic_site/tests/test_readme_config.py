"""Every environment variable the README documents reaches its setting; malformed values stop start-up.

The variables are read from README.md itself: every row of its ``| variable | …`` tables
and every other `NAME_WITH_UNDERSCORES` it mentions. Each one is set, alone, to a distinctive
value in a real process that loads ``clinic_site.settings`` afresh for it (one process for
all, the settings module re-imported per variable), and the effective setting, or the
``backups.conf.conf`` attribute the code uses, is read back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from backups.archive import generate_identity

ROOT = Path(settings.BASE_DIR)
README = ROOT / "README.md"
KEY = generate_identity()
OLD_KEYS = [generate_identity(), generate_identity()]
S3 = {"BACKUPS_STORAGE": "s3", "BACKUPS_S3_BUCKET": "readme-bucket"}
MEDIA_S3 = {"MEDIA_STORAGE": "s3", "MEDIA_S3_BUCKET": "readme-media"}
SMTP = {"EMAIL_HOST": "smtp.readme.example"}
BACKUPS_OPTIONS = 'settings.STORAGES["backups"]["OPTIONS"]'
MEDIA_OPTIONS = 'settings.STORAGES["default"]["OPTIONS"]'

# variable: (distinctive value, what to read back, the value it must be, other variables it needs)
CASES: dict[str, tuple[str, str, object, dict[str, str]]] = {
    "RESPALDO_ENV": (
        "production",
        "[settings.RESPALDO_ENV, settings.DEBUG, settings.SESSION_COOKIE_SECURE]",
        ["production", False, True],
        {"SECRET_KEY": "p" * 30 + "#Q7" + "r" * 30, "ALLOWED_HOSTS": "respaldo.example"},
    ),
    "SECRET_KEY": ("readme-secret-" + "s" * 40, "settings.SECRET_KEY", "readme-secret-" + "s" * 40, {}),
    "DEBUG": ("false", "settings.DEBUG", False, {}),
    "ALLOWED_HOSTS": (".readme.example, x.example", "settings.ALLOWED_HOSTS", [".readme.example", "x.example"], {}),
    "CSRF_TRUSTED_ORIGINS": (
        "https://readme.example",
        "settings.CSRF_TRUSTED_ORIGINS",
        ["https://readme.example"],
        {},
    ),
    "DATABASE_URL": (
        "postgresql://readme:pw@db.readme.example:6543/readme_db",
        '[settings.DATABASES["default"][k] for k in ("HOST", "PORT", "NAME", "USER")]',
        ["db.readme.example", 6543, "readme_db", "readme"],
        {},
    ),
    "BACKUPS_PG_BIN_DIR": ("/opt/readme/pg/bin", "conf.pg_bin_dir", "/opt/readme/pg/bin", {}),
    "BACKUPS_PG_PAYLOAD": ("custom", "conf.pg_payload", "custom", {}),
    "BACKUPS_NIGHT_CONCURRENCY": ("6", "conf.night_concurrency", 6, {}),
    "BACKUPS_LOST_AFTER_SECONDS": ("321", "conf.lost_after_seconds", 321, {}),
    "MIGRATE_PROCESSES": ("5", "settings.TENANT_MULTIPROCESSING_MAX_PROCESSES", 5, {}),
    "REDIS_URL": (
        "redis://redis.readme.example:6390/3",
        'settings.Q_CLUSTER.get("redis")',
        "redis://redis.readme.example:6390/3",
        {},
    ),
    "Q_WORKERS": ("7", 'settings.Q_CLUSTER["workers"]', 7, {}),
    "Q_TIMEOUT": ("1234", '[settings.Q_CLUSTER["timeout"], settings.Q_CLUSTER["retry"]]', [1234, 1834], {}),
    "EMAIL_HOST": (
        "smtp.readme.example",
        "[settings.EMAIL_HOST, settings.EMAIL_BACKEND]",
        ["smtp.readme.example", "django.core.mail.backends.smtp.EmailBackend"],
        {},
    ),
    "EMAIL_PORT": ("2525", "settings.EMAIL_PORT", 2525, SMTP),
    "EMAIL_HOST_USER": ("readme-user", "settings.EMAIL_HOST_USER", "readme-user", SMTP),
    "EMAIL_HOST_PASSWORD": ("readme-pass", "settings.EMAIL_HOST_PASSWORD", "readme-pass", SMTP),
    "EMAIL_USE_TLS": ("false", "settings.EMAIL_USE_TLS", False, SMTP),
    "DEFAULT_FROM_EMAIL": ("Readme <r@readme.example>", "settings.DEFAULT_FROM_EMAIL", "Readme <r@readme.example>", {}),
    "BACKUPS_CONSOLE_SCHEME": ("https", "conf.console_scheme", "https", {}),
    "BACKUPS_CONSOLE_PORT": ("8443", "conf.console_port", "8443", {}),
    "MEDIA_ROOT": ("/srv/readme/media", "str(settings.MEDIA_ROOT)", "/srv/readme/media", {}),
    "BACKUPS_STORAGE": (
        "s3",
        'settings.STORAGES["backups"]["BACKEND"]',
        "backups.storage_backends.BackupS3Storage",
        {"BACKUPS_S3_BUCKET": "readme-bucket"},
    ),
    "BACKUPS_LOCAL_DIR": (
        "/srv/readme/backups",
        f'[str(settings.BACKUPS_LOCAL_DIR), {BACKUPS_OPTIONS}["location"]]',
        ["/srv/readme/backups"] * 2,
        {},
    ),
    "BACKUPS_S3_BUCKET": ("readme-b2", f'{BACKUPS_OPTIONS}["bucket_name"]', "readme-b2", {"BACKUPS_STORAGE": "s3"}),
    "BACKUPS_S3_REGION": ("eu-readme-1", f'{BACKUPS_OPTIONS}["region_name"]', "eu-readme-1", S3),
    "BACKUPS_S3_ENDPOINT_URL": (
        "https://s3.readme.example",
        f'{BACKUPS_OPTIONS}["endpoint_url"]',
        "https://s3.readme.example",
        S3,
    ),
    "BACKUPS_S3_PREFIX": ("readme/prefix", f'{BACKUPS_OPTIONS}["location"]', "readme/prefix", S3),
    "BACKUPS_S3_ACCESS_KEY_ID": ("AKIAREADME", f'{BACKUPS_OPTIONS}["access_key"]', "AKIAREADME", S3),
    "BACKUPS_S3_SECRET_ACCESS_KEY": ("readme-s3-secret", f'{BACKUPS_OPTIONS}["secret_key"]', "readme-s3-secret", S3),
    "BACKUPS_S3_SSE": (
        "aws:kms",
        f'{BACKUPS_OPTIONS}["object_parameters"]',
        {"ServerSideEncryption": "aws:kms"},
        S3,
    ),
    "BACKUPS_S3_PART_SIZE_MB": ("13", f'{BACKUPS_OPTIONS}["multipart_chunksize"]', 13 * 1024 * 1024, S3),
    "LOG_LEVEL": ("warning", 'settings.LOGGING["root"]["level"]', "WARNING", {}),
    "TIME_ZONE": ("America/Montevideo", "settings.TIME_ZONE", "America/Montevideo", {}),
    "BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY": ("37", "conf.max_manual_backups_per_day", 37, {}),
    "BACKUPS_MAX_DOWNLOADS_PER_DAY": ("41", "conf.max_downloads_per_day", 41, {}),
    "BACKUPS_API_REQUESTS_PER_MINUTE": ("333", "conf.api_requests_per_minute", 333, {}),
    "BACKUPS_API_CLINIC_REQUESTS_PER_MINUTE": ("777", "conf.api_clinic_requests_per_minute", 777, {}),
    "BACKUPS_MAX_UPLOAD_BYTES": ("123456789", "conf.max_upload_bytes", 123456789, {}),
    "BACKUPS_MAX_PAYLOAD_BYTES": ("987654321", "conf.max_payload_bytes", 987654321, {}),
    "BACKUPS_AGE_IDENTITY": (KEY, "[conf.age_identity, conf.age_identity_file]", [KEY, None], {}),
    "BACKUPS_AGE_IDENTITY_FILE": ("/etc/readme/key.txt", "str(conf.age_identity_file)", "/etc/readme/key.txt", {}),
    "BACKUPS_AGE_OLD_IDENTITIES": (",".join(OLD_KEYS), "conf.age_old_identities", OLD_KEYS, {}),
    "BACKUPS_AGE_IDENTITIES": (KEY, "conf.age_identities_replaced", [KEY], {}),  # read only to be refused
    "BACKUPS_ZSTD_LEVEL": ("17", "conf.zstd_level", 17, {}),
    "BACKUPS_ZSTD_THREADS": ("0", "conf.zstd_threads", 0, {}),
    "BACKUPS_OFFBOARD_KEEP_DAYS": ("45", "conf.offboard_keep_days", 45, {}),
    "BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST": ("true", "conf.webhooks_allow_http_localhost", True, {}),
    "MEDIA_STORAGE": (
        "s3",
        'settings.STORAGES["default"]["BACKEND"]',
        "clinics.media_storage.TenantS3MediaStorage",
        {"MEDIA_S3_BUCKET": "readme-media"},
    ),
    "MEDIA_S3_BUCKET": ("readme-m2", f'{MEDIA_OPTIONS}["bucket_name"]', "readme-m2", {"MEDIA_STORAGE": "s3"}),
    "MEDIA_S3_REGION": ("eu-readme-2", f'{MEDIA_OPTIONS}["region_name"]', "eu-readme-2", MEDIA_S3),
    "MEDIA_S3_ENDPOINT_URL": (
        "https://m.readme.example",
        f'{MEDIA_OPTIONS}["endpoint_url"]',
        "https://m.readme.example",
        MEDIA_S3,
    ),
    "MEDIA_S3_PREFIX": ("readme-media-prefix", f'{MEDIA_OPTIONS}["location"]', "readme-media-prefix", MEDIA_S3),
    "MEDIA_S3_ACCESS_KEY_ID": ("AKIAMEDIA", f'{MEDIA_OPTIONS}["access_key"]', "AKIAMEDIA", MEDIA_S3),
    "MEDIA_S3_SECRET_ACCESS_KEY": ("readme-m-secret", f'{MEDIA_OPTIONS}["secret_key"]', "readme-m-secret", MEDIA_S3),
    "MEDIA_S3_SSE": ("none", f'{MEDIA_OPTIONS}["object_parameters"]', {}, MEDIA_S3),
}

# Loads the settings afresh for each case, with only that case's variables set, and prints
# what it read back (or the refusal) as JSON.
READ_BACK = """
import json, os, sys
from django.conf import settings, empty

cases, base = json.load(sys.stdin), dict(os.environ)
from backups.conf import conf
results = {}
for name, (env, expression) in cases.items():
    os.environ.clear()
    os.environ.update(base, **env)
    sys.modules.pop("clinic_site.settings", None)
    settings._wrapped = empty
    try:
        results[name] = {"value": eval(expression, {"settings": settings, "conf": conf})}
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(results, default=str))
"""


def documented_variables() -> tuple[set[str], set[str]]:
    """The README's variables: the rows of its ``| variable | …`` tables, and every other mention."""
    text = README.read_text(encoding="utf-8")
    in_tables: set[str] = set()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\|\s*variable\s*\|", line):
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                first_cell = row.split("|")[1]
                in_tables.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell))
    mentioned = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:=[^`]*)?`", text))
    return in_tables, mentioned


def read_back(cases: dict[str, tuple[dict[str, str], str]], tmp_path: Path) -> dict[str, dict]:
    """Run READ_BACK in a clean process: no variable of this test run leaks into it."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "clinic_site.settings",
        "RESPALDO_LOCAL_DIR": str(tmp_path / "local"),  # the development secret is generated here
        "DATABASE_URL": "postgresql://base@db.base.example:5432/base",  # no embedded server is started
    }
    result = subprocess.run(
        [sys.executable, "-c", READ_BACK],
        input=json.dumps(cases),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_readme_tables_are_found():
    in_tables, mentioned = documented_variables()
    assert {"RESPALDO_ENV", "BACKUPS_MAX_DOWNLOADS_PER_DAY", "BACKUPS_API_REQUESTS_PER_MINUTE"} <= in_tables
    assert {"BACKUPS_AGE_IDENTITY", "BACKUPS_ZSTD_LEVEL"} <= in_tables  # the "Archive keys" table
    assert {"BACKUPS_OFFBOARD_KEEP_DAYS", "MEDIA_S3_BUCKET"} <= mentioned
    assert len(in_tables) >= 40


def test_every_variable_the_readme_documents_reaches_its_setting(tmp_path):
    in_tables, mentioned = documented_variables()
    documented = in_tables | mentioned
    assert documented - set(CASES) == set(), "documented in README.md but not tested here: add it to CASES"
    assert set(CASES) - documented == set(), "tested here but no longer in README.md: remove it from CASES"

    cases = {name: ({**extra, name: value}, expression) for name, (value, expression, _, extra) in CASES.items()}
    # The control: the same reads without the variable give something else (the value is distinctive).
    controls = {name: (extra, expression) for name, (_, expression, _, extra) in CASES.items()}
    results, defaults = read_back(cases, tmp_path), read_back(controls, tmp_path)

    wrong = []
    for name, (value, _, expected, _) in CASES.items():
        got, default = results[name], defaults[name]
        if got != {"value": expected}:
            wrong.append(f"{name}={value!r}: read back {got}, expected {expected!r}")
        elif default == got:
            wrong.append(f"{name}: the same without the variable ({default}): the test proves nothing")
    assert wrong == [], "\n".join(wrong)


MALFORMED = {
    "BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY": ("twenty", "BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY='twenty' is not an integer."),
    "BACKUPS_MAX_DOWNLOADS_PER_DAY": ("0", "BACKUPS_MAX_DOWNLOADS_PER_DAY='0' is out of range: it must be at least 1."),
    "BACKUPS_API_REQUESTS_PER_MINUTE": ("-5", "BACKUPS_API_REQUESTS_PER_MINUTE='-5' is out of range"),
    "BACKUPS_OFFBOARD_KEEP_DAYS": ("90d", "BACKUPS_OFFBOARD_KEEP_DAYS='90d' is not an integer."),
    "BACKUPS_ZSTD_LEVEL": ("22", "BACKUPS_ZSTD_LEVEL='22' is out of range: it must be from 1 to 19."),
    "BACKUPS_S3_PART_SIZE_MB": ("4", "BACKUPS_S3_PART_SIZE_MB='4' is out of range: it must be at least 5."),
    "EMAIL_USE_TLS": ("maybe", "EMAIL_USE_TLS='maybe' is not a boolean"),
    "BACKUPS_CONSOLE_SCHEME": ("ftp", "BACKUPS_CONSOLE_SCHEME='ftp': use one of http, https."),
    "BACKUPS_CONSOLE_PORT": ("http", "BACKUPS_CONSOLE_PORT='http' is not an integer."),
    "LOG_LEVEL": ("loud", "LOG_LEVEL='loud': use one of DEBUG, INFO, WARNING, ERROR, CRITICAL."),
    "TIME_ZONE": ("Mars/Olympus", "TIME_ZONE='Mars/Olympus' is not a time zone"),
    "BACKUPS_STORAGE": ("gcs", "BACKUPS_STORAGE='gcs': use one of local, s3."),
    "MEDIA_STORAGE": ("disk", "MEDIA_STORAGE='disk': use one of local, s3."),
}


def test_a_malformed_value_stops_start_up_naming_the_variable(tmp_path):
    cases = {name: ({**CASES[name][3], name: value}, "settings.DEBUG") for name, (value, _) in MALFORMED.items()}
    results = read_back(cases, tmp_path)
    wrong = {
        name: results[name]
        for name, (_, message) in MALFORMED.items()
        if not results[name].get("error", "").startswith("ConfigurationError: " + message)
    }
    assert wrong == {}


@pytest.mark.parametrize("variable", ["BACKUPS_MAX_DOWNLOADS_PER_DAY", "LOG_LEVEL"])
def test_manage_py_says_a_malformed_value_in_one_line(tmp_path, variable):
    value, message = MALFORMED[variable]
    env = {**os.environ, "RESPALDO_LOCAL_DIR": str(tmp_path), variable: value}
    env["DATABASE_URL"] = "postgresql://base@db.base.example:5432/base"
    result = subprocess.run(
        [sys.executable, "manage.py", "list_backups"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"Configuration error: {message}"], result.stderr[-2000:]
