"""User-written Markdown (a project's long description) rendered to safe HTML.

Markdown is rendered first and the HTML sanitised after, with nh3 (Rust's ammonia): raw HTML in the
Markdown, `javascript:` links, event handlers and style attributes are all removed, whatever the
Markdown library lets through. Everything else users write is escaped by the templates as usual.
"""

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

TAGS = {
    "p", "br", "hr", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "a", "em", "strong", "code", "pre",
    "blockquote", "table", "thead", "tbody", "tr", "th", "td", "sup", "sub", "abbr",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> SafeString:
    """Markdown → sanitised HTML, safe to put in a page as it is. Headings start at h2 (the page has
    the h1); images are dropped (a tracking pixel or another site's image in a project page is not
    wanted, and the Content-Security-Policy would block it anyway)."""
    html = markdown.markdown(text or "", extensions=["tables", "sane_lists"], output_format="html")
    html = html.replace("<h1>", "<h2>").replace("</h1>", "</h2>")
    clean = nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return mark_safe(clean)  # nh3 allowed only the tags and attributes above
