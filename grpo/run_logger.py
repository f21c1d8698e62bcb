"""Where metrics go: ``metrics.jsonl`` and ``completions.jsonl`` in the output folder, W&B or
TensorBoard through accelerate's trackers, and a progress bar. Only the main process writes."""

from __future__ import annotations

import json
import os
from typing import Any

from tqdm.auto import tqdm

from grpo.io import write_text


def tracker_names(report_to: list[str]) -> list[str]:
    """The accelerate trackers to start; W&B runs offline when no API key is configured."""
    names = [t for t in report_to if t != "none"]
    if "wandb" in names and not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    return names


class RunLogger:
    """Writes one JSON object per logged step to ``metrics.jsonl`` and mirrors it to the trackers.

    A run that starts at ``initial_step`` (a resumed one, or a fresh one in a used folder) first drops the rows of
    ``metrics.jsonl`` and ``completions.jsonl`` past that step: they were logged after the checkpoint it resumes
    from, and are logged again, so every step appears once.
    """

    def __init__(
        self,
        accelerator,
        output_dir: str,
        report_to: list[str],
        project: str,
        run_name: str,
        config: dict[str, Any],
        max_steps: int,
        initial_step: int = 0,
        disable_tqdm: bool = False,
    ):
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.metrics_path = os.path.join(output_dir, "metrics.jsonl")
        self.completions_path = os.path.join(output_dir, "completions.jsonl")
        if self.main:
            for path in (self.metrics_path, self.completions_path):
                drop_rows_after(path, initial_step)
        self.trackers = tracker_names(report_to)
        if self.trackers:
            init_kwargs = {"wandb": {"name": run_name, "dir": output_dir}}
            accelerator.init_trackers(project, config=_flatten(config), init_kwargs=init_kwargs)
        self.progress = tqdm(
            total=max_steps,
            initial=initial_step,
            disable=disable_tqdm or not self.main,
            desc="grpo",
            dynamic_ncols=True,
        )

    def log(self, step: int, metrics: dict[str, Any], lengths: list[int], samples: list[dict[str, Any]]) -> None:
        """Record ``metrics`` for ``step``, a length histogram and a sample of completions."""
        self.progress.update(step - self.progress.n)
        if not self.main:
            return
        record = {"step": step, **{k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}}
        _append_jsonl(self.metrics_path, [record])
        _append_jsonl(self.completions_path, [{"step": step, **s} for s in samples])
        self.progress.set_postfix(reward=_fmt(metrics.get("reward")), len=_fmt(metrics.get("completion_length/mean")))
        if not self.trackers:
            return
        self.accelerator.log({k: v for k, v in record.items() if v is not None and k != "step"}, step=step)
        if "wandb" in self.trackers:
            import wandb

            run = self.accelerator.get_tracker("wandb", unwrap=True)
            columns = list(samples[0]) if samples else []
            run.log(
                {
                    "completion_length/histogram": wandb.Histogram(lengths),
                    "completions": wandb.Table(columns=columns, data=[[s[c] for c in columns] for s in samples]),
                },
                step=step,
            )

    def close(self) -> None:
        self.progress.close()
        if self.trackers:
            self.accelerator.end_training()


def drop_rows_after(path: str, step: int) -> None:
    """Rewrite the JSONL file ``path`` (if any) without its rows whose ``step`` is past ``step``, and without a
    line torn by a crash; the other lines are kept as they are."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    write_text(path, "".join(kept))


def open_run_logger(accelerator, configs: tuple, dataset, initial_step: int) -> RunLogger:
    """Write ``config.yaml`` into the output folder (main process) and open the run's :class:`RunLogger`.

    ``configs``: the run's (model, data, GRPO, vLLM) argument dataclasses; ``dataset``: its ``PromptDataset`` (its
    prompt counts go into the tracker's config); ``initial_step``: the step the run starts from (resume)."""
    from grpo.config import config_dict, save_config

    args = configs[2]  # GRPOArguments
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        save_config(os.path.join(args.output_dir, "config.yaml"), *configs)
    config = config_dict(*configs)
    config["data"].update(num_prompts=len(dataset), num_dropped_prompts=dataset.num_dropped)
    return RunLogger(
        accelerator,
        args.output_dir,
        args.report_to,
        args.project,
        args.run_name or os.path.basename(os.path.abspath(args.output_dir)),
        config,
        args.max_steps,
        initial_step,
        args.disable_tqdm,
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def _append_jsonl(path: str, records: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, default=str) + "\n")


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and prefix == "":
            flat.update(_flatten(value, f"{key}/"))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)
    return flat
