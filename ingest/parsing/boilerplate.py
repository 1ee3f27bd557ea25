"""What an HTML page holds besides its content: navigation, sidebars, tables of contents,
headers and footers. Indexed, they become passages that match every question about the
site (a Sphinx sidebar's table of contents ranked first for "What is a list
comprehension?") and repeat on every page.

Two steps, both on the parsed tree before any text is read:
1. The content root: the element that generators put the page's own text in, when the
   page has exactly one — `<main>`, `role="main"`, `<article>` alone, or a generator's own
   container (Sphinx `div.body`, MediaWiki `#mw-content-text`, Confluence `#main-content`,
   Javadoc `main`/`.contentContainer`, Docusaurus `article`). The heading above it (the
   page title in `<h1>` outside it) is kept.
2. Inside what is left, elements that are navigation by their tag or role (`nav`,
   `aside`, `role=navigation|banner|contentinfo|complementary|search`) or by the class
   and id names the common generators use (below), and page-level `header`/`footer`.

A page that matches nothing is read whole, as before.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, Tag

# Containers of the page's own text, in order of preference.
CONTENT_ROOTS = (
    "main",
    "[role=main]",
    "#mw-content-text",  # MediaWiki
    "#main-content",  # Confluence export
    "div.body",  # Sphinx (classic, alabaster, nature, pydoctheme)
    "div.document",  # Sphinx, older themes
    ".contentContainer",  # Javadoc 8
    "article",  # Docusaurus, many blogs (only when the page has exactly one)
)

_NAV_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menubar"}
# Class or id names (whole, case-insensitive) of navigation in the common generators:
# Sphinx, Javadoc, MediaWiki, Confluence, Docusaurus, MkDocs, Read the Docs.
_NAV_NAMES = re.compile(
    r"^(?:sphinxsidebar|sphinxsidebarwrapper|related|footer|headerlink|hash-link|"  # Sphinx
    r"topnav|bottomnav|subnav|navlist|subnavlist|fixednav|navbarcell1rev|legalcopy|"
    r"skipnav|top-nav|sub-nav|flex-header|"  # Javadoc
    r"mw-navigation|mw-panel|mw-head|mw-editsection|mw-jump-link|catlinks|printfooter|"
    r"navbox|toc|toctitle|sitesub|contentsub|jump-to-nav|siteNotice|mw-indicators|"  # MediaWiki
    r"breadcrumb-section|breadcrumbs|page-metadata|footer-body|navigation|"  # Confluence
    r"navbar|theme-doc-sidebar-container|theme-doc-toc-desktop|theme-doc-toc-mobile|"
    r"table-of-contents|pagination-nav|theme-edit-this-page|theme-doc-footer|"  # Docusaurus
    r"md-header|md-sidebar|md-footer|wy-nav-side|rst-versions|rst-footer-buttons|"  # MkDocs
    r"sidebar|skip-link|skip-to-content)$",
    re.IGNORECASE,
)


def _names(tag: Tag) -> list[str]:
    classes = tag.get("class") or []
    if isinstance(classes, str):
        classes = classes.split()
    ident = tag.get("id")
    return [*classes, *([ident] if isinstance(ident, str) else [])]


def _is_navigation(tag: Tag) -> bool:
    if tag.name in ("nav", "aside"):
        return True
    role = tag.get("role")
    if isinstance(role, str) and role.lower() in _NAV_ROLES:
        return True
    return any(_NAV_NAMES.match(name) for name in _names(tag))


def content_root(soup: BeautifulSoup) -> Tag | None:
    """The one element holding the page's own text, or None (read the whole page)."""
    for selector in CONTENT_ROOTS:
        found = soup.select(selector)
        if len(found) == 1 and found[0].get_text(strip=True):
            return found[0]
    return None


def strip_boilerplate(soup: BeautifulSoup) -> Tag:
    """The page's content, navigation removed; returns the element to read text from."""
    root = content_root(soup)
    if root is not None:
        title = _title_outside(soup, root)
        for tag in [t for t in root.find_all(True) if _is_navigation(t)]:
            if not tag.decomposed:
                tag.decompose()
        if title is not None:
            root.insert(0, title)
        return root
    body = soup.body or soup
    for tag in [t for t in body.find_all(True) if _is_navigation(t) or _page_edge(t)]:
        if not tag.decomposed:
            tag.decompose()
    return body


def _title_outside(soup: BeautifulSoup, root: Tag) -> Tag | None:
    """The page's `<h1>` when the content root does not hold one (Javadoc, Docusaurus and
    MediaWiki put the title just above their content container)."""
    if root.find("h1") is not None:
        return None
    h1 = soup.find("h1")
    if h1 is None or _inside_navigation(h1):
        return None
    return h1.extract()


def _inside_navigation(tag: Tag) -> bool:
    return any(isinstance(p, Tag) and _is_navigation(p) for p in tag.parents)


def _page_edge(tag: Tag) -> bool:
    """A page-level `<header>` or `<footer>` (not one inside an article or section)."""
    if tag.name not in ("header", "footer"):
        return False
    return not any(p.name in ("article", "section", "main") for p in tag.parents)
