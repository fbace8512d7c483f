"""Ray Tune jobs: PPO fine-tuning (one trial) and hyperparameter sweeps (ASHA), tracked in MLflow."""

from memsel.tune_jobs.ppo import PPOOutcome, run_ppo, search_space

__all__ = ["PPOOutcome", "run_ppo", "search_space"]
