"""Structure numbers of a package: files, import edges and levels, function-local imports, longest functions.

    python scripts/structure_stats.py bptt_check          # module-level edges
    python scripts/structure_stats.py bptt_check --all    # function-local imports count as edges too

Edges are module-level imports of the package's own modules (TYPE_CHECKING blocks aside); the level
of a module is 1 + the deepest level among the modules it imports (a module importing nothing of the
package is level 1; modules in a cycle share one level). Function-local imports are imports of the
package's own modules made inside a function. Lengths are lines from ``def`` to the function's end.
"""

from __future__ import annotations

import ast
import os
import sys


def modules(root: str) -> dict[str, str]:
    pkg_parent = os.path.dirname(os.path.abspath(root))
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, pkg_parent)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def resolve(mods: dict[str, str], cur: str, node: ast.AST) -> list[str]:
    base = cur if mods[cur].endswith("__init__.py") else cur.rsplit(".", 1)[0]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            parts = base.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            target = ".".join(parts + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        found = []
        for a in node.names:
            full = f"{target}.{a.name}"
            found.append(full if full in mods else target)
        return [t for t in found if t in mods]
    return [a.name for a in node.names if a.name in mods]


def main(root: str, include_local: bool = False) -> None:
    mods = modules(root)
    pkg = os.path.basename(os.path.abspath(root))
    edges: dict[str, set[str]] = {m: set() for m in mods}
    local: list[str] = []
    lengths: list[tuple[int, str]] = []
    for m, path in mods.items():
        tree = ast.parse(open(path, encoding="utf-8").read())

        def walk(node: ast.AST, in_func: bool, in_tc: bool, m: str = m) -> None:
            for ch in ast.iter_child_nodes(node):
                func = isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                tc = in_tc or (isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test))
                if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lengths.append((ch.end_lineno - ch.lineno + 1, f"{m}.{ch.name}"))
                if isinstance(ch, (ast.Import, ast.ImportFrom)):
                    targets = [t for t in resolve(mods, m, ch) if t.split(".")[0] == pkg and t != m]
                    if targets and in_func:
                        local.append(f"{m}:{ch.lineno}")
                    if targets and not in_tc and (include_local or not in_func):
                        edges[m].update(t for t in targets if t != pkg)
                walk(ch, in_func or func, tc)

        walk(tree, False, False)
    # levels over the condensation (cycles share a level)
    level: dict[str, int] = {}

    def lvl(m: str, stack: tuple[str, ...] = ()) -> int:
        if m in level:
            return level[m]
        if m in stack:
            return 0
        deps = [lvl(d, stack + (m,)) for d in edges[m] if d != m]
        level[m] = 1 + max(deps, default=0)
        return level[m]

    for m in mods:
        lvl(m)
    n_edges = sum(len(v) for v in edges.values())
    print(f"files: {len(mods)}")
    print(f"import levels: {max(level.values(), default=0)}")
    print(f"import edges: {n_edges}")
    print(f"function-local imports of own modules: {len(local)}")
    print("ten longest functions:")
    for n, name in sorted(lengths, reverse=True)[:10]:
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--all"]
    main(args[0] if args else "bptt_check", include_local="--all" in sys.argv)
