"""XEP-0050 ad-hoc commands of the counselling service, registered with the adhoc plugin.

At ``counselling.<domain>``: everyone may run "request-help", "cancel-request" and "close"; only
counsellors see and may run "accept", "decline", "transfer", "queue", "sessions" and "team", and only
server admins "counsellor-set" / "counsellor-remove" (the database list); anyone else gets
``forbidden``. Bad input raises :class:`StanzaError`, which the adhoc plugin sends as the iq error.
A command that needs a choice asks with a form on its first step; a client may also submit the form
with the first ``execute`` to act at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.forms import Form
from mbeon_chat.xmpp.jid import JID

from . import views
from .state import short_id

if TYPE_CHECKING:
    from mbeon_chat.plugin.api import PluginAPI

    from .service import CounsellingService
    from .state import CounsellorConf

C = StanzaCondition
Handler = Callable[[Any], Any]


def register(
    api: PluginAPI, adhoc: Any, service: CounsellingService, from_options: Callable[..., CounsellorConf]
) -> None:
    lc = service.lc
    Response = adhoc.Response

    def anyone(jid: JID) -> bool:
        return True

    def counsellor(jid: JID) -> bool:
        return lc.is_counsellor(str(jid.bare))

    def me(request: Any) -> str:
        return str(request.from_.bare)

    def choice(request: Any, var: str) -> str | None:
        value = request.value(var)
        return value.strip() if value and value.strip() else None

    # --- everyone ---------------------------------------------------------------------------------------
    async def request_help(request: Any) -> Any:
        opts = lc.options
        if request.form is None:
            form = Form("form", title="Ask for help", instructions="A counsellor will talk with you.")
            form.add_field(
                "topic",
                "list-single",
                label="Topic",
                value=opts.default_topic or opts.topics[0],
                options=list(opts.topics),
                required=True,
            )
            form.add_field(
                "language",
                "list-single",
                label="Language",
                value=opts.default_language or opts.languages[0],
                options=list(opts.languages),
                required=True,
            )
            form.add_field("message", "text-multi", label="What would you like to talk about? (optional)")
            return Response.ask(form)
        text = "\n".join(request.form.get("message", [])).strip() or None
        r = await lc.request_help(me(request), choice(request, "topic"), choice(request, "language"), text)
        position = lc.positions().get(r.id, 0)
        wait = lc.wait_estimate(r, position)
        result = Form("result", title="Your request")
        result.add_field("request", "text-single", label="Request", value=r.id)
        result.add_field("position", "text-single", label="Position in the queue", value=str(position))
        if wait is not None:
            result.add_field("wait", "text-single", label="Expected wait (seconds)", value=str(int(wait)))
        return Response.done(f"Your request {r.short} is at position {position} in the queue.", result)

    async def cancel_request(request: Any) -> Any:
        r = await lc.cancel(me(request))
        return Response.done(f"Your request {r.short} was withdrawn.")

    async def close(request: Any) -> Any:
        who = me(request)
        mine = [s for s in lc.state.sessions.values() if who in (s.client, s.counsellor)]
        ref = choice(request, "session")
        if ref is None and len(mine) > 1:
            form = Form("form", title="Close a session")
            form.add_field(
                "session",
                "list-single",
                label="Session",
                required=True,
                options=[
                    (f"{short_id(s.id)} with {s.client if s.counsellor == who else s.counsellor}", s.id)
                    for s in mine
                ],
            )
            return Response.ask(form)
        s = await lc.close(who, ref)
        return Response.done(f"Session {s.short} is closed.")

    # --- counsellors ------------------------------------------------------------------------------------
    async def accept(request: Any) -> Any:
        ref = choice(request, "request")
        if ref is None:
            who = me(request)
            mine = [o for o in lc.state.offers.values() if o.counsellor == who]
            options = [(f"{short_id(o.request_id)} (offered to you)", o.request_id) for o in mine]
            for rid in lc.positions():
                r = lc.state.requests[rid]
                if rid not in lc.state.offers:
                    options.append((f"{r.short}: {r.topic}, {r.language}", rid))
            if not options:
                return Response.done("Nothing is waiting for you.")
            form = Form("form", title="Accept a request")
            form.add_field(
                "request", "list-single", label="Request", options=options, value=options[0][1], required=True
            )
            return Response.ask(form)
        s = await lc.accept(me(request), ref)
        return Response.done(f"Session {s.short} with {s.client} started; write to them directly.")

    async def decline(request: Any) -> Any:
        ref = choice(request, "request")
        if ref is None:
            mine = [o for o in lc.state.offers.values() if o.counsellor == me(request)]
            if not mine:
                return Response.done("Nothing is offered to you.")
            form = Form("form", title="Decline an offer")
            form.add_field(
                "request",
                "list-single",
                label="Request",
                required=True,
                options=[short_id(o.request_id) for o in mine],
                value=short_id(mine[0].request_id),
            )
            return Response.ask(form)
        r = await lc.decline(me(request), ref)
        return Response.done(f"You declined request {r.short}.")

    async def transfer(request: Any) -> Any:
        who = me(request)
        ref, target = choice(request, "session"), choice(request, "counsellor")
        if ref is None or target is None:
            mine = lc.state.sessions_of(who)
            if not mine:
                return Response.done("You have no running session.")
            form = Form("form", title="Transfer a session", instructions="The other counsellor must accept.")
            form.add_field(
                "session",
                "list-single",
                label="Session",
                required=True,
                value=ref or mine[0].id,
                options=[(f"{s.short} with {s.client}", s.id) for s in mine],
            )
            form.add_field(
                "counsellor",
                "list-single",
                label="To",
                required=True,
                options=[c.jid for c in lc.views() if c.jid != who],
            )
            return Response.ask(form)
        try:
            target = str(JID.parse(target).bare)
        except ValueError:
            raise StanzaError(C.JID_MALFORMED, f"{target!r} is not an address") from None
        o = await lc.transfer(who, ref, target)
        return Response.done(f"Asked {o.counsellor} to take over; you will hear when they answer.")

    def table(name: str) -> Handler:
        async def show(request: Any) -> Any:
            data = views.table(lc, name)
            return Response.done(views.as_text(name, data), views.as_form(name, data))

        return show

    # --- admins: the counsellor list in the database ----------------------------------------------------
    async def set_counsellor(request: Any) -> Any:
        opts = lc.options
        form_in = request.form
        if form_in is None or not choice(request, "jid"):
            form = Form(
                "form",
                title="Add or change a counsellor",
                instructions="Counsellors in the server configuration are changed there.",
            )
            form.add_field("jid", "jid-single", label="Account", required=True)
            form.add_field(
                "languages", "list-multi", label="Languages", options=list(opts.languages), required=True
            )
            form.add_field(
                "topics", "list-multi", label="Topics (none: every topic)", options=list(opts.topics)
            )
            form.add_field("capacity", "text-single", label="Sessions at once", value="1", required=True)
            return Response.ask(form)
        capacity = choice(request, "capacity") or "1"
        entry = {
            "jid": choice(request, "jid"),
            "languages": [v for v in form_in.get("languages", []) if v],
            "topics": [v for v in form_in.get("topics", []) if v],
            "capacity": int(capacity) if capacity.isdigit() else 0,
        }
        try:
            conf = from_options(entry, opts, "counsellor")
        except ValueError as exc:
            raise StanzaError(C.BAD_REQUEST, str(exc)) from None
        conf.source = "database"
        await lc.set_counsellor(conf)
        return Response.done(
            f"{conf.jid} is a counsellor: {', '.join(sorted(conf.languages))}, capacity {conf.capacity}."
        )

    async def remove_counsellor(request: Any) -> Any:
        target = choice(request, "jid")
        if target is None:
            listed = [c.jid for c in lc.state.counsellors.values() if c.source == "database"]
            if not listed:
                return Response.done("No counsellors are kept in the database.")
            form = Form("form", title="Remove a counsellor")
            form.add_field("jid", "list-single", label="Counsellor", options=listed, required=True)
            return Response.ask(form)
        await lc.remove_counsellor(target)
        return Response.done(f"{target} is no longer a counsellor.")

    jid = service.jid
    for node, name, handler, allowed in (
        ("request-help", "Ask for help", request_help, anyone),
        ("cancel-request", "Cancel my request", cancel_request, anyone),
        ("close", "Close a session", close, anyone),
        ("accept", "Accept a request", accept, counsellor),
        ("decline", "Decline an offer", decline, counsellor),
        ("transfer", "Transfer a session", transfer, counsellor),
        ("queue", "Show the queue", table("queue"), counsellor),
        ("sessions", "Show running sessions", table("sessions"), counsellor),
        ("team", "Show the team", table("team"), counsellor),
        ("counsellor-set", "Add or change a counsellor", set_counsellor, api.is_admin),
        ("counsellor-remove", "Remove a counsellor", remove_counsellor, api.is_admin),
    ):
        adhoc.add_command(api, node, name, handler, allowed=allowed, jid=jid)
