"""Sample previews while a LoRA trains: `render` denoises with the trainer's own components and a diffusers
scheduler, `grid` lays the images out and writes the PNG, `previews` is the step hook that decides when."""
