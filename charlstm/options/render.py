"""An option's help as `--help` shows it: its own text, then "Default: ..." rendered from the
configs, the tokenizer presets, fine-tuning's preset and the sizing ladder (never typed by hand)."""

from __future__ import annotations

from dataclasses import MISSING, Field, fields

from charlstm.config import TOKENIZER_PRESETS, DynamicConfig, ModelConfig, TrainConfig
from charlstm.options.presets import FINE_TUNE_PRESET
from charlstm.training.ladder import CELL_LR_SCALE, DROPOUT_BY_EPOCHS, LADDER, OTHER_CELLS_LR_SCALE

CONFIGS = {"ModelConfig": ModelConfig, "TrainConfig": TrainConfig, "DynamicConfig": DynamicConfig}


def shown(value: object) -> str:
    """A default as help shows it: on/off, 0.008, 1,000,000, 10m."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return _sci(value) if 0 < abs(value) < 0.01 else f"{value:g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _sci(value: float) -> str:
    """3.2e-2, 8e-3: the ladder's learning rates as the README writes them."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def duration(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds % 3600 == 0 else f"{seconds / 60:g}m"


def by_kind(name: str, values: dict[str, object]) -> str:
    """'word: 20; bpe: 3e-3': a value per kind, kinds with the same value named together."""
    groups: dict[str, list[str]] = {}
    for kind, value in values.items():
        groups.setdefault(shown(value), []).append(kind)
    return "; ".join(f"{', '.join(kinds)}: {value}" for value, kinds in groups.items())


# What the sized defaults say, from the ladder the budget sizing climbs (training/ladder.py).
SIZED_LR = (
    f"the size's own when sized to the budget ({_sci(LADDER[0].lr)} for {LADDER[0]} … "
    f"{_sci(LADDER[-1].lr)} for {LADDER[-1]}; ×{OTHER_CELLS_LR_SCALE:g} for cells other than "
    f"{', '.join(CELL_LR_SCALE)}), else {{}}"
)
SIZED_DROPOUT = (
    f"sized to the budget (char: {shown(DROPOUT_BY_EPOCHS[0][1])} to "
    f"{shown(DROPOUT_BY_EPOCHS[-1][1])}), {{}} without one"
)


def default_of(f: Field) -> object:
    """The value an option left alone ends up with: its config field's default, else its own."""
    into = f.metadata.get("into")
    if into:
        config, name = into.split(".")
        return next(g.default for g in fields(CONFIGS[config]) if g.name == name)
    return None if f.default is MISSING else f.default


def help_text(f: Field) -> str:
    """The field's help, then "Default: …" rendered from the configs and presets."""
    meta = f.metadata
    says, value = meta.get("says"), default_of(f)
    if says is None:
        says = "" if value is None or not meta.get("into") else "{}"
    parts = [says.format(shown(value))] if says else []
    presets = {k: p[f.name] for k, p in TOKENIZER_PRESETS.items()
               if f.name in p and (p[f.name] != value or not meta.get("into"))}  # fmt: skip
    if presets:
        parts.append(by_kind(f.name, presets))
    if f.name in FINE_TUNE_PRESET and FINE_TUNE_PRESET[f.name] != value:
        parts.append(f"fine-tuning: {shown(FINE_TUNE_PRESET[f.name])}")
    return meta["help"] + (f" Default: {'; '.join(parts)}." if parts else "")
