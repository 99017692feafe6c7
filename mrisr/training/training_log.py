"""What a training run reports: ``training_log.txt``, ``progress.png`` and its history.

The history (training loss, learning rate, seconds per iteration, validation PSNR/SSIM)
is plain lists, stored in every checkpoint so that a resumed run continues the curves.
Both files are rewritten atomically; the log keeps the lines of earlier (interrupted)
runs of the fold and appends to them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mrisr.metrics.registry import metrics
from mrisr.utilities.file_io import atomic_path, write_bytes_atomic

logger = logging.getLogger("mrisr.training")

#: the training curves; the validation's follow (:func:`history_keys`)
TRAINING_KEYS = ("iteration", "loss", "learning_rate", "seconds_per_iteration", "val_iteration")


def history_keys() -> tuple[str, ...]:
    """The curves: training, then ``val_<name>`` of every full-reference metric registered
    (a plugin's included: read when a log is made, not when this module is imported)."""
    return (*TRAINING_KEYS, *(f"val_{m.name}" for m in metrics(reference=True)))


class TrainingLog:
    """History + log file + progress plot of one fold. ``enabled=False`` on non-main ranks
    (nothing is written, messages still go to ``logging`` at debug level)."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.folder = Path(folder)
        self.enabled = enabled
        self.log_file = self.folder / "training_log.txt"
        self.plot_file = self.folder / "progress.png"
        self.history: dict[str, list] = {k: [] for k in history_keys()}
        self._lines: list[str] = []
        if enabled and self.log_file.is_file():
            self._lines = self.log_file.read_text(encoding="utf-8").splitlines()

    # ---- messages
    def log(self, message: str, level: int = logging.INFO) -> None:
        """A line in training_log.txt (timestamped) and on the logger."""
        logger.log(level if self.enabled else logging.DEBUG, message)
        if self.enabled:
            self._lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {message}")
            self.flush()

    def flush(self) -> None:
        if self.enabled:
            write_bytes_atomic(self.log_file, ("\n".join(self._lines) + "\n").encode("utf-8"))

    # ---- curves
    def record_training(
        self, iteration: int, loss: float, learning_rate: float, seconds_per_iteration: float
    ) -> None:
        h = self.history
        h["iteration"].append(int(iteration))
        h["loss"].append(float(loss))
        h["learning_rate"].append(float(learning_rate))
        h["seconds_per_iteration"].append(float(seconds_per_iteration))

    def record_validation(self, iteration: int, values: dict[str, float]) -> None:
        """One validation: the value of each full-reference metric (``{"psnr": ...}``)."""
        h = self.history
        h["val_iteration"].append(int(iteration))
        for name, v in values.items():
            h.setdefault(f"val_{name}", []).append(float(v))

    def state_dict(self) -> dict:
        return {k: list(v) for k, v in self.history.items()}

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: list(state.get(k, [])) for k in history_keys()}

    def plot(self, title: str = "", marks: dict[int, str] | None = None) -> None:
        """Write progress.png: loss, validation PSNR/SSIM, learning rate, s/iteration;
        ``marks``: iteration -> label of a vertical line (early stopping's decisions)."""
        if not self.enabled or not self.history["iteration"]:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        h = self.history
        fig = Figure(figsize=(9, 9), dpi=90)
        FigureCanvasAgg(fig)
        ax = fig.subplots(3, 1, sharex=True)
        ax[0].plot(h["iteration"], h["loss"], color="b", label="training L1 loss")
        ax[0].set_ylabel("L1 loss")
        if h["loss"] and min(h["loss"]) > 0:
            ax[0].set_yscale("log")
        if h["val_iteration"]:
            a2 = ax[0].twinx()
            a2.plot(h["val_iteration"], h["val_psnr"], "g.-", label="validation PSNR (dB)")
            a2.set_ylabel("PSNR (dB)")
            a3 = ax[1]
            a3.plot(h["val_iteration"], h["val_ssim"], "m.-", label="validation SSIM")
            a3.set_ylabel("SSIM")
            a3.legend(loc="lower right")
            a2.legend(loc="upper right")
        else:
            ax[1].text(0.5, 0.5, "no validation pairs", ha="center", transform=ax[1].transAxes)
        ax[0].legend(loc="upper left")
        ax[2].plot(h["iteration"], h["seconds_per_iteration"], color="k", label="s / iteration")
        ax[2].set_ylabel("s / iteration")
        lr_ax = ax[2].twinx()
        lr_ax.plot(h["iteration"], h["learning_rate"], color="r", label="learning rate")
        lr_ax.set_ylabel("learning rate")
        ax[2].legend(loc="upper left")
        lr_ax.legend(loc="upper right")
        ax[2].set_xlabel("iteration")
        for it, label in (marks or {}).items():
            for a in ax:
                a.axvline(it, color="0.5", linestyle="--", linewidth=0.8)
            ax[0].annotate(
                label,
                (it, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="0.3",
            )
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(self.plot_file) as tmp:
            fig.savefig(tmp, format="png")
