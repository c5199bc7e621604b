"""The README stays a first page and the docs site stays whole: files only, mkdocs is not run here
(CI builds the site with `mkdocs build --strict`, which checks every link and anchor)."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README_MAX_LINES = 300


class _ConfigLoader(yaml.SafeLoader):
    """mkdocs.yml may hold tags such as `!!python/name:` for Markdown extensions; the nav does
    not, so every tag reads as nothing here instead of building an object."""


# A multi-constructor for every prefix only meets tags that no plain constructor knows.
_ConfigLoader.add_multi_constructor("", lambda loader, suffix, node: None)


def _config() -> dict:
    return yaml.load((REPO / "mkdocs.yml").read_text(), Loader=_ConfigLoader)


def _nav_pages(entries: list) -> list[str]:
    """Every page path in a MkDocs nav: `- page.md`, `- Title: page.md`, `- Group: [...]`."""
    pages = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, list):
                pages += _nav_pages(value)
            elif not re.match(r"[a-z]+://", value):  # an external link is no page
                pages.append(value)
    return pages


def test_the_readme_is_a_first_page_of_at_most_300_lines() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_every_nav_page_exists_and_every_docs_page_is_in_the_nav() -> None:
    config = _config()
    assert config.get("docs_dir", "docs") == "docs"
    nav = _nav_pages(config["nav"])
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))

    assert sorted(set(nav)) == sorted(nav), "a page is listed twice in mkdocs.yml's nav"
    assert [page for page in nav if not (DOCS / page).is_file()] == []
    assert [page for page in on_disk if page not in nav] == []
    assert len(on_disk) >= 6


def test_the_readme_links_only_to_docs_pages_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links into docs/"
    assert [t for t in targets if not (REPO / t).is_file()] == []


def test_the_docs_show_the_example_sweep_as_it_is() -> None:
    page = (DOCS / "own-module.md").read_text()
    block = page.split("# examples/classifier.yaml\n", 1)[1].split("```", 1)[0]
    example = (REPO / "examples" / "classifier.yaml").read_text()
    assert yaml.safe_load(block) == yaml.safe_load(example)
