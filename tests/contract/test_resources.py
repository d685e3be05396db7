"""``gpu=``, ``cpu=`` and ``memory=``: every valid form, every invalid one and its message."""

from __future__ import annotations

from typing import Any

import pytest

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError
from remotecell.contract.resources import (
    ANY,
    GPU_TYPES,
    UNKNOWN,
    GPUChoice,
    GPURequest,
    Resources,
    cost_usd,
    parse_gpu,
    parse_resources,
)


def choices(value: Any) -> list[tuple[str, int]]:
    request = parse_gpu(value)
    assert request is not None
    return [(c.type, c.count) for c in request.choices]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("H100", [("H100", 1)]),
        ("h100", [("H100", 1)]),
        ("H100:2", [("H100", 2)]),
        (" H100 : 8 ", [("H100", 8)]),
        ("H200", [("H200", 1)]),
        ("A100-80GB", [("A100-80GB", 1)]),
        ("a100-40gb:4", [("A100-40GB", 4)]),
        ("A100_80GB", [("A100-80GB", 1)]),
        ("l40s", [("L40S", 1)]),
        ("A10G", [("A10G", 1)]),
        ("A10", [("A10", 1)]),
        ("L4", [("L4", 1)]),
        ("t4", [("T4", 1)]),
        ("V100", [("V100", 1)]),
        ("rtx 4090", [("RTX-4090", 1)]),
        ("any", [(ANY, 1)]),
        ("ANY:2", [(ANY, 2)]),
        (["H100", "A100-80GB"], [("H100", 1), ("A100-80GB", 1)]),
        (("H100:2", "a100-80gb:4"), [("H100", 2), ("A100-80GB", 4)]),
        (["H100", "any"], [("H100", 1), (ANY, 1)]),
        (["H100", "H100:2"], [("H100", 1), ("H100", 2)]),
    ],
)
def test_valid_forms_parse_to_canonical_choices_in_order(
    value: Any, expected: list[tuple[str, int]]
) -> None:
    assert choices(value) == expected


def test_every_canonical_type_parses_to_itself_in_any_case() -> None:
    for name in GPU_TYPES:
        assert choices(name.lower()) == [(name, 1)]
        assert choices(f"{name}:3") == [(name, 3)]


def test_no_gpu_and_a_parsed_request_pass_through() -> None:
    assert parse_gpu(None) is None
    request = GPURequest((GPUChoice("H100", 2),))
    assert parse_gpu(request) is request


@pytest.mark.parametrize("similar", ["H200", "H100:1", "A100-80GB", "GH100", "H10"])
def test_types_are_strict_h100_is_only_h100(similar: str) -> None:
    request = parse_gpu("H100")
    assert request is not None
    (choice,) = request.choices
    assert choice.accepts("H100")
    assert not choice.accepts(similar)
    assert not choice.accepts("unknown")


def test_any_accepts_every_type_the_inventory_reports() -> None:
    request = parse_gpu("any")
    assert request is not None
    assert all(request.choices[0].accepts(name) for name in [*GPU_TYPES, "unknown"])


@pytest.mark.parametrize("value", ["H1000", "A200", "unknown", "NVIDIA H100 80GB HBM3", "gpu"])
def test_unknown_type_lists_the_known_types_in_one_sentence(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_gpu(value)
    message = str(e.value)
    assert message == (
        f'gpu="{value}": unknown GPU type "{value}"; known types: '
        "B200, H200, H100, A100-80GB, A100-40GB, L40S, L40, RTX-A6000, A10G, A10, RTX-4090, "
        'L4, V100, T4 (or "any")'
    )
    assert "\n" not in message


def test_unknown_type_inside_fallbacks_names_the_bad_entry() -> None:
    with pytest.raises(ConfigError, match=r'^gpu="B100:2": unknown GPU type "B100"; known'):
        parse_gpu(["H100", "B100:2"])


def test_bare_a100_is_ambiguous_and_says_how_to_choose() -> None:
    with pytest.raises(ConfigError) as e:
        parse_gpu("a100:2")
    assert str(e.value) == (
        'gpu="a100:2" is ambiguous: write "A100-40GB" or "A100-80GB", '
        'or both as fallbacks (gpu=["A100-80GB", "A100-40GB"])'
    )


@pytest.mark.parametrize("value", ["H100:0", "any:0", "H100:00"])
def test_count_zero_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_gpu(value)
    assert str(e.value) == (
        f'gpu="{value}" asks for 0 GPUs: ask for 1 or more, or leave gpu= out to run without a GPU'
    )


@pytest.mark.parametrize(
    "value", ["H100:-1", "H100:1.5", "H100:two", "H100:", "H100:2:2", "any:+2"]
)
def test_count_that_is_not_a_positive_integer_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_gpu(value)
    name = value.partition(":")[0]
    assert str(e.value) == (
        f"gpu=\"{value}\": the count after ':' must be a whole number of GPUs above 0, "
        f'e.g. "{name}:2"'
    )


@pytest.mark.parametrize("value", ["", ":2", "  "])
def test_no_type_name_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"names no GPU type: write a type such as"):
        parse_gpu(value)


def test_a_bare_int_suggests_any() -> None:
    with pytest.raises(ConfigError) as e:
        parse_gpu(2)
    assert str(e.value) == (
        'gpu=2 names no GPU type: write gpu="any:2" for 2 GPUs of any type, '
        'or a type such as gpu="H100:2"'
    )


