"""Model scanning: decide from a model's files, never loading them, whether it is safe to hand out."""
