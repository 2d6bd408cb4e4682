"""The keepalive loop on trio's virtual clock: pings on time, silence noticed, settings live."""

from __future__ import annotations

import trio
import trio.testing

from wstund.keepalive import keep_alive


async def test_pings_then_returns_after_silence(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    pings: list[float] = []

    async def ping() -> None:
        pings.append(trio.current_time() - start)

    await keep_alive(lambda: (1.0, 3.5), lambda: start, ping)
    assert pings == [1.0, 2.0, 3.0]
    assert trio.current_time() - start == 3.5


async def test_a_heard_peer_stays_and_settings_apply_live(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    settings: list[tuple[float | None, float | None]] = [(None, 2.0)]
    heard = [start]
    pings: list[float] = []

    async def ping() -> None:
        pings.append(trio.current_time() - start)
        heard[0] = trio.current_time()  # the peer answers every ping

    async def change_settings() -> None:
        await trio.sleep(0.5)
        settings[0] = (1.0, 2.0)  # a reload turns pings on before the peer counts as silent

    with trio.move_on_after(10) as waited:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(change_settings)
            await keep_alive(lambda: settings[0], lambda: heard[0], ping)
    assert waited.cancelled_caught  # never idle: it answered every ping
    assert pings == [float(t) for t in range(1, 10)]
