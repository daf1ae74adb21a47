"""Progress in a log (output that is not a terminal): a line at least every few seconds, even inside one slow
step, one line per update, no carriage returns, and a heartbeat thread that stops cleanly."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest

from bit_engine.cli.cmd_train import _ProgressPrinter
from bit_engine.cli.progress import TextProgress
from bit_engine.config import TrainConfig
from bit_engine.progress import Progress
from bit_engine.train import fit


def _heartbeats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "bit-studio-heartbeat"]


def test_a_full_step_of_several_micro_batches_reports_each_of_them(color_folder, tiny_bit, tmp_path):
    seen: list[Progress] = []
    log = io.StringIO()  # not a terminal
    printer = _ProgressPrinter(False)
    printer.bar = TextProgress(stream=log, plain_interval=0.0)  # every update a line, to count them

    def both(p: Progress) -> None:
        seen.append(p)
        printer(p)

    config = TrainConfig(
        data_dir=str(color_folder),
        model=tiny_bit,
        device="cpu",
        strategy="full",
        steps=2,
        batch=16,
        micro_batch=4,
        resolution=32,
        workers=0,
        evaluations=1,
        precision="fp32",
    )
    try:
        result = fit(config, on_progress=both, out=tmp_path / "run")
    finally:
        printer.close()
    assert result.status == "done"

    training = [p for p in seen if p.phase == "training"]
    inside = [p for p in training if p.train_loss is None]
    # 16 images in micro-batches of 4: a report as each of the four begins, then the step's own report.
    assert [p.message for p in inside] == [
        f"micro-batch {k} of 4 of step {s}" for s in (1, 2) for k in (1, 2, 3, 4)
    ]
    assert [p.step for p in inside] == [0] * 4 + [1] * 4  # the last finished step, as the bar shows
    assert [p.step for p in training if p.train_loss is not None] == [1, 2]
    first_step = training.index(next(p for p in training if p.train_loss is not None))
    assert first_step == 4  # the micro-batch reports of step 1 came before its own report

    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    during = [line for line in lines if "micro-batch" in line]
    assert len(during) == 8
    assert all(re.search(r"step [01]/2  micro-batch \d of 4 of step [12]", line) for line in during)


def test_the_heartbeat_says_the_work_goes_on_while_a_step_is_silent():
    log = io.StringIO()
    bar = TextProgress(stream=log, plain_interval=0.0, heartbeat=0.2)
    bar.update(0.25, "step 3/12  micro-batch 5 of 16 of step 4")
    time.sleep(0.75)  # a long step: nothing arrives
    bar.update(0.33, "step 4/12  loss 0.500")
    time.sleep(0.1)  # the next line came: no heartbeat yet
    bar.close()
    assert _heartbeats() == []  # stopped and joined

    lines = log.getvalue().split("\n")
    assert lines[-1] == ""  # every line ends: nothing written half
    lines = lines[:-1]
    beats = [line for line in lines if "still working" in line]
    assert 2 <= len(beats) <= 4
    assert all(line.startswith("[#######") and "micro-batch 5 of 16 of step 4" in line for line in beats)
    assert re.search(r"\(still working: 0s since this update, 0s in all\)$", beats[0])
    assert lines[0].endswith("of step 4") and lines[-1].endswith("loss 0.500")  # in the order they happened
    assert "\r" not in log.getvalue()

    before = log.getvalue()
    time.sleep(0.4)
    assert log.getvalue() == before  # closed: no line after it


def test_the_heartbeat_stays_off_on_a_terminal_and_when_not_asked():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, heartbeat in ((Terminal(), 0.05), (io.StringIO(), None)):
        bar = TextProgress(stream=stream, heartbeat=heartbeat)
        bar.update(0.5, "half")
        time.sleep(0.2)
        assert _heartbeats() == []
        bar.close()
        assert "still working" not in stream.getvalue()


@pytest.mark.parametrize("closes", [1, 2])
def test_a_bar_reused_after_close_gets_a_new_heartbeat(closes):
    # The training printer closes its bar at each new phase and updates it again.
    log = io.StringIO()
    bar = TextProgress(stream=log, heartbeat=0.1)
    for _ in range(closes):
        bar.update(0.1, "scanning")
        bar.close()
    bar.update(0.5, "training")
    time.sleep(0.35)
    bar.close()
    assert _heartbeats() == []
    assert any("training  (still working" in line for line in log.getvalue().splitlines())


def test_the_train_page_shows_a_step_under_way_and_draws_no_point_for_it():
    from app.pages.train_page import progress_text
    from app.training import ProgressDigest

    inside = Progress(
        "training", 3, 500, step=3, total_steps=500, eta=125.0, message="micro-batch 5 of 16 of step 4"
    )
    text, value, maximum = progress_text(inside)
    assert text == "Training — step 3 / 500 · micro-batch 5 of 16 of step 4 · 2m05s left"
    assert (value, maximum) == (3, 500)

    digest = ProgressDigest()
    digest.add(Progress("training", 3, 500, step=3, total_steps=500, train_loss=0.7, lr=0.01))
    digest.add(inside)
    digest.add(Progress("training", 4, 500, step=4, total_steps=500, train_loss=0.6, lr=0.01))
    taken = digest.take()
    assert taken.train_points == [(3, 0.7, 0.01), (4, 0.6, 0.01)]  # the curve: finished steps only
    assert taken.messages == ["Training from step 2 of 500…"]

    resumed = ProgressDigest()  # a resumed run whose first report comes from inside step 11
    resumed.add(
        Progress("training", 10, 500, step=10, total_steps=500, message="micro-batch 1 of 16 of step 11")
    )
    assert resumed.take().messages == ["Training from step 10 of 500…"]
