"""The DeepSeek-R1 pipeline: cold-start data, SFT, rejection sampling, multi-stage runs."""
