"""The training engine every mode shares: noise and timesteps, loss, optimizers, schedules, the loop."""
