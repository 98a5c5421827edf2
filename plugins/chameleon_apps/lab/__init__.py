"""Experiments that reproduce the paper's findings at small scale (``chameleon lab ...``).

- :func:`run_stability_sweep`: the stability ablation as a Wortsman-style learning-rate sweep
  (docs/stability-lab.md).
- :func:`run_mot_lab`: dense vs modality-aware experts (``mot``) on Shapes World (docs/mot.md).
"""

from __future__ import annotations

from chameleon_apps.lab.mot import LossCurve, MoTLabConfig, MoTLabReport, run_mot_lab
from chameleon_apps.lab.stability import (
    DEFAULT_ARMS,
    DEFAULT_LRS,
    ArmSummary,
    RunResult,
    StabilityReport,
    StabilitySweepConfig,
    held_out_batch,
    lr_sensitivity,
    parse_arm,
    run_stability_sweep,
    sweep_data,
    train_run,
)
from chameleon_apps.lab.synthetic import SyntheticMix, SyntheticMixConfig

__all__ = [
    "DEFAULT_ARMS",
    "DEFAULT_LRS",
    "ArmSummary",
    "LossCurve",
    "MoTLabConfig",
    "MoTLabReport",
    "RunResult",
    "StabilityReport",
    "StabilitySweepConfig",
    "SyntheticMix",
    "SyntheticMixConfig",
    "held_out_batch",
    "lr_sensitivity",
    "parse_arm",
    "run_mot_lab",
    "run_stability_sweep",
    "sweep_data",
    "train_run",
]
