"""The Plan step's HyperRule table: one row per setting, with its value and why, editable in place.

The model shows a `bit_engine.hyperrule.HyperRulePlan`. Editing a value does not change the plan itself: the
model hands the new value to an `apply(field, value)` callable (the Plan page), which re-plans through the
engine and returns an error message when the engine refuses the value. A value the user chose is marked as
an override (bold, tinted, with the engine's warning in the Why column) until it is reset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox, QStyledItemDelegate, QWidget

_ROOT = QModelIndex()
_OVERRIDE_TINT = QColor(255, 243, 205)


@dataclass(frozen=True)
class Row:
    """One setting of the table.

    Attributes:
        key: stable name (tests, automation).
        label: what the user reads in the Setting column.
        field: the TrainConfig field an edit changes; "" for values that follow from others.
        override: the HyperRulePlan override name marking this row ("" when none).
        kind: "int", "float" or "bool" (a check box) for editable rows.
        minimum, maximum: the editor's range.
    """

    key: str
    label: str
    field: str = ""
    override: str = ""
    kind: str = ""
    minimum: float = 0
    maximum: float = 0


ROWS = (
    Row("resolution", "Resize, then crop", "resolution", "resolution", "int", 8, 1024),
    Row("steps", "Schedule length", "steps", "steps", "int", 1, 1_000_000),
    Row("warmup", "Warm-up"),
    Row("lr_drops", "Learning-rate drops"),
    Row("base_lr", "Base learning rate"),
    Row("batch", "Global batch", "batch", "batch", "int", 1, 65_536),
    Row("mixup", "Mixup", "mixup", "mixup", "float", 0, 10),
    Row("flip", "Horizontal flip", "flip", "flip", "bool"),
    Row("random_crop", "Random crop", "random_crop", "random_crop", "bool"),
)


def _value_text(key: str, plan) -> str:
    if key == "resolution":
        if plan.random_crop:
            return f"{plan.resize} px, random crop {plan.crop} px"
        return f"{plan.crop} px (no crop)"
    if key == "steps":
        epochs = plan.total_steps * plan.batch / max(plan.num_images, 1)
        return f"{plan.total_steps:,} steps (about {epochs:,.0f} passes over the photos)"
    if key == "warmup":
        return f"{plan.warmup_steps:,} steps"
    if key == "lr_drops":
        return "÷10 at steps " + ", ".join(f"{b:,}" for b in plan.lr_boundaries)
    if key == "base_lr":
        return f"{plan.base_lr:.4g}"
    if key == "batch":
        return f"{plan.batch:,} photos per step"
    if key == "mixup":
        return "off" if plan.mixup_alpha == 0 else f"alpha {plan.mixup_alpha:g}"
    if key == "flip":
        return "on" if plan.flip else "off"
    if key == "random_crop":
        return "on" if plan.random_crop else "off"
    raise KeyError(key)


def _edit_value(key: str, plan):
    return {
        "resolution": plan.crop,
        "steps": plan.total_steps,
        "batch": plan.batch,
        "mixup": float(plan.mixup_alpha),
        "flip": plan.flip,
        "random_crop": plan.random_crop,
    }.get(key)


def _why(key: str, plan) -> str:
    r = plan.reasons
    if key == "resolution":
        return r.get("resolution", "")
    if key == "steps":
        return r.get("steps", "")
    if key == "warmup":
        return (
            f"The learning rate rises from 0 over the first {plan.warmup_steps:,} steps, so the new last layer "
            "does not disturb the pre-trained weights early on. Follows the schedule length."
        )
    if key == "lr_drops":
        return "The learning rate is divided by 10 three times, for a careful finish. Follows the schedule length."
    if key == "base_lr":
        return r.get("batch", "") + " Follows the global batch."
    if key == "batch":
        return r.get("batch", "")
    if key == "mixup":
        return r.get("mixup", "")
    if key == "flip":
        return (
            "Photos are mirrored at random while training. Turn it off when mirroring changes the class "
            "(text, arrows, left and right hands)."
        )
    if key == "random_crop":
        return (
            "A random part of each photo is used while training. Turn it off when the position of things "
            "matters (a crop could cut off what decides the class)."
        )
    raise KeyError(key)


class HyperRuleModel(QAbstractTableModel):
    """Setting / Value / Why for a HyperRulePlan.

    Signals:
        rejected(str): an edited value the engine refused, with its message.
    """

    rejected = Signal(str)

    HEADERS = ("Setting", "Value", "Why")
    SETTING, VALUE, WHY = range(3)

    def __init__(self, apply: Callable[[str, object], str | None], parent=None):
        super().__init__(parent)
        self._apply = apply
        self._plan = None

    def set_plan(self, plan) -> None:
        self.beginResetModel()
        self._plan = plan
        self.endResetModel()

    def plan(self):
        return self._plan

    def row_of(self, key: str) -> int:
        return next(i for i, r in enumerate(ROWS) if r.key == key)

    def override_of(self, key: str):
        """The plan's Override for the setting of row `key`, or None when it follows the rule."""
        row = ROWS[self.row_of(key)]
        if self._plan is None or not row.override:
            return None
        return next((o for o in self._plan.overrides if o.setting == row.override), None)

    def rowCount(self, parent=_ROOT) -> int:
        return 0 if parent.isValid() or self._plan is None else len(ROWS)

    def columnCount(self, parent=_ROOT) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def flags(self, index):
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        row = ROWS[index.row()]
        if index.column() == self.VALUE and row.field:
            return base | (
                Qt.ItemFlag.ItemIsUserCheckable if row.kind == "bool" else Qt.ItemFlag.ItemIsEditable
            )
        return base

    def data(self, index: QModelIndex | QPersistentModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self._plan is None:
            return None
        row, col, plan = ROWS[index.row()], index.column(), self._plan
        override = self.override_of(row.key)
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            if col == self.SETTING:
                return row.label
            if col == self.VALUE:
                return _value_text(row.key, plan)
            if override is not None:
                if override.warning:  # the engine's warning names the rule's value itself
                    return f"Your choice. {override.warning}"
                rule = override.rule_value
                rule_text = ("on" if rule else "off") if isinstance(rule, bool) else f"{rule:g}"
                return f"Your choice (the rule: {rule_text}). {_why(row.key, plan)}"
            return _why(row.key, plan)
        if role == Qt.ItemDataRole.EditRole and col == self.VALUE:
            return _edit_value(row.key, plan)
        if role == Qt.ItemDataRole.CheckStateRole and col == self.VALUE and row.kind == "bool":
            return Qt.CheckState.Checked if _edit_value(row.key, plan) else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.FontRole and override is not None and col != self.WHY:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.BackgroundRole and override is not None:
            return _OVERRIDE_TINT
        if (
            role == Qt.ItemDataRole.ForegroundRole
            and override is not None
            and col == self.WHY
            and override.warning
        ):
            return QColor(150, 60, 0)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.VALUE and not row.field:
                return "Follows from the other settings."
            if col == self.VALUE:
                return "Double-click to change." if row.kind != "bool" else "Click to turn on or off."
            if col == self.WHY:
                return self.data(index, Qt.ItemDataRole.DisplayRole)
        return None

    def setData(self, index, value, role=Qt.ItemDataRole.EditRole) -> bool:
        if not index.isValid() or index.column() != self.VALUE:
            return False
        row = ROWS[index.row()]
        if not row.field:
            return False
        if row.kind == "bool":
            if role != Qt.ItemDataRole.CheckStateRole:
                return False
            value = Qt.CheckState(value) == Qt.CheckState.Checked
        elif role != Qt.ItemDataRole.EditRole:
            return False
        else:
            try:
                value = int(value) if row.kind == "int" else float(value)
            except (TypeError, ValueError):
                self.rejected.emit(f"{row.label}: {value!r} is not a number.")
                return False
        error = self._apply(row.field, value)
        if error:
            self.rejected.emit(error)
            return False
        return True  # the page re-plans and calls set_plan, which refreshes every row


class HyperRuleDelegate(QStyledItemDelegate):
    """Spin boxes with the row's range (Qt's default integer editor stops at 99)."""

    def createEditor(self, parent: QWidget, option, index):
        row = ROWS[index.row()]
        if row.kind == "int":
            editor = QSpinBox(parent)
            editor.setRange(int(row.minimum), int(row.maximum))
            editor.setGroupSeparatorShown(True)
        elif row.kind == "float":
            editor = QDoubleSpinBox(parent)
            editor.setRange(row.minimum, row.maximum)
            editor.setDecimals(2)
            editor.setSingleStep(0.1)
        else:
            return super().createEditor(parent, option, index)
        editor.setObjectName(f"{row.key}Editor")
        editor.setAccessibleName(f"{row.label} value")
        return editor
