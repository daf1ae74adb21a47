"""The confusion matrix as a heatmap: a table model holding the counts, a delegate painting them, a view.

Rows are true classes, columns predicted ones. Colour encodes the *row-normalised* rate (the share of a true
class that went to each column), not the raw count: with unbalanced classes a raw-count colour would make the
big classes' errors shout and hide a small class that is always wrong. Correct cells (the diagonal) are blue,
mistakes orange to red, so the eye finds the errors at any size.

The model is the single source of what the matrix says: counts as display data, class names as header data,
the rate under `RATE_ROLE` and a sentence under the tooltip and accessible-text roles, so a screen reader,
a test and a person read the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QWheelEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

#: The share (0..1) of the true class (the row) that a cell holds.
RATE_ROLE = Qt.ItemDataRole.UserRole + 1

_WHITE = QColor(255, 255, 255)
_CORRECT = QColor(33, 102, 172)  # blue: right answers
_WRONG = QColor(214, 47, 39)  # red: mistakes
_WRONG_LIGHT = QColor(253, 174, 97)  # orange: the first few percent of mistakes are already visible


def _mix(a: QColor, b: QColor, t: float) -> QColor:
    t = min(max(t, 0.0), 1.0)
    return QColor(
        round(a.red() + (b.red() - a.red()) * t),
        round(a.green() + (b.green() - a.green()) * t),
        round(a.blue() + (b.blue() - a.blue()) * t),
    )


def cell_colour(rate: float, correct: bool) -> QColor:
    """The heatmap colour of a cell holding `rate` of its row.

    A mistake rate is stretched (square root) so that 2% already reads as a pale orange: the matrix is looked
    at to find mistakes, and most of them are rare.
    """
    if rate <= 0.0:
        return _WHITE
    if correct:
        return _mix(_WHITE, _CORRECT, 0.15 + 0.85 * rate)
    t = rate**0.5
    return _mix(_WRONG_LIGHT, _WRONG, t) if t > 0.0 else _WHITE


def _text_colour(background: QColor) -> QColor:
    # Perceived luminance (ITU-R BT.601): dark text on light cells, white on dark ones.
    luminance = 0.299 * background.red() + 0.587 * background.green() + 0.114 * background.blue()
    return QColor(0, 0, 0) if luminance > 150 else QColor(255, 255, 255)


class ConfusionMatrixModel(QAbstractTableModel):
    """Counts of (true class, predicted class) pairs.

    Display data is the count (an int), header data the class name in both directions; `RATE_ROLE` gives the
    row-normalised rate, the tooltip a sentence such as "12 bees predicted as ants (8% of bees)".
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._classes: list[str] = []
        self._counts: list[list[int]] = []
        self._row_totals: list[int] = []

    def set_matrix(self, classes: Sequence[str], counts: Sequence[Sequence[int]]) -> None:
        """Show `counts` (rows: true class, columns: predicted class, both in `classes` order).

        Raises:
            ValueError: the matrix is not square with one row per class.
        """
        if len(counts) != len(classes) or any(len(row) != len(classes) for row in counts):
            raise ValueError(
                f"A confusion matrix for {len(classes)} classes must be {len(classes)}x{len(classes)}."
            )
        self.beginResetModel()
        self._classes = [str(c) for c in classes]
        self._counts = [[int(v) for v in row] for row in counts]
        self._row_totals = [sum(row) for row in self._counts]
        self.endResetModel()

    def clear(self) -> None:
        self.set_matrix([], [])

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def count(self, true: int, predicted: int) -> int:
        return self._counts[true][predicted]

    def rate(self, true: int, predicted: int) -> float:
        total = self._row_totals[true]
        return self._counts[true][predicted] / total if total else 0.0

    def describe(self, true: int, predicted: int) -> str:
        """A sentence about one cell, e.g. "12 bees predicted as ants (8% of bees)"."""
        n, name = self._counts[true][predicted], self._classes[true]
        share = (
            f"{self.rate(true, predicted):.0%} of {name}" if self._row_totals[true] else f"no {name} images"
        )
        images = "image" if n == 1 else "images"
        if true == predicted:
            return f"{n} {name} {images} predicted correctly ({share})"
        return f"{n} {name} {images} predicted as {self._classes[predicted]} ({share})"

    # Qt model interface ---------------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._classes)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._classes)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r, c = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._counts[r][c]
        if role in (Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.AccessibleTextRole):
            return self.describe(r, c)
        if role == RATE_ROLE:
            return self.rate(r, c)
        if role == Qt.ItemDataRole.BackgroundRole:
            return cell_colour(self.rate(r, c), r == c)
        if role == Qt.ItemDataRole.ForegroundRole:
            return _text_colour(cell_colour(self.rate(r, c), r == c))
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if not 0 <= section < len(self._classes):
            return None
        name = self._classes[section]
        if role == Qt.ItemDataRole.DisplayRole:
            return name
        if role == Qt.ItemDataRole.ToolTipRole:
            total = self._row_totals[section]
            if orientation == Qt.Orientation.Vertical:
                return f"True class {name}: {total} image{'s' if total != 1 else ''}"
            predicted = sum(row[section] for row in self._counts)
            return f"Predicted {name}: {predicted} image{'s' if predicted != 1 else ''}"
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable


