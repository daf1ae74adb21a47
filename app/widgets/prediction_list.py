"""The Predict step's list: one row per file, its thumbnail and its top-3 labels with probability bars.

The display text of a row is "photo.jpg: bees 97.3%" (or "notes.txt: <why it could not be read>"), so
automation and screen readers read the answer without the painting; the full answer is under `ROW_ROLE`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from app.widgets.thumbnails import ThumbnailLoader

#: The `PredictionRow` of a row.
ROW_ROLE = Qt.ItemDataRole.UserRole + 1

THUMB = 72

#: Narrowest card: the list lays cards out in as many columns of at least this width as fit, and widens
#: them to fill the row.
MIN_CARD_WIDTH = 380
_BAR = QColor(33, 102, 172)
_BAR_BACK = QColor(226, 232, 240)
_ERROR = QColor(190, 40, 30)


@dataclass(frozen=True)
class PredictionRow:
    """The answer for one file.

    Attributes:
        path: the file, as given (dropped, added, or found in a dropped folder).
        predictions: (label, probability) pairs, most probable first; empty when `error` is set.
        error: why the file could not be predicted (not an image, damaged...), as a full sentence naming the
            file (what the CSV and the command line say), or None.
        detail: the same reason without the path, for the list (defaults to `error`).
        thumbnail: a small picture of the photo, or None.
    """

    path: str
    predictions: tuple[tuple[str, float], ...] = ()
    error: str | None = None
    detail: str | None = None
    thumbnail: QImage | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def label(self) -> str | None:
        return self.predictions[0][0] if self.predictions else None

    @property
    def probability(self) -> float | None:
        return self.predictions[0][1] if self.predictions else None

    def text(self) -> str:
        if self.error is not None:
            return f"{self.name}: {self.detail or self.error}"
        return f"{self.name}: {self.label} {self.probability:.1%}"


class PredictionListModel(QAbstractListModel):
    """Predictions in the order they finished; rows are only ever appended (streaming) or all cleared.

    Thumbnails are kept for the most recently shown `THUMBNAIL_CACHE` photos only, so a drop of tens of
    thousands of photos does not hold all their pictures in memory: a row whose thumbnail was let go asks
    the `ThumbnailLoader` again when it is painted.

    Args:
        loader: decodes thumbnails that are no longer cached (None: such rows show a grey square).
    """

    THUMBNAIL_CACHE = 1000

    def __init__(self, loader: ThumbnailLoader | None = None, parent=None):
        super().__init__(parent)
        self._rows: list[PredictionRow] = []
        self._row_of: dict[str, list[int]] = {}
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()  # least recently used first
        self._loader = loader
        if loader is not None:
            loader.loaded.connect(self._on_loaded)

    def append(self, rows: Iterable[PredictionRow]) -> None:
        """Add rows; their thumbnails move into the cache (the rows keep none themselves)."""
        kept = []
        for row in rows:
            if row.thumbnail is not None and not row.thumbnail.isNull():
                self._remember(row.path, QPixmap.fromImage(row.thumbnail))
                row = dataclasses.replace(row, thumbnail=None)
            kept.append(row)
        if not kept:
            return
        start = len(self._rows)
        self.beginInsertRows(QModelIndex(), start, start + len(kept) - 1)
        for i, row in enumerate(kept):
            self._row_of.setdefault(row.path, []).append(start + i)
        self._rows.extend(kept)
        self.endInsertRows()

    def clear(self) -> None:
        self.beginResetModel()
        self._rows = []
        self._row_of = {}
        self._pixmaps.clear()
        if self._loader is not None:
            self._loader.clear()
        self.endResetModel()

    def rows(self) -> list[PredictionRow]:
        return list(self._rows)

    def cached_thumbnails(self) -> int:
        return len(self._pixmaps)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            return row.text()
        if role == Qt.ItemDataRole.ToolTipRole:
            if row.error is not None:
                return f"{row.path}\n{row.error}"
            return row.path + "\n" + "\n".join(f"{label}: {p:.2%}" for label, p in row.predictions)
        if role == Qt.ItemDataRole.DecorationRole:
            return self._pixmap(row)
        if role == ROW_ROLE:
            return row
        return None

    def _remember(self, path: str, pixmap: QPixmap) -> None:
        self._pixmaps[path] = pixmap
        self._pixmaps.move_to_end(path)
        while len(self._pixmaps) > self.THUMBNAIL_CACHE:
            evicted, _ = self._pixmaps.popitem(last=False)
            if self._loader is not None:
                self._loader.forget(evicted)  # so that it can be asked for again

    def _pixmap(self, row: PredictionRow) -> QPixmap | None:
        pixmap = self._pixmaps.get(row.path)
        if pixmap is not None:
            self._pixmaps.move_to_end(row.path)
        elif row.error is None and self._loader is not None:
            self._loader.request(row.path)
        return pixmap

    def _on_loaded(self, path: str, image: QImage) -> None:
        rows = self._row_of.get(path)
        if not rows:
            return
        self._remember(path, QPixmap.fromImage(image))
        for r in rows:
            index = self.index(r)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


class PredictionDelegate(QStyledItemDelegate):
    """A row: the thumbnail, the file name, then each of the top-k labels with a probability bar."""

    def __init__(self, top_k: int = 3, parent=None):
        super().__init__(parent)
        self.top_k = top_k
        self.card_width = MIN_CARD_WIDTH

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        line = option.fontMetrics.height()
        return QSize(self.card_width, max(THUMB + 8, 8 + line * (1 + self.top_k) + 2 * self.top_k))

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        row: PredictionRow = index.data(ROW_ROLE)
        rect: QRect = option.rect
        palette: QPalette = option.palette
        painter.save()
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        card = rect.adjusted(1, 1, -1, -1)
        painter.fillRect(
            card,
            palette.color(QPalette.ColorRole.Highlight).lighter(170)
            if selected
            else palette.color(QPalette.ColorRole.AlternateBase),
        )
        painter.setPen(palette.color(QPalette.ColorRole.Midlight))
        painter.drawRect(card.adjusted(0, 0, -1, -1))
        box = QRect(rect.left() + 4, rect.top() + 4, THUMB, THUMB)
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            scaled = pixmap.scaled(
                box.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            painter.drawPixmap(
                box.left() + (THUMB - scaled.width()) // 2, box.top() + (THUMB - scaled.height()) // 2, scaled
            )
        else:
            painter.fillRect(box, QColor(235, 235, 235))
            painter.setPen(QColor(150, 150, 150))
            painter.drawText(box, int(Qt.AlignmentFlag.AlignCenter), "?" if row.error else "")
        metrics = option.fontMetrics
        line = metrics.height()
        left = box.right() + 10
        width = rect.right() - left - 6
        y = rect.top() + 4
        bold = QFont(option.font)
        bold.setBold(True)
        painter.setFont(bold)
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        painter.drawText(
            QRect(left, y, width, line),
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            painter.fontMetrics().elidedText(row.name, Qt.TextElideMode.ElideMiddle, width),
        )
        painter.setFont(option.font)
        y += line + 2
        if row.error is not None:
            painter.setPen(_ERROR)
            painter.drawText(
                QRect(left, y, width, rect.bottom() - y),
                int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap),
                row.detail or row.error,
            )
            painter.restore()
            return
        label_width = min(max(80, width * 2 // 5), 220)
        percent_width = metrics.horizontalAdvance("100.0%") + 6
        # Capped: on a wide window a full-width bar puts the percentage far from its label.
        bar_width = max(20, min(320, width - label_width - percent_width - 8))
        for i, (label, probability) in enumerate(row.predictions[: self.top_k]):
            font = bold if i == 0 else option.font
            painter.setFont(font)
            painter.setPen(palette.color(QPalette.ColorRole.Text))
            painter.drawText(
                QRect(left, y, label_width, line),
                int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                painter.fontMetrics().elidedText(label, Qt.TextElideMode.ElideRight, label_width),
            )
            bar = QRect(left + label_width + 4, y + 3, bar_width, line - 6)
            painter.fillRect(bar, _BAR_BACK)
            painter.fillRect(
                QRect(bar.left(), bar.top(), round(bar.width() * probability), bar.height()),
                _BAR if i == 0 else _BAR.lighter(150),
            )
            painter.setFont(option.font)
            painter.drawText(
                QRect(bar.right() + 6, y, percent_width, line),
                int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                f"{probability:.1%}",
            )
            y += line + 2
        painter.restore()


class PredictionList(QListView):
    """The view of a `PredictionListModel`: one card per photo, painted by a `PredictionDelegate`."""

    def __init__(self, parent: QWidget | None = None, top_k: int = 3):
        super().__init__(parent)
        self.thumbnails = ThumbnailLoader(size=2 * THUMB, threads=1, parent=self)
        self.prediction_model = PredictionListModel(self.thumbnails, self)
        self.setModel(self.prediction_model)
        self.setItemDelegate(PredictionDelegate(top_k, self))
        self.setUniformItemSizes(True)
        # Cards flow left to right and wrap: a wide window shows several columns instead of empty space.
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setSpacing(3)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)

    def rows(self) -> Sequence[PredictionRow]:
        return self.prediction_model.rows()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        delegate = self.itemDelegate()
        room = self.viewport().width() - 2 * self.spacing()
        columns = max(1, room // (MIN_CARD_WIDTH + 2 * self.spacing()))
        width = max(MIN_CARD_WIDTH // 2, room // columns - 2 * self.spacing())
        if isinstance(delegate, PredictionDelegate) and delegate.card_width != width:
            delegate.card_width = width
            self.scheduleDelayedItemsLayout()  # uniform sizes are cached: lay the cards out again
