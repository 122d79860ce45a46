"""examples/ijepa_train.arch written in PyTorch, module for module and operation for operation,
for bench/train_vs_torch.py: the same ViT context encoder, narrow predictor with mask tokens,
EMA target encoder behind no_grad, target blocks drawn per image, the same loss and collapse
metrics, and the same recipe (AdamW, no weight decay on biases, norms, positions and the mask
token; the EMA moved after every step). Its weight names are the example's checkpoint names,
so `archc_state` gives archc the same starting weights.
"""

import math

import torch
from torch import nn

IMAGE, PATCH, DIM, HEADS, FFN = 8, 2, 32, 4, 64
PRED_DIM, PRED_HEADS, PRED_FFN, SIDE, EPS = 16, 2, 32, 2, 1e-6
GRID = IMAGE // PATCH
PATCHES = GRID * GRID


def layernorm(d):
    return nn.LayerNorm(d, eps=EPS)


class Attend(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, keep):
        b, p, d = x.shape

        def split(t):
            return t.view(b, p, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        s = torch.where(keep, q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d / self.heads)), -1e30)
        o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(b, p, d)
        return self.out(o)


class VitLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.ln1, self.attn, self.ln2 = layernorm(d), Attend(d, heads), layernorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x, keep):
        x = x + self.attn(self.ln1(x), keep)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


def patchify(pixels):
    b = pixels.shape[0]
    x = pixels.reshape(b, GRID, PATCH, GRID, PATCH)
    return x.permute(0, 1, 3, 2, 4).reshape(b, PATCHES, PATCH * PATCH)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, PATCHES, DIM) * 0.02)
        self.embed = nn.Linear(PATCH * PATCH, DIM)
        self.layer0, self.layer1 = VitLayer(DIM, HEADS, FFN), VitLayer(DIM, HEADS, FFN)
        self.norm = layernorm(DIM)

    def forward(self, pixels, keep):
        x = self.embed(patchify(pixels)) + self.pos
        return self.norm(self.layer1(self.layer0(x, keep), keep))


class Predictor(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, PATCHES, PRED_DIM) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(1, 1, PRED_DIM) * 0.02)
        self.embed = nn.Linear(DIM, PRED_DIM)
        self.layer0 = VitLayer(PRED_DIM, PRED_HEADS, PRED_FFN)
        self.norm, self.proj = layernorm(PRED_DIM), nn.Linear(PRED_DIM, DIM)

    def forward(self, context, target):
        x = torch.where(target, self.mask_token, self.embed(context)) + self.pos
        everywhere = torch.ones(1, 1, 1, PATCHES, dtype=torch.bool)
        return self.proj(self.norm(self.layer0(x, everywhere)))


def normalize(x):
    d = x - x.mean(-1, keepdim=True)
    return d * torch.rsqrt((d * d).mean(-1, keepdim=True) + EPS)


class IJepa(nn.Module):
    """The objective: `step_outputs` is the example's outputs, the loss differentiable."""

    def __init__(self):
        super().__init__()
        self.encoder, self.predictor, self.target_encoder = Encoder(), Predictor(), Encoder()
        self.target_encoder.load_state_dict(self.encoder.state_dict())
        self.target_encoder.requires_grad_(False)

    def step_outputs(self, pixels, corner):
        b = pixels.shape[0]
        start = corner % (GRID - SIDE + 1)
        p = torch.arange(PATCHES)
        row = (p // GRID).unsqueeze(0) - start[:, 0:1]
        col = (p % GRID).unsqueeze(0) - start[:, 1:2]
        target = (row >= 0) & (row < SIDE) & (col >= 0) & (col < SIDE)
        context_keys = (~target).reshape(b, 1, 1, PATCHES)
        all_keys = torch.ones(1, 1, 1, PATCHES, dtype=torch.bool)
        predicted = self.predictor(self.encoder(pixels, context_keys), target.unsqueeze(-1))
        with torch.no_grad():
            t = self.target_encoder(pixels, all_keys)
            wanted = normalize(t - t.mean(0, keepdim=True))
        weight = target.unsqueeze(-1).float()
        err = (predicted - wanted) * weight
        loss = (err * err).sum() / (weight.sum() * DIM)
        with torch.no_grad():  # the collapse metrics, outputs of the example's step too
            embedding = normalize(self.encoder(pixels, all_keys)).mean(1)
            centered = embedding - embedding.mean(0, keepdim=True)
            std = torch.sqrt((centered * centered).mean(0) + 1e-12).mean()
            unit = embedding * torch.rsqrt((embedding * embedding).sum(-1, keepdim=True) + 1e-12)
            total = unit.sum(0)
            cosine = ((total * total).sum() - b) / (b * (b - 1))
            singular = torch.linalg.svdvals(embedding)
            share = singular / (singular.sum() + 1e-12)
            rank = torch.exp(-(share * torch.log(share + 1e-12)).sum())
        return loss, embedding, std, cosine, rank


def no_decay(name):
    """The example's group: biases, norms, positions and the mask token."""
    return name.endswith(".bias") or ".ln" in name or ".norm." in name or name.endswith(("pos", "mask_token"))


class Trainer:
    """AdamW (lr 1e-3, weight decay 0.05 outside the group) and the EMA update (0.998)."""

    def __init__(self, model, momentum=0.998):
        self.model, self.momentum = model, momentum
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": 0.05},
                  {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=1e-3)
        self.pairs = list(zip(model.target_encoder.parameters(), model.encoder.parameters()))

    def step(self, pixels, corner):
        loss = self.model.step_outputs(pixels, corner)[0]
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for t, o in self.pairs:
                t.mul_(self.momentum).add_(o, alpha=1.0 - self.momentum)
        return float(loss.detach())


def archc_state(model):
    """The weights by the example's checkpoint names (nn.LayerNorm's are the same)."""
    return {n: p.detach().contiguous() for n, p in model.state_dict().items()}
