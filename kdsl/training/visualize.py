"""``--visualize RECORD[,RECORD...]`` (MMRazor's RazorVisualizationHook): after each epoch's
validation, the recorded feature maps of a fixed set of validation samples (the first
:data:`SAMPLES`), drawn as a PNG grid into the run directory: ``visualize/epoch_NNN.png``, one
row per record (``visualize_channels = "mean"``: the mean over its channels) or three (``"top"``:
the three channels with the largest mean activation over those samples), one column per sample.

The samples run through the models in eval mode and without gradients, the teachers then the
student (each model's records are taken in its own pass), so drawing changes nothing the run
trains or draws at random."""

from __future__ import annotations

import io
from typing import Dict, List, Optional, Tuple

import torch

from kdsl.core.diagnostics import error
from kdsl.core.suggest import did_you_mean

SAMPLES = 4  # fixed validation samples drawn each epoch
FOLDER = "visualize/"
TOP = 3  # channels shown per record with visualize_channels = "top"


def parse_records(text: str, spec, span=None) -> List[str]:
    """The records ``--visualize a,b`` names, each a record of the spec (KD774 otherwise)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [r.name for r in spec.records]
    for name in names or [""]:
        if name not in known:
            raise error("KD774", f"--visualize names {'no record' if not name else repr(name)}: not a record "
                        "of the spec", span, hint=did_you_mean(name, known) or "records: " + ", ".join(known))
    return names


def visualizer_for(spec, cfg, data, run_dir, device, distiller) -> Optional["Visualizer"]:
    """The run's visualizer (``cfg.visualize``), or None; its records checked before the run trains
    (the dry run's shapes)."""
    if not cfg.visualize:
        return None
    setting = spec.train.get("visualize") if spec.train is not None and cfg.sources.get("visualize") == "spec" else None
    records = parse_records(cfg.visualize, spec, setting.value.span if setting is not None else None)
    if data is None:
        raise error("KD774", "--visualize draws validation samples, and the run has no data", hint="pass --data")
    plan = distiller.plan
    for name in records:
        info = plan.records[name].info if plan is not None and name in plan.records else None
        if info is not None and len(info.shape) not in (3, 4):
            raise not_a_map(spec, name, info.describe())
    return Visualizer(records, cfg.visualize_channels, data, run_dir, device)


def not_a_map(spec, name: str, shape: str):
    return error("KD775", f"--visualize: record '{name}' is {shape}, not a feature map [N, C, H, W] (or "
                 "[N, H, W])", spec.record(name).span, hint="visualize the records of convolutional stages")


class Visualizer:
    """Draws the maps of ``records`` for the first validation samples of ``data`` each epoch."""

    def __init__(self, records: List[str], channels: str, data, run_dir, device) -> None:
        self.records, self.channels, self.run_dir, self.device = records, channels, run_dir, device
        items = [data.val.dataset[i] for i in range(min(SAMPLES, len(data.val.dataset)))]
        self.inputs = torch.stack([item[0] for item in items])

    def maps(self, distiller) -> Dict[str, torch.Tensor]:
        """Each record's value on the fixed samples, [K, C, H, W] (or [K, H, W])."""
        x = self.inputs.to(self.device)
        training = distiller.training
        distiller.eval()
        try:
            with torch.no_grad():
                for name in distiller.used_teachers:
                    with distiller.teacher_pass(name) as teacher:
                        teacher(x)
                with distiller.student_pass() as student:
                    student(x)
                values = {n: distiller.recorders[n].read() for n in self.records}
        finally:
            distiller.train(training)
        for name, value in values.items():
            if not isinstance(value, torch.Tensor) or value.dim() not in (3, 4):
                raise not_a_map(distiller.spec, name, str(list(value.shape)) if isinstance(value, torch.Tensor)
                                else type(value).__name__)
        return {n: v.detach().float().cpu() for n, v in values.items()}

    def rows(self, maps: Dict[str, torch.Tensor]) -> List[Tuple[str, torch.Tensor]]:
        """(label, [K, H, W]) per row of the grid."""
        out = []
        for name, value in maps.items():
            if value.dim() == 3:
                out.append((name, value))
            elif self.channels == "mean":
                out.append((f"{name} (channel mean)", value.mean(dim=1)))
            else:
                top = value.mean(dim=(0, 2, 3)).topk(min(TOP, value.shape[1])).indices.tolist()
                out += [(f"{name} channel {c}", value[:, c]) for c in top]
        return out

    def draw(self, distiller, epoch: int) -> Optional[str]:
        """visualize/epoch_NNN.png; None, or why it was skipped (no matplotlib)."""
        png = plot_grid(self.rows(self.maps(distiller)), epoch)
        if png is None:
            return "matplotlib is not installed: skipped --visualize (pip install 'kdsl[plot]')"
        self.run_dir.write_file(f"{FOLDER}epoch_{epoch:03d}.png", png)
        return None


def plot_grid(rows: List[Tuple[str, torch.Tensor]], epoch: int) -> Optional[bytes]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    k = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.6 * k + 1.5, 1.6 * len(rows)), squeeze=False)
    for r, (label, maps) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(maps[c].numpy(), cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_title(f"sample {c}", fontsize=8)
    fig.suptitle(f"epoch {epoch}", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
