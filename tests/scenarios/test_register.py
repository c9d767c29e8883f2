"""In-band registration (XEP-0077): off by default; when on, new accounts, password changes, removal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from test_stream_raw import RawClient, available_plugins, client_options, overrides

from clients import Client, connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat.xmpp import ns

REGISTER_FEATURE = f"{{{ns.REGISTER_FEATURE}}}register"
R = f"{{{ns.REGISTER}}}"
STANZA_ERRORS = f"{{{ns.STANZA_ERRORS}}}"


def registration_on(**register_options: Any) -> dict[str, Any]:
    plugins: dict[str, Any] = {"enabled": available_plugins()}
    if register_options:
        plugins["register"] = register_options
    return overrides(auth={"allow_registration": True}, plugins=plugins)


def register_iq(username: str | None, password: str | None, iq_id: str = "reg1") -> bytes:
    fields = ""
    if username is not None:
        fields += f"<username>{username}</username>"
    if password is not None:
        fields += f"<password>{password}</password>"
    return f"<iq type='set' id='{iq_id}'><query xmlns='{ns.REGISTER}'>{fields}</query></iq>".encode()


def error_condition(iq: Any) -> str:
    assert iq.get("type") == "error", iq
    error = iq.find("{jabber:client}error")
    return next(c.local for c in error.elements() if c.tag.startswith(STANZA_ERRORS) and c.local != "text")


class RegisteringClient(Client):
    """slixmpp with XEP-0077: fills in the registration form, then logs in with the new account."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0066")
        self.register_plugin("xep_0077")
        self.form: Any = None
        self.add_event_handler("register", self._register)

    async def _register(self, form: Any) -> None:
        self.form = form
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        await iq.send(timeout=10)


async def register_with_slixmpp(srv: RunningServer, user: str, password: str) -> RegisteringClient:
    client = RegisteringClient(f"{user}@{srv.domain}/new", password)
    client.ssl_context = srv.client_ssl()
    client.enable_plaintext = False
    client.connect(host="127.0.0.1", port=srv.starttls_port)
    assert await asyncio.wait_for(client.session_started, 15), "login after registration failed"
    return client


