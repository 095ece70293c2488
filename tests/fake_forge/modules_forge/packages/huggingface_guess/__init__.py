"""The vendored `huggingface_guess` (Neo modules_forge/packages; importable top-level, forge-api.md F1): only the
`model_list` configs the fake's models carry as `sd_model.model_config`."""