class ConfusionMatrixDelegate(QStyledItemDelegate):
    """Paints a cell as its heatmap colour with the count centred; the count is left out when it no longer fits
    (a 100-class matrix zoomed to fit): the colour and the tooltip still tell."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        rect: QRect = option.rect
        background = index.data(Qt.ItemDataRole.BackgroundRole) or _WHITE
        painter.save()
        painter.fillRect(rect, background)
        if option.state & QStyle.StateFlag.State_Selected:
            pen = painter.pen()
            pen.setColor(option.palette.color(QPalette.ColorRole.Highlight))
            pen.setWidth(3)
            painter.setPen(pen)
            painter.drawRect(rect.adjusted(1, 1, -2, -2))
        text = str(index.data(Qt.ItemDataRole.DisplayRole))
        metrics = option.fontMetrics
        if metrics.horizontalAdvance(text) + 4 <= rect.width() and metrics.height() <= rect.height():
            painter.setPen(index.data(Qt.ItemDataRole.ForegroundRole) or QColor(0, 0, 0))
            painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), text)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return QSize(ConfusionMatrixView.DEFAULT_CELL, ConfusionMatrixView.DEFAULT_CELL)


class _ClassHeader(QHeaderView):
    """Class names along one side of the matrix: columns' names run bottom-to-top, so long names fit above
    narrow columns. When a section is too thin for a line of text (a big matrix zoomed to fit), the header
    shrinks to a thin strip: the cells' tooltips still name the classes."""

    STRIP = 6

    def __init__(self, orientation: Qt.Orientation, parent: QWidget | None = None):
        super().__init__(orientation, parent)
        self._extent = 80  # height of the column header, width of the row header
        self.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.setMinimumSectionSize(1)
        self.setHighlightSections(True)
        # Past the last class the header is empty: let it blend into the view instead of a grey slab.
        self.setStyleSheet("QHeaderView { background-color: palette(base); border: none; }")

    def compact(self) -> bool:
        return self.defaultSectionSize() < self.fontMetrics().height()

    def label_extent(self) -> int:
        """Room the longest class name needs across the header (capped: longer names are elided)."""
        model = self.model()
        count = model.columnCount() if self.orientation() == Qt.Orientation.Horizontal else model.rowCount()
        names = [str(model.headerData(i, self.orientation()) or "") for i in range(count)] if model else []
        longest = max((self.fontMetrics().horizontalAdvance(n) for n in names), default=0)
        return min(160, max(40, longest + 14))

    def update_extent(self) -> None:
        self._extent = self.STRIP if self.compact() else self.label_extent()
        if self.orientation() == Qt.Orientation.Horizontal:
            self.setFixedHeight(self._extent)
        else:
            self.setFixedWidth(self._extent)

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        if self.orientation() == Qt.Orientation.Horizontal:
            return QSize(hint.width(), self._extent)
        return QSize(self._extent, hint.height())

    def paintSection(self, painter: QPainter, rect: QRect, logical_index: int) -> None:
        if not rect.isValid():
            return
        palette = self.palette()
        painter.save()
        painter.fillRect(rect, palette.color(QPalette.ColorRole.Button))
        painter.setPen(palette.color(QPalette.ColorRole.Mid))
        if self.orientation() == Qt.Orientation.Horizontal:
            painter.drawLine(rect.topRight(), rect.bottomRight())
        else:
            painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        if not self.compact():
            text = str(self.model().headerData(logical_index, self.orientation()) or "")
            metrics = painter.fontMetrics()
            painter.setPen(palette.color(QPalette.ColorRole.ButtonText))
            if self.orientation() == Qt.Orientation.Horizontal:
                elided = metrics.elidedText(text, Qt.TextElideMode.ElideRight, rect.height() - 8)
                baseline_x = rect.left() + (rect.width() + metrics.ascent() - metrics.descent()) / 2
                painter.translate(baseline_x, rect.bottom() - 4)
                painter.rotate(-90)
                painter.drawText(0, 0, elided)
            else:
                elided = metrics.elidedText(text, Qt.TextElideMode.ElideRight, rect.width() - 10)
                painter.drawText(
                    rect.adjusted(6, 0, -4, 0),
                    int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                    elided,
                )
        painter.restore()


