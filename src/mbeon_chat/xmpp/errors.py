"""Stream and stanza error conditions (RFC 6120 4.9.3 and 8.3.3), and the exceptions that carry them."""

from __future__ import annotations

from enum import StrEnum

from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element


class StreamCondition(StrEnum):
    BAD_FORMAT = "bad-format"
    BAD_NAMESPACE_PREFIX = "bad-namespace-prefix"
    CONFLICT = "conflict"
    CONNECTION_TIMEOUT = "connection-timeout"
    HOST_GONE = "host-gone"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    INVALID_FROM = "invalid-from"
    INVALID_NAMESPACE = "invalid-namespace"
    INVALID_XML = "invalid-xml"
    NOT_AUTHORIZED = "not-authorized"
    NOT_WELL_FORMED = "not-well-formed"
    POLICY_VIOLATION = "policy-violation"
    REMOTE_CONNECTION_FAILED = "remote-connection-failed"
    RESET = "reset"
    RESOURCE_CONSTRAINT = "resource-constraint"
    RESTRICTED_XML = "restricted-xml"
    SEE_OTHER_HOST = "see-other-host"
    SYSTEM_SHUTDOWN = "system-shutdown"
    UNDEFINED_CONDITION = "undefined-condition"
    UNSUPPORTED_ENCODING = "unsupported-encoding"
    UNSUPPORTED_FEATURE = "unsupported-feature"
    UNSUPPORTED_STANZA_TYPE = "unsupported-stanza-type"
    UNSUPPORTED_VERSION = "unsupported-version"


class StanzaCondition(StrEnum):
    BAD_REQUEST = "bad-request"
    CONFLICT = "conflict"
    FEATURE_NOT_IMPLEMENTED = "feature-not-implemented"
    FORBIDDEN = "forbidden"
    GONE = "gone"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    ITEM_NOT_FOUND = "item-not-found"
    JID_MALFORMED = "jid-malformed"
    NOT_ACCEPTABLE = "not-acceptable"
    NOT_ALLOWED = "not-allowed"
    NOT_AUTHORIZED = "not-authorized"
    POLICY_VIOLATION = "policy-violation"
    RECIPIENT_UNAVAILABLE = "recipient-unavailable"
    REDIRECT = "redirect"
    REGISTRATION_REQUIRED = "registration-required"
    REMOTE_SERVER_NOT_FOUND = "remote-server-not-found"
    REMOTE_SERVER_TIMEOUT = "remote-server-timeout"
    RESOURCE_CONSTRAINT = "resource-constraint"
    SERVICE_UNAVAILABLE = "service-unavailable"
    SUBSCRIPTION_REQUIRED = "subscription-required"
    UNDEFINED_CONDITION = "undefined-condition"
    UNEXPECTED_REQUEST = "unexpected-request"


# RFC 6120 8.3.2 / 8.3.3: the usual error type for each condition.
_DEFAULT_TYPE: dict[StanzaCondition, str] = {
    StanzaCondition.BAD_REQUEST: "modify",
    StanzaCondition.CONFLICT: "cancel",
    StanzaCondition.FEATURE_NOT_IMPLEMENTED: "cancel",
    StanzaCondition.FORBIDDEN: "auth",
    StanzaCondition.GONE: "cancel",
    StanzaCondition.INTERNAL_SERVER_ERROR: "cancel",
    StanzaCondition.ITEM_NOT_FOUND: "cancel",
    StanzaCondition.JID_MALFORMED: "modify",
    StanzaCondition.NOT_ACCEPTABLE: "modify",
    StanzaCondition.NOT_ALLOWED: "cancel",
    StanzaCondition.NOT_AUTHORIZED: "auth",
    StanzaCondition.POLICY_VIOLATION: "modify",
    StanzaCondition.RECIPIENT_UNAVAILABLE: "wait",
    StanzaCondition.REDIRECT: "modify",
    StanzaCondition.REGISTRATION_REQUIRED: "auth",
    StanzaCondition.REMOTE_SERVER_NOT_FOUND: "cancel",
    StanzaCondition.REMOTE_SERVER_TIMEOUT: "wait",
    StanzaCondition.RESOURCE_CONSTRAINT: "wait",
    StanzaCondition.SERVICE_UNAVAILABLE: "cancel",
    StanzaCondition.SUBSCRIPTION_REQUIRED: "auth",
    StanzaCondition.UNDEFINED_CONDITION: "cancel",
    StanzaCondition.UNEXPECTED_REQUEST: "wait",
}


class StreamError(Exception):
    """A peer violated the stream: send this condition, then close the stream."""

    def __init__(self, condition: StreamCondition, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else str(condition))
        self.condition = condition
        self.text = text

    def to_element(self) -> Element:
        el = Element("{%s}error" % ns.STREAMS)
        el.add("{%s}%s" % (ns.STREAM_ERRORS, self.condition))
        if self.text:
            el.add("{%s}text" % ns.STREAM_ERRORS, {"{%s}lang" % ns.XML: "en"}, self.text)
        return el


class StanzaError(Exception):
    """Raised by handlers; the router turns it into the error reply (RFC 6120 8.3)."""

    def __init__(
        self,
        condition: StanzaCondition,
        text: str | None = None,
        error_type: str | None = None,
        app_condition: Element | None = None,
    ) -> None:
        super().__init__(f"{condition}: {text}" if text else str(condition))
        self.condition = condition
        self.text = text
        self.error_type = error_type or _DEFAULT_TYPE.get(condition, "cancel")
        self.app_condition = app_condition

    def to_element(self, by: str | None = None) -> Element:
        el = Element("{%s}error" % ns.CLIENT, {"type": self.error_type})
        if by:
            el.attrs["by"] = by
        el.add("{%s}%s" % (ns.STANZA_ERRORS, self.condition))
        if self.text:
            el.add("{%s}text" % ns.STANZA_ERRORS, {"{%s}lang" % ns.XML: "en"}, self.text)
        if self.app_condition is not None:
            el.append(self.app_condition)
        return el
