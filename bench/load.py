"""A local load generator for the pages bench: logged-in clients requesting one page at once.

Run by ``bench/run.py`` as a process of its own, so that its clients never share the
server's interpreter; the server is gunicorn with its own workers, as deployed (Procfile):

    python bench/load.py --base http://127.0.0.1:PORT --host clinica.localhost --path /admin/ \
        --user U --password P --requests 40 --clients 2

Each client logs in through the admin's login form (CSRF token included), requests the page
once to warm up, then ``--requests / --clients`` times. Prints one JSON object: every
latency in seconds and the statuses that were not 200.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time

import requests

_CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def logged_in(base: str, host: str, user: str, password: str) -> requests.Session:
    """A session logged in to the admin on ``host`` (sent as the Host header to ``base``)."""
    session = requests.Session()
    session.headers["Host"] = host
    page = session.get(f"{base}/admin/login/", timeout=30)
    token = _CSRF_FIELD.search(page.text)
    if page.status_code != 200 or token is None:
        raise RuntimeError(f"no login form on {host}: HTTP {page.status_code}")
    answer = session.post(
        f"{base}/admin/login/",
        data={"username": user, "password": password, "csrfmiddlewaretoken": token.group(1), "next": "/admin/"},
        headers={"Referer": f"http://{host}/admin/login/"},
        allow_redirects=False,
        timeout=30,
    )
    if answer.status_code != 302:
        raise RuntimeError(f"could not log in on {host}: HTTP {answer.status_code}")
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--base", "--host", "--path", "--user", "--password"):
        parser.add_argument(name, required=True)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()

    latencies: list[float] = []
    failures: list[str] = []
    sessions = [logged_in(args.base, args.host, args.user, args.password) for _ in range(args.clients)]

    def client(session: requests.Session, count: int) -> None:
        session.get(f"{args.base}{args.path}", timeout=60)
        for _ in range(count):
            start = time.perf_counter()
            status = session.get(f"{args.base}{args.path}", timeout=60, allow_redirects=False).status_code
            latencies.append(time.perf_counter() - start)
            if status != 200:
                failures.append(f"{args.path}: HTTP {status}")

    threads = [threading.Thread(target=client, args=(s, args.requests // args.clients)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"latencies": latencies, "failures": failures}))


if __name__ == "__main__":
    main()
