"""llm_judge against a real HTTP server on 127.0.0.1 speaking the OpenAI chat API."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlm_r1.rewards import call_reward, resolve_reward


class Judge(BaseHTTPRequestHandler):
    calls: list[dict] = []
    fail_first = 0

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Judge.calls.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if Judge.fail_first > 0:
            Judge.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        answer = prompt.split("Student's answer: ")[1].split("\n")[0]
        reply = {"garbage": "not a number", "cat": "Score: 1", "dog": "0.25"}.get(answer, "0")
        payload = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Judge.calls, Judge.fail_first = [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_scores_from_the_judge(server):
    spec = resolve_reward("llm_judge", base_url=server, api_key="sk-test", model="judge-1")
    out = call_reward(
        spec,
        ["<answer>cat</answer>", "<answer>dog</answer>", "<answer>garbage</answer>"],
        ["cat", "cat", "garbage"],
    )
    assert out.scores == [1.0, 0.25, 1.0]  # garbage reply -> exact-match fallback (equal -> 1)
    assert [d["judge"] for d in out.details] == ["ok", "ok", "fallback"]
    assert all(
        c["path"] == "/v1/chat/completions" and c["auth"] == "Bearer sk-test" for c in Judge.calls
    )
    assert Judge.calls[0]["body"]["model"] == "judge-1"


def test_retries_then_succeeds(server):
    Judge.fail_first = 2
    spec = resolve_reward("llm_judge", base_url=server, retries=2, backoff=0.01, max_workers=1)
    assert call_reward(spec, ["cat"], ["x"]).scores == [1.0]
    assert len(Judge.calls) == 3


def test_unreachable_endpoint_uses_fallback_score():
    spec = resolve_reward(
        "llm_judge",
        base_url="http://127.0.0.1:9",
        retries=1,
        backoff=0.01,
        timeout=0.5,
        fallback=0.3,
    )
    assert call_reward(spec, ["cat", "dog"], ["cat", "cat"]).scores == [0.3, 0.3]
