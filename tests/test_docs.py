"""The README and the docs/ pages: every link lands on a file (and heading) of the repository, every command names
a tool that exists, and the pages speak of the repository only (no paths outside it, no issue numbers)."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "tools" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page):
    """GitHub's anchors of the headings of a markdown page."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


def test_every_link_lands_on_a_file_and_heading():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_tool_a_page_runs_exists():
    missing = []
    for page in PAGES:
        text = page.read_text()
        for module in re.findall(r"python -m (tools(?:\.\w+)+)", text):
            path = REPO / module.replace(".", "/")
            if not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
                missing.append(f"{page.relative_to(REPO)}: {module}")
        for script in re.findall(r"(?:python|sh) (tools/[\w/]+\.(?:py|sh))", text):
            if not (REPO / script).is_file():
                missing.append(f"{page.relative_to(REPO)}: {script}")
    assert not missing, "\n".join(missing)


def test_pages_speak_of_the_repository_only():
    for page in PAGES:
        text = page.read_text()
        assert "../shared" not in text, page
        assert not re.search(r"\bissues? \d", text, re.IGNORECASE), page


def test_the_readme_is_an_entry_point():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 170
    for command in ("sh run_gs_occ.sh", "sh run_tests.sh"):
        assert command in text
    order = ["**Layout.**", "**Split.**", "**LiDAR depth**", "**Occ3D labels**", "**2D semantic pseudo-labels**",
             "**ImageNet weights**", "**Stage 1**", "**Stage 2**", "**Evaluate**", "**The authors' checkpoints**"]
    assert [text.index(step) for step in order] == sorted(text.index(step) for step in order)
