"""The images behind one confusion-matrix cell, as thumbnails; and the large view of one of them with its top-3.

`GalleryModel` holds `GalleryItem`s (file, true label, predicted label, confidence) in the order given (the
page passes the most confident mistakes first: the ones worth looking at). Thumbnails come from a
`ThumbnailLoader` as they are decoded; until then a tile shows a grey square, and a file that cannot be
decoded shows why in its tooltip. A photo whose label was corrected carries a mark (`GalleryModel.set_marks`:
"→ dog", "left out") on its tile, and the large view offers the corrections themselves ("This photo belongs
to…", "Leave it out", Undo) for photos of the run's own folder.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QMenu,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.widgets.thumbnails import ThumbnailLoader

#: The `GalleryItem` of a row.
ITEM_ROLE = Qt.ItemDataRole.UserRole + 1

#: The mark of a row's photo ("→ dog", "left out"), or None.
MARK_ROLE = Qt.ItemDataRole.UserRole + 2

THUMB = 112


@dataclass(frozen=True)
class GalleryItem:
    """One validation image as the model saw it.

    Attributes:
        path: the file (absolute).
        true: its class.
        predicted: the class the model gave it.
        confidence: the model's probability for `predicted`, or None when the report does not record it
            (correct answers: the report lists mistakes only).
    """

    path: str
    true: str
    predicted: str
    confidence: float | None = None

    @property
    def correct(self) -> bool:
        return self.true == self.predicted

    def caption(self) -> str:
        sure = f" ({self.confidence:.0%})" if self.confidence is not None else ""
        if self.correct:
            return f"{self.true}, correct{sure}"
        return f"{self.true} taken for {self.predicted}{sure}"


class GalleryModel(QAbstractListModel):
    """Gallery items with their thumbnails (decoded in the background as the view asks for them)."""

    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self._items: list[GalleryItem] = []
        self._rows: dict[str, list[int]] = {}
        self._thumbs: dict[str, QPixmap] = {}
        self._errors: dict[str, str] = {}
        self._marks: dict[str, str] = {}
        self._loader = loader
        loader.loaded.connect(self._on_loaded)
        loader.failed.connect(self._on_failed)

    def set_items(self, items: Sequence[GalleryItem]) -> None:
        self.beginResetModel()
        self._loader.clear()
        self._items = list(items)
        self._rows = {}
        for row, item in enumerate(self._items):
            self._rows.setdefault(item.path, []).append(row)
        # Keep only the thumbnails still shown: browsing every cell of a big matrix must not hoard pixmaps.
        self._thumbs = {path: pixmap for path, pixmap in self._thumbs.items() if path in self._rows}
        self._errors = {path: why for path, why in self._errors.items() if path in self._rows}
        self.endResetModel()

    def item(self, row: int) -> GalleryItem:
        return self._items[row]

    def set_marks(self, marks: dict[str, str]) -> None:
        """Marks shown on the tiles of these photos (path -> a few words, e.g. a label correction)."""
        if marks == self._marks:
            return
        self._marks = dict(marks)
        if self._items:
            self.dataChanged.emit(self.index(0), self.index(len(self._items) - 1), [MARK_ROLE])

    def mark(self, path: str) -> str | None:
        return self._marks.get(path)

    def items(self) -> list[GalleryItem]:
        return list(self._items)

    def thumbnail(self, path: str) -> QPixmap | None:
        return self._thumbs.get(path)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.caption()
        if role in (Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.AccessibleTextRole):
            why = self._errors.get(item.path)
            mark = self._marks.get(item.path)
            return (
                f"{item.caption()}\n{item.path}"
                + (f"\ncorrected: {mark}" if mark else "")
                + (f"\n{why}" if why else "")
            )
        if role == Qt.ItemDataRole.DecorationRole:
            pixmap = self._thumbs.get(item.path)
            if pixmap is None and item.path not in self._errors:
                self._loader.request(item.path)  # asked for only when a tile is painted: big cells stay cheap
            return pixmap
        if role == ITEM_ROLE:
            return item
        if role == MARK_ROLE:
            return self._marks.get(item.path)
        return None

    def _on_loaded(self, path: str, image: QImage) -> None:
        rows = self._rows.get(path)
        if not rows:
            return  # a thumbnail for a cell no longer shown
        self._thumbs[path] = QPixmap.fromImage(image)
        for row in rows:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    def _on_failed(self, path: str, reason: str) -> None:
        rows = self._rows.get(path)
        if not rows:
            return
        self._errors[path] = reason
        for row in rows:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.ToolTipRole])


class GalleryDelegate(QStyledItemDelegate):
    """A tile: the thumbnail, then the caption (true -> predicted, confidence) in two elided lines."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return QSize(THUMB + 16, THUMB + 12 + 2 * option.fontMetrics.height() + 6)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        item: GalleryItem = index.data(ITEM_ROLE)
        rect: QRect = option.rect
        palette: QPalette = option.palette
        painter.save()
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(rect, palette.color(QPalette.ColorRole.Highlight).lighter(160))
        box = QRect(rect.left() + (rect.width() - THUMB) // 2, rect.top() + 6, THUMB, THUMB)
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            scaled = pixmap.scaled(
                box.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            painter.drawPixmap(
                box.left() + (THUMB - scaled.width()) // 2, box.top() + (THUMB - scaled.height()) // 2, scaled
            )
        else:
            painter.fillRect(box, QColor(225, 225, 225))
        mark = index.data(MARK_ROLE)
        if mark:
            # A label correction: a green band across the bottom of the thumbnail, readable on any photo.
            band = QRect(
                box.left(),
                box.bottom() - option.fontMetrics.height() - 3,
                THUMB,
                option.fontMetrics.height() + 4,
            )
            painter.fillRect(band, QColor(29, 107, 44, 225))
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(
                band,
                int(Qt.AlignmentFlag.AlignCenter),
                option.fontMetrics.elidedText(f"✓ {mark}", Qt.TextElideMode.ElideRight, THUMB - 6),
            )
        metrics = option.fontMetrics
        line = metrics.height()
        text_rect = QRect(rect.left() + 4, box.bottom() + 6, rect.width() - 8, line)
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        first = item.true if item.correct else f"{item.true} → {item.predicted}"
        painter.drawText(
            text_rect,
            int(Qt.AlignmentFlag.AlignHCenter),
            metrics.elidedText(first, Qt.TextElideMode.ElideMiddle, text_rect.width()),
        )
        if item.confidence is not None:
            second = f"{item.confidence:.0%} sure" if not item.correct else f"correct, {item.confidence:.0%}"
        else:
            second = "correct" if item.correct else "mistake"
        painter.setPen(
            QColor(200, 40, 30) if not item.correct else palette.color(QPalette.ColorRole.PlaceholderText)
        )
        painter.drawText(
            text_rect.translated(0, line),
            int(Qt.AlignmentFlag.AlignHCenter),
            metrics.elidedText(second, Qt.TextElideMode.ElideRight, text_rect.width()),
        )
        painter.restore()


class MistakeGallery(QListView):
    """Thumbnails of the images of one confusion-matrix cell, wrapped in rows.

    Signals:
        itemChosen(object): the `GalleryItem` the user clicked (or pressed Enter on).
    """

    itemChosen = Signal(object)

    def __init__(self, loader: ThumbnailLoader, parent: QWidget | None = None):
        super().__init__(parent)
        self.gallery_model = GalleryModel(loader, self)
        self.setModel(self.gallery_model)
        self.setItemDelegate(GalleryDelegate(self))
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setSpacing(4)
        self.setWrapping(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.clicked.connect(self._on_clicked)
        self.activated.connect(self._on_clicked)

    def set_items(self, items: Sequence[GalleryItem]) -> None:
        self.gallery_model.set_items(items)

    def _on_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.itemChosen.emit(self.gallery_model.item(index.row()))


class TopKBars(QWidget):
    """Labels with probability bars: the top-k of one image, most probable first."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)
        self._rows: list[QWidget] = []

    def set_predictions(self, predictions: Sequence[tuple[str, float]], highlight: str | None = None) -> None:
        """Show (label, probability) pairs; `highlight` (the true class) is marked where it appears."""
        for widget in self._rows:
            self._layout.removeWidget(widget)
            widget.deleteLater()
        self._rows = []
        for label, probability in predictions:
            mark = "  ✓ true class" if highlight is not None and label == highlight else ""
            caption = QLabel(f"{label}{mark}", self)
            caption.setTextFormat(Qt.TextFormat.PlainText)  # class names are data, never markup
            bar = QProgressBar(self)
            bar.setRange(0, 1000)
            bar.setValue(round(probability * 1000))
            bar.setFormat(f"{probability:.1%}")
            bar.setTextVisible(True)
            bar.setAccessibleName(f"{label}: {probability:.1%}")
            for widget in (caption, bar):
                self._layout.addWidget(widget)
                self._rows.append(widget)


class PhotoDetail(QFrame):
    """One photo large, with its true class and the model's top-3.

    The page fills it in two steps: `show_item` at once (the photo is decoded in the background and arrives
    by `set_image`), then `set_top_k` when the model has answered (or `set_message` with the reason it could
    not). For a photo of the run's own folder the page also calls `offer_corrections`: "This photo belongs
    to…" (a class) and "Leave it out", or what was recorded, with Undo.

    Signals:
        correctionAsked(object, object): the `GalleryItem` and the class it belongs to (None: leave it out).
        undoAsked(object): take the `GalleryItem`'s correction back.
    """

    correctionAsked = Signal(object, object)
    undoAsked = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        self.image_label = QLabel(self)
        self.image_label.setObjectName("detailImage")
        self.image_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image_label.setMinimumSize(120, 120)
        self.image_label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.title = QLabel(self)
        self.title.setObjectName("detailTitle")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = QLabel(self)
        self.message.setObjectName("detailMessage")
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.bars = TopKBars(self)
        self.bars.setObjectName("detailTopK")
        self.corrections = self._build_corrections()
        layout.addWidget(self.image_label, 1)
        layout.addWidget(self.title)
        layout.addWidget(self.corrections)
        layout.addWidget(self.message)
        layout.addWidget(self.bars)
        self.setAccessibleName("Selected photo")
        self._pixmap: QPixmap | None = None
        self.item: GalleryItem | None = None
        self.show_placeholder()

    def _build_corrections(self) -> QWidget:
        box = QWidget(self)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.belongs_button = QPushButton("This photo belongs to…", box)
        self.belongs_button.setObjectName("belongsToClassButton")
        self.belongs_button.setAccessibleName("This photo belongs to another class")
        self.belongs_button.setToolTip(
            "Record its right class: the next run trains with it. The file stays where it is."
        )
        self.belongs_button.setMenu(QMenu(self.belongs_button))
        self.leave_button = QPushButton("Leave it out", box)
        self.leave_button.setObjectName("leaveOutPhotoButton")
        self.leave_button.setAccessibleName("Leave this photo out of the next run")
        self.leave_button.setToolTip(
            "The next run trains and validates without it. The file stays where it is."
        )
        self.leave_button.clicked.connect(lambda: self.item and self.correctionAsked.emit(self.item, None))
        actions = QHBoxLayout()
        actions.addWidget(self.belongs_button)
        actions.addWidget(self.leave_button)
        actions.addStretch(1)
        self.correction_label = QLabel(box)
        self.correction_label.setObjectName("photoCorrectionLabel")
        self.correction_label.setAccessibleName("The label correction of this photo")
        self.correction_label.setTextFormat(Qt.TextFormat.PlainText)
        self.correction_label.setStyleSheet("color: #1d6b2c;")
        self.correction_label.setWordWrap(True)
        self.undo_button = QPushButton("Undo", box)
        self.undo_button.setObjectName("undoPhotoCorrectionButton")
        self.undo_button.setAccessibleName("Undo the label correction of this photo")
        self.undo_button.clicked.connect(lambda: self.item and self.undoAsked.emit(self.item))
        recorded = QHBoxLayout()
        recorded.addWidget(self.correction_label, 1)
        recorded.addWidget(self.undo_button)
        layout.addLayout(actions)
        layout.addLayout(recorded)
        box.setVisible(False)
        return box

    def offer_corrections(
        self, classes: Sequence[str] | None, folder_label: str = "", mark: str | None = None
    ):
        """Offer "belongs to" (every class but `folder_label`) and "leave it out"; None hides them.

        Args:
            classes: the run's classes, or None when this photo cannot be corrected here.
            folder_label: the class its folder gives it.
            mark: what was recorded for it ("moved to dog", "left out"), or None.
        """
        self.corrections.setVisible(classes is not None and self.item is not None)
        if classes is None:
            return
        menu = self.belongs_button.menu()
        # Rebuilt only when its choices change, and the old actions deleted later: this runs from the
        # triggered signal of one of them, which must outlive its own emission.
        choices = [name for name in classes if name != folder_label]
        if [a.text() for a in menu.actions()] != choices:
            self._set_choices(menu, choices)
        self.belongs_button.setEnabled(bool(choices))
        self.correction_label.setVisible(mark is not None)
        self.undo_button.setVisible(mark is not None)
        if mark is not None:
            self.correction_label.setText(f"✓ Corrected: {mark}. The next run uses it.")

    def _set_choices(self, menu: QMenu, choices: Sequence[str]) -> None:
        for action in menu.actions():
            menu.removeAction(action)
            action.deleteLater()
        for name in choices:
            action = menu.addAction(name)
            action.triggered.connect(
                lambda _checked=False, target=name: self.item and self.correctionAsked.emit(self.item, target)
            )

    def show_placeholder(self) -> None:
        self.item = None
        self.corrections.setVisible(False)
        self._pixmap = None
        self.image_label.clear()
        self.image_label.setText("Click a thumbnail to see the photo large, with the model's top 3.")
        self.image_label.setWordWrap(True)
        self.title.setText("")
        self.message.setText("")
        self.bars.set_predictions([])

    def show_item(self, item: GalleryItem) -> None:
        self.item = item
        self.corrections.setVisible(False)
        self._pixmap = None
        self.image_label.clear()
        self.image_label.setText("Loading the photo…")
        name, true = html.escape(Path(item.path).name), html.escape(item.true)
        self.title.setText(f"<b>{name}</b><br>true class: {true}")
        self.message.setText("Asking the model for its top 3…")
        self.bars.set_predictions([])

    def set_image(self, image: QImage) -> None:
        self._pixmap = QPixmap.fromImage(image)
        self._rescale()

    def set_top_k(self, predictions: Sequence[tuple[str, float]]) -> None:
        self.message.setText("The model's top 3:")
        self.bars.set_predictions(predictions, highlight=self.item.true if self.item else None)

    def set_message(self, text: str) -> None:
        self.message.setText(text)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is None or self._pixmap.isNull():
            return
        # A little smaller than the label, or the label's size hint would grow with every resize.
        size = self.image_label.size() - QSize(6, 6)
        self.image_label.setPixmap(
            self._pixmap.scaled(
                size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
        )
