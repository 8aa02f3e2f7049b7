#!/usr/bin/env python3
"""A small fake GitHub REST API (v3) server, for integration tests that talk to GitHub offline.

    fake_github.py --token TOKEN [--data data.json] [--port 0] [--host 127.0.0.1]
                   [--log requests.jsonl] [--html-base http://github.test]

Prints "listening on PORT" once it serves. The seed data:

    {"repos": {"owner/repo": {
        "issues": {"1": {"title": "Bug", "body": "...", "state": "open",
                         "labels": ["bug"], "user": "alice"}},          # labels, user optional
        "pulls":  {"2": {"title": "Fix", "body": "...", "state": "open",
                         "head": "fix-branch", "base": "main", "draft": false}}}}}

Routes (every one needs "Authorization: Bearer TOKEN" or "token TOKEN", else 401):
    GET  /repos/O/R                     {full_name, default_branch: "main"}
    GET  /repos/O/R/issues/N            an issue (or a pull, as GitHub does, with "pull_request")
    GET  /repos/O/R/issues              ?state=open|closed|all (default open) &per_page &page;
                                        like GitHub, pulls are listed too, with "pull_request"
    GET  /repos/O/R/pulls/N
    GET  /repos/O/R/pulls               ?state= &per_page &page
    POST /repos/O/R/pulls               {title, head, base, body, draft} -> 201; 422 if a field is missing
    POST /repos/O/R/issues/N/comments   {body} -> 201 {id, body, html_url, ...}
Lists are newest first. Unknown repo, number or route -> 404 {"message": "Not Found"}.
Every request except GET /_requests is appended to the log as one JSON line:
{"method", "path", "query", "auth_ok", "body"}; GET /_requests (no auth) returns that list.
"""

import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
DOCS = "https://docs.github.com/rest"
SEED_TIME = "2024-01-01T00:00:00Z"


