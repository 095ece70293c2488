"""Reading checkpoints and building model components (UNet, text encoders, VAE, tokenizers, schedule)."""
