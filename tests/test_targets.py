"""Target profiles (targets/*.json): they load, their fields are typed and sane, and every number
that is derived (the MAC budget) or borrowed (MobileNetV2's latency) says where it comes from."""

from __future__ import annotations

import dataclasses

import pytest

from targets import (MOBILENET_V2_MACS, PRECISIONS, RUNTIMES, Reference, TargetProfile,
                     available_targets, load_target, mac_budget)

PROFILES = available_targets()


def test_the_boards_we_ship_for_have_profiles():
    assert {"rpi4", "rpi5", "jetson-orin", "x86"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_fields_are_typed_and_sane(name):
    target = load_target(name)
    assert isinstance(target, TargetProfile) and isinstance(target.reference, Reference)
    assert target.name == name and target.description and target.cpu
    assert target.runtime in RUNTIMES and target.precision in PRECISIONS
    assert isinstance(target.providers, tuple) and all(isinstance(p, str) for p in target.providers)
    if target.runtime == "litert":
        assert target.providers == ()
    else:  # onnxruntime tries providers in order: the CPU must always be the last resort
        assert target.providers[-1] == "CPUExecutionProvider"
    assert isinstance(target.threads, int) and 1 <= target.threads <= 64
    assert target.frame == (640, 480)
    assert isinstance(target.tile, int) and target.tile % 16 == 0 and target.tile >= 64  # the student's stride
    assert 1.0 < target.latency_budget_ms < 1000.0 and target.latency_budget_basis
    assert isinstance(target.mac_budget, int) and target.mac_budget > 0


def test_jetson_prefers_tensorrt_then_cuda():
    assert load_target("jetson-orin").providers == (
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def test_rpi5_budget_is_15_fps():
    target = load_target("rpi5")
    assert target.latency_budget_ms == pytest.approx(1000 / 15, abs=0.05)
    assert target.fps == pytest.approx(15, abs=0.02)


@pytest.mark.parametrize("name", PROFILES)
def test_mac_budget_follows_from_latency_budget_and_reference(name):
    target = load_target(name)
    ref = target.reference
    assert target.mac_budget == mac_budget(target.latency_budget_ms, ref.mobilenet_ms, target.mac_efficiency)
    # and the formula is what the docstring says, spelled out once by hand
    assert target.mac_budget == pytest.approx(
        target.mac_efficiency * target.latency_budget_ms * MOBILENET_V2_MACS / ref.mobilenet_ms, abs=5e5)
    # a share of MobileNetV2's rate, said where it comes from
    assert 0 < target.mac_efficiency <= 1 and target.mac_efficiency_basis.strip()


@pytest.mark.parametrize("name", PROFILES)
def test_reference_has_a_source_or_an_explicit_null_with_a_note(name):
    ref = load_target(name).reference
    assert ref.model.startswith("MobileNetV2 1.0-224")
    assert ref.note.strip() and ref.mobilenet_basis.strip()
    assert ref.mobilenet_ms > 0
    if ref.source is None:
        assert ref.latency_ms is None, "a published latency needs its source"
        assert ref.mobilenet_kind != "published"
        assert "no published" in ref.note.lower()
    else:
        assert ref.source.startswith("https://")
        assert ref.latency_ms is not None and ref.latency_ms > 0
        assert ref.precision in PRECISIONS and ref.runtime
    if ref.mobilenet_kind == "published":
        assert ref.source is not None


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        load_target("rpi3")
    message = str(err.value)
    assert "rpi3" in message and all(name in message for name in PROFILES)
    with pytest.raises(ValueError):
        load_target("../targets/rpi5")


def test_profiles_are_frozen():
    target = load_target("rpi4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.threads = 2
