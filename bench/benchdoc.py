"""docs/benchmarks.md is shared by every benchmark: each one replaces only its own '## ' section."""

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def replace_section(heading: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section `heading` of `doc`, leaving the other sections alone.

    `body` may start with the heading itself; it is not repeated.
    """
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    body_lines = body.strip("\n").splitlines()
    if body_lines and body_lines[0].strip() == heading:
        body_lines = body_lines[1:]
    while body_lines and not body_lines[0].strip():
        body_lines.pop(0)
    block = [heading, "", *body_lines, ""]
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *block]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines).rstrip("\n") + "\n")
