#!/usr/bin/env python3
"""Drives devaipod's MCP server with the Python `mcp` SDK, a client no one here wrote.

    mcp_python_client.py --devaipod BIN --url http://127.0.0.1:PORT/mcp --token TOKEN --repo PATH

Over stdio (`BIN mcp`, with this process's environment): initialize, list tools, call
list_workspaces. Over streamable HTTP: create_workspace → run_task (waiting) →
list_proposals → approve (apply) → delete_workspace. Prints one JSON line of what it saw;
exits 1 on the first surprise.
"""

import argparse
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

TOOLS = {
    "approve", "cancel_task", "create_workspace", "delete_workspace", "get_proposal", "get_task",
    "get_workspace", "list_proposals", "list_tasks", "list_workspaces", "reject", "run_task",
    "workspace_egress", "list_proposal_sets", "get_proposal_set", "diff_candidates",
    "reject_proposal_set", "cancel_proposal_set",
}


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


async def call(session, tool, args):
    r = await session.call_tool(tool, args)
    check(not r.isError, f"{tool} {args}: {r.content}")
    check(r.structuredContent is not None, f"{tool}: structuredContent")
    return r.structuredContent


async def over_stdio(binary):
    params = StdioServerParameters(command=binary, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(init.serverInfo.name == "devaipod", f"server name {init.serverInfo.name}")
            tools = await session.list_tools()
            names = {t.name for t in tools.tools}
            check(names == TOOLS, f"tools over stdio: {sorted(names)}")
            ws = await call(session, "list_workspaces", {})
            bad = await session.call_tool("get_workspace", {"name": "nope"})
            check(bad.isError, "an unknown workspace is a tool error")
            return {"stdio_tools": len(names), "stdio_workspaces": len(ws["workspaces"])}


async def over_http(url, token, repo):
    async with streamablehttp_client(url, headers={"Authorization": f"Bearer {token}"}) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            check({t.name for t in tools.tools} == TOOLS, "tools over HTTP")
            w = await call(session, "create_workspace", {"source": repo, "name": "pyclient"})
            check(w["workspace"]["agent"] == "running", f"workspace {w}")
            t = await call(session, "run_task", {"workspace": "pyclient", "prompt": "please write the greeting", "wait_seconds": 90})
            check(t["task"]["state"] == "completed", f"task {t['task']}")
            ps = await call(session, "list_proposals", {"workspace": "pyclient"})
            check(len(ps["proposals"]) == 1, f"proposals {ps}")
            pid = ps["proposals"][0]["id"]
            a = await call(session, "approve", {"proposal": pid, "action": "apply"})
            check(a["proposal"]["state"] == "applied", f"approve {a}")
            await call(session, "delete_workspace", {"name": "pyclient"})
            return {"task": t["task"]["state"], "proposal": pid, "approved": a["proposal"]["state"]}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devaipod", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--repo", required=True)
    a = ap.parse_args()
    seen = await over_stdio(a.devaipod)
    seen.update(await over_http(a.url, a.token, a.repo))
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main())
