"""The plain diffusers + peft LoRA loop: what a user writing their own loop would run, as the second reference.

diffusers' `unet.add_adapter(LoraConfig(...))` on the same layers as our lierla (rank 16, alpha 8), LoRA weights in
fp32, torch AdamW; on CUDA with a half-precision UNet it computes under autocast, and in fp16 it scales the loss with
a GradScaler (as accelerate's fp16 mixed precision does); latents and text embeddings precomputed, MSE on ε.
"""

from __future__ import annotations

import torch


class PeftLoop:
    def __init__(self, unet, layer_names: list[str], latents, hidden, alpha_bar, rank=16, alpha=8.0, lr=1e-4,
                 added=None, dtype=torch.float32):
        from peft import LoraConfig

        self.unet, self.latents, self.hidden, self.alpha_bar, self.added = unet, latents, hidden, alpha_bar, added
        self.device, self.dtype = latents.device, dtype
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                    target_modules=layer_names), adapter_name="bench")
        self.params = [p for n, p in unet.named_parameters() if "lora_" in n]
        for p in self.params:
            p.data = p.data.float()  # fp32 LoRA weights under a half-precision UNet
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        half = self.device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
        self.autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if half else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=half and dtype == torch.float16)
        self.generator = torch.Generator(self.device).manual_seed(2)
        self.detach()

    def step(self) -> float:
        noise = torch.randn(self.latents.shape, generator=self.generator, device=self.device)
        t = torch.randint(0, 1000, (self.latents.shape[0],), generator=self.generator, device=self.device)
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        noisy = (a.sqrt() * self.latents + (1 - a).sqrt() * noise).to(self.dtype)
        if self.autocast:
            with self.autocast():
                pred = self.unet(noisy, t, self.hidden, added_cond_kwargs=self.added).sample
        else:
            pred = self.unet(noisy, t, self.hidden, added_cond_kwargs=self.added).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def attach(self):
        self.unet.enable_adapters()

    def detach(self):
        self.unet.disable_adapters()
