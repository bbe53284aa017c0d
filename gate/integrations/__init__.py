"""Integrations with the tools teams already use around a fine-tuning run.

    wandb_log.log_to_wandb(results, out_dir, project=...)  -> WandbRunInfo

Each integration imports its third-party library lazily, so `import gate`
works without the extra installed; calling one without it raises
`gate.errors.InputError` naming the extra (`pip install 'forgetting-gate[wandb]'`).
"""

from __future__ import annotations

from gate.integrations.wandb_log import WandbRunInfo, log_to_wandb, log_verdict

__all__ = ["WandbRunInfo", "log_to_wandb", "log_verdict"]
