"""The Data step's class table: one row per class with its photo counts and a strip of example thumbnails."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from app.widgets.thumbnails import ThumbnailLoader

#: Example photos shown per class.
EXAMPLES_PER_CLASS = 8

#: Side of an example thumbnail, in pixels.
THUMB_SIZE = 64

#: Role of the Examples column: the list of photo paths to draw.
PATHS_ROLE = Qt.ItemDataRole.UserRole + 10

_GAP = 4
_ROOT = QModelIndex()


@dataclass(frozen=True)
class ClassRow:
    name: str
    train: int
    val: int
    examples: tuple[str, ...]  # absolute paths
    nested: tuple[str, ...] = ()  # sub-folders of the class folder holding photos (counted in the class)


class ClassTableModel(QAbstractTableModel):
    """Classes with their training and validation counts and example paths (read-only)."""

    HEADERS = ("Class", "Training photos", "Validation photos", "Examples")
    CLASS, TRAIN, VAL, EXAMPLES = range(4)

    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self._rows: list[ClassRow] = []
        self._row_of: dict[str, int] = {}
        self._val_planned = False
        self.loader = loader
        self._images: dict[str, QImage | None] = {}  # None: the photo could not be decoded
        loader.loaded.connect(self._on_thumbnail_loaded)
        loader.failed.connect(self._on_thumbnail_failed)

    def thumbnail(self, path: str) -> QImage | None:
        """The decoded thumbnail of `path`, or None while it is not (or cannot be) decoded."""
        return self._images.get(path)

    def has_thumbnail(self, path: str) -> bool:
        """Whether `path` was decoded or failed (so there is nothing left to wait for)."""
        return path in self._images

    def set_rows(self, rows: list[ClassRow], val_planned: bool) -> None:
        """Show these classes; `val_planned` marks validation counts as a plan (no split on disk)."""
        self.beginResetModel()
        self._rows = list(rows)
        self._val_planned = val_planned
        self._row_of = {p: i for i, r in enumerate(self._rows) for p in r.examples}
        self.endResetModel()

    def rows(self) -> list[ClassRow]:
        return list(self._rows)

    def rowCount(self, parent=_ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=_ROOT) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            if section == self.VAL and self._val_planned:
                return "Validation photos (planned)"
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col = self._rows[index.row()], index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            if col == self.CLASS:
                if row.nested:
                    n = len(row.nested)
                    return f"{row.name}  (+{n} sub-folder{'s' if n > 1 else ''})"
                return row.name
            if col == self.TRAIN:
                return f"{row.train:,}"
            if col == self.VAL:
                return f"{row.val:,}" if row.val else "0: accuracy not measured"
            if col == self.EXAMPLES:
                return "" if role == Qt.ItemDataRole.DisplayRole else f"{len(row.examples)} example photos"
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.TRAIN, self.VAL):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and col == self.VAL and row.val == 0:
            return QColor(180, 90, 0)
        if role == Qt.ItemDataRole.ToolTipRole and col == self.CLASS and row.nested:
            return f"The photos in {', '.join(row.nested)} inside {row.name}/ count as {row.name}."
        if role == Qt.ItemDataRole.ToolTipRole and col == self.EXAMPLES:
            return "\n".join(row.examples)
        if role == PATHS_ROLE and col == self.EXAMPLES:
            return row.examples
        return None

    def _on_thumbnail_loaded(self, path: str, image: QImage) -> None:
        self._images[path] = image
        self._changed(path)

    def _on_thumbnail_failed(self, path: str, _why: str) -> None:
        self._images[path] = None
        self._changed(path)

    def _changed(self, path: str) -> None:
        row = self._row_of.get(path)
        if row is not None:
            index = self.index(row, self.EXAMPLES)
            self.dataChanged.emit(index, index)


class ThumbnailStripDelegate(QStyledItemDelegate):
    """Draws a cell's photo paths (PATHS_ROLE) as a row of thumbnails; asks the cache for missing ones."""

    def __init__(self, model: ClassTableModel, parent: QWidget | None = None):
        super().__init__(parent)
        self._model = model
        self._pixmaps: dict[str, QPixmap] = {}

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        n = len(index.data(PATHS_ROLE) or ())
        side = THUMB_SIZE
        return QSize(n * (side + _GAP) + _GAP, side + 2 * _GAP)

    def paint(self, painter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        style = opt.widget.style() if opt.widget else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        paths = index.data(PATHS_ROLE) or ()
        for p in paths:
            if not self._model.has_thumbnail(p):
                self._model.loader.request(p)  # asked once; the loader ignores repeats
        side = THUMB_SIZE
        x = opt.rect.left() + _GAP
        top = opt.rect.top() + (opt.rect.height() - side) // 2
        painter.save()
        painter.setClipRect(opt.rect)
        for path in paths:
            if x > opt.rect.right():
                break
            cell = QRect(x, top, side, side)
            pixmap = self._pixmap(path)
            if pixmap is None:
                painter.fillRect(cell, opt.palette.alternateBase())
            else:
                # Centred in its square, whatever the photo's aspect ratio.
                px = cell.left() + (side - pixmap.width()) // 2
                py = cell.top() + (side - pixmap.height()) // 2
                painter.drawPixmap(px, py, pixmap)
            x += side + _GAP
        painter.restore()

    def _pixmap(self, path: str) -> QPixmap | None:
        pixmap = self._pixmaps.get(path)
        if pixmap is None:
            image = self._model.thumbnail(path)
            if image is None:
                return None
            pixmap = self._pixmaps[path] = QPixmap.fromImage(image)
        return pixmap
