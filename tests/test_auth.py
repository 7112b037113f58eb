"""The signing schemes: each signer against its verifier, and every way to fail."""

from __future__ import annotations

import pytest

from receiver import auth
from receiver.auth import AuthenticationError

NOW = 1_800_000_000
LEEWAY = 60


def test_mps_signature_is_md5_of_timestamp_then_key():
    # md5("1800000600" + "key") computed independently of the signer
    import hashlib

    assert auth.mps_signature(1800000600, "key") == hashlib.md5(b"1800000600key").hexdigest()


def test_vod_signature_is_md5_of_key_then_t():
    import hashlib

    assert auth.vod_signature(1800000600, "key") == hashlib.md5(b"key1800000600").hexdigest()


def test_ams_signature_is_sha256_of_seed_then_body():
    import hashlib

    assert auth.ams_signature(b'{"a":1}', "seed") == hashlib.sha256(b'seed{"a":1}').hexdigest()


def test_mps_round_trip_and_rotation():
    body = auth.sign_mps_notification({"EventType": "WorkflowTask"}, "old", now=NOW)
    assert body["Timestamp"] == NOW + 600
    auth.verify_mps_notification(body, ["new", "old"], NOW, LEEWAY)
    with pytest.raises(AuthenticationError):
        auth.verify_mps_notification(body, ["new"], NOW, LEEWAY)


def test_vod_round_trip_accepts_t_as_digits():
    body = auth.sign_vod_event({"EventType": "NewFileUpload"}, "k", now=NOW)
    auth.verify_vod_event(body, ["k"], NOW, LEEWAY)
    auth.verify_vod_event({**body, "T": str(body["T"])}, ["k"], NOW, LEEWAY)


@pytest.mark.parametrize("verify, sign", [
    (auth.verify_mps_notification, auth.sign_mps_notification),
    (auth.verify_vod_event, auth.sign_vod_event),
])
def test_expiry_window_on_both_sides(verify, sign):
    body = sign({}, "k", now=NOW)
    expiry = NOW + 600
    verify(body, ["k"], expiry + LEEWAY, LEEWAY)  # just inside
    with pytest.raises(AuthenticationError, match="expired"):
        verify(body, ["k"], expiry + LEEWAY + 1, LEEWAY)
    # An expiry further ahead than Tencent ever sets: a forged or skewed clock.
    too_new = sign({}, "k", now=NOW + LEEWAY + 1)
    with pytest.raises(AuthenticationError, match="future"):
        verify(too_new, ["k"], NOW, LEEWAY)
    verify(sign({}, "k", now=NOW + LEEWAY), ["k"], NOW, LEEWAY)  # just inside


@pytest.mark.parametrize("broken", [
    {"Sign": None}, {"Timestamp": None}, {"Timestamp": "soon"}, {"Timestamp": True},
    {"Sign": "0" * 32},
])
def test_mps_malformed_signatures(broken):
    body = {**auth.sign_mps_notification({}, "k", now=NOW), **broken}
    with pytest.raises(AuthenticationError):
        auth.verify_mps_notification(body, ["k"], NOW, LEEWAY)


def test_ams_covers_the_body():
    raw, headers = auth.sign_ams_callback({"TaskId": "t1", "Suggestion": "Pass"}, "seed")
    auth.verify_ams_callback(raw, headers["X-Signature"], ["other", "seed"])
    with pytest.raises(AuthenticationError):
        auth.verify_ams_callback(raw.replace(b"Pass", b"Block"), headers["X-Signature"], ["seed"])
    with pytest.raises(AuthenticationError):
        auth.verify_ams_callback(raw, None, ["seed"])


def test_token():
    auth.verify_token("b", ["a", "b"])
    for bad in (None, "", "c", "a "):
        with pytest.raises(AuthenticationError):
            auth.verify_token(bad, ["a", "b"])