# --- off by default ---------------------------------------------------------------------------------
async def test_registration_is_not_offered_by_default(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        assert srv.app.config.auth.allow_registration is False
        client = await RawClient.open(srv, starttls=False)
        before_tls = await client.open_stream()
        assert before_tls.find(REGISTER_FEATURE) is None
        client.close()
        client = await RawClient.open(srv)  # features after STARTTLS
        assert client.features is not None and client.features.find(REGISTER_FEATURE) is None
        client.send(register_iq("mallory", "mallory-password"))
        assert await client.stream_error() == "not-authorized"
        assert not await srv.app.ctx.accounts.exists("mallory")


# --- creating accounts ------------------------------------------------------------------------------
async def test_a_registered_account_can_log_in(tmp_path: Any) -> None:
    async with running_server(tmp_path, registration_on()) as srv:
        newbie = await register_with_slixmpp(srv, "dora", "dora-password-1")
        try:
            assert str(newbie.boundjid.bare) == srv.jid("dora")
            assert newbie.form["register"]["instructions"]
            assert await srv.app.ctx.accounts.exists("dora")
        finally:
            await disconnect(newbie)
        again = await connect(srv, "dora", password="dora-password-1", **client_options())
        await disconnect(again)


async def test_registration_is_offered_only_after_tls(tmp_path: Any) -> None:
    async with running_server(tmp_path, registration_on()) as srv:
        client = await RawClient.open(srv, starttls=False)
        assert (await client.open_stream()).find(REGISTER_FEATURE) is None
        client.close()
        client = await RawClient.open(srv)
        assert client.features is not None and client.features.find(REGISTER_FEATURE) is not None
        client.close()


async def test_the_form_asks_for_username_and_password(tmp_path: Any) -> None:
    async with running_server(tmp_path, registration_on()) as srv:
        client = await RawClient.open(srv)
        client.send(f"<iq type='get' id='f1'><query xmlns='{ns.REGISTER}'/></iq>".encode())
        form = await client.next()
        assert (form.get("type"), form.get("id")) == ("result", "f1")
        query = form.find(R + "query")
        assert query is not None
        assert query.find(R + "username") is not None and query.find(R + "password") is not None
        assert query.findtext(R + "instructions")
        client.close()


@pytest.mark.parametrize(
    ("username", "password", "condition"),
    [
        ("alice", "long-enough-password", "conflict"),
        ("ALICE", "long-enough-password", "conflict"),
        ("erin", "short", "not-acceptable"),
        ("erin", None, "not-acceptable"),
        (None, "long-enough-password", "not-acceptable"),
        ("bad@name", "long-enough-password", "not-acceptable"),
        ("sp ace", "long-enough-password", "not-acceptable"),
    ],
    ids=[
        "existing-user",
        "existing-user-other-case",
        "weak-password",
        "no-password",
        "no-username",
        "at-sign",
        "space",
    ],
)
async def test_bad_registrations_are_refused(
    tmp_path: Any, username: str | None, password: str | None, condition: str
) -> None:
    async with running_server(tmp_path, registration_on()) as srv:
        client = await RawClient.open(srv)
        client.send(register_iq(username, password))
        assert error_condition(await client.next()) == condition
        if username == "erin":
            assert not await srv.app.ctx.accounts.exists("erin")
        # the stream stays usable: log in afterwards
        await client.login("bob", srv.users["bob"])
        client.close()


async def test_registrations_per_address_are_limited(tmp_path: Any) -> None:
    async with running_server(tmp_path, registration_on(registrations_per_address=2)) as srv:
        client = await RawClient.open(srv)
        for i, name in enumerate(["frank", "grace"]):
            client.send(register_iq(name, "a-fine-password", f"r{i}"))
            assert (await client.next()).get("type") == "result"
        client.send(register_iq("heidi", "a-fine-password", "r3"))
        answer = await client.next()
        assert error_condition(answer) == "policy-violation"
        assert answer.find("{jabber:client}error").get("type") == "wait"
        assert not await srv.app.ctx.accounts.exists("heidi")
        client.close()


# --- after login: password change and removal -----------------------------------------------------
async def test_a_user_changes_their_password(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:  # works without open registration
        alice = await connect(srv, "alice", plugins=("xep_0077",), **client_options())
        try:
            await alice.plugin["xep_0077"].change_password("alice-new-password", timeout=10)
        finally:
            await disconnect(alice)
        again = await connect(srv, "alice", password="alice-new-password", **client_options())
        await disconnect(again)
        with pytest.raises(PermissionError):
            await connect(srv, "alice", password=srv.users["alice"], **client_options())


async def test_a_too_short_new_password_or_someone_elses_name_is_refused(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        client = await RawClient.open(srv)
        await client.login("alice", srv.users["alice"])
        client.send(register_iq("alice", "short", "p1"))
        assert error_condition(await client.next()) == "not-acceptable"
        client.send(register_iq("bob", "long-enough-password", "p2"))
        assert error_condition(await client.next()) == "bad-request"
        client.send(f"<iq type='get' id='p3'><query xmlns='{ns.REGISTER}'/></iq>".encode())
        info = await client.next()
        query = info.find(R + "query")
        assert query is not None and query.find(R + "registered") is not None
        assert query.findtext(R + "username") == "alice"
        client.close()


async def test_removing_an_account_answers_then_closes_its_streams_with_not_authorized(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        other = await connect(srv, "carol", resource="other", **client_options())
        client = await RawClient.open(srv)
        await client.login("carol", srv.users["carol"], resource="raw")
        client.send(f"<iq type='set' id='rm1'><query xmlns='{ns.REGISTER}'><remove/></query></iq>".encode())
        answer = await client.next()
        assert (answer.get("type"), answer.get("id")) == ("result", "rm1")
        assert await client.stream_error() == "not-authorized"
        error = await asyncio.wait_for(other.stream_errors.get(), 10)
        assert error["condition"] == "not-authorized"
        assert not await srv.app.ctx.accounts.exists("carol")
        with pytest.raises(PermissionError):
            await connect(srv, "carol", **client_options())
        await disconnect(other)


async def test_one_user_cannot_remove_another(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        bob = await connect(srv, "bob", **client_options())
        try:
            iq = bob.Iq()
            iq["type"] = "set"
            iq["to"] = srv.jid("alice")
            iq.append(_remove_query())
            with pytest.raises(IqError):
                await iq.send(timeout=5)
            assert await srv.app.ctx.accounts.exists("alice")
        finally:
            await disconnect(bob)


def _remove_query() -> Any:
    import xml.etree.ElementTree as ET

    query = ET.Element(f"{{{ns.REGISTER}}}query")
    ET.SubElement(query, f"{{{ns.REGISTER}}}remove")
    return query