class ConfusionMatrixView(QTableView):
    """A square-celled heatmap view with zoom (Ctrl + wheel, `zoom_in`/`zoom_out`, `zoom_to_fit`).

    Signals:
        cellChosen(int, int): the user clicked (or pressed Enter on) the cell of (true class, predicted class).
    """

    cellChosen = Signal(int, int)

    DEFAULT_CELL = 44
    FIT_MAX_CELL = 96  # zoom to fit stops here: a 2x2 matrix filling the page would look like a bug
    MIN_CELL = 3
    MAX_CELL = 120

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._cell = self.DEFAULT_CELL
        self._fitting = False
        self.setHorizontalHeader(_ClassHeader(Qt.Orientation.Horizontal, self))
        self.setVerticalHeader(_ClassHeader(Qt.Orientation.Vertical, self))
        self.setItemDelegate(ConfusionMatrixDelegate(self))
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setGridStyle(Qt.PenStyle.SolidLine)
        self.setWordWrap(False)
        self.setCornerButtonEnabled(False)
        self.setStyleSheet(
            "QTableView QTableCornerButton::section { background: palette(base); border: none; }"
        )
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.clicked.connect(self._on_clicked)
        self.activated.connect(self._on_clicked)

    @property
    def cell_size(self) -> int:
        return self._cell

    def set_cell_size(self, size: int) -> None:
        """Make every cell `size` pixels square (clamped to the view's limits); the view stops fitting itself."""
        self._fitting = False
        self._apply_cell_size(size)

    def _apply_cell_size(self, size: int) -> None:
        self._cell = max(self.MIN_CELL, min(self.MAX_CELL, int(size)))
        for header in (self.horizontalHeader(), self.verticalHeader()):
            header.setDefaultSectionSize(self._cell)
            header.update_extent()
        # Grid lines on cells a few pixels wide would be all one sees.
        self.setShowGrid(self._cell >= 8)
        # The viewport's margins follow the headers' size hints only when the view recomputes them.
        self.updateGeometries()

    def zoom_in(self) -> None:
        self.set_cell_size(max(self._cell + 1, round(self._cell * 1.25)))

    def zoom_out(self) -> None:
        self.set_cell_size(min(self._cell - 1, round(self._cell / 1.25)))

    def zoom_to_fit(self) -> None:
        """The largest cell size (up to `FIT_MAX_CELL`) at which the whole matrix fits without scrolling."""
        n = self.model().rowCount() if self.model() is not None else 0
        if n == 0:
            return
        frame = 2 * self.frameWidth()
        width, height = self.width() - frame - 1, self.height() - frame - 1
        text = self.fontMetrics().height()
        # With class names beside and above the cells, if cells can still be tall enough to hold a line of
        # text; else thin header strips and all the room to the cells.
        labelled = min(
            (width - self.verticalHeader().label_extent()) // n,
            (height - self.horizontalHeader().label_extent()) // n,
        )
        strip = _ClassHeader.STRIP
        if labelled >= text:
            self._apply_cell_size(min(self.FIT_MAX_CELL, labelled))
        else:
            self._apply_cell_size(min((width - strip) // n, (height - strip) // n, text - 1))
        self._fitting = True  # and it keeps fitting as the view is resized, until the user zooms

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fitting:
            self.zoom_to_fit()

    def setModel(self, model) -> None:
        super().setModel(model)
        if model is not None:
            model.modelReset.connect(self._on_model_reset)
        self._apply_cell_size(self._cell)

    def _on_model_reset(self) -> None:
        self._apply_cell_size(self._cell)  # header extents follow the new class names

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            if event.angleDelta().y() > 0:
                self.zoom_in()
            elif event.angleDelta().y() < 0:
                self.zoom_out()
            event.accept()
            return
        super().wheelEvent(event)

    def _on_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.cellChosen.emit(index.row(), index.column())
