"""`dalston jobs`: the batch-job client — submit a file, follow its progress, write the result.

    dalston jobs submit FILE --model fast [--format srt] [-o out.srt]   # waits, with a progress bar
    dalston jobs submit FILE --no-wait                                  # prints the job id
    dalston jobs status ID | result ID [--format vtt] | cancel ID | list [--limit 20]

Talks to a gateway's /v1/jobs (`--url`, default $DALSTON_GATEWAY_URL or http://127.0.0.1:8000) with
a `dk_` key (`--api-key`, default $DALSTON_API_KEY). Every failure is one line naming what went
wrong (unreachable gateway, the API's error message, a failed job's reason), exit code 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from dalston.formats import RESPONSE_FORMATS

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("DALSTON_GATEWAY_URL", DEFAULT_URL),
                        help=f"gateway URL (default $DALSTON_GATEWAY_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", default=os.environ.get("DALSTON_API_KEY"), help="dk_... key (or $DALSTON_API_KEY)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    submit = sub.add_parser("submit", help="submit a file as a job; wait for it and write the result")
    submit.add_argument("file", type=Path)
    submit.add_argument("--model", default="fast", help="variant id or alias (default: fast)")
    submit.add_argument("--format", dest="response_format", choices=RESPONSE_FORMATS, default="text")
    submit.add_argument("--language", default=None)
    submit.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    submit.add_argument("--prompt", default=None)
    submit.add_argument("--word-timestamps", action="store_true", help="words in verbose_json")
    submit.add_argument("--webhook-url", default=None, help="POST the finished job's status here (signed)")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    submit.add_argument("--output", "-o", type=Path, default=None, help="write the result here instead of stdout")
    submit.add_argument("--poll", type=float, default=1.0, help="seconds between status checks (default 1)")
    for name, help_text in (("status", "print a job's status as JSON"), ("cancel", "cancel a queued or running job")):
        sub.add_parser(name, help=help_text).add_argument("job_id")
    res = sub.add_parser("result", help="write a finished job's result")
    res.add_argument("job_id")
    res.add_argument("--format", dest="response_format", choices=RESPONSE_FORMATS, default=None)
    res.add_argument("--output", "-o", type=Path, default=None)
    lst = sub.add_parser("list", help="your recent jobs, newest first")
    lst.add_argument("--limit", type=int, default=20)


def run(args: argparse.Namespace) -> int:
    try:
        with httpx.Client(base_url=args.url.rstrip("/"), timeout=httpx.Timeout(60.0, connect=5.0),
                          headers={"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}) as http:
            return _ACTIONS[args.action](http, args)
    except CliError as exc:
        print(f"dalston jobs: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"dalston jobs: cannot reach the gateway at {args.url} ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = http.request(method, path, **kwargs)
    for _ in range(5 if method == "GET" else 0):  # reads are safe to repeat after a 503 + Retry-After
        if response.status_code != 503:
            break
        time.sleep(min(5.0, float(response.headers.get("retry-after", "1") or 1)))
        response = http.request(method, path, **kwargs)
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            detail = f"{error.get('code') or error.get('type')}: {error.get('message')}"
        except (ValueError, KeyError, TypeError):
            detail = response.text[:300]
        raise CliError(f"HTTP {response.status_code} {detail}")
    return response


def _submit(http: httpx.Client, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise CliError(f"{args.file}: no such file")
    fields: dict[str, Any] = {"model": args.model, "response_format": args.response_format}
    if args.task != "transcribe":
        fields["task"] = args.task
    for name in ("language", "prompt", "webhook_url"):
        if getattr(args, name):
            fields[name] = getattr(args, name)
    if args.word_timestamps:
        fields["timestamp_granularities[]"] = "word"
    with args.file.open("rb") as fh:
        job = _call(http, "POST", "/v1/jobs", data=fields, files={"file": (args.file.name, fh)}).json()
    if args.no_wait:
        print(job["id"])
        return 0
    status = _follow(http, job["id"], args.poll)
    if status["status"] != "succeeded":
        error = status.get("error") or {}
        raise CliError(f"job {job['id']} {status['status']}: {error.get('message', 'no reason given')}")
    return _write_result(http, job["id"], args.response_format, args.output)


def _follow(http: httpx.Client, job_id: str, poll: float) -> dict[str, Any]:
    """Poll until the job ends, drawing progress on stderr (one rewritten line on a terminal)."""
    tty, last = sys.stderr.isatty(), ""
    while True:
        status: dict[str, Any] = _call(http, "GET", f"/v1/jobs/{job_id}").json()
        chunks = status.get("chunks") or {}
        filled = int(status.get("progress", 0) * 30)
        line = (f"{job_id} [{'#' * filled}{'.' * (30 - filled)}] {status.get('progress', 0):4.0%} "
                f"{status['status']} chunks {chunks.get('done', 0)}/{chunks.get('total', 0)}")
        if line != last:
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last = line
        if status["status"] in ("succeeded", "failed", "cancelled"):
            if tty:
                print(file=sys.stderr)
            return status
        time.sleep(poll)


def _write_result(http: httpx.Client, job_id: str, fmt: str | None, output: Path | None) -> int:
    body = _call(http, "GET", f"/v1/jobs/{job_id}/result", params={"format": fmt} if fmt else None).text
    text = body if body.endswith("\n") else body + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _status(http: httpx.Client, args: argparse.Namespace) -> int:
    print(_call(http, "GET", f"/v1/jobs/{args.job_id}").text)
    return 0


def _cancel(http: httpx.Client, args: argparse.Namespace) -> int:
    print(_call(http, "DELETE", f"/v1/jobs/{args.job_id}").json()["status"])
    return 0


def _result(http: httpx.Client, args: argparse.Namespace) -> int:
    return _write_result(http, args.job_id, args.response_format, args.output)


def _list(http: httpx.Client, args: argparse.Namespace) -> int:
    for job in _call(http, "GET", "/v1/jobs", params={"limit": args.limit}).json()["data"]:
        print(f"{job['id']}  {job['status']:<9}  {job['progress']:4.0%}  {job['model']}")
    return 0


_ACTIONS = {"submit": _submit, "status": _status, "cancel": _cancel, "result": _result, "list": _list}
