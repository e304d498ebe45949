"""Training: the experiment config, data and low-light synthesis, losses and the trainer."""
