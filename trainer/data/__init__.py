"""Training data: image discovery and captions, aspect-ratio buckets, cached latents and conditionings."""
