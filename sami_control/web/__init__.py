"""The web dashboard of sami-control (`--ui-listen`): pages over the same core calls and
authorization as the gRPC API. app.py wires the server, guard.py sessions/CSRF/headers,
pages.py and actions.py the handlers, live.py the live timeline, data.py every core call."""
