"""What the edge refuses before a resource sees it: text that no layer can store or answer with.

- JSON and form bodies (the app's media handlers, ``install``): a string, object key or
  form field holding NUL (PostgreSQL text cannot store it) or an unpaired UTF-16 surrogate
  (``"\\ud800"`` parses, but can be neither stored nor written back as UTF-8) is
  ``400 INVALID_REQUEST`` with one ``details`` entry per offending field (dotted path:
  ``nested.list.1``), before anything is validated, priced or charged. Query strings and
  form fields cannot carry surrogates: percent-decoding turns invalid UTF-8 into U+FFFD.
- Path and query parameters (``refuse_bad_params``, run by ``middleware.EdgeParams``): a
  control character in a path parameter (every id is printable) is ``404 NOT_FOUND``; in a
  query parameter, NUL and the C0 controls other than tab, line feed and carriage return
  (and DEL) are ``400 INVALID_REQUEST`` naming the parameter.
"""

from __future__ import annotations

import json
import re

import falcon
from falcon.media import JSONHandler, URLEncodedFormHandler

from core.errors import InvalidRequest, NotFound

SURROGATE = re.compile("[\ud800-\udfff]")
PATH_CONTROL = re.compile("[\x00-\x1f\x7f]")  # no id, name or file name holds one
QUERY_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, LF, CR are free text
MAX_DETAILS = 20

NUL_PROBLEM = "must not contain NUL"
SURROGATE_PROBLEM = "must not contain unpaired UTF-16 surrogates"


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or answered with, else None."""
    if "\x00" in text:
        return NUL_PROBLEM
    if SURROGATE.search(text):  # json.loads pairs valid surrogates into one code point
        return SURROGATE_PROBLEM
    return None


def _label(key) -> str:
    """A field name safe to put back in a response (surrogates written as ``\\udxxx``)."""
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def bad_strings(value, limit: int = MAX_DETAILS) -> list[dict]:
    """``{field, problem}`` for each string or object key, at any depth, that
    ``text_problem`` refuses, in document order (at most ``limit``).

    Iterative, so a deeply nested value cannot exhaust the stack."""
    details = []
    stack = [("", value)]
    while stack and len(details) < limit:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                details.append({"field": path or "body", "problem": problem})
            continue
        if isinstance(item, dict):
            pairs = item.items()
        elif isinstance(item, list | tuple):
            pairs = enumerate(item)
        else:
            continue
        children = []
        for key, child in pairs:
            here = f"{path}.{_label(key)}" if path else _label(key)
            problem = text_problem(key) if isinstance(key, str) else None
            if problem:
                details.append({"field": here, "problem": problem})
                continue
            children.append((here, child))
        stack.extend(reversed(children))
    return details[:limit]


def refuse_bad_strings(value) -> None:
    details = bad_strings(value)
    if details:
        raise InvalidRequest("Text must not contain NUL characters or unpaired UTF-16 "
                             "surrogates", details=details)


def strict_loads(text):
    """``json.loads`` that refuses NUL and unpaired surrogates anywhere in the document."""
    value = json.loads(text)
    refuse_bad_strings(value)
    return value


class StrictFormHandler(URLEncodedFormHandler):
    """Falcon's form handler, refusing NUL in any field name or value."""

    def _deserialize(self, body: bytes):
        form = super()._deserialize(body)
        refuse_bad_strings(form)
        return form


def install(app: falcon.App) -> None:
    """Parse every JSON and form body through the strict handlers above."""
    app.req_options.media_handlers[falcon.MEDIA_JSON] = JSONHandler(loads=strict_loads)
    app.req_options.media_handlers[falcon.MEDIA_URLENCODED] = StrictFormHandler()


def refuse_bad_params(req, params) -> None:
    """404 for a control character in a path parameter, 400 for one in a query parameter."""
    for value in (params or {}).values():
        if isinstance(value, str) and PATH_CONTROL.search(value):
            raise NotFound("No such resource")
    for name, value in req.params.items():
        values = value if isinstance(value, list) else [value]
        if PATH_CONTROL.search(name) or any(
                isinstance(v, str) and QUERY_CONTROL.search(v) for v in values):
            field = _label(name)
            raise InvalidRequest(f"Query parameter {field!r} must not contain control "
                                 "characters",
                                 details=[{"field": field,
                                           "problem": "must not contain control characters"}])
