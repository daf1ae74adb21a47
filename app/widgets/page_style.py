"""How a step's page is laid out: one title size and one margin, so that the steps read as one application,
and the height that shows a table whole.

The pages that are a title over their content (Data, Plan, Train, Runs, How it works) use both; Evaluate and
Predict give their whole area to the matrix and the prediction list and keep Qt's narrower margins."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QTableView

PAGE_TITLE_SCALE = 1.5  # times the application's font size
PAGE_MARGINS = (24, 18, 24, 12)  # left, top, right, bottom (pixels) around a titled page's content


def page_title(text: str, scale: float = PAGE_TITLE_SCALE) -> QLabel:
    """A bold label `scale` times the application's font size (a step's title unless told otherwise)."""
    label = QLabel(text)
    font = label.font()
    font.setPointSizeF(font.pointSizeF() * scale)
    font.setBold(True)
    label.setFont(font)
    return label


def height_showing_every_row(table: QTableView) -> int:
    """The height at which `table` shows its header and every row, without a scroll bar."""
    rows = sum(table.rowHeight(r) for r in range(table.model().rowCount()))
    return table.horizontalHeader().height() + rows + 2 * table.frameWidth() + 2
