"""A loopback server speaking the part of the Hub HTTP API that `huggingface_hub` uses to create a repo, commit
files (preupload answers "regular", so contents travel inline in the commit) and download them back."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

REPO = r"(?P<type>model|dataset|space)s/(?P<repo>[^/]+/[^/]+)"


def _tree(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
    """The Hub's tree listing under `prefix`: files and folders, one level deep or (`recursive`) all of them."""
    start = f"{prefix}/" if prefix else ""
    entries, folders = [], set()
    for path, data in sorted(files.items()):
        if not path.startswith(start):
            continue
        parts = path[len(start) :].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folders.add(start + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            entries.append({"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()})
    return [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)] + entries


class FakeHub:
    """Repos kept in memory: `{(type, repo_id): {"files": {path: bytes}, "sha": str}}`."""

    def __init__(self):
        self.repos: dict[tuple[str, str], dict] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_dataset(self, repo_id: str, configs: dict) -> None:
        """Serve `{config_name: {split: datasets.Dataset}}` as the Hub serves a Parquet dataset: one folder of
        `<split>-00000-of-00001.parquet` files per configuration, declared in the README's `configs`."""
        import io

        files, card = {}, ["---", "configs:"]
        for config, splits in configs.items():
            card += [f"- config_name: {config}", "  data_files:"]
            for split, dataset in splits.items():
                buffer = io.BytesIO()
                dataset.to_parquet(buffer)
                files[f"{config}/{split}-00000-of-00001.parquet"] = buffer.getvalue()
                card += [f"  - split: {split}", f"    path: {config}/{split}-*"]
        files["README.md"] = "\n".join([*card, "---", ""]).encode()
        sha = hashlib.sha1(json.dumps(sorted(files)).encode()).hexdigest()
        self.repos[("dataset", repo_id)] = {"files": files, "sha": sha}

    def client_env(self, home) -> dict[str, str]:
        """Environment variables that point `huggingface_hub` / `datasets` in a child process at this server."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_TOKEN": "hf_fake",
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(home),
            "HF_HUB_DISABLE_XET": "1",
        }

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None, head=False):
                data = json.dumps(body).encode() if isinstance(body, dict | list) else body
                self.send_response(status)
                self.send_header(
                    "Content-Type", "application/json" if isinstance(body, dict | list) else "application/octet-stream"
                )
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_POST(self):
                path = unquote(urlparse(self.path).path)
                if path == "/api/repos/create":
                    req = json.loads(self._body())
                    repo_id = f"{req.get('organization') or 'tester'}/{req['name']}"
                    key = (req.get("type") or "model", repo_id)
                    hub.repos.setdefault(key, {"files": {}, "sha": "0" * 40})
                    return self._send(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":
                    return self._send(200, {"errors": [], "warnings": []})
                if m := re.fullmatch(f"/api/{REPO}/preupload/(?P<rev>.+)", path):
                    files = json.loads(self._body())["files"]
                    return self._send(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                            ]
                        },
                    )
                if m := re.fullmatch(f"/api/{REPO}/commit/(?P<rev>.+)", path):
                    repo = hub.repos.setdefault((m["type"], m["repo"]), {"files": {}, "sha": "0" * 40})
                    for line in self._body().decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            repo["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] == "deletedFile":
                            repo["files"].pop(item["value"]["path"], None)
                    digest = hashlib.sha1(
                        json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in repo["files"].items())).encode()
                    )
                    repo["sha"] = digest.hexdigest()
                    url = f"{hub.endpoint}/{m['repo']}/commit/{repo['sha']}"
                    return self._send(200, {"commitUrl": url, "commitOid": repo["sha"], "success": True})
                return self._send(404, {"error": f"no route for POST {path}"})

            def do_GET(self, head: bool = False):
                path = unquote(urlparse(self.path).path)
                if path == "/api/whoami-v2":
                    return self._send(200, {"type": "user", "name": "tester", "orgs": [], "auth": {}}, head=head)
                if m := re.fullmatch(f"/api/{REPO}(?:/revision/(?P<rev>[^/]+))?", path):
                    repo = hub.repos.get((m["type"], m["repo"]))
                    if repo is None:
                        return self._send(
                            404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head
                        )
                    return self._send(
                        200,
                        {
                            "id": m["repo"],
                            "sha": repo["sha"],
                            "private": False,
                            "siblings": [{"rfilename": p} for p in sorted(repo["files"])],
                        },
                        head=head,
                    )
                if m := re.fullmatch(f"/api/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", path):
                    repo = hub.repos.get((m["type"], m["repo"]), {"files": {}})
                    prefix = (m["sub"] or "").strip("/")
                    recursive = parse_qs(urlparse(self.path).query).get("recursive", ["false"])[0] == "true"
                    if prefix and not any(f.startswith(f"{prefix}/") for f in repo["files"]):
                        return self._send(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"}, head)
                    return self._send(200, _tree(repo["files"], prefix, recursive), head=head)
                m = re.fullmatch(
                    r"/(?:(?P<type>dataset|space)s/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path
                )
                if m:
                    repo = hub.repos.get((m["type"] or "model", m["repo"]))
                    if repo is None:
                        return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)
                    data = repo["files"].get(m["file"])
                    if data is None:
                        return self._send(
                            404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo["sha"]}, head
                        )
                    etag = hashlib.sha1(data).hexdigest()
                    return self._send(200, data, {"X-Repo-Commit": repo["sha"], "ETag": f'"{etag}"'}, head)
                return self._send(404, {"error": f"no route for GET {path}"}, head=head)

            def do_HEAD(self):
                self.do_GET(head=True)

        return Handler
