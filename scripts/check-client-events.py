#!/usr/bin/env python3
"""Validate OpenAI Realtime client (or, with --server, server) events against the official
`openai` Python SDK models.

Usage: check-client-events.py [--server] FILE_OR_DIR...

Each argument is a JSONL file (one client event per line) or a directory, whose `*.jsonl` files
are all read. Every event is validated with pydantic:
`TypeAdapter(openai.types.realtime.RealtimeClientEvent).validate_python(obj, strict=True)`
(strict, so that `"300"` does not pass for an integer); with `--server`, against
`RealtimeServerEvent` instead (what the built-in simulator sends). Server events may carry keys
the SDK does not model (OpenAI adds fields; `session.id`/`object`), so the extra-key check is
client-only, and the SDK's one known lag behind the GA wire is bridged: content parts are typed
`output_audio`/`output_text` on the wire, `audio`/`text` in the SDK model
(shared/reference/openai-realtime.md §1.4).

The SDK models accept unknown keys (`extra="allow"`) and keep them in `model_extra`, which is
how a misspelled field or a beta field (`input_audio_format`, `modalities`, …) would slip
through validation; so the validated model tree is walked and any extra key fails the line.
A `type` that is not one of the SDK's client event types fails too.

Exit status: 0 when every line is valid and there was at least one event, else 1 with one
message per bad line. Run it with the venv from `scripts/python-env.sh`:

    py=$(scripts/python-env.sh | tail -n 1)
    "$py" scripts/check-client-events.py target/client-events
"""

from __future__ import annotations

import json
import sys
import typing
from collections import Counter
from pathlib import Path

try:
    import openai
    from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
    from pydantic import BaseModel, TypeAdapter, ValidationError
except ImportError as err:  # pragma: no cover - environment problem, not a bad event
    sys.exit(f"error: {err}; run with the python printed by scripts/python-env.sh")


def event_models(root: object) -> dict[str, type[BaseModel]]:
    """Map each event `type` literal to its SDK model, read from the union itself."""
    union = typing.get_args(root)[0]  # Annotated[Union[...], PropertyInfo]
    models: dict[str, type[BaseModel]] = {}
    for model in typing.get_args(union):
        for literal in typing.get_args(model.model_fields["type"].annotation):
            models[literal] = model
    return models


SIDE = "client"


def extra_keys(value: object, path: str) -> typing.Iterator[str]:
    """Yield the dotted path of every key a model kept as an unknown extra."""
    if isinstance(value, BaseModel):
        for key in value.model_extra or {}:
            yield f"{path}.{key}"
        for name in type(value).model_fields:
            yield from extra_keys(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from extra_keys(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from extra_keys(item, f"{path}.{key}")


def short_errors(err: ValidationError) -> str:
    """The errors worth reading: pydantic tries every member of a nested union (item kinds,
    session kinds) and reports each; drop the members whose own `type`/`role` literal did not
    match, unless that leaves nothing."""
    errors = err.errors()

    def is_member(part: object) -> bool:
        return isinstance(part, str) and part[:1].isupper()

    wrong = {
        e["loc"][:-1]
        for e in errors
        if len(e["loc"]) >= 2
        and e["loc"][-1] in ("type", "role")
        and is_member(e["loc"][-2])
        and e["type"] == "literal_error"
    }
    kept = [e for e in errors if not any(e["loc"][: len(w)] == w for w in wrong)] or errors
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']} (got {e.get('input')!r:.60})"
        for e in kept
    )


def check_line(line: str, adapter: TypeAdapter, models: dict[str, type[BaseModel]]) -> tuple[str | None, str]:
    """Return (error or None, event type)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return f"not JSON: {err}", "?"
    if not isinstance(obj, dict):
        return f"not a JSON object: {type(obj).__name__}", "?"
    kind = obj.get("type")
    if SIDE == "server" and isinstance(obj.get("part"), dict):
        part_type = obj["part"].get("type")
        if part_type in ("output_audio", "output_text"):
            obj["part"]["type"] = part_type.removeprefix("output_")
    if kind not in models:
        return f"type {kind!r} is not a {SIDE} event (known: {', '.join(sorted(models))})", str(kind)
    try:
        event = adapter.validate_python(obj, strict=True)
    except ValidationError:
        # The union's error lists every member; the event's own model says what is wrong.
        try:
            TypeAdapter(models[kind]).validate_python(obj, strict=True)
        except ValidationError as err:
            return f"{kind}: {short_errors(err)}", kind
        return f"{kind}: rejected by the {SIDE} event union", kind
    if event.type != kind:
        return f"validated as {event.type!r}, not {kind!r}", kind
    extras = list(extra_keys(event, "$")) if SIDE == "client" else []
    if extras:
        return f"{kind}: keys unknown to the SDK model (misspelled or beta?): {', '.join(extras)}", kind
    return None, kind


def jsonl_files(args: list[str]) -> list[Path]:
    files: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files.extend(sorted(path.glob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            print(f"error: {arg}: no such file or directory", file=sys.stderr)
            sys.exit(1)
    return files


def main(argv: list[str]) -> int:
    global SIDE
    if argv[:1] == ["--server"]:
        SIDE, root, argv = "server", RealtimeServerEvent, argv[1:]
    else:
        root = RealtimeClientEvent
    if not argv:
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        return 1
    models = event_models(root)
    adapter = TypeAdapter(root)
    types: Counter[str] = Counter()
    bad = 0
    for path in jsonl_files(argv):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            error, kind = check_line(line, adapter, models)
            types[kind] += 1
            if error:
                bad += 1
                print(f"{path}:{number}: {error}", file=sys.stderr)
    total = sum(types.values())
    if total == 0:
        print(f"error: no {SIDE} events found in {' '.join(argv)}", file=sys.stderr)
        return 1
    if bad:
        print(f"{bad} of {total} {SIDE} events invalid (openai {openai.__version__})", file=sys.stderr)
        return 1
    listed = ", ".join(f"{kind} ×{count}" for kind, count in sorted(types.items()))
    print(f"{total} {SIDE} events valid (types: {listed})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
