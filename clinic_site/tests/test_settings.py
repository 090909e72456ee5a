"""Configuration rules: production refuses development defaults; check --deploy is clean."""

import os
import subprocess
import sys

from django.conf import settings

from backups.archive import generate_identity
from clinic_site.env import local_secret

ROOT = settings.BASE_DIR


def run_django(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}}
    clean.update(env)
    clean["DJANGO_SETTINGS_MODULE"] = "clinic_site.settings"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def embedded_url() -> str:
    db = settings.DATABASES["default"]
    return os.environ.get("DATABASE_URL") or f"postgresql://{db['USER']}@/{db['NAME']}?host={db['HOST']}"


SETUP = "import django; django.setup(); "


def test_production_refuses_to_start_without_its_settings():
    result = run_django(SETUP, RESPALDO_ENV="production")
    assert result.returncode != 0
    assert "Production needs these environment variables: SECRET_KEY, DATABASE_URL, ALLOWED_HOSTS" in result.stderr


def test_production_refuses_a_weak_secret_and_debug():
    base = {"RESPALDO_ENV": "production", "DATABASE_URL": embedded_url(), "ALLOWED_HOSTS": "respaldo.example"}
    weak = run_django(SETUP, SECRET_KEY="short", **base)
    assert weak.returncode != 0 and "SECRET_KEY is too weak" in weak.stderr
    debug = run_django(SETUP, SECRET_KEY="x" * 60, DEBUG="true", **base)
    assert debug.returncode != 0 and "DEBUG must be off in production" in debug.stderr


def test_production_check_deploy_is_clean():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "RESPALDO_ENV": "production",
            "DATABASE_URL": embedded_url(),
            "SECRET_KEY": "k" * 20 + "Q9#" + "z" * 40,
            "ALLOWED_HOSTS": ".respaldo.example",
            "BACKUPS_AGE_IDENTITY": generate_identity(),  # without one, backups.E001 (test_keys)
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_defaults():
    result = run_django(
        SETUP + "from django.conf import settings as s; print(s.DEBUG, s.ALLOWED_HOSTS, s.RESPALDO_ENV)"
    )
    assert result.returncode == 0, result.stderr
    assert "True ['localhost', '.localhost', '127.0.0.1'] development" in result.stdout


def test_invalid_boolean_is_refused():
    result = run_django(SETUP, DEBUG="perhaps")
    assert result.returncode != 0 and "DEBUG='perhaps' is not a boolean" in result.stderr


def test_development_secret_is_generated_once_and_private(tmp_path):
    path = tmp_path / "local" / "secret_key"
    first = local_secret(path)
    assert len(first) >= 50 and local_secret(path) == first
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_secret_key_file_is_git_ignored():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".local/secret_key"], cwd=ROOT)
    assert ignored.returncode == 0


def test_the_admin_loads_with_the_urls_and_its_checks_still_see_every_model_admin():
    """Starting Django loads no admin module (a worker or a backup never serves a page); the
    admin's system check loads them first, so an invalid ModelAdmin is still reported."""
    code = SETUP + (
        "import sys\n"
        "print('AT START', sorted(m for m in sys.modules if m.endswith('.admin') and m.split('.')[0] in "
        "{'backups', 'clinics', 'dental'}))\n"
        "from django.core.checks import run_checks\n"
        "from dental.admin import DentistAdmin\n"
        "DentistAdmin.list_display = [*DentistAdmin.list_display, 'no_such_field']\n"
        "print('ERRORS', sorted({e.id for e in run_checks(tags=['admin'])}))\n"
        "from clinic_site.admin_sites import clinic_site, platform_site\n"
        "print('SITES', len(clinic_site._registry) > 5, len(platform_site._registry) > 5)\n"
    )
    result = run_django(code, DATABASE_URL=embedded_url())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "AT START []" in result.stdout, result.stdout
    assert "ERRORS ['admin.E108']" in result.stdout, result.stdout
    assert "SITES True True" in result.stdout, result.stdout
