"""Run by the webui (in its own venv) before it starts: install only what is missing.

Never upgrades or downgrades anything the webui pins (torch, transformers, gradio, numpy, Pillow, safetensors,
huggingface_hub, pydantic, accelerate): each package below is installed only when it cannot be found at all,
in a version whose own requirements accept the webui's pins (diffusers 0.35.2 accepts huggingface_hub 0.36
and safetensors 0.4.2).
"""

import importlib.util

# import name → pip requirement
REQUIREMENTS = {
    "diffusers": "diffusers==0.35.2",
    "lycoris": "lycoris-lora",
    "bitsandbytes": "bitsandbytes",
    "prodigyopt": "prodigyopt",
    "dadaptation": "dadaptation==3.2",
    "schedulefree": "schedulefree",
    "pytorch_optimizer": "pytorch-optimizer",
    "lion_pytorch": "lion-pytorch",
    "pandas": "pandas",
    "matplotlib": "matplotlib",
}
# Packages whose dependencies would replace the webui's torch: installed without dependencies.
NO_DEPS = {"open_clip": "open_clip_torch==2.20.0"}


def missing(import_name: str) -> bool:
    return importlib.util.find_spec(import_name) is None


def main() -> None:
    import launch  # the webui's module; present only when the webui runs this file

    for name, requirement in REQUIREMENTS.items():
        if missing(name):
            launch.run_pip(f'install "{requirement}"', f"TrainTrain requirement: {requirement}")
    for name, requirement in NO_DEPS.items():
        if missing(name):
            launch.run_pip(f'install --no-deps "{requirement}"', f"TrainTrain requirement: {requirement}")


if __name__ == "__main__":
    main()
