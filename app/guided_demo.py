"""`bit-studio demo` where there is a screen: the window plays the whole path on the sample data.

The person watches what they would do themselves, one step after the other, with a pause between steps and a
line in the status bar saying what is happening: the sample photos are made and read (Data), the HyperRule
plans a head-only run (Plan), the run trains in its child process with live curves (Train), the evaluation
shows what the model gets wrong (Evaluate), the model is exported to ONNX and checked, and a few sample photos
are predicted from that file (Predict). Every step goes through the same public methods and buttons a person
uses, so the demo shows the product, not a special path. The window stays open at the end; closing it at
any point stops the demo (and the training child, as closing always does).

Without a screen, `bit-studio demo` prints the same path in the terminal (the engine's command line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QElapsedTimer, QObject, QTimer, Signal

#: Seconds between two steps, so that each result can be seen before the next step starts.
PAUSE_S = 1.5
#: Photos of each class predicted at the end.
PHOTOS_PER_CLASS = 2


@dataclass
class _Stage:
    """One step of the demo: `begin` once, then `done` polled until true (it may act on the way)."""

    text: str  # what the status bar says while the stage runs
    begin: Callable[[], None]
    done: Callable[[], bool]
    timeout_s: float


class GuidedDemo(QObject):
    """Drives a `MainWindow` through Data, Plan, Train, Evaluate, Export and Predict on the sample data.

    Signals:
        finished(bool, str): the demo ended: whether every step worked, and the closing sentence.
    """

    finished = Signal(bool, str)

    def __init__(self, window, pause_s: float = PAUSE_S, model: str | None = None):
        super().__init__(window)
        self.window = window
        self.state = window.state
        self.pause_s = pause_s
        self.model = model
        self.model_note = ""
        self._predicted: list[str] = []
        self._acted: set[str] = set()
        self._stages = [
            _Stage(
                "1/6 Data: making the sample photos and reading them…", self._begin_data, self._data_done, 120
            ),
            _Stage("2/6 Plan: the HyperRule chooses the settings…", self._begin_plan, self._plan_done, 120),
            _Stage(
                "3/6 Train: a new head learns the four classes (the pre-trained network stays frozen)…",
                self._begin_train,
                self._train_done,
                1800,
            ),
            _Stage(
                "4/6 Evaluate: what the model gets right and wrong…",
                self._begin_evaluate,
                self._evaluated,
                300,
            ),
            _Stage(
                "5/6 Export: one ONNX file, checked against the app's model…",
                self._begin_export,
                self._exported,
                600,
            ),
            _Stage(
                "6/6 Predict: sample photos, predicted from that ONNX file…",
                self._begin_predict,
                self._predicted_all,
                300,
            ),
        ]
        self._index = -1
        self._clock = QElapsedTimer()
        self._timer = QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._on_tick)

    # ------------------------------------------------------------------------------------------------ control

    def start(self) -> None:
        """Begin with the first step (the window must be shown)."""
        if self.model is None:
            from bit_engine.model_choice import OFFLINE_MODEL, choose_default_model

            # Decided from what is on this machine, without the network: a first start has no BiT weights yet,
            # and the demo must not begin with a 270 MB download.
            choice = choose_default_model(download=False)
            self.model = choice.name
            if choice.name == OFFLINE_MODEL:
                self.model_note = (
                    f" The demo uses {OFFLINE_MODEL}, whose weights ship with BiT Studio; the Plan step downloads "
                    "the BiT models."
                )
        self._advance()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def _say(self, text: str) -> None:
        self.window.statusBar().showMessage(text)

    def _advance(self) -> None:
        self._index += 1
        stage = self._stages[self._index]
        self._say("Demo " + stage.text)
        stage.begin()
        self._clock.start()

    def _finish(self, ok: bool, text: str) -> None:
        self._timer.stop()
        self._say(text)
        self.finished.emit(ok, text)

    def _on_tick(self) -> None:
        stage = self._stages[self._index]
        try:
            done = stage.done()
        except _DemoStopped as stop:
            self._finish(False, f"The demo stopped at step {self._index + 1}: {stop}")
            return
        if not done:
            if self._clock.elapsed() > stage.timeout_s * 1000:
                self._finish(False, f"The demo stopped: step {self._index + 1} took longer than expected.")
            return
        if self._index == len(self._stages) - 1:
            self._finish(
                True,
                f"Demo finished: trained, evaluated, exported and predicted {len(self._predicted)} photos. "
                "Open your own folder from the Data step." + self.model_note,
            )
            return
        self._timer.stop()
        QTimer.singleShot(int(self.pause_s * 1000), self._resume)

    def _resume(self) -> None:
        if self._index < 0 or not self.window.isVisible():
            return  # the window was closed during the pause
        self._advance()
        self._timer.start()

    def _once(self, key: str) -> bool:
        """True the first time `key` is asked for: an action within a polled condition runs once."""
        if key in self._acted:
            return False
        self._acted.add(key)
        return True

    # ------------------------------------------------------------------------------------------------- stages

    def _begin_data(self) -> None:
        self.window.go_to("data")
        self.window.pages["data"].sample_button.click()

    def _data_done(self) -> bool:
        report = self.state.report
        if report is not None and not report.ok:
            raise _DemoStopped("the sample photos could not be read: " + " ".join(report.errors))
        return report is not None

    def _begin_plan(self) -> None:
        self.window.go_to("plan")

    def _plan_done(self) -> bool:
        page = self.window.pages["plan"]
        index = page.model_picker.findData(self.model)
        if index < 0:
            return False  # the model table is still loading
        if self._once("plan"):
            page.model_picker.setCurrentIndex(index)
            page.findChild(QObject, "strategy_head").click()
        config = self.state.config
        return config is not None and (config.model, config.strategy) == (self.model, "head")

    def _begin_train(self) -> None:
        self.window.go_to("train")

    def _train_done(self) -> bool:
        page = self.window.pages["train"]
        start = page.findChild(QObject, "startButton")
        if self._once("train"):
            if not start.isEnabled():
                self._acted.discard("train")
                return False
            start.click()
            return False
        if page.is_training():
            return False
        run_dir = self.state.run_dir
        if run_dir and (Path(run_dir) / "model.pt").is_file():
            return True
        raise _DemoStopped("training ended without a model: " + page.bar_text())

    def _begin_evaluate(self) -> None:
        self.window.go_to("evaluate")

    def _evaluated(self) -> bool:
        label = self.window.findChild(QObject, "accuracyLabel")
        return label is not None and "%" in label.text()

    def _begin_export(self) -> None:
        panel = self.window.pages["evaluate"].export_panel
        panel.export_to(panel.default_path(), int8=False)

    def _exported(self) -> bool:
        if self.state.onnx_path:
            return True
        if not self.window.pages["evaluate"].export_panel.is_busy() and self._clock.elapsed() > 2000:
            raise _DemoStopped("the export did not finish; the Evaluate step says why")
        return False

    def _begin_predict(self) -> None:
        self.window.go_to("predict")

    def _predicted_all(self) -> bool:
        page = self.window.pages["predict"]
        if page.model_path != self.state.onnx_path:
            return False  # the step is still opening the exported file
        if self._once("predict"):
            root = Path(self.state.data_dir)
            self._predicted = [
                str(p)
                for folder in sorted(d for d in root.iterdir() if d.is_dir())
                for p in sorted(folder.iterdir())[:PHOTOS_PER_CLASS]
            ]
            page.predict_paths(self._predicted)
        shown = self.window.findChild(QObject, "predictionList")
        return shown.model().rowCount() >= len(self._predicted)


class _DemoStopped(Exception):
    """A step ended in a state the demo cannot go on from; the message says what the window showed."""
