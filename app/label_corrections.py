"""Label corrections as the window records them, and the words it shows for them.

The engine's `CorrectionStore` keeps the corrections of each data folder under the user data folder, never
in the photo folder. The Data step (the list of likely label errors, the list of corrections) and the Evaluate
step (the big photo of the gallery) record them through `correct` and `take_back`, then tell the window's
other steps with `AppState.corrections_changed`.

A correction is made against the label the photo's *folder* gives it. The label a person sees may already
come from an earlier correction (a run trained with it shows the corrected class as the photo's class), so
`correct` looks that earlier correction up: choosing another class replaces it, and choosing the folder's own
class again takes it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine module is light, but the window imports this at start-up
    from bit_engine.corrections import Correction


def correct(data_dir: str, path: str, label_now: str, target: str | None) -> Correction | None:
    """Record that the photo at `path` belongs to `target` (None: leave it out of training and validation).

    Args:
        data_dir: the data folder.
        path: the photo, relative to `data_dir`, '/'-separated (as the engine's `Sample.path`).
        label_now: the label the person saw: its folder's, or an earlier correction's.
        target: the class it belongs to, or None.

    Returns:
        The correction now in force, or None when `target` is the folder's own label (the earlier
        correction, if any, was taken back).

    Raises:
        CorrectionsError: the store of this folder is damaged, or the correction is malformed.
    """
    from bit_engine.corrections import Correction, CorrectionStore

    store = CorrectionStore(data_dir)
    earlier = store.get(path)
    folder_label = earlier.given if earlier is not None else label_now
    if target == folder_label:
        store.remove(path)
        return None
    correction = Correction(path, folder_label, target)
    store.add(correction)
    return correction


def take_back(data_dir: str, paths: Iterable[str]) -> int:
    """Take back the corrections of `paths` (their folders' labels apply again); returns how many there were."""
    from bit_engine.corrections import CorrectionStore

    store = CorrectionStore(data_dir)
    return sum(store.remove(path) is not None for path in paths)


def outcome(correction: Correction) -> str:
    """What a correction does, in a few words: ``moved to dog`` or ``left out``."""
    return "left out" if correction.corrected is None else f"moved to {correction.corrected}"


def count_sentence(n: int) -> str:
    """The corrections list's header: how many the next run uses."""
    if n == 0:
        return "No corrections: the next run uses the labels of your folders as they are."
    return f"{n} correction{'' if n == 1 else 's'} will be used by the next run"


def how_sure(probability: float) -> str:
    """A probability in words and percent, for people who do not read probabilities: ``very likely (96%)``."""
    if probability >= 0.9:
        words = "very likely"
    elif probability >= 0.7:
        words = "likely"
    else:
        words = "possibly"
    # Rounding must not claim certainty: 0.996 reads ">99%", never "100%".
    percent = ">99%" if probability >= 0.995 else f"{probability:.0%}"
    return f"{words} ({percent})"