@pytest.mark.parametrize(
    ("value", "kind"), [(True, "bool"), (1.5, "float"), ({"H100": 1}, "dict"), (0, "int")]
)
def test_other_kinds_of_value_are_refused(value: Any, kind: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_gpu(value)
    assert str(e.value) == (
        f'gpu= takes a string like "H100", "H100:2" or "any", or a list of them, not a {kind}'
    )


def test_empty_fallback_list_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^gpu=\[\] names no GPU type"):
        parse_gpu([])


def test_fallback_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"every fallback must be a string"):
        parse_gpu(["H100", 2])


def test_duplicate_fallback_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse_gpu(["H100", "h100"])
    assert str(e.value) == "gpu=['H100', 'h100'] lists H100 twice: list each fallback once"


def test_any_before_other_fallbacks_is_refused() -> None:
    with pytest.raises(ConfigError, match=r'"any" must be the last fallback'):
        parse_gpu(["any", "H100"])


def test_request_renders_and_round_trips_through_the_wire() -> None:
    request = parse_gpu(["H100:2", "A100-80GB", "any:4"])
    assert request is not None
    assert str(request) == "H100:2, A100-80GB, any:4"
    wire = pb.Resources(gpu=request.to_proto())
    assert [(c.type, c.count) for c in wire.gpu] == [("H100", 2), ("A100-80GB", 1), ("any", 4)]
    arrived = pb.Resources.FromString(wire.SerializeToString())
    assert GPURequest.from_proto(arrived.gpu) == request
    assert GPURequest.from_proto(pb.Resources().gpu) is None  # no choice: no GPU
    assert request.max_count == 4


def test_what_a_runner_holds_round_trips_through_the_wire_unchecked() -> None:
    # A runner may hold GPUs NVML names nothing known: no request names that type.
    for held in (GPUChoice("H100", 2), GPUChoice(UNKNOWN, 1)):
        assert GPUChoice.from_proto(held.to_proto()) == held


@pytest.mark.parametrize(
    ("kernel", "wire"),
    [
        ("H1000", [("H1000", 1)]),
        ("H1000:2", [("H1000", 2)]),
        ("A100", [("A100", 1)]),
        ("H100:0", [("H100", 0)]),
        ("unknown", [("unknown", 1)]),
        (["H100", "H100"], [("H100", 1), ("H100", 1)]),
        (["any", "H100"], [("any", 1), ("H100", 1)]),
        (["T4", "any:2", "L4"], [("T4", 1), ("any", 2), ("L4", 1)]),
    ],
)
def test_a_bad_request_gets_the_same_sentence_in_the_kernel_and_the_control_plane(
    kernel: Any, wire: list[tuple[str, int]]
) -> None:
    with pytest.raises(ConfigError) as in_kernel:
        parse_gpu(kernel)
    with pytest.raises(ConfigError) as in_control_plane:
        GPURequest.from_proto([pb.GPUChoice(type=t, count=c) for t, c in wire])
    assert str(in_control_plane.value) == str(in_kernel.value)
    assert "\n" not in str(in_kernel.value)


def test_a_type_off_the_wire_cannot_carry_a_count() -> None:
    with pytest.raises(ConfigError, match='unknown GPU type "H100:2"'):
        GPURequest.from_proto([pb.GPUChoice(type="H100:2", count=1)])


def test_wire_types_are_canonical_once_checked() -> None:
    request = GPURequest.from_proto([pb.GPUChoice(type="a100-80gb", count=2)])
    assert request == GPURequest((GPUChoice("A100-80GB", 2),))


def test_resources_parse_and_give_the_wire_message() -> None:
    resources = parse_resources(gpu="H100:2", cpu=4, memory=16384)
    assert resources == Resources(GPURequest((GPUChoice("H100", 2),)), 4.0, 16384)
    assert resources.to_proto() == pb.Resources(
        cpu=4.0, memory_mb=16384, gpu=[pb.GPUChoice(type="H100", count=2)]
    )
    assert parse_resources().to_proto() == pb.Resources()


@pytest.mark.parametrize("cpu", [0, -1, 1025, True, "2", float("nan")])
def test_bad_cpu_is_refused(cpu: Any) -> None:
    with pytest.raises(ConfigError, match=r"^cpu=.*: expected a number of cores above 0"):
        parse_resources(cpu=cpu)


@pytest.mark.parametrize("memory", [0, -5, 1.5, True, "1024", 2**40])
def test_bad_memory_is_refused(memory: Any) -> None:
    with pytest.raises(ConfigError, match=r"^memory=.*: expected a whole number of MiB above 0"):
        parse_resources(memory=memory)


def test_bad_gpu_in_resources_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown GPU type"):
        parse_resources(gpu="H1000")


def test_every_type_has_memory_and_priced_types_have_a_positive_price() -> None:
    for t in GPU_TYPES.values():
        assert t.memory_gib > 0
        assert t.per_second_usd is None or 0 < t.per_second_usd < 0.01
    # Modal's list price for an H100, $3.9492 an hour.
    assert GPU_TYPES["H100"].per_second_usd == pytest.approx(3.9492 / 3600, rel=1e-3)


def test_cost_uses_default_price_configured_price_or_says_unknown() -> None:
    assert cost_usd("H100", 2, 3600) == pytest.approx(2 * 0.001097 * 3600)
    assert cost_usd("H100", 1, 10, prices={"H100": 0.5}) == pytest.approx(5.0)
    assert cost_usd("V100", 1, 10) is None
    assert cost_usd("V100", 1, 10, prices={"V100": 0.001}) == pytest.approx(0.01)
    assert cost_usd("unknown", 1, 10) is None
