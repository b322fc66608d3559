"""Progress lines off a terminal: when they come and what they say, on a clock the test controls."""

from __future__ import annotations

from camcli.cli.progress import Heartbeat
from camcli.engine.work import WorkMeter, count_passes, counting, current


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def heartbeat(every: float = 10.0):
    clock, said = Clock(), []
    meter = WorkMeter(clock=clock)
    beat = Heartbeat(lambda: meter, every=every, log=said.append, clock=clock)
    return clock, meter, beat, said


def test_nothing_is_said_while_the_model_loads_and_start_up_is_not_counted_in_the_rate():
    clock, meter, beat, said = heartbeat()
    for clock.now in (5.0, 50.0, 100.0):  # a slow start: torch, the model, the first batch decoded
        beat.tick()
    assert said == []
    meter.start(total=10)
    clock.now = 102.0
    meter.image_done()
    beat.tick()  # the first image: said at once, though the interval has not passed
    assert said == ["explaining: 1/10 images (10%), 2.0 s/image, eta 18 s"]


def test_a_line_every_interval_while_one_image_runs_its_passes():
    clock, meter, beat, said = heartbeat(every=10.0)
    meter.start(total=2)
    with counting(meter):
        for clock.now in (4.0, 9.9):
            count_passes(64)
            beat.tick()
        assert said == []
        clock.now = 10.0
        beat.tick()
        assert said == ["explaining: 0/2 images (0%), 10 s in; 128 passes into the first image"]
        clock.now = 12.0
        meter.image_done()
        count_passes(16)
        beat.tick()
        clock.now = 15.0
        beat.tick()  # 3 s after the last line: not due
        clock.now = 22.0
        beat.tick()
    assert said[1:] == ["explaining: 1/2 images (50%), 12.0 s/image, eta 12 s; 16 passes into the next image",
                        "explaining: 1/2 images (50%), 12.0 s/image, eta 2 s; 16 passes into the next image"]


def test_passes_outside_a_run_count_nowhere_and_a_resumed_run_rates_its_own_images():
    count_passes(5)  # no run: nothing to count into, and no error
    clock, meter, beat, said = heartbeat(every=1.0)
    meter.start(total=10, already=8)  # eight finished by an earlier run
    clock.now = 3.0
    meter.image_done()
    beat.tick()
    assert said == ["explaining: 9/10 images (90%), 3.0 s/image, eta 3 s"]


def test_every_zero_says_nothing_and_each_phase_of_evaluate_has_its_own_lines():
    clock, meter, beat, said = heartbeat(every=0)
    meter.start(total=1)
    clock.now = 100.0
    beat.tick()
    assert said == []
    clock, said = Clock(), []
    beat = Heartbeat(current, every=5.0, log=said.append, clock=clock)  # what `camcli evaluate` polls
    explaining = WorkMeter(clock=clock)
    sanity = WorkMeter("sanity", "explanation passes", clock=clock)
    beat.tick()  # nothing under way yet: the model loads
    with counting(explaining):
        explaining.start(total=2)
        clock.now = 4.0
        explaining.image_done()
        beat.tick()
    clock.now = 60.0  # a minute of scoring between the phases
    with counting(sanity):
        sanity.start(total=11)
        clock.now = 62.0
        sanity.image_done()
        beat.tick()
    assert said == ["explaining: 1/2 images (50%), 4.0 s/image, eta 4 s",
                    "sanity: 1/11 explanation passes (9%), 2.0 s/explanation pass, eta 20 s"]
