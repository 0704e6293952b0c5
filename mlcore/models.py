"""The braai-style VGG6 real/bogus network (Duev et al. 2019). No I/O here: see mlcore.checkpoint.

The network is split in two so uncertainty is cheap:

* ``features(x)`` — the convolutional part (two blocks of two 3×3 convs + ReLU, 2×2 max-pool,
  dropout 0.25), flattened;
* ``head(f)`` — dense 256 + ReLU + dropout 0.5 + one logit.

An optional type head (``ModelConfig.type_classes`` non-empty) gives one logit per type (softmax over
the workflow's types); ``ModelConfig.type_head`` says how it is built:

* ``"branch"`` (the default for new models) — its own small network on the input: two convolutional
  blocks like the shared ones, a dense layer (``type_units``) and the logits, so it learns the features
  that tell types apart, not only those real/bogus needed, and shares nothing with the real/bogus path;
* ``"shared_stem"`` — the same without its own first block: it reads the shared first block's output
  (about two thirds of the cost; a little worse with few or crowd labels);
* ``"mlp"`` — a dense layer (``type_units``) and the logits on the 256 penultimate activations;
* ``"linear"`` (every checkpoint made before the choice existed) — one linear layer on them.

Every type layer is named ``type_*``, built last on a forked random stream and, by default, trained
without any gradient into the shared layers (mlcore.train): the real/bogus output is unchanged.

Monte-Carlo dropout for BALD keeps the convolutional part deterministic (evaluated once) and
samples dropout masks only on the 256 penultimate activations: ``mc_logits`` costs T small
256→1 products on top of a single pass, instead of T full passes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TYPE_HEADS", "ModelConfig", "VGG6", "build_model", "transfer_weights"]

TYPE_HEADS = ("branch", "shared_stem", "mlp", "linear")
# Layers of self.conv up to the shared first block's max-pool: the "shared_stem" type head starts there.
_FIRST_BLOCK = 5


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; saved inside every checkpoint and used to rebuild the network."""

    architecture: str = "vgg6"
    input_size: int = 63
    in_channels: int = 3
    conv_filters: tuple[int, int] = (16, 32)
    kernel_size: int = 3
    pool_size: int = 2
    conv_dropout: float = 0.25
    dense_units: int = 256
    dense_dropout: float = 0.5
    # Preprocessed cutouts have unit L2 norm, so pixels are ~1/63 in size; multiplying by input_scale
    # (default: the cutout side) gives ~unit RMS inputs, where the default initialisation and Adam at
    # lr 1e-3 learn in a few epochs. Preprocessing itself stays exactly braai's.
    input_scale: float = 63.0
    # Arcseconds per input pixel: stamps of every survey are resampled to it (mlcore.prep.InputSpec).
    # Checkpoints made before it existed were trained on ZTF's ~1″ pixels, which is the default.
    pixel_scale: float = 1.0
    # Type keys of the optional type head, in logit order; empty (every checkpoint made before the
    # head existed) = no head.
    type_classes: tuple[str, ...] = ()
    # How the type head is built (module docstring); a config saved before this key existed has a
    # linear head (from_dict). "branch" names types far better at no real/bogus cost, "shared_stem"
    # nearly as well for less: docs/benchmarks.md, "Types".
    type_head: str = "branch"
    type_units: int = 128  # dense units of the "branch", "shared_stem" and "mlp" heads

    def __post_init__(self):
        if self.architecture != "vgg6":
            raise ValueError(f"unknown architecture {self.architecture!r} (only 'vgg6' is implemented)")
        object.__setattr__(self, "conv_filters", tuple(int(f) for f in self.conv_filters))
        object.__setattr__(self, "type_classes", tuple(str(t) for t in self.type_classes))
        if len(self.type_classes) == 1 or len(set(self.type_classes)) != len(self.type_classes):
            raise ValueError(
                f"type_classes must be empty or at least two distinct keys, got {list(self.type_classes)}"
            )
        if self.type_head not in TYPE_HEADS:
            raise ValueError(f"type_head must be one of {', '.join(TYPE_HEADS)}, got {self.type_head!r}")
        object.__setattr__(self, "type_units", int(self.type_units))
        if self.type_units < 1:
            raise ValueError(f"type_units must be at least 1, got {self.type_units}")
        if len(self.conv_filters) != 2 or min(self.conv_filters) < 1:
            raise ValueError(f"conv_filters must be two positive integers, got {self.conv_filters}")
        for name in ("conv_dropout", "dense_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if int(self.in_channels) < 1:
            raise ValueError(f"in_channels must be at least 1, got {self.in_channels}")
        if not self.pixel_scale > 0:
            raise ValueError(f"pixel_scale must be positive, got {self.pixel_scale}")
        if self.feature_map_size() < 1:
            raise ValueError(f"input_size {self.input_size} is too small for this network")

    def feature_map_size(self) -> int:
        """Side of the last feature map: each 'valid' 3×3 conv trims kernel_size-1 pixels, each pool divides."""
        side = self.input_size
        for _ in self.conv_filters:
            side = (side - 2 * (self.kernel_size - 1)) // self.pool_size
        return side

    @property
    def has_type_head(self) -> bool:
        return bool(self.type_classes)

    def n_features(self) -> int:
        return self.conv_filters[-1] * self.feature_map_size() ** 2

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["conv_filters"] = list(self.conv_filters)
        data["type_classes"] = list(self.type_classes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        if "type_head" not in data:
            # Saved before the choice existed: its head, if any, is the linear one.
            data = {**data, "type_head": "linear"}
        return cls(**data)


class VGG6(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        f1, f2 = config.conv_filters
        k = config.kernel_size
        self.conv = nn.Sequential(
            nn.Conv2d(config.in_channels, f1, k),
            nn.ReLU(inplace=True),
            nn.Conv2d(f1, f1, k),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(config.pool_size),
            nn.Dropout(config.conv_dropout),
            nn.Conv2d(f1, f2, k),
            nn.ReLU(inplace=True),
            nn.Conv2d(f2, f2, k),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(config.pool_size),
            nn.Dropout(config.conv_dropout),
        )
        self.fc = nn.Linear(config.n_features(), config.dense_units)
        self.head_dropout = nn.Dropout(config.dense_dropout)
        self.out = nn.Linear(config.dense_units, 1)
        self.type_stem = self.type_conv = self.type_fc = self.type_out = None
        if config.type_classes:
            # Built last and on a forked random stream: the other layers get the initial weights, and
            # training the dropout masks, that they would get without a head. No dropout in the head:
            # its draws would shift the real/bogus masks.
            k_types = len(config.type_classes)
            with torch.random.fork_rng(devices=[]):
                if config.type_head == "branch":
                    self.type_stem = nn.Sequential(
                        nn.Conv2d(config.in_channels, f1, k),
                        nn.ReLU(inplace=True),
                        nn.Conv2d(f1, f1, k),
                        nn.ReLU(inplace=True),
                        nn.MaxPool2d(config.pool_size),
                    )
                if config.type_head in ("branch", "shared_stem"):
                    self.type_conv = nn.Sequential(
                        nn.Conv2d(f1, f2, k),
                        nn.ReLU(inplace=True),
                        nn.Conv2d(f2, f2, k),
                        nn.ReLU(inplace=True),
                        nn.MaxPool2d(config.pool_size),
                    )
                    self.type_fc = nn.Linear(config.n_features(), config.type_units)
                elif config.type_head == "mlp":
                    self.type_fc = nn.Linear(config.dense_units, config.type_units)
                width = config.dense_units if config.type_head == "linear" else config.type_units
                self.type_out = nn.Linear(width, k_types)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutional part: (B, 3, 63, 63) → flattened (B, n_features)."""
        return torch.flatten(self.conv(x * self.config.input_scale), 1)

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, dense_units), before dropout: used for batch diversity."""
        return torch.relu(self.fc(f))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Dense part: conv features → one logit per triplet, shape (B,)."""
        return self.out(self.head_dropout(self.embed(f))).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_with_types(
        self, x: torch.Tensor, shared_gradient: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(real/bogus logits (B,), type logits (B, K) or None without a head): one pass; the heads on
        the penultimate activations share the real/bogus dropout mask in training. shared_gradient
        scales the gradient the type logits send back into the shared layers (the values are the
        same): 1 = a fully shared network, 0 = a head that cannot change the real/bogus output."""
        first, h = self._trunk(x)
        h = self.head_dropout(h)
        logits = self.out(h).squeeze(1)
        if self.type_out is None:
            return logits, None
        if self.type_stem is not None:  # its own layers from the input on: nothing shared to scale
            return logits, self._types_from(self.type_stem(x * self.config.input_scale))
        source = first if self.config.type_head == "shared_stem" else h
        if shared_gradient != 1.0:
            source = (
                source.detach()
                if shared_gradient == 0.0
                else source * shared_gradient + source.detach() * (1.0 - shared_gradient)
            )
        return logits, self._types_from(source)

    def embed_and_types(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(penultimate activations h = embed(features(x)), type logits (B, K) or None): one pass,
        for scoring (no dropout is applied here)."""
        first, h = self._trunk(x)
        if self.type_out is None:
            return h, None
        if self.type_stem is not None:
            return h, self._types_from(self.type_stem(x * self.config.input_scale))
        return h, self._types_from(first if self.config.type_head == "shared_stem" else h)

    def type_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Type logits (B, K) from penultimate activations h = embed(features(x)), for the heads that
        read them ("linear", "mlp"); the convolutional heads need the image: embed_and_types(x)."""
        if self.type_out is None:
            raise ValueError("this model has no type head")
        if self.type_conv is not None:
            raise ValueError(
                f"a {self.config.type_head} type head reads the image, not h: use embed_and_types(x)"
            )
        return self._types_from(h)

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output of the shared first block before its dropout, penultimate activations): the same
        layers, in the same order, as embed(features(x))."""
        first = self.conv[:_FIRST_BLOCK](x * self.config.input_scale)
        return first, self.embed(torch.flatten(self.conv[_FIRST_BLOCK:](first), 1))

    def _types_from(self, source: torch.Tensor) -> torch.Tensor:
        if self.config.type_head == "linear":
            return self.type_out(source)
        if self.type_conv is not None:
            source = torch.flatten(self.type_conv(source), 1)
        return self.type_out(torch.relu(self.type_fc(source)))

    def mc_logits(
        self, h: torch.Tensor, samples: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """MC-dropout logits (samples, B) from penultimate activations h = embed(features(x)).

        Samples inverted-dropout masks on the dense layer exactly as nn.Dropout does in training,
        whatever mode the module is in; the conv features are reused, so this is cheap.
        """
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        p = self.config.dense_dropout
        weight = self.out.weight[0]  # (dense_units,)
        if p == 0.0:
            return (h @ weight + self.out.bias).expand(samples, -1)
        # Item-major draws (B, T, D): each triplet consumes the generator's stream in row order, so the
        # masks a triplet gets do not depend on how the pool was cut into batches.
        keep = torch.rand((h.shape[0], samples, h.shape[1]), generator=generator, device=h.device) >= p
        weighted = h * weight  # (B, D): the last layer's per-unit contributions
        return torch.einsum("btd,bd->tb", keep.to(h.dtype), weighted) / (1.0 - p) + self.out.bias


def build_model(config: ModelConfig | None = None) -> VGG6:
    config = config or ModelConfig()
    if config.architecture != "vgg6":
        raise ValueError(f"unknown architecture {config.architecture!r}")
    return VGG6(config)


def transfer_weights(source: VGG6, config: ModelConfig, seed: int = 0) -> tuple[VGG6, dict]:
    """A new network of `config` that starts from `source`'s weights (fine-tuning across workflows).

    Every layer whose shape matches is copied. The first convolution takes extra input channels (the
    uncertainty channel) with zero weights, so the new network computes exactly what `source` did on
    the triplet until training teaches it to use them. The dense layer depends on the input size: for
    a different size it keeps its fresh (seeded) initialisation. The type head is copied only when
    both networks name the same types in the same order (K logits of other types mean nothing here),
    the rest of a type head only into the same kind of head.
    Returns (model, report) where report
    says which parameters were copied, adapted or left fresh.
    """
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        target = build_model(config)
    finally:
        torch.random.set_rng_state(generator_state)
    source_state = source.state_dict()
    state = target.state_dict()
    report = {"copied": [], "adapted": [], "fresh": []}
    first_convs = ("conv.0.weight", "type_stem.0.weight")
    for name, tensor in state.items():
        theirs = source_state.get(name)
        if name.startswith("type_") and (
            source.config.type_head != config.type_head
            or (name.startswith("type_out.") and source.config.type_classes != config.type_classes)
        ):
            # Another kind of head means other inputs; the logits of other types mean nothing here.
            theirs = None
        if theirs is not None and theirs.shape == tensor.shape:
            state[name] = theirs.detach().to(device=tensor.device, dtype=tensor.dtype).clone()
            report["copied"].append(name)
        elif (
            name in first_convs
            and theirs is not None
            and theirs.shape[0] == tensor.shape[0]
            and theirs.shape[2:] == tensor.shape[2:]
        ):
            adapted = torch.zeros_like(tensor)
            shared = min(theirs.shape[1], tensor.shape[1])
            adapted[:, :shared] = theirs[:, :shared].detach().to(device=tensor.device, dtype=tensor.dtype)
            state[name] = adapted
            report["adapted"].append(name)
        else:
            report["fresh"].append(name)
    target.load_state_dict(state)
    return target, report
