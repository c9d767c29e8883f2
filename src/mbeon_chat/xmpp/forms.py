"""XEP-0004: Data Forms, built and parsed as plain values (pure: no I/O).

Build a form to send::

    form = Form("form", title="Reload", instructions="Pick a plugin")
    form.add_field("plugin", "list-single", label="Plugin", options=[("All", ""), ("ping", "ping")])
    el = form.to_element()

Read what a client submitted::

    submitted = Form.parse(el)          # Form.from_parent(command_el) finds the <x/> child
    submitted.get("plugin")             # first value or None
    submitted.values()                  # {"plugin": ["ping"]}

A result table uses ``reported`` columns and ``add_item`` rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element

_NS = "{" + ns.DATA_FORMS + "}"
X = _NS + "x"
FIELD = _NS + "field"
VALUE = _NS + "value"
OPTION = _NS + "option"
TITLE = _NS + "title"
INSTRUCTIONS = _NS + "instructions"
REQUIRED = _NS + "required"
DESC = _NS + "desc"
REPORTED = _NS + "reported"
ITEM = _NS + "item"

FORM_TYPES = frozenset({"form", "submit", "cancel", "result"})
FIELD_TYPES = frozenset(
    {
        "boolean",
        "fixed",
        "hidden",
        "jid-multi",
        "jid-single",
        "list-multi",
        "list-single",
        "text-multi",
        "text-private",
        "text-single",
    }
)


class FormError(ValueError):
    """The element is not a valid data form."""


@dataclass
class Field:
    var: str | None
    type: str | None = "text-single"
    label: str | None = None
    values: list[str] = field(default_factory=list)
    options: list[tuple[str | None, str]] = field(default_factory=list)  # (label, value)
    required: bool = False
    desc: str | None = None

    @property
    def value(self) -> str | None:
        return self.values[0] if self.values else None

    def to_element(self) -> Element:
        attrs: dict[str, str] = {}
        if self.var is not None:
            attrs["var"] = self.var
        if self.type is not None:
            attrs["type"] = self.type
        if self.label is not None:
            attrs["label"] = self.label
        el = Element(FIELD, attrs)
        if self.desc:
            el.add(DESC, None, self.desc)
        if self.required:
            el.add(REQUIRED)
        for value in self.values:
            el.add(VALUE, None, value)
        for label, value in self.options:
            opt = el.add(OPTION, {"label": label} if label is not None else None)
            opt.add(VALUE, None, value)
        return el

    @classmethod
    def parse(cls, el: Element) -> Field:
        options: list[tuple[str | None, str]] = []
        for opt in el.findall(OPTION):
            options.append((opt.get("label"), opt.findtext(VALUE) or ""))
        return cls(
            var=el.get("var"),
            type=el.get("type"),
            label=el.get("label"),
            values=[v.text for v in el.findall(VALUE)],
            options=options,
            required=el.find(REQUIRED) is not None,
            desc=el.findtext(DESC),
        )


def _as_values(value: str | bool | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool):
        return ["1" if value else "0"]
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


@dataclass
class Form:
    type: str = "form"
    title: str | None = None
    instructions: str | None = None
    fields: list[Field] = field(default_factory=list)
    reported: list[Field] = field(default_factory=list)
    items: list[list[Field]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.type not in FORM_TYPES:
            raise FormError(f"unknown form type {self.type!r}")

    # --- building --------------------------------------------------------------------------------
    def add_field(
        self,
        var: str | None,
        type_: str | None = "text-single",
        *,
        label: str | None = None,
        value: str | bool | Iterable[str] | None = None,
        options: Sequence[tuple[str | None, str] | str] = (),
        required: bool = False,
        desc: str | None = None,
    ) -> Form:
        """Append a field; ``options`` are values or (label, value) pairs. Returns the form (chainable)."""
        if type_ is not None and type_ not in FIELD_TYPES:
            raise FormError(f"unknown field type {type_!r}")
        opts = [(None, o) if isinstance(o, str) else o for o in options]
        self.fields.append(Field(var, type_, label, _as_values(value), opts, required, desc))
        return self

    def set_reported(self, *columns: tuple[str, str | None] | str) -> Form:
        """Columns of a result table: ``var`` or ``(var, label)``."""
        self.reported = [Field(c, None) if isinstance(c, str) else Field(c[0], None, c[1]) for c in columns]
        return self

    def add_item(self, row: dict[str, str | Iterable[str] | None]) -> Form:
        self.items.append([Field(var, None, None, _as_values(value)) for var, value in row.items()])
        return self

    def to_element(self) -> Element:
        el = Element(X, {"type": self.type})
        if self.title:
            el.add(TITLE, None, self.title)
        if self.instructions:
            for line in self.instructions.split("\n"):
                el.add(INSTRUCTIONS, None, line)
        if self.reported:
            rep = el.add(REPORTED)
            for f in self.reported:
                rep.append(f.to_element())
            for row in self.items:
                item = el.add(ITEM)
                for f in row:
                    item.append(f.to_element())
        for f in self.fields:
            el.append(f.to_element())
        return el

    # --- reading ---------------------------------------------------------------------------------
    @classmethod
    def parse(cls, el: Element) -> Form:
        if el.tag != X:
            raise FormError(f"not a data form: {el.tag}")
        type_ = el.get("type") or ""
        if type_ not in FORM_TYPES:
            raise FormError(f"unknown form type {type_!r}")
        instructions = [i.text for i in el.findall(INSTRUCTIONS)]
        form = cls(type_, el.findtext(TITLE), "\n".join(instructions) if instructions else None)
        form.fields = [Field.parse(f) for f in el.findall(FIELD)]
        rep = el.find(REPORTED)
        if rep is not None:
            form.reported = [Field.parse(f) for f in rep.findall(FIELD)]
        form.items = [[Field.parse(f) for f in item.findall(FIELD)] for item in el.findall(ITEM)]
        return form

    @classmethod
    def from_parent(cls, parent: Element) -> Form | None:
        """The first data form among ``parent``'s children, or None."""
        child = parent.find(X)
        return cls.parse(child) if child is not None else None

    def get_field(self, var: str) -> Field | None:
        for f in self.fields:
            if f.var == var:
                return f
        return None

    def get(self, var: str, default: str | None = None) -> str | None:
        f = self.get_field(var)
        return f.value if f is not None and f.values else default

    def get_bool(self, var: str, default: bool = False) -> bool:
        value = self.get(var)
        return default if value is None else value in ("1", "true")

    def values(self) -> dict[str, list[str]]:
        """Submitted values by field ``var`` (fields without a var are skipped)."""
        return {f.var: list(f.values) for f in self.fields if f.var is not None}

    @property
    def form_type(self) -> str | None:
        """The FORM_TYPE hidden field (XEP-0068), if any."""
        return self.get("FORM_TYPE")
