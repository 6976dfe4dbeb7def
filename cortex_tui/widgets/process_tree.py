"""The fleet's process tree: one branch per node, its processes nested by parent PID. Remote
processes (PID >= 900000) sit under the node that runs them.

Updated incrementally: tree nodes are added, moved and removed only for processes that appear,
change parent or disappear, and a label is rewritten only when what it shows changed. Labels
under a collapsed branch are brought up to date when the branch is expanded, so a fleet of
10,000 processes costs little per refresh while most of it is folded away.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from cortex_tui import format as fmt
from cortex_tui.client.models import Node, Process

# Node branches start unfolded only while the whole tree stays readable; processes always do.
EXPAND_LIMIT = 200

Key = int | str  # a process is keyed by its PID, a node's branch by the node id


def process_signature(p: Process) -> tuple:
    usage = p.resources
    return (p.name, p.agent_type, p.session_id, p.status, usage.tokens_in, usage.tokens_out, p.remote_pid)


def process_label(p: Process) -> Text:
    label = Text.assemble((f"{p.pid} ", "dim"), (p.name, "bold"))
    if p.remote_pid is not None:  # its PID on the node that runs it
        label.append(f" (pid {p.remote_pid} there)", style="dim")
    if p.agent_type and p.agent_type != p.name:
        label.append(f" [{p.agent_type}]", style="cyan")
    if p.session_id:
        label.append(f" {p.session_id}", style="dim")
    label.append("  ")
    label.append(fmt.styled(p.status, fmt.PROCESS_STATUS_STYLES))
    usage = p.resources
    if usage.tokens_in or usage.tokens_out:
        label.append(f"  {fmt.count(usage.tokens_in)} in / {fmt.count(usage.tokens_out)} out", style="dim")
    return label


def node_signature(node: Node | None, node_id: str, total: int, running: int) -> tuple:
    return (node.name, node.status, total, running) if node else (node_id, "?", total, running)


def node_label(node: Node | None, node_id: str, total: int, running: int) -> Text:
    if node is None:  # processes of a node the registry does not list (any more)
        return Text.assemble((node_id, "bold"), ("  unknown node", "yellow"), (f"  {total} processes", "dim"))
    label = Text.assemble(("◆ " if node.is_self else "", "cyan"), (node.name, "bold"), "  ", fmt.node_status(node.status))
    label.append(f"  {running}/{total} running" if total else "  no processes", style="dim")
    return label


class ProcessTree(Tree[Key]):
    """``show`` the fleet's processes; with ``node_id`` given, only that node's branch."""

    def __init__(self, *, node_id: str | None = None, **kwargs) -> None:
        super().__init__("fleet", **kwargs)
        self.show_root = False
        self.guide_depth = 3
        self.only_node_id = node_id
        self._branches: dict[Key, TreeNode[Key]] = {}
        self._parent_of: dict[Key, Key | None] = {}  # a node's branch hangs under the root (None)
        self._shown: dict[Key, tuple] = {}  # signature of the label each tree node displays
        self._processes: dict[int, Process] = {}
        self._stale_labels: set[int] = set()  # changed while folded away
        self._structure: dict[int, tuple] = {}
        self._shape_node_ids: list[str] = []
        self._shape: tuple[dict[int, Key], dict[Key, list[int]]] = ({}, {})
        self._relabelled = False  # a label changed in this pass: repaint once at its end

    def show(self, nodes: Sequence[Node], processes: Sequence[Process]) -> None:
        only = self.only_node_id
        if only is not None:
            nodes = [n for n in nodes if n.id == only]
            processes = [p for p in processes if p.node_id == only]
        by_pid = {p.pid: p for p in processes}
        self._processes = by_pid
        node_ids = [n.id for n in sorted(nodes, key=lambda n: not n.is_self)]  # ours first
        node_ids += sorted({p.node_id for p in processes} - set(node_ids))
        if only is not None and only not in node_ids:
            node_ids.append(only)
        # the shape is recomputed only when some process appeared, vanished or moved
        structure = {pid: (p.parent_pid, p.node_id) for pid, p in by_pid.items()}
        if structure != self._structure or node_ids != self._shape_node_ids:
            self._shape = _tree_shape(by_pid, node_ids)
            self._structure, self._shape_node_ids = structure, node_ids
        wanted_parent, children = self._shape
        unfold_nodes = len(processes) <= EXPAND_LIMIT or only is not None

        # 1. drop what vanished or moved (a moved subtree is added again below)
        for key in list(self._branches):
            if key not in self._branches:  # already gone with an ancestor
                continue
            if isinstance(key, str):
                if key not in node_ids:
                    self._drop(key)
            elif key not in by_pid or self._parent_of[key] != wanted_parent[key]:
                self._drop(key)
        # 2. add what is new, parents before children (walking only the nodes that have new processes)
        for node_id in node_ids:
            if node_id not in self._branches:
                self._add(self.root, node_id, Text(node_id), unfold_nodes)
        for node_id in {by_pid[pid].node_id for pid in by_pid.keys() - self._branches.keys()}:
            self._add_subtree(node_id, children)
        # 3. relabel what changed
        nodes_by_id = {n.id: n for n in nodes}
        total = Counter(p.node_id for p in processes)
        running = Counter(p.node_id for p in processes if p.status == "running")
        for node_id in node_ids:
            node, counts = nodes_by_id.get(node_id), (total[node_id], running[node_id])
            signature = node_signature(node, node_id, *counts)
            if self._shown.get(node_id) != signature:
                self._set_label(self._branches[node_id], node_label(node, node_id, *counts))
                self._shown[node_id] = signature
        self._relabelled = False
        folded = {node_id for node_id in node_ids if not self._branches[node_id].is_expanded}
        for pid, p in by_pid.items():
            if self._shown.get(pid) != process_signature(p):
                if p.node_id in folded:
                    self._stale_labels.add(pid)  # relabelled when its branch is unfolded
                else:
                    self._relabel_process(pid)
        if self._relabelled:
            self.refresh()  # a line's cache key holds its nodes' update counts: only they repaint

    def _set_label(self, branch: TreeNode[Key], label: Text) -> None:
        """TreeNode.set_label without its callback per label: with hundreds of labels changed in
        one refresh those callbacks were most of its cost. ``show`` repaints once instead."""
        branch._label = self.process_label(label)
        branch._updates += 1
        self._relabelled = True

    def _add(self, parent: TreeNode[Key], key: Key, label: Text, expand: bool) -> TreeNode[Key]:
        branch = parent.add(label, data=key, expand=expand, allow_expand=False)
        parent.allow_expand = True
        self._branches[key] = branch
        self._parent_of[key] = parent.data
        if isinstance(key, int):
            self._shown[key] = process_signature(self._processes[key])
        return branch

    def _add_subtree(self, parent_key: Key, children: dict[Key, list[int]]) -> None:
        stack = [parent_key]
        while stack:
            key = stack.pop()
            for pid in children.get(key, ()):
                if pid not in self._branches:
                    self._add(self._branches[key], pid, process_label(self._processes[pid]), True)
                stack.append(pid)

    def _drop(self, key: Key) -> None:
        branch = self._branches[key]
        pending = [branch]
        while pending:
            current = pending.pop()
            pending.extend(current.children)
            self._branches.pop(current.data, None)
            self._parent_of.pop(current.data, None)
            self._shown.pop(current.data, None)
            self._stale_labels.discard(current.data)
        parent = branch.parent
        branch.remove()
        if parent is not None and parent is not self.root and not parent.children:
            parent.allow_expand = False

    def _relabel_process(self, pid: int) -> None:
        branch = self._branches[pid]
        if not _visible(branch):
            self._stale_labels.add(pid)
            return
        p = self._processes[pid]
        self._set_label(branch, process_label(p))
        self._shown[pid] = process_signature(p)
        self._stale_labels.discard(pid)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Key]) -> None:
        self._relabelled = False
        pending = list(event.node.children)
        while pending:
            branch = pending.pop()
            if branch.data in self._stale_labels:
                self._relabel_process(branch.data)
            if branch.is_expanded:
                pending.extend(branch.children)
        if self._relabelled:
            self.refresh()


def _tree_shape(by_pid: dict[int, Process], node_ids: list[str]) -> tuple[dict[int, Key], dict[Key, list[int]]]:
    """Each process's parent key (its parent process on the same node, else its node) and the
    children of every key. A process on no path from a node (a parent cycle in bad data)
    hangs directly under its node."""
    def parent_of(p: Process) -> Key:
        parent = by_pid.get(p.parent_pid) if p.parent_pid is not None else None
        return parent.pid if parent is not None and parent.node_id == p.node_id else p.node_id

    wanted = {pid: parent_of(p) for pid, p in by_pid.items()}
    children: dict[Key, list[int]] = defaultdict(list)
    for pid, parent in wanted.items():
        children[parent].append(pid)
    reached: set[int] = set()
    pending: list[Key] = list(node_ids)
    while pending:
        for pid in children.get(pending.pop(), ()):
            reached.add(pid)
            pending.append(pid)
    for pid in by_pid.keys() - reached:
        children[wanted[pid]].remove(pid)
        wanted[pid] = by_pid[pid].node_id
        children[wanted[pid]].append(pid)
    return wanted, children


def _visible(branch: TreeNode) -> bool:
    """Every ancestor unfolded (the hidden root does not count: it shows its children anyway)."""
    parent = branch.parent
    while parent is not None and parent.parent is not None:
        if not parent.is_expanded:
            return False
        parent = parent.parent
    return True
