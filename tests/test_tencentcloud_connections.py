"""The SDK adapter's connections: opened ahead of need, so the first calls are not counted late on the quota."""

from __future__ import annotations

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.config import load_settings
from receiver.ratelimit import departure
from receiver.tencentcloud import NEW_CONNECTION_SECONDS, WARM_AHEAD, DescribeCall, TencentCloud
from tests.emulator_fixtures import SECRET_ID, SECRET_KEY, running_emulator
from tests.servers import wait_until


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    yield from running_emulator(tmp_path_factory.mktemp("emu") / "emulator.log")


def tencentcloud(emulator) -> TencentCloud:
    settings = load_settings({
        "TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        **{f"TENCENTCLOUD_{product}_ENDPOINT": emulator.url for product in ("MPS", "VOD", "AMS")},
    })
    return TencentCloud(settings, connections=32)


def first_call_delay(cloud: TencentCloud) -> float:
    """The arrival allowance the first MPS call's connection asked of the quota."""
    delays: list[float] = []
    with departure(delays.append), pytest.raises(TencentCloudSDKException, match="ResourceNotFound"):
        cloud.call(DescribeCall("mps", "DescribeTaskDetail", {"TaskId": "2600000000-WorkflowTask-nope"}))
    assert delays, "the call never said when it left"
    return delays[-1]


def warm_connections(cloud: TencentCloud) -> int:
    return sum(len(pool._warm) for pool in _pools(cloud))


def _pools(cloud: TencentCloud) -> list:
    session = cloud._clients["mps"].request.conn._session
    return list(session.get_adapter("http://").poolmanager.pools._container.values())


def test_connections_opened_ahead_spare_the_first_calls_the_new_connection_allowance(emulator):
    cloud = tencentcloud(emulator)
    cloud.warm_connections()
    wait_until(lambda: warm_connections(cloud) >= WARM_AHEAD, 10, "connections opened ahead")
    # Before, every connection was opened by the call that needed it and counted the whole allowance late.
    assert first_call_delay(cloud) < NEW_CONNECTION_SECONDS
    # The call's own pool held the warm connections (the SDK's TLS settings are part of the pool's key),
    # and it opens the next one ahead of need.
    wait_until(lambda: warm_connections(cloud) >= WARM_AHEAD, 10, "the warm connections topped up")
    assert len(_pools(cloud)) == 1


def test_without_warming_the_first_call_counts_the_whole_allowance_and_nothing_is_opened_ahead(emulator):
    cloud = tencentcloud(emulator)  # as the sweeper's: a few calls need no idle connections
    assert first_call_delay(cloud) == pytest.approx(NEW_CONNECTION_SECONDS, abs=0.01)
    assert warm_connections(cloud) == 0
