"""A table model over a list of rows, one object a row, with fixed column titles.

The Runs step's list and the comparison's figures are both this: subclasses give `COLUMNS` and `data`.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt


class RowTableModel(QAbstractTableModel):
    """`rows` shown one per table row under the titles in `COLUMNS`.

    Subclasses give `text` (a cell's words, also read by screen readers) and, for other roles, `role_data`.
    """

    COLUMNS: tuple[str, ...] = ()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list = []

    def set_rows(self, rows) -> None:
        """Show `rows` instead (views keep their scroll position but not their selection)."""
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def row_at(self, row: int):
        """The object shown in table row `row`, or None outside the table."""
        return self.rows[row] if 0 <= row < len(self.rows) else None

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            return self.text(row, index.column())
        return self.role_data(row, index, role)

    def text(self, row, column: int) -> str:
        """The words in `column` for `row`."""
        raise NotImplementedError

    def role_data(self, row, index: QModelIndex | QPersistentModelIndex, role: int):
        """What a role other than display text holds for the cell at `index` (`row` is its object)."""
        return None
