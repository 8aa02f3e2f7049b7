#!/usr/bin/env python3
"""A scripted OpenAI-compatible chat-completions server, for running real opencode offline.
It answers OpenAI's Responses API (`POST .../responses`, streamed `response.*` events) from
the same script too, for agents that speak only that (Codex): there a step's "tool" is a
function call of that name, and a tool result is a `function_call_output`.

    scripted_llm.py --script script.json [--port 0] [--host 0.0.0.0] [--log requests.jsonl]

Prints "listening on PORT" once it serves. The script:

    {"rules": [
       {"match": "write the greeting",                      # substring of the latest user message
        "steps": [{"tool": "write", "args": {"filePath": "/w/hello.txt", "content": "hi\\n"}},
                  {"tool": "bash", "args": {"command": "make", "description": "build"}},
                  {"text": "Wrote hello.txt"}],
        "delay": 0,                                         # seconds before each answer
        "model": "m1"},                                     # only for requests naming this model
       {"match": "provider says no", "error": {"status": 400, "message": "model not allowed"}}
     ],
     "default": {"text": "ok"}}

The step answered is the number of tool results after the latest user message, so a
tool call is followed by the next step once opencode sends its result. A rule with
"capture": REGEX may use "{{N}}" in its steps' strings: the first match of REGEX (its
first group, if it has one) in the Nth tool result (0-based) since the latest user message
(e.g. an id an earlier tool call returned). Requests without
tools (opencode's title generation) get a short text. Every request is appended to the log
as one JSON line: {"last_user": ..., "model": the model asked for, "tool_results": n, "tools": bool, "user_messages": n, "tool_names": [...],
"last_tool": the latest tool result's text or null}.
"""

import argparse
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def text_of(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def fill(value, capture, results):
    """`value` with each "{{N}}" replaced by what `capture` finds in tool result N."""
    if isinstance(value, dict):
        return {k: fill(v, capture, results) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, capture, results) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        n = int(m.group(1))
        found = capture.search(results[n]) if n < len(results) else None
        if not found:
            return "<nothing captured from tool result %d>" % n
        return found.group(1) if capture.groups else found.group(0)

    return re.sub(r"\{\{(\d+)\}\}", one, value)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # As real servers do: an answer written in pieces (SSE) goes out at once, not after
        # the client's delayed ACK (~40 ms per request on a kept-alive connection).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    script = {}
    log_path = None
    counter = 0

    def log_message(self, *_):
        pass

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            body = json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        req = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/").endswith("/responses"):
            req = dict(req, messages=responses_to_messages(req.get("input", [])),
                       tools=[{"function": {"name": t.get("name")}} for t in req.get("tools") or []])
            self.stream = self.stream_responses
        messages = req.get("messages", [])
        last_user_idx = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        last_user = text_of(messages[last_user_idx].get("content")) if last_user_idx >= 0 else ""
        tool_results = sum(1 for m in messages[last_user_idx + 1:] if m.get("role") == "tool")
        has_tools = bool(req.get("tools"))
        tool_names = [t.get("function", {}).get("name") for t in req.get("tools") or []]
        last_tool = next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "tool"), None)
        if self.log_path:
            entry = {"last_user": last_user, "model": req.get("model"), "tool_results": tool_results, "tools": has_tools,
                     "user_messages": sum(1 for m in messages if m.get("role") == "user"), "t": time.time(),
                     "tool_names": tool_names, "last_tool": last_tool,
                     "authorization": self.headers.get("authorization")}
            with LOCK, open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

        if not has_tools:
            return self.stream(req, {"text": "Scripted task"})
        rule = next((r for r in self.script.get("rules", [])
                     if r.get("match", "") in last_user and r.get("model", req.get("model")) == req.get("model")), None)
        if rule is None:
            return self.stream(req, self.script.get("default", {"text": "ok"}))
        if rule.get("delay"):
            time.sleep(float(rule["delay"]))
        if "error" in rule:
            err = rule["error"]
            body = json.dumps({"error": {"message": err.get("message", "error"), "type": "invalid_request_error", "code": None}}).encode()
            self.send_response(int(err.get("status", 400)))
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        steps = rule.get("steps", [{"text": "ok"}])
        step = steps[min(tool_results, len(steps) - 1)]
        if rule.get("capture"):
            results = [text_of(m.get("content")) for m in messages[last_user_idx + 1:] if m.get("role") == "tool"]
            step = fill(step, re.compile(rule["capture"]), results)
        self.stream(req, step)

    def chunk(self, delta, finish=None):
        Handler.counter += 1
        obj = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "scripted",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        data = b"data: " + json.dumps(obj).encode() + b"\n\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def stream(self, req, step):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        if "tool" in step:
            call = {
                "index": 0,
                "id": "call_%d" % Handler.counter,
                "type": "function",
                "function": {"name": step["tool"], "arguments": json.dumps(step.get("args", {}))},
            }
            self.chunk({"role": "assistant", "content": None, "tool_calls": [call]})
            self.chunk({}, "tool_calls")
        else:
            self.chunk({"role": "assistant", "content": step.get("text", "")})
            self.chunk({}, "stop")
        usage = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": "scripted", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        data = b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def responses_to_messages(items):
    """OpenAI's Responses API `input` as chat messages: user and assistant messages, and
    one "tool" message per function_call_output (what the rules count)."""
    out = []
    for it in items if isinstance(items, list) else [{"role": "user", "content": items}]:
        if not isinstance(it, dict):
            continue
        if it.get("type") == "function_call_output":
            o = it.get("output")
            out.append({"role": "tool", "content": o if isinstance(o, str) else json.dumps(o)})
        elif it.get("role") in ("user", "assistant"):
            c = it.get("content")
            if isinstance(c, list):
                c = "\n".join(p.get("text", "") for p in c if isinstance(p, dict))
            # Agents send their environment and instructions as user messages too.
            if it.get("role") == "user" and str(c).lstrip().startswith("<"):
                continue
            out.append({"role": it["role"], "content": c})
    return out


def responses_events(step, counter):
    """The Responses API's streamed events for one step: a function call or a message."""
    if "tool" in step:
        item = {"type": "function_call", "id": "fc_%d" % counter, "call_id": "call_%d" % counter,
                "name": step["tool"], "arguments": json.dumps(step.get("args", {}))}
    else:
        item = {"type": "message", "id": "msg_%d" % counter, "role": "assistant",
                "content": [{"type": "output_text", "text": step.get("text", ""), "annotations": []}]}
    rid = "resp_%d" % counter
    usage = {"input_tokens": 10, "input_tokens_details": None, "output_tokens": 5,
             "output_tokens_details": None, "total_tokens": 15}
    return [{"type": "response.created", "response": {"id": rid}},
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": {"id": rid, "usage": usage}}]


def stream_responses(self, req, step):
    Handler.counter += 1
    body = "".join("event: %s\ndata: %s\n\n" % (e["type"], json.dumps(e))
                   for e in responses_events(step, Handler.counter)).encode()
    self.send_response(200)
    self.send_header("content-type", "text/event-stream")
    self.send_header("content-length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)
    self.wfile.flush()


Handler.stream_responses = stream_responses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    a = ap.parse_args()
    with open(a.script) as f:
        Handler.script = json.load(f)
    Handler.log_path = a.log
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
