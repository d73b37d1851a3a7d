"""The shape of the tree, checked: what import-linter cannot see (docs/architecture.md).

- No import inside a function unless a comment on that line (or the one above) says why it must
  be lazy: a lazy import is how cycles hid in this tree.
- The domain speaks domain words: no mj-proxy or TTAPI wire names in apps/tasks, apps/engines
  (except the mjproxy engine, which speaks to a midjourney-proxy server) or apps/billing.
- The import contracts themselves hold (``lint-imports``), so a plain pytest run catches a broken
  direction too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "apps"


def _sources(*folders: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "/migrations/" in rel or any(rel.startswith(s) for s in skip):
                continue
            files.append(path)
    return files


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []

    def reason(line: str) -> str:
        """The words of a line's comment, less lint pragmas (``noqa``, ``type: ignore``)."""
        if "#" not in line:
            return ""
        comment = line.split("#", 1)[1]
        comment = re.sub(r"noqa(:\s*[A-Z0-9, ]+)?|type:\s*ignore(\[[^\]]*\])?", "", comment)
        return comment.strip(" #")

    def explained(lineno: int) -> bool:
        said = reason(lines[lineno - 1])
        above = lineno - 2  # the comment block right above the import, if any
        while not said and above >= 0 and lines[above].strip().startswith("#"):
            block = [lines[above]]
            while above > 0 and lines[above - 1].strip().startswith("#"):
                above -= 1
                block.insert(0, lines[above])
            said = " ".join(reason(line) for line in block)
        if not said and above >= 0 and lines[above].strip().startswith(("from ", "import ")):
            # One comment may explain a run of imports right below it.
            return explained(above + 1)
        return len(said.split()) >= 3

    class Visitor(ast.NodeVisitor):
        depth = 0

        def _function(self, node: ast.AST) -> None:
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        visit_FunctionDef = _function
        visit_AsyncFunctionDef = _function

        def _import(self, node: ast.Import | ast.ImportFrom) -> None:
            if self.depth and not explained(node.lineno):
                found.append((node.lineno, lines[node.lineno - 1].strip()))

        visit_Import = _import
        visit_ImportFrom = _import

    Visitor().visit(tree)
    return found


def test_no_unexplained_function_level_imports() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{lineno}: {text}"
        for path in _sources(APPS)
        for lineno, text in _function_level_imports(path)
    ]
    assert offenders == [], (
        "Import at module level, or say in a comment why it must be lazy:\n" + "\n".join(offenders)
    )


#: Field and action names only a dialect uses on the wire (mj-proxy, TTAPI). Each dialect maps
#: domain names to these in apps/protocols/<dialect>/.
WIRE_NAMES = (
    "base64Array",
    "notifyHook",
    "customId",
    "maskBase64",
    "botType",
    "hookUrl",
    "upsample1",
    "variation1",
    "reroll0",
)
WIRE_PATTERN = re.compile("|".join(re.escape(name) for name in WIRE_NAMES))


#: Lines where an engine speaks its own upstream's wire and that upstream happens to use a
#: dialect's word: Midjourney's vary-region editor (``/inpaint/api/submit-job``) takes the
#: modal's id as ``customId``, and the fake Discord reads it the same way. Exact lines, so any
#: other use of the word in those files still fails.
UPSTREAM_WIRE_LINES = frozenset(
    {
        ("apps/engines/discord/engine.py", '"customId": modal.get("custom_id"),'),
        (
            "apps/engines/discord/fake/server.py",
            'token = str(body.get("customId", "")).removeprefix("MJ::iframe::")',
        ),
    }
)


def test_no_dialect_wire_names_in_the_domain() -> None:
    offenders = []
    for path in _sources(
        APPS / "tasks", APPS / "engines", APPS / "billing", skip=("apps/engines/mjproxy/",)
    ):
        rel = path.relative_to(ROOT).as_posix()
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if WIRE_PATTERN.search(line) and (rel, line.strip()) not in UPSTREAM_WIRE_LINES:
                offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert offenders == [], "Dialect wire names belong in apps/protocols:\n" + "\n".join(offenders)


def test_the_function_level_import_check_can_fail(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    import os\n    return os\n\n"
        "def g():\n    # lazy: the app registry is not ready yet\n    import sys\n    return sys\n"
        "def h():\n    import json  # noqa: F401\n    return json\n"
    )
    assert _function_level_imports(module) == [(2, "import os"), (10, "import json  # noqa: F401")]


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
