"""Read a rendered admin form back into POST data, the way a browser would submit it."""

from __future__ import annotations

from html.parser import HTMLParser


class _FormParser(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.in_form = False
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._select_multiple = False
        self._select_values: list[str] = []
        self._first_option: str | None = None
        self._textarea: str | None = None
        self._text: list[str] = []

    def _add(self, name: str, value: str) -> None:
        self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.in_form = True
            return
        if not self.in_form:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in {"submit", "button", "image", "file", "reset"}:
                return
            if kind in {"checkbox", "radio"}:
                if "checked" in a:
                    self._add(name, a.get("value") or "on")
                return
            self._add(name, a.get("value", ""))
        elif tag == "select" and name:
            self._select = name
            self._select_multiple = "multiple" in a
            self._select_values = []
            self._first_option = None
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in a:
                self._select_values.append(value)
        elif tag == "textarea" and name:
            self._textarea = name
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.in_form:
            self.in_form = False
        elif tag == "select" and self._select is not None:
            values = self._select_values
            if not values and not self._select_multiple and self._first_option is not None:
                values = [self._first_option]
            for value in values:
                self._add(self._select, value)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self._add(self._textarea, "".join(self._text).lstrip("\n"))
            self._textarea = None


def form_data(html: str, form_id: str) -> dict[str, list[str]]:
    parser = _FormParser(form_id)
    parser.feed(html)
    assert parser.data, f"no form with id {form_id!r} found"
    return parser.data
