"""The documentation a newcomer walks (issue 12): a short README, links that resolve, every variable named.

Pure file reading, no processes: the README has at most 250 lines and a table of contents listing each
of its `##` headings; every relative link of the README, `docs/*.md`, `bench/README.md` and
`tests/README.md` names an existing file, and every `#anchor` a heading of its target (anchors computed
the way GitHub computes them); every environment variable `receiver/config.py` (or its value readers,
`receiver/config_values.py`) reads is documented in README.md or docs/operations.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from receiver import config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 250
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md", ROOT / "tests" / "README.md"]
# The modules that read environment variables: the settings, and the typed readers they use.
CONFIG_MODULES = [ROOT / "receiver" / "config.py", ROOT / "receiver" / "config_values.py"]

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and [text](target "title"); images too. Not inside inline code (stripped first).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with their 1-based numbers."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, underscores, hyphens, spaces
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a file's headings, numbered like GitHub numbers repeated ones (-1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link outside code."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            found.append((number, target))
    return found


def broken_links(path: Path) -> list[str]:
    """What is wrong with each relative link of one file: a missing file, or an anchor no heading has."""
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not destination.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor:
            if destination.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif unquote(anchor).lower() not in anchors(destination):
                problems.append(f"{where}: no heading has this anchor")
    return problems


def test_the_docs_exist():
    for path in DOCS:
        assert path.is_file(), path
    names = {p.name for p in DOCS}
    assert {"architecture.md", "operations.md", "consumers.md", "security.md", "realworld.md"} <= names


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, at most {README_MAX_LINES}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert links(path) or path.name == "realworld.md", f"{path} links nowhere"
    assert broken_links(path) == []


def test_readme_contents_list_every_section():
    text = README.read_text(encoding="utf-8")
    sections = [m.group(2) for _, line in prose_lines(text) if (m := HEADING.match(line)) and m.group(1) == "##"]
    assert "Contents" in sections, "README.md has no ## Contents"
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = {target.lstrip("#") for target in LINK.findall(contents) if target.startswith("#")}
    missing = [s for s in sections if s != "Contents" and github_anchor(s) not in listed]
    assert missing == [], f"sections missing from the README's contents: {missing}"
    # The contents come first: nothing but the title and the pitch before them.
    assert sections[0] == "Contents"


def config_variables() -> set[str]:
    """Every variable `CONFIG_MODULES` read: the first argument of each `reader.<kind>(...)` call.

    f-strings over the products (`f"{p.upper()}_ALLOW_UNSIGNED"`) are expanded for each product; the
    rate-limit variables, built from `DEFAULT_RATE_LIMITS`, are expanded from it.
    """
    names: set[str] = set()
    for module in CONFIG_MODULES:
        names.update(_variables_read_by(module))
    return names


def _variables_read_by(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id.startswith("reader")
            and node.args
        ):
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
        elif isinstance(first, ast.JoinedStr):
            for product in config.PRODUCTS:
                parts = []
                for value in first.values:
                    if isinstance(value, ast.Constant):
                        parts.append(value.value)
                    else:
                        assert ast.unparse(value.value) == "p.upper()", ast.unparse(first)
                        parts.append(product.upper())
                names.add("".join(parts))
        elif isinstance(first, ast.Name) and first.id == "name":
            # _rate_limits: RATE_LIMIT_<SERVICE>_<ACTION> for each known action.
            names.update(f"RATE_LIMIT_{s.upper()}_{a.upper()}" for s, a in config.DEFAULT_RATE_LIMITS)
        else:
            raise AssertionError(f"{module.relative_to(ROOT)} line {node.lineno}: a variable this test cannot read")
    return names


def documented(name: str, text: str) -> bool:
    if name.startswith("RATE_LIMIT_"):
        # Documented as the pattern, with each known action named in its row.
        service, action = next(
            (s, a) for s, a in config.DEFAULT_RATE_LIMITS if name == f"RATE_LIMIT_{s.upper()}_{a.upper()}"
        )
        row = next((line for line in text.splitlines() if "`RATE_LIMIT_<SERVICE>_<ACTION>`" in line), "")
        return f"{service.upper()} " in row and f"`{action}`" in row
    return re.search(rf"`{re.escape(name)}`", text) is not None


def test_every_configuration_variable_is_documented():
    names = config_variables()
    assert {"INBOX_URL", "MPS_ALLOW_UNSIGNED", "TENCENTCLOUD_AMS_ENDPOINT", "RATE_LIMIT_AMS_DESCRIBETASKS"} <= names
    text = README.read_text(encoding="utf-8") + (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if not documented(n, text))
    assert missing == [], f"read by receiver/config*.py, named in neither README.md nor docs/operations.md: {missing}"


def test_anchors_are_computed_like_github():
    assert github_anchor("What a forged callback can and cannot do") == "what-a-forged-callback-can-and-cannot-do"
    assert github_anchor("IAM, least privilege") == "iam-least-privilege"
    assert github_anchor("Hostile callbacks (issue 9)") == "hostile-callbacks-issue-9"
    assert github_anchor("What `make test` covers") == "what-make-test-covers"
    assert github_anchor("The intake against a bare Flask app") == "the-intake-against-a-bare-flask-app"
