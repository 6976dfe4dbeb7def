"""Tier attacks against real cortex-node processes: what a sudo or unprivileged node must not be
made to run through the environment, a placeholder value or too many agents.

Each attack is first run against a root node, where it is allowed, to show that the payload really
does what it claims (the control); then against the tier that must refuse it, where it must fail
with ``not_permitted`` (or a payload error naming the field) and leave no trace.
Every test names what it proves in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from cortex_node.config import KEYS
from cortex_node.kernel.agents import MAX_AGENTS
from tests.reliability.conftest import FAST
from tests.reliability.helpers import Node, kill_strays

BASH_SCRIPT = "#!/bin/bash\necho hello from the allowed script\n"


def config(tmp_path: Path, name: str, swarm: dict[str, Any]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"swarm": swarm}))
    return str(path)


def dispatch_self(node: Node, kind: str, payload: dict[str, Any], ttl_ms: int = 20_000) -> dict[str, Any]:
    status, doc = node.post("/api/swarm/directives", {"targetNodeId": node.node_id, "kind": kind,
                                                      "payload": payload, "ttlMs": ttl_ms})
    assert status == 200, doc
    return doc


def assert_refused(doc: dict[str, Any], *words: str) -> None:
    assert doc["status"] == "failed" and "not_permitted" in (doc["error"] or ""), doc
    for word in words:
        assert word in doc["error"], (word, doc["error"])


@pytest.fixture
def bash_script(tmp_path: Path) -> Path:
    script = tmp_path / "hello.sh"
    script.write_text(BASH_SCRIPT)
    script.chmod(0o755)
    return script


# --- the environment below root is an allow-list ----------------------------------------------------
def code_running_attacks(script: Path, pwned: Path, cwd: Path) -> list[tuple[str, dict[str, Any]]]:
    attacks = [("bash function", {"command": [str(script)],
                                  "env": {"BASH_FUNC_echo%%": f"() {{ touch {pwned}; }}"}})]
    if shutil.which("perl"):
        attacks.append(("perl debugger", {"command": ["perl", "-e", "print 1"],
                                          "env": {"PERL5OPT": "-d", "PERL5DB": f"BEGIN{{system('touch {pwned}')}}"}}))
    if shutil.which("git"):
        attacks.append(("git config", {"command": ["git", "st"], "cwd": str(cwd),
                                       "env": {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "alias.st",
                                               "GIT_CONFIG_VALUE_0": f"!touch {pwned}"}}))
    return attacks


def test_a_sudo_node_takes_no_code_running_environment(nodes, tmp_path: Path, bash_script: Path) -> None:
    pwned = tmp_path / "pwned"
    root = nodes("root-env", *FAST)
    sudo = nodes("sudo-env", *FAST, "--tier", "sudo", "--config",
                 config(tmp_path, "sudo-env", {"allowedCommands": [str(bash_script), "perl", "git"]}))
    attacks = code_running_attacks(bash_script, pwned, tmp_path)
    for what, attack in attacks:
        dispatch_self(root, "execute_task", attack)
        assert pwned.exists(), f"the control: {what} runs the sender's code on a root node"
        pwned.unlink()
        doc = dispatch_self(sudo, "execute_task", attack)
        assert_refused(doc, "it changes which code runs")
        assert not pwned.exists(), f"{what} ran on the sudo node"
    # a name nobody listed is refused too: the environment is an allow-list, not a deny-list
    assert_refused(dispatch_self(sudo, "execute_task", {"command": [str(bash_script)], "env": {"TOPIC": "x"}}),
                   "swarm.allowedEnv")
    assert_refused(dispatch_self(sudo, "execute_task", {"command": [str(bash_script)],
                                                        "env": {"LANG": "/tmp/evil-locale"}}), "not a path")
    # the safe names still pass
    ok = dispatch_self(sudo, "execute_task", {"command": [str(bash_script)],
                                              "env": {"LANG": "C.UTF-8", "TZ": "Europe/Paris", "LC_ALL": "C"}})
    assert ok["status"] == "completed" and ok["output"]["stdout"] == "hello from the allowed script\n", ok


def test_an_unprivileged_node_takes_no_code_running_environment_for_its_agents(nodes, tmp_path: Path,
                                                                               bash_script: Path) -> None:
    pwned = tmp_path / "pwned"
    agents = {"hello": {"argv": [str(bash_script)], "unprivileged": True}}
    root = nodes("root-agents", *FAST, "--config", config(tmp_path, "root-agents", {"agents": agents}))
    unpriv = nodes("unpriv-agents", *FAST, "--tier", "unprivileged", "--config",
                   config(tmp_path, "unpriv-agents", {"agents": agents}))
    attack = {"agentType": "hello", "instruction": "hi", "env": {"BASH_FUNC_echo%%": f"() {{ touch {pwned}; }}"}}
    dispatch_self(root, "spawn_agent", attack)
    assert pwned.exists(), "the control: the bash function runs inside a safe agent type on a root node"
    pwned.unlink()
    assert_refused(dispatch_self(unpriv, "spawn_agent", attack), "it changes which code runs")
    assert_refused(dispatch_self(unpriv, "spawn_agent", {**attack, "env": {"TOPIC": "x"}}), "acceptsEnv")
    assert not pwned.exists()
    # the built-in sim accepts its one knob; the safe names pass
    sim = dispatch_self(unpriv, "spawn_agent", {"agentType": "sim", "instruction": "q",
                                                "env": {"CORTEX_SIM_SECONDS": "0.2", "LANG": "C"}})
    assert sim["status"] == "completed", sim
    hello = dispatch_self(unpriv, "spawn_agent", {"agentType": "hello", "instruction": "hi", "env": {"TZ": "UTC"}})
    assert hello["status"] == "completed" and hello["output"]["output"] == "hello from the allowed script\n", hello


@pytest.mark.skipif("allowedEnv" not in KEYS, reason="NEEDS WIRING: the swarm.allowedEnv key in cortex_node/config.py "
                                                       "(the kernel takes the list already)")
def test_the_operator_can_allow_more_names_but_never_a_code_running_one(nodes, tmp_path: Path,
                                                                       bash_script: Path) -> None:
    show = tmp_path / "show.sh"
    show.write_text("#!/bin/bash\necho \"topic=$TOPIC\"\n")
    show.chmod(0o755)
    sudo = nodes("sudo-listed", *FAST, "--tier", "sudo", "--config", config(
        tmp_path, "sudo-listed", {"allowedCommands": [str(show)], "allowedEnv": ["TOPIC"]}))
    ok = dispatch_self(sudo, "execute_task", {"command": [str(show)], "env": {"TOPIC": "listed"}})
    assert ok["status"] == "completed" and ok["output"]["stdout"] == "topic=listed\n", ok
    assert_refused(dispatch_self(sudo, "execute_task", {"command": [str(show)], "env": {"OTHER": "x"}}),
                   "swarm.allowedEnv")


# --- a placeholder value never becomes an option ------------------------------------------------------
def test_a_tool_value_never_becomes_an_option(nodes, tmp_path: Path) -> None:
    target = tmp_path / "written-by-sort"
    data = tmp_path / "data.txt"
    data.write_text("b\na\n")
    tools = {"sort": {"argv": ["sort", "{file}"]},
             "sort-opted-in": {"argv": ["sort", "{file}"], "allowOptionValues": True}}
    root = nodes("root-tools", *FAST, "--config", config(tmp_path, "root-tools", {"tools": tools}))
    sudo = nodes("sudo-tools", *FAST, "--tier", "sudo", "--config",
                 config(tmp_path, "sudo-tools", {"tools": tools, "allowedCommands": ["sort"]}))
    attack = {"tool": "sort", "args": {"file": f"-o{target}"}}
    for node in (root, sudo):
        doc = dispatch_self(node, "execute_task", attack)
        assert doc["status"] == "failed" and doc["error"].startswith(f"args.file is '-o{target}': it begins with '-'")
        assert not target.exists(), f"sort wrote a file on {node.name}"
    # the opt-in: a sudo node refuses it, a root node honours it (the control: the attack is real)
    opted = {"tool": "sort-opted-in", "args": {"file": f"-o{target}"}}
    assert_refused(dispatch_self(sudo, "execute_task", opted), "only a root node honours")
    assert not target.exists()
    assert dispatch_self(root, "execute_task", opted)["status"] == "completed" and target.exists()
    # ordinary use is unchanged
    for node in (root, sudo):
        ok = dispatch_self(node, "execute_task", {"tool": "sort", "args": {"file": str(data)}})
        assert ok["status"] == "completed" and ok["output"]["stdout"] == "a\nb\n", ok


def test_an_instruction_never_becomes_an_option(nodes, tmp_path: Path) -> None:
    target = tmp_path / "written-by-sort"
    data = tmp_path / "data.txt"
    data.write_text("b\na\n")
    agents = {"sorter": {"argv": ["sort", "{instruction}"], "unprivileged": True},
              "sorter-opted-in": {"argv": ["sort", "{instruction}"], "unprivileged": True,
                                  "allowOptionValues": True}}
    root = nodes("root-sorter", *FAST, "--config", config(tmp_path, "root-sorter", {"agents": agents}))
    unpriv = nodes("unpriv-sorter", *FAST, "--tier", "unprivileged", "--config",
                   config(tmp_path, "unpriv-sorter", {"agents": agents}))
    for node in (root, unpriv):
        doc = dispatch_self(node, "spawn_agent", {"agentType": "sorter", "instruction": f"-o{target}"})
        assert doc["status"] == "failed" and "the instruction begins with '-'" in doc["error"], doc
        assert "{instruction}" in doc["error"] and not target.exists()
    opted = {"agentType": "sorter-opted-in", "instruction": f"-o{target}"}
    assert_refused(dispatch_self(unpriv, "spawn_agent", opted), "only a root node honours")
    assert not target.exists()
    assert dispatch_self(root, "spawn_agent", opted)["status"] == "completed" and target.exists()
    ok = dispatch_self(unpriv, "spawn_agent", {"agentType": "sorter", "instruction": str(data)})
    assert ok["status"] == "completed" and ok["output"]["output"] == "a\nb\n", ok


# --- the live-agent limit -------------------------------------------------------------------------
def test_one_agent_more_than_the_limit_is_refused_naming_it(nodes, tmp_path: Path) -> None:
    """Detached agents used to have no cap, even on unprivileged nodes. With the swarm.maxAgents
    wiring the test uses a limit of 3; without it, the default (64) of the runtime."""
    wired = "maxAgents" in KEYS
    limit = 3 if wired else MAX_AGENTS
    word = f"0.{uuid.uuid4().int % 10**12:012d}"  # sleep 30 <word>: a unique command line to find strays by
    swarm: dict[str, Any] = {"agents": {"idle": {"argv": ["sleep", "30", word], "unprivileged": True}}}
    if wired:
        swarm["maxAgents"] = limit
    node = nodes("capped", *FAST, "--tier", "unprivileged", "--config", config(tmp_path, "capped", swarm))
    try:
        for i in range(limit):
            doc = dispatch_self(node, "spawn_agent", {"agentType": "idle", "detach": True})
            assert doc["status"] == "completed", (i, doc)
        for detach in (True, False):  # attached and detached count together
            doc = dispatch_self(node, "spawn_agent", {"agentType": "idle", "detach": detach})
            assert_refused(doc, f"already runs {limit} live agents, its limit (maxAgents = {limit}")
        assert node.get("/healthz")[0] == 200
    finally:
        node.kill()
        kill_strays(word)
