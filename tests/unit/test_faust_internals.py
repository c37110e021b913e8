"""Every private name of faust-streaming, mode-streaming and aiokafka that ``workers/triggers/lean_faust.py``
overrides or reads still exists where it is expected, with the signature the override expects.

faust's own test suite will not tell us: if a release renamed ``Consumer._commit``, our override would
silently stop running and the acknowledged-before-commit guarantee would vanish with every other test
green. The packages are pinned exactly; this test is what fails when a pin is moved carelessly.
"""

from __future__ import annotations

import inspect
import re
from types import ModuleType

import aiokafka
import faust
import mode
import pytest
from faust import streams as faust_streams
from faust.app import base as faust_app_base
from faust.sensors import Monitor
from faust.serializers import Schema
from faust.transport import conductor as faust_conductor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer

from workers.triggers import lean_faust

# (the class that defines the method today, method, the parameters lean_faust's override or call relies on)
METHODS: list[tuple[type, str, list[str]]] = [
    (faust.App, "_create_directories", ["self"]),
    (faust.App, "_new_transport", ["self"]),
    (faust.Stream, "_enable_passive", ["self", "channel", "declare"]),
    (faust.Stream, "ack", ["self", "event"]),
    (faust.Stream, "add_processor", ["self", "processor"]),
    (mode.Service, "wait_for_stopped", ["self", "*coros", "timeout"]),
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", ["self", "transport"]),
    (faust_aiokafka.Consumer, "_new_consumer_thread", ["self"]),
    (faust_consumer.Consumer, "on_buffer_drop", ["self", "tp"]),
    (faust_consumer.ThreadDelegateConsumer, "_commit", ["self", "offsets"]),
    (faust_consumer.Consumer, "_drain_messages", ["self", "fetcher"]),
    (faust_consumer.Consumer, "_get_active_partitions", ["self"]),
    (faust_consumer.Consumer, "_add_gap", ["self", "tp", "offset_from", "offset_to"]),
    (faust_consumer.Consumer, "getmany", ["self", "timeout"]),
    (mode.Service, "wait_first", ["self", "*coros", "timeout"]),
    (faust_consumer.Consumer, "commit", ["self", "topics", "start_new_transaction"]),
    (Monitor, "on_message_in", ["self", "tp", "offset", "message"]),
    (Monitor, "on_stream_event_in", ["self", "tp", "offset", "stream", "event"]),
    (Monitor, "on_stream_event_out", ["self", "tp", "offset", "stream", "event", "state"]),
    (Monitor, "on_message_out", ["self", "tp", "offset", "message"]),
    (Monitor, "track_tp_end_offset", ["self", "tp", "offset"]),
    (Schema, "compile", ["self", "app", "on_key_decode_error", "on_value_decode_error", "default_propagate"]),
]

# (class, attribute set on its instances in __init__ (of it or a base), which lean_faust reads or writes)
INSTANCE_ATTRIBUTES: list[tuple[type, str]] = [
    (faust.Stream, "_processors"),
    (faust.Stream, "enable_acks"),
    (faust.Stream, "channel"),
    (faust_aiokafka.Consumer, "_read_offset"),
    (faust_aiokafka.Consumer, "_commit_every"),
    (faust_aiokafka.Consumer, "_n_acked"),
    (faust_aiokafka.Consumer, "_buffered_partitions"),
    (faust_aiokafka.Consumer, "suspend_flow"),
    (faust_aiokafka.Consumer, "callback"),
    (mode.Service, "_stopped"),
    (ProducerBuffer, "pending"),
    (aiokafka.AIOKafkaConsumer, "_fetch_max_wait_ms"),
]


def _parameters(function: object) -> list[str]:
    return [f"*{p.name}" if p.kind is inspect.Parameter.VAR_POSITIONAL else p.name
            for p in inspect.signature(function).parameters.values()  # type: ignore[arg-type]
            if p.kind is not inspect.Parameter.VAR_KEYWORD]


@pytest.mark.parametrize(("owner", "name", "expected"), METHODS, ids=[f"{c.__name__}.{n}" for c, n, _ in METHODS])
def test_overridden_and_called_methods_keep_their_signatures(owner: type, name: str, expected: list[str]) -> None:
    assert name in vars(owner), f"{owner.__module__}.{owner.__name__}.{name} is gone (or moved)"
    assert _parameters(getattr(owner, name))[:len(expected)] == expected


# Methods lean_faust overrides, with the module whose code calls them: an override only matters while
# faust still calls it by that name.
CALLED_BY: list[tuple[ModuleType, str]] = [
    (faust_app_base, "_create_directories"),
    (faust_app_base, "_new_transport"),
    (faust_aiokafka, "_create_worker_consumer"),
    (faust_consumer, "_new_consumer_thread"),
    (faust_conductor, "on_buffer_drop"),
    (faust_consumer, "_commit"),
    (faust_consumer, "_drain_messages"),
]


@pytest.mark.parametrize(("caller", "name"), CALLED_BY, ids=[f"{m.__name__}->{n}" for m, n in CALLED_BY])
def test_overridden_methods_are_still_called_by_faust(caller: ModuleType, name: str) -> None:
    calls = re.findall(rf"\.{name}\b(?!\s*=)", inspect.getsource(caller))
    assert calls, f"{caller.__name__} no longer calls .{name}"


@pytest.mark.parametrize(("owner", "name"), INSTANCE_ATTRIBUTES, ids=[f"{c.__name__}.{n}" for c, n in INSTANCE_ATTRIBUTES])
def test_read_attributes_are_still_set_by_their_class(owner: type, name: str) -> None:
    assigned = re.compile(rf"self\.{re.escape(name)}\s*(:[^=\n]+)?=[^=]")
    sources = [inspect.getsource(cls) for cls in owner.__mro__ if cls.__module__.split(".")[0] in (
        "faust", "mode", "aiokafka")]
    assert any(assigned.search(source) for source in sources), f"nothing sets {owner.__name__}.{name} any more"


def test_module_level_names_lean_faust_imports_are_there() -> None:
    assert callable(faust_streams._tracks_buffer_agen)
    assert faust_consumer.CONSUMER_FETCHING
    assert faust_aiokafka.Transport.Consumer is faust_aiokafka.Consumer


def test_every_override_in_lean_faust_is_checked_here() -> None:
    """An override added to lean_faust without an entry above fails here, so the list stays complete."""
    checked = {name for _, name, _ in METHODS}
    overrides = set(re.findall(r"@override\n\s+(?:async )?def (\w+)", inspect.getsource(lean_faust)))
    assert overrides - {"size"} <= checked, overrides - checked  # `size` is a property of ProducerBuffer
    assert isinstance(inspect.getattr_static(ProducerBuffer, "size"), property)