def load_repos(data):
    """{"owner/repo": {number: item}}; an item keeps its seed fields plus "kind" (issue|pull)."""
    repos = {}
    for name, repo in data.get("repos", {}).items():
        items = repos[name] = {}
        for kind in ("issues", "pulls"):
            for n, item in repo.get(kind, {}).items():
                items[int(n)] = dict(item, kind=kind[:-1])
    return repos


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    token = ""
    html_base = "http://github.test"
    log_path = None
    repos = {}
    requests = []
    comment_id = 1000

    def log_message(self, *_):
        pass

    def do_GET(self):
        self.handle_api()

    def do_POST(self):
        self.handle_api()

    do_PATCH = do_PUT = do_DELETE = do_POST

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message, **extra):
        self.reply(status, dict({"message": message, "documentation_url": DOCS}, **extra))

    def handle_api(self):
        url = urlsplit(self.path)
        path, query = url.path.rstrip("/") or "/", {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw.strip() else None
            bad_json = False
        except ValueError:
            body, bad_json = None, True
        if self.command == "GET" and path == "/_requests":
            with LOCK:
                return self.reply(200, list(self.requests))
        scheme, _, given = (self.headers.get("authorization") or "").partition(" ")
        auth_ok = scheme.lower() in ("bearer", "token") and given.strip() == self.token
        entry = {"method": self.command, "path": path, "query": query, "auth_ok": auth_ok, "body": body}
        with LOCK:
            self.requests.append(entry)
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
        if not auth_ok:
            return self.error(401, "Bad credentials")
        if bad_json:
            return self.error(400, "Problems parsing JSON")
        whole = re.fullmatch(r"/repos/([^/]+/[^/]+)", path)
        if whole and self.command == "GET":
            if whole[1] not in self.repos:
                return self.error(404, "Not Found")
            return self.reply(200, {"full_name": whole[1], "default_branch": "main", "private": False})
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/(issues|pulls)(?:/(\d+))?(/comments)?", path)
        if not m or m[1] not in self.repos or (m[4] and (m[2] != "issues" or not m[3])):
            return self.error(404, "Not Found")
        with LOCK:
            self.route(m[1], m[2], m[3] and int(m[3]), bool(m[4]), query, body if isinstance(body, dict) else {})

    def route(self, repo, kind, number, comments, query, body):
        items = self.repos[repo]
        if number is not None:
            item = items.get(number)
            if item is None or (kind == "pulls" and item["kind"] != "pull"):
                return self.error(404, "Not Found")
            if comments and self.command == "POST":
                if not isinstance(body.get("body"), str):
                    return self.error(422, "Validation Failed",
                                      errors=[{"resource": "IssueComment", "code": "missing_field", "field": "body"}])
                Handler.comment_id += 1
                page = "pull" if item["kind"] == "pull" else "issues"
                return self.reply(201, {
                    "id": self.comment_id, "body": body["body"], "user": {"login": "octocat"},
                    "html_url": "%s/%s/%s/%d#issuecomment-%d" % (self.html_base, repo, page, number, self.comment_id),
                    "url": "%s/repos/%s/issues/comments/%d" % (self.api_base(), repo, self.comment_id),
                    "created_at": now()})
            if comments or self.command != "GET":
                return self.error(404, "Not Found")
            return self.reply(200, self.render(repo, number, item, as_issue=kind == "issues"))
        if self.command == "POST" and kind == "pulls":
            missing = [f for f in ("title", "head", "base") if not isinstance(body.get(f), str) or not body[f]]
            if missing:
                return self.error(422, "Validation Failed",
                                  errors=[{"resource": "PullRequest", "code": "missing_field", "field": f} for f in missing])
            number = max(items, default=0) + 1
            items[number] = {"kind": "pull", "title": body["title"], "body": body.get("body"), "state": "open",
                             "head": body["head"], "base": body["base"], "draft": bool(body.get("draft")),
                             "created_at": now()}
            return self.reply(201, self.render(repo, number, items[number], as_issue=False))
        if self.command != "GET":
            return self.error(404, "Not Found")
        state = query.get("state", "open")
        if state not in ("open", "closed", "all"):
            return self.error(422, "Validation Failed",
                              errors=[{"resource": "Issue", "code": "invalid", "field": "state"}])
        try:
            per_page, page = min(int(query.get("per_page", 30)), 100), max(int(query.get("page", 1)), 1)
        except ValueError:
            return self.error(422, "Validation Failed")
        found = [self.render(repo, n, it, as_issue=kind == "issues") for n, it in sorted(items.items(), reverse=True)
                 if (kind == "issues" or it["kind"] == "pull") and state in ("all", it.get("state", "open"))]
        self.reply(200, found[(page - 1) * per_page:page * per_page])

    def api_base(self):
        return "http://" + (self.headers.get("host") or "%s:%d" % self.server.server_address[:2])

    def render(self, repo, number, item, as_issue):
        pull = item["kind"] == "pull"
        api = "%s/repos/%s/%s/%d" % (self.api_base(), repo, "issues" if as_issue else "pulls", number)
        out = {"number": number, "title": item.get("title", ""), "body": item.get("body"),
               "state": item.get("state", "open"), "url": api,
               "html_url": "%s/%s/%s/%d" % (self.html_base, repo, "pull" if pull else "issues", number),
               "user": {"login": item.get("user", "octocat")},
               "labels": [{"name": label} for label in item.get("labels", [])],
               "created_at": item.get("created_at", SEED_TIME)}
        if pull and as_issue:
            out["pull_request"] = {"url": "%s/repos/%s/pulls/%d" % (self.api_base(), repo, number),
                                   "html_url": out["html_url"]}
        elif pull:
            owner = repo.split("/")[0]
            out.update(draft=bool(item.get("draft", False)),
                       head={"ref": item.get("head", ""), "label": "%s:%s" % (owner, item.get("head", ""))},
                       base={"ref": item.get("base", "main"), "label": "%s:%s" % (owner, item.get("base", "main"))})
        return out


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--token", required=True)
    ap.add_argument("--data")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--html-base", default="http://github.test")
    a = ap.parse_args()
    data = {}
    if a.data:
        with open(a.data) as f:
            data = json.load(f)
    Handler.repos = load_repos(data)
    Handler.token, Handler.log_path, Handler.html_base = a.token, a.log, a.html_base.rstrip("/")
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
