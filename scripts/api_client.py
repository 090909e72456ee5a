#!/usr/bin/env python3
"""A small client of Respaldo's JSON API that needs only ``requests`` (and Python's standard library).

    python scripts/api_client.py --url https://clinica.example.com --token rsp_… round-trip --confirm clinica

Commands: ``list``, ``show ID``, ``backup [--format pg|json] [--note …]``, ``download ID [--out FILE]``
(checks the SHA-256), ``restore ID --confirm SCHEMA`` and ``round-trip --confirm SCHEMA`` (back up,
wait, download, check, restore, wait). ``--host`` sends another Host header than the URL's (for a
clinic served as ``<clinic>.localhost`` on a machine whose resolver does not know it). Exit status:
0 done, 1 the API refused (its HTTP status, code and message are printed), 2 a job failed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from urllib.parse import urlsplit

import requests


class Refused(Exception):
    """The API answered with an error."""


class Api:
    def __init__(self, url: str, token: str, host: str | None = None, timeout: float = 600) -> None:
        self.base = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        if host:
            self.session.headers["Host"] = host
        self.timeout = timeout

    def url(self, path_or_url: str) -> str:
        """A path, or a URL the API handed out, on our base URL (the host may be one only the server knows)."""
        parts = urlsplit(path_or_url)
        return self.base + parts.path + (f"?{parts.query}" if parts.query else "")

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.session.request(method, self.url(path), timeout=60, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                detail = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                detail = response.text[:200]
            raise Refused(f"HTTP {response.status_code} {detail}")
        return response

    def wait(self, url: str, what: str) -> dict:
        """Poll a backup or restore until it has finished; its final state."""
        deadline = time.monotonic() + self.timeout
        while True:
            job = self.call("GET", url).json()
            if job["finished"]:
                return job
            if time.monotonic() > deadline:
                raise Refused(f"{what} #{job['id']} did not finish in {self.timeout:.0f} s (still {job['status']})")
            time.sleep(1)

    def backup(self, payload_format: str = "pg", note: str = "") -> dict:
        created = self.call("POST", "/api/v1/backups/", json={"format": payload_format, "note": note}).json()
        print(f"backup #{created['id']} requested")
        return self.wait(created["url"], "backup")

    def download(self, backup_id: int, out: str | None = None) -> str:
        """Download a backup, check its SHA-256 against the catalog's; the file's name."""
        backup = self.call("GET", f"/api/v1/backups/{backup_id}/").json()
        response = self.call("GET", f"/api/v1/backups/{backup_id}/download/", stream=True)
        name = out or f"backup-{backup_id}.respaldo"
        digest = hashlib.sha256()
        with open(name, "wb") as file:
            for chunk in response.iter_content(1 << 20):
                digest.update(chunk)
                file.write(chunk)
        if digest.hexdigest() != backup["sha256"]:
            raise Refused(f"the download's SHA-256 {digest.hexdigest()} is not the backup's {backup['sha256']}")
        print(f"downloaded backup #{backup_id} to {name}: SHA-256 {digest.hexdigest()} matches")
        return name

    def restore(self, backup_id: int, confirm: str, accept_emptied: bool = False) -> dict:
        body = {"confirm": confirm, "accept_emptied": accept_emptied}
        started = self.call("POST", f"/api/v1/backups/{backup_id}/restore/", json=body).json()
        print(f"restore #{started['id']} from backup #{backup_id} started")
        return self.wait(started["url"], "restore")


def report(job: dict, what: str) -> int:
    if job["status"] != "succeeded":
        print(f"{what} #{job['id']} {job['status']}: {(job.get('error') or {}).get('message', '')}")
        return 2
    print(f"{what} #{job['id']} succeeded in {job['duration_seconds']} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the clinic's base URL, e.g. https://clinica.example.com")
    parser.add_argument("--token", required=True, help="an API token made in the clinic's console")
    parser.add_argument("--host", help="Host header to send instead of the URL's")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for a job")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list")
    commands.add_parser("show").add_argument("id", type=int)
    backup = commands.add_parser("backup")
    backup.add_argument("--format", default="pg", choices=["pg", "json"])
    backup.add_argument("--note", default="")
    download = commands.add_parser("download")
    download.add_argument("id", type=int)
    download.add_argument("--out")
    restore = commands.add_parser("restore")
    restore.add_argument("id", type=int)
    restore.add_argument("--confirm", required=True, help="the clinic's schema name")
    restore.add_argument("--accept-emptied", action="store_true")
    trip = commands.add_parser("round-trip")
    trip.add_argument("--confirm", required=True, help="the clinic's schema name")
    trip.add_argument("--out")
    args = parser.parse_args(argv)

    api = Api(args.url, args.token, args.host, args.timeout)
    try:
        if args.command == "list":
            for row in api.call("GET", "/api/v1/backups/").json()["results"]:
                print(f"#{row['id']} {row['status']} {row['kind']} {row['format']} {row['size']} {row['requested_at']}")
        elif args.command == "show":
            row = api.call("GET", f"/api/v1/backups/{args.id}/").json()
            print(f"#{row['id']} {row['status']} size={row['size']} sha256={row['sha256']}")
        elif args.command == "backup":
            return report(api.backup(args.format, args.note), "backup")
        elif args.command == "download":
            api.download(args.id, args.out)
        elif args.command == "restore":
            return report(api.restore(args.id, args.confirm, args.accept_emptied), "restore")
        else:
            made = api.backup(note="round trip through the API")
            if report(made, "backup"):
                return 2
            api.download(made["id"], args.out)
            return report(api.restore(made["id"], args.confirm), "restore")
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
