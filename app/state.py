"""What the steps share: the folder, its scan, the plan, the run and the exported model.

Pages read `AppState` and react to its signals; they never reach into each other's widgets. The window
decides from it which steps can be used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

if TYPE_CHECKING:  # the engine's config module imports torch: only for type checkers here
    from bit_engine.config import TrainConfig
    from bit_engine.dataset import DatasetReport


class AppState(QObject):
    """The shared state of one window.

    Signals:
        folderChanged(str): a data folder was opened (path).
        datasetChanged(object): a scan finished: bit_engine.dataset.DatasetReport (or None when cleared).
        planChanged(object): the TrainConfig (bit_engine.config.TrainConfig) the Plan step would train with
            (or None when there is none).
        runChanged(str): the current run folder (a finished or selected run); "" when none.
        modelExported(str): path of the ONNX file just exported.
        correctionsChanged(str): the label corrections kept for this data folder changed (recorded, undone,
            imported); whoever shows or uses them reads them again.
    """

    folderChanged = Signal(str)
    datasetChanged = Signal(object)
    planChanged = Signal(object)
    runChanged = Signal(str)
    modelExported = Signal(str)
    correctionsChanged = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.data_dir: str | None = None
        self.report: DatasetReport | None = None
        self.config: TrainConfig | None = None
        self.run_dir: str | None = None
        self.onnx_path: str | None = None
        # Several devices for one run (data-parallel), as the engine's `--devices` text ("all"); None: the
        # config's single `device`. Set by the Plan step before it publishes a config.
        self.devices: str | None = None

    def set_folder(self, path: str) -> None:
        """A folder was opened: its previous scan and plan no longer apply."""
        self.data_dir = str(path)
        self.folderChanged.emit(self.data_dir)
        self.set_report(None)

    def set_report(self, report: DatasetReport | None) -> None:
        self.report = report
        self.datasetChanged.emit(report)
        if report is None or not report.ok:
            self.set_config(None)

    def set_config(self, config: TrainConfig | None) -> None:
        if config is None and self.config is None:
            return
        self.config = config
        self.planChanged.emit(config)

    def set_run(self, run_dir: str | None) -> None:
        self.run_dir = str(run_dir) if run_dir else None
        self.runChanged.emit(self.run_dir or "")

    def corrections_changed(self, data_dir: str) -> None:
        """Say that the label corrections of `data_dir` changed (the engine's store holds them)."""
        self.correctionsChanged.emit(str(data_dir))

    def set_exported(self, path: str) -> None:
        self.onnx_path = str(path)
        self.modelExported.emit(self.onnx_path)
