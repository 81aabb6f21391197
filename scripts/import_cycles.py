#!/usr/bin/env python3
"""Import circles between sibling modules of each crate of the workspace (src/ and
crates/*/src/; run by scripts/test.sh). Crates themselves cannot go round: Cargo refuses.

For every module, its children form a graph: A -> B when code in A's subtree names
B (`crate::…::B`, `super::B`, `self::B`, or a path through them), tests excluded (a
test reading its parent is no circle). A strongly connected set of two or more
siblings is a circle. The ones known today are listed in scripts/import_cycles.known
(one per line, members sorted, joined by " <-> "); a circle that is not within a listed
one fails, and a listed one that shrank or is gone is reported, so the list shrinks as
the house issue (#33) removes them.

    scripts/import_cycles.py            check
    scripts/import_cycles.py --write    rewrite the known list from the code
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Each crate's source root and the name its circles are reported under.
CRATES = [(ROOT / "src", "crate")] + [
    (src, "crate(" + src.parent.name + ")") for src in sorted(ROOT.glob("crates/*/src"))
]
KNOWN = ROOT / "scripts" / "import_cycles.known"


def module_of(path, src):
    """src/a/b.rs or src/a/b/mod.rs -> ("a", "b"); src/lib.rs, src/main.rs -> ()."""
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
        parts = parts[:-1]
    return tuple(parts)


def is_test(path, src):
    return path.name == "tests.rs" or "tests" in path.relative_to(src).parts[:-1]


PATH = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*?)\}", re.S)


def without_inline_tests(text):
    """`text` without its `#[cfg(test)] mod … { … }` blocks (braces matched)."""
    while (m := re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[:m.start()] + text[i:]
    return text


def named_paths(text):
    """Every crate/super/self path in `text`, brace groups expanded one level."""
    text = re.sub(r"//[^\n]*", "", text)
    text = without_inline_tests(text)
    out = [m.group(1) for m in PATH.finditer(text)]
    for m in GROUP.finditer(text):
        for item in m.group(2).split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and not item.startswith("{"):
                out.append(f"{m.group(1)}::{item}")
    return out


def resolve(module, is_mod_file, path):
    """The absolute module path (a tuple) a `crate::`/`super::`/`self::` path names."""
    parts = path.split("::")
    # In a.rs or a/mod.rs `self` is `a`; `super` is a's parent.
    base = list(module)
    head = parts.pop(0)
    if head == "crate":
        base = []
    elif head == "super":
        base = base[:-1]
        while parts and parts[0] == "super":
            parts.pop(0)
            base = base[:-1]
    return tuple(base + parts)


def graph(src):
    modules = {module_of(p, src) for p in src.rglob("*.rs")}
    edges = {}
    for path in src.rglob("*.rs"):
        if is_test(path, src):
            continue
        me = module_of(path, src)
        for named in named_paths(path.read_text()):
            target = resolve(me, path.name == "mod.rs", named)
            # The longest prefix that is a module.
            while target and target not in modules:
                target = target[:-1]
            if not target:
                continue
            # The siblings where the paths of `me` and `target` part.
            common = 0
            while common < min(len(me), len(target)) and me[common] == target[common]:
                common += 1
            if common == len(me) or common == len(target):
                continue  # one inside the other: a parent and its child
            parent = me[:common]
            a, b = me[common], target[common]
            edges.setdefault(parent, {}).setdefault(a, set()).add(b)
    return edges


def circles(edges, name="crate"):
    """Strongly connected sets of 2+ siblings, per parent (Tarjan)."""
    found = []
    for parent, g in edges.items():
        index, low, stack, on, counter = {}, {}, [], set(), [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in g.get(v, ()):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                scc = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    scc.append(w)
                    if w == v:
                        break
                if len(scc) > 1:
                    prefix = "::".join((name,) + parent)
                    found.append(" <-> ".join(f"{prefix}::{m}" for m in sorted(scc)))

        for v in sorted(g):
            if v not in index:
                visit(v)
    return sorted(found)


def main():
    found = sorted(c for src, name in CRATES for c in circles(graph(src), name))
    if "--write" in sys.argv:
        KNOWN.write_text("".join(f"{c}\n" for c in found))
        print(f"{len(found)} import circles written to {KNOWN.relative_to(ROOT)}")
        return
    known = [l for l in KNOWN.read_text().splitlines() if l and not l.startswith("#")]
    members = lambda circle: set(circle.split(" <-> "))
    # A circle within a known one (the same modules or fewer) is not new.
    new = [c for c in found if not any(members(c) <= members(k) for k in known)]
    shrunk = [k for k in known if k not in found]
    for k in shrunk:
        print(f"smaller or gone (rewrite the list: {pathlib.Path(__file__).name} --write): {k}")
    for c in new:
        print(f"NEW import circle: {c}")
    print(f"import circles: {len(found)} ({len(known)} known, {len(new)} new)")
    sys.exit(1 if new else 0)


if __name__ == "__main__":
    main()
