"""The GRPO algorithm as pure torch: group-relative advantages, the clipped policy loss, sampler-trainer mismatch."""
